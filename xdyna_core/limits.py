"""What one request may ask of a server, and where its files go: the engine's services for
hosting (the studio uses them; the CLI and Python callers may).

- `Limits` / `limits_from_env`: upload size, clip length, frames, steps, frame size, queue,
  temporary-file age, motion cache size — each overridable with an `XDYNA_*` variable.
- `check_photo` / `check_clip`: refuse unusable uploads before anything is decoded.
- `Workspace`: per-job temporary folders, pruned by age and removed at exit.
- `prune_cache`: the persistent motion cache, kept to a number of files and megabytes.
- `remove_leftover_workspaces`: what a hard-killed server left in the temp folder.
"""

from __future__ import annotations

import atexit
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from xdyna_core.errors import InputError
from xdyna_core.io import probe_image, probe_video

PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif")
CLIP_SUFFIXES = (".mp4", ".mov", ".m4v", ".webm", ".mkv", ".avi", ".gif")


@dataclass(frozen=True)
class Limits:
    """What one request may ask of this server. Every field has an `XDYNA_*` variable."""

    max_upload_mb: float = 50.0  # XDYNA_MAX_UPLOAD_MB: photo or clip file size
    max_clip_seconds: float = 120.0  # XDYNA_MAX_CLIP_SECONDS: longer driving clips are refused
    max_frames: int = 64  # XDYNA_MAX_FRAMES: frames one animation may have
    max_steps: int = 50  # XDYNA_MAX_STEPS: denoising steps
    max_side: int = 1024  # XDYNA_MAX_SIDE: longest side of the generated video, pixels
    queue_size: int = 20  # XDYNA_QUEUE_SIZE: visitors waiting at once
    temp_max_age_s: float = 3600.0  # XDYNA_TEMP_MAX_AGE_S: temporary files older than this are deleted
    gpu_duration_s: int = 180  # XDYNA_GPU_DURATION: seconds asked of ZeroGPU per generation
    cache_max_files: int = 200  # XDYNA_CACHE_MAX_FILES: extracted motions kept on disk (newest first)
    cache_max_mb: float = 2048.0  # XDYNA_CACHE_MAX_MB: and at most this many MB of them


_LIMIT_ENV = {
    "max_upload_mb": ("XDYNA_MAX_UPLOAD_MB", float),
    "max_clip_seconds": ("XDYNA_MAX_CLIP_SECONDS", float),
    "max_frames": ("XDYNA_MAX_FRAMES", int),
    "max_steps": ("XDYNA_MAX_STEPS", int),
    "max_side": ("XDYNA_MAX_SIDE", int),
    "queue_size": ("XDYNA_QUEUE_SIZE", int),
    "temp_max_age_s": ("XDYNA_TEMP_MAX_AGE_S", float),
    "gpu_duration_s": ("XDYNA_GPU_DURATION", int),
    "cache_max_files": ("XDYNA_CACHE_MAX_FILES", int),
    "cache_max_mb": ("XDYNA_CACHE_MAX_MB", float),
}


def limits_from_env(environ=None) -> Limits:
    """Read `Limits` from `XDYNA_*` variables. Every malformed value (not a number, not a whole
    number where one is needed, zero, negative, nan, inf) is reported, one line each, naming the
    variable: better than a limit silently switched off or a traceback at start-up."""
    environ = os.environ if environ is None else environ
    values, errors = {}, []
    for name, (var, kind) in _LIMIT_ENV.items():
        raw = environ.get(var)
        if raw is None or raw.strip() == "":
            continue
        try:
            value = kind(raw)
        except ValueError:
            what = "whole number" if kind is int else "number"
            errors.append(f"{var}={raw!r} is not a valid {kind.__name__} ({what}); unset it or give a {what}.")
            continue
        if not math.isfinite(value) or value <= 0:
            errors.append(f"{var} must be positive and finite (got {raw}).")
            continue
        values[name] = value
    if errors:
        raise InputError("\n".join(errors))
    return Limits(**values)


# --------------------------------------------------------------------------------------
# Uploads
# --------------------------------------------------------------------------------------


def _check_file(path, what: str, suffixes: tuple, limits: Limits) -> Path:
    if not path:
        raise InputError(f"Add a {what} first.")
    path = Path(path)
    if not path.is_file():
        raise InputError(f"The {what} upload did not arrive completely; please upload it again.")
    size_mb = path.stat().st_size / 1024**2
    if size_mb > limits.max_upload_mb:
        raise InputError(f"The {what} is {size_mb:.0f} MB; this studio accepts up to {limits.max_upload_mb:.0f} MB. "
                         "Please upload a smaller or shorter file.")
    if path.suffix.lower() not in suffixes:
        kinds = ", ".join(s.lstrip(".") for s in suffixes)
        raise InputError(f"“{path.name}” does not look like a {what} (expected {kinds}).")
    return path


def check_photo(path, limits: Limits) -> Path:
    """Refuse photos that are too big, not images, or have too many pixels (from the header)."""
    path = _check_file(path, "photo", PHOTO_SUFFIXES, limits)
    probe_image(path)
    return path


def check_clip(path, limits: Limits):
    """Refuse clips that are not videos, too big or too long, before decoding anything.
    Returns (path, `io.VideoInfo`)."""
    path = _check_file(path, "driving clip", CLIP_SUFFIXES, limits)
    try:
        info = probe_video(path)
    except InputError:
        raise
    except Exception as err:  # noqa: BLE001 - any decoder failure means "not a video we can read"
        raise InputError(f"“{path.name}” could not be read as a video ({type(err).__name__}). "
                         "Please upload an mp4, mov or webm clip.") from None
    if info.duration and info.duration > limits.max_clip_seconds:
        raise InputError(f"The driving clip lasts {info.duration:.0f} s; this studio accepts clips up to "
                         f"{limits.max_clip_seconds:.0f} s. Trim it and upload again.")
    return path, info


# --------------------------------------------------------------------------------------
# Files: temporary workspace and the motion cache
# --------------------------------------------------------------------------------------


def prune_cache(folder: Path, max_files: int, max_mb: Optional[float] = None, stale_tmp_s: float = 600.0) -> int:
    """Keep the most recently used entries of a cache folder: at most `max_files` of them and at
    most `max_mb` megabytes, the oldest going first. Hidden temporary files (`.*.tmp.*`) that a
    killed writer left behind are removed once older than `stale_tmp_s`, and never count as
    entries. Returns how many files went."""
    try:
        items = [f for f in Path(folder).iterdir() if f.is_file()]
    except FileNotFoundError:
        return 0
    now, removed = time.time(), 0
    entries = []
    for f in items:
        try:
            stat = f.stat()
        except FileNotFoundError:
            continue
        if f.name.startswith("."):
            if ".tmp." in f.name and now - stat.st_mtime > stale_tmp_s:
                f.unlink(missing_ok=True)
                removed += 1
            continue
        entries.append((stat.st_mtime, stat.st_size, f))
    entries.sort(key=lambda e: e[0], reverse=True)
    budget = math.inf if max_mb is None else max_mb * 1024**2
    kept = total = 0
    for _, size, f in entries:
        if kept < max_files and total + size <= budget:
            kept, total = kept + 1, total + size
        else:
            f.unlink(missing_ok=True)
            removed += 1
    return removed


WORKSPACE_PREFIX = "xdyna-studio-"
MIN_JOB_AGE_S = 30.0  # a job folder is never pruned sooner: its request may still be using it


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def remove_leftover_workspaces(root=None) -> int:
    """Remove workspaces that a hard-killed server left in `root` (default: the system's temp
    folder): those whose owner process is gone. Servers still running keep theirs."""
    removed = 0
    for folder in Path(root or tempfile.gettempdir()).glob(WORKSPACE_PREFIX + "*"):
        try:
            pid = int((folder / ".pid").read_text())
        except (OSError, ValueError):
            pid = None  # no owner recorded (an older version): gone once it is a day old
            try:
                if time.time() - folder.stat().st_mtime < 86400:
                    continue
            except FileNotFoundError:
                continue
        if pid is not None and _process_alive(pid):
            continue
        shutil.rmtree(folder, ignore_errors=True)
        removed += 1
    return removed


class Workspace:
    """Temporary folders for preview and result videos.

    A server copies every file it shows into its own cache, so our copies are only needed while
    a job runs; folders older than `max_age_s` are pruned whenever a new job starts, and
    everything is removed at exit."""

    def __init__(self, root: Optional[os.PathLike] = None, max_age_s: float = 3600.0):
        root = root or os.environ.get("XDYNA_TEMP_DIR")
        if root:
            Path(root).mkdir(parents=True, exist_ok=True)
        self.removed_leftovers = remove_leftover_workspaces(root)
        self.root = Path(tempfile.mkdtemp(prefix=WORKSPACE_PREFIX, dir=root))
        (self.root / ".pid").write_text(str(os.getpid()))
        self.max_age_s = max_age_s
        atexit.register(self.close)

    def new_job(self, kind: str) -> Path:
        self.prune()
        return Path(tempfile.mkdtemp(prefix=f"{kind}-", dir=self.root))

    def prune(self, max_age_s: Optional[float] = None) -> int:
        """Delete job folders older than `max_age_s` (never younger than `MIN_JOB_AGE_S`: a request
        still running, or a server still copying its outputs, keeps its files); returns how many went."""
        max_age_s = max(self.max_age_s if max_age_s is None else max_age_s, MIN_JOB_AGE_S)
        now, removed = time.time(), 0
        for job in self.root.glob("[!.]*"):
            try:
                if now - job.stat().st_mtime > max_age_s:
                    shutil.rmtree(job, ignore_errors=True)
                    removed += 1
            except FileNotFoundError:
                pass
        return removed

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
