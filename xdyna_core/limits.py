"""What one request may ask of a server, and where its files go: the engine's services for
hosting (the studio uses them; the CLI and Python callers may).

- `Limits` / `limits_from_env`: upload size, clip length, frames, steps, frame size, queue,
  temporary-file age, motion cache size — each overridable with an `XDYNA_*` variable.
- `check_photo` / `check_clip`: refuse unusable uploads before anything is decoded.
- `Workspace`: per-job temporary folders, pruned by age and removed at exit.
- `cache_dir` / `prune_cache`: the persistent motion cache, kept to a number of files.
"""

from __future__ import annotations

import atexit
import hashlib
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from xdyna_core.errors import InputError
from xdyna_core.io import probe_video

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
}


def limits_from_env(environ=None) -> Limits:
    """Read `Limits` from `XDYNA_*` variables; a malformed value stops the server with a
    message naming the variable (better than silently ignoring it)."""
    environ = os.environ if environ is None else environ
    values = {}
    for name, (var, kind) in _LIMIT_ENV.items():
        raw = environ.get(var)
        if raw is None or raw.strip() == "":
            continue
        try:
            value = kind(raw)
        except ValueError:
            raise InputError(f"{var}={raw!r} is not a valid {kind.__name__}; unset it or give a number.") from None
        if value <= 0:
            raise InputError(f"{var} must be positive (got {raw}).")
        values[name] = value
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
    return _check_file(path, "photo", PHOTO_SUFFIXES, limits)


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


def file_hash(path) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# --------------------------------------------------------------------------------------
# Files: temporary workspace and the motion cache
# --------------------------------------------------------------------------------------


def cache_dir() -> Path:
    """Persistent cache (motion extractions): XDYNA_CACHE_DIR, else ~/.cache/xdyna-studio."""
    path = Path(os.environ.get("XDYNA_CACHE_DIR") or Path.home() / ".cache" / "xdyna-studio")
    path.mkdir(parents=True, exist_ok=True)
    return path


def prune_cache(folder: Path, max_files: int) -> int:
    """Keep the `max_files` most recently used files of a cache folder; returns how many went."""
    try:
        files = sorted((f for f in Path(folder).iterdir() if f.is_file()), key=lambda f: f.stat().st_mtime,
                       reverse=True)
    except FileNotFoundError:
        return 0
    for f in files[max_files:]:
        f.unlink(missing_ok=True)
    return max(0, len(files) - max_files)


class Workspace:
    """Temporary folders for preview and result videos.

    A server copies every file it shows into its own cache, so our copies are only needed while
    a job runs; folders older than `max_age_s` are pruned whenever a new job starts, and
    everything is removed at exit."""

    def __init__(self, root: Optional[os.PathLike] = None, max_age_s: float = 3600.0):
        root = root or os.environ.get("XDYNA_TEMP_DIR")
        if root:
            Path(root).mkdir(parents=True, exist_ok=True)
        self.root = Path(tempfile.mkdtemp(prefix="xdyna-studio-", dir=root))
        self.max_age_s = max_age_s
        atexit.register(self.close)

    def new_job(self, kind: str) -> Path:
        self.prune()
        return Path(tempfile.mkdtemp(prefix=f"{kind}-", dir=self.root))

    def prune(self, max_age_s: Optional[float] = None) -> int:
        """Delete job folders older than `max_age_s`; returns how many were removed."""
        max_age_s = self.max_age_s if max_age_s is None else max_age_s
        now, removed = time.time(), 0
        for job in self.root.glob("*"):
            try:
                if now - job.stat().st_mtime > max_age_s:
                    shutil.rmtree(job, ignore_errors=True)
                    removed += 1
            except FileNotFoundError:
                pass
        return removed

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
