"""Engine-facing glue for the studio app (`app.py`).

The app only wires widgets; everything it asks of the engine goes through this module:

- `Limits` / `limits_from_env`: upload size, clip length, frames, steps, resolution, queue,
  temporary-file age - all overridable with `XDYNA_*` environment variables.
- `ModelManager`: the model choice (embedded tiny or official X-Dyna), loading and caching
  one pipeline at a time, device / dtype / memory facts, clear messages when a model cannot
  run here.
- `extract` (step 1): photo + driving clip -> `Extracted` (the `Motion`, preview videos,
  retarget overlay, facts about the clip).
- `animate` (step 2): `Extracted` + generation settings -> generated and side-by-side videos,
  with progress per denoising step and window (with ETA) and cancel through a
  `threading.Event` checked at every step.
- `Workspace`: per-job temporary folders, pruned by age and removed at exit.

Nothing here imports gradio, so it is tested without a browser.
"""

from __future__ import annotations

import atexit
import gc
import hashlib
import logging
import os
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Optional

from xdyna_core.errors import Cancelled, InputError, MissingWeightsError, XDynaError

log = logging.getLogger("xdyna.studio")

ROOT = Path(__file__).resolve().parent.parent
ASSETS = ROOT / "assets"
EXAMPLES_DIR = ASSETS / "examples"
TINY_MODEL_DIR = ASSETS / "tiny-xdyna"

MODEL_TINY = "tiny"
MODEL_OFFICIAL = "official"

PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif")
CLIP_SUFFIXES = (".mp4", ".mov", ".m4v", ".webm", ".mkv", ".avi", ".gif")

# Progress reported to the UI: fraction in [0, 1] and a sentence.
ProgressFn = Callable[[float, str], None]


class ModelUnavailable(XDynaError):
    """The chosen model cannot run here (no GPU, not enough memory, offline ...)."""


# --------------------------------------------------------------------------------------
# Limits from the environment
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Limits:
    """What one visitor may ask of this server. Every field has an `XDYNA_*` variable."""

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


def cache_dir() -> Path:
    """Persistent cache (motion extractions, downloaded weights index): XDYNA_CACHE_DIR."""
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


# --------------------------------------------------------------------------------------
# Temporary files
# --------------------------------------------------------------------------------------


class Workspace:
    """Temporary folders for preview and result videos.

    Gradio copies every file it shows into its own cache (cleaned by `delete_cache` in the
    app), so our copies are only needed while a job runs; folders older than `max_age_s`
    are pruned whenever a new job starts, and everything is removed at exit.
    """

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


# --------------------------------------------------------------------------------------
# Device, dtype, memory
# --------------------------------------------------------------------------------------


def _gib(n: Optional[float]) -> str:
    return "?" if n is None else f"{n / 1024**3:.1f} GB"


def _ram() -> tuple:
    """(available, total) bytes of system memory, from /proc/meminfo where it exists."""
    try:
        info = {}
        with open("/proc/meminfo") as fh:
            for line in fh:
                key, value = line.split(":", 1)
                info[key] = int(value.split()[0]) * 1024
        return info.get("MemAvailable"), info.get("MemTotal")
    except OSError:
        return None, None


@dataclass
class DeviceInfo:
    device: str  # "cuda" or "cpu"
    dtype: str  # torch dtype name used for the official model on this device
    name: str  # GPU name or "CPU (n cores)"
    memory_free: Optional[int]  # bytes free on the device (GPU memory, or RAM on CPU)
    memory_total: Optional[int]

    def describe(self) -> str:
        kind = "GPU" if self.device == "cuda" else "RAM"
        memory = ("not known until a generation starts" if self.memory_total is None else
                  f"{_gib(self.memory_free)} free of {_gib(self.memory_total)}")
        return f"**Device:** {self.name} · **precision:** {self.dtype} · **{kind}:** {memory}"


def device_info() -> DeviceInfo:
    """What this machine offers. XDYNA_DEVICE (cpu/cuda) and XDYNA_DTYPE override the choice."""
    import torch

    want = os.environ.get("XDYNA_DEVICE", "").strip().lower()
    if os.environ.get("SPACES_ZERO_GPU") and want != "cpu":
        # ZeroGPU attaches a GPU only inside each `spaces.GPU` call; outside it nothing can be asked.
        return DeviceInfo("cuda", os.environ.get("XDYNA_DTYPE") or "float16",
                          "ZeroGPU (a GPU is attached for each generation)", None, None)
    cuda = torch.cuda.is_available() and want != "cpu"
    if cuda:
        free, total = torch.cuda.mem_get_info()
        name = torch.cuda.get_device_name()
        dtype = os.environ.get("XDYNA_DTYPE") or "float16"  # the official inference runs in fp16
        return DeviceInfo("cuda", dtype, name, free, total)
    free, total = _ram()
    return DeviceInfo("cpu", "float32", f"CPU ({os.cpu_count()} cores, no GPU)", free, total)


def free_memory() -> None:
    """Give back what a finished or cancelled job held (Python objects and the CUDA cache)."""
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:  # noqa: BLE001 - freeing memory must never fail a job
        pass


# --------------------------------------------------------------------------------------
# Model choice
# --------------------------------------------------------------------------------------


@dataclass
class LoadedModel:
    pipe: object
    choice: str
    label: str  # shown to people, e.g. "Embedded tiny model (untrained demo weights)"
    trained: bool
    device: str
    dtype: str


def model_choices() -> list:
    """(label, value) pairs for the model dropdown."""
    return [
        ("Embedded tiny model — runs on this CPU, offline, rough preview quality", MODEL_TINY),
        ("Official X-Dyna — best quality, needs a CUDA GPU with ≥ 12 GB (≈ 9 GB download on first use)", MODEL_OFFICIAL),
    ]


def default_model_choice() -> str:
    """XDYNA_MODEL: "tiny" (default), "official", or a folder holding the official model
    (then official is chosen and loaded from there)."""
    value = os.environ.get("XDYNA_MODEL", "").strip()
    return MODEL_TINY if value in ("", MODEL_TINY) else MODEL_OFFICIAL


def tiny_model_dir() -> Optional[Path]:
    """The trained embedded model, if present: XDYNA_TINY_MODEL or assets/tiny-xdyna/."""
    path = Path(os.environ.get("XDYNA_TINY_MODEL") or TINY_MODEL_DIR)
    return path if (path / "model_index.json").is_file() else None


def official_model_dir() -> Optional[Path]:
    """A local copy of the official model (a folder written by `xdyna convert`): XDYNA_MODEL
    when it is a folder, else XDYNA_OFFICIAL_MODEL."""
    for var in ("XDYNA_MODEL", "XDYNA_OFFICIAL_MODEL"):
        value = os.environ.get(var, "").strip()
        if value and value not in (MODEL_TINY, MODEL_OFFICIAL):
            path = Path(value)
            if not (path / "model_index.json").is_file():
                raise ModelUnavailable(f"{var}={value} is not a model folder (no model_index.json). "
                                       "Point it at a folder written by `xdyna convert`, or unset it.")
            return path
    return None


# Frame size of the untrained fallback model: xdyna_core.tiny.TINY_RESOLUTION (not imported here
# because tiny.py imports torch, which would slow the page's start; a test keeps them equal).
UNTRAINED_TINY_SIZE = 64

MIN_OFFICIAL_GPU_GB = 12.0  # fp16 weights (~6 GB) + activations of a 16-frame window at 896x512 with CFG


class ModelManager:
    """Loads the chosen model once and keeps it; loading another frees the first."""

    def __init__(self):
        self._lock = threading.Lock()
        self._loaded: Optional[LoadedModel] = None

    @property
    def loaded(self) -> Optional[LoadedModel]:
        return self._loaded

    def unload(self) -> None:
        with self._lock:
            self._loaded = None
        free_memory()

    def get(self, choice: str, progress: Optional[ProgressFn] = None) -> LoadedModel:
        check_model(choice)
        with self._lock:
            if self._loaded is not None and self._loaded.choice == choice:
                return self._loaded
            self._loaded = None
            free_memory()
            loader = _load_tiny if choice == MODEL_TINY else _load_official
            self._loaded = loader(progress)
            return self._loaded


def _load_tiny(progress: Optional[ProgressFn]) -> LoadedModel:
    import torch

    from xdyna_core.pipeline import XDynaPipeline

    info = device_info()
    if progress:
        progress(0.0, "Loading the embedded tiny model")
    folder = tiny_model_dir()
    if folder is not None:
        pipe = XDynaPipeline.from_pretrained(folder)
        label, trained = "Embedded tiny model (trained on synthetic dancers)", True
    else:
        # Not shipped yet: same classes with random weights, made deterministically so every
        # run of the app shows the same (meaningless) output. Labelled as such in the UI.
        from xdyna_core.tiny import make_tiny_components

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            pipe = XDynaPipeline(**make_tiny_components())
        label, trained = "Embedded tiny model — UNTRAINED demo weights (output is noise-like)", False
    pipe = pipe.to(info.device)
    return LoadedModel(pipe, MODEL_TINY, label, trained, info.device, "float32")


def check_model(choice: str) -> DeviceInfo:
    """Refuse, before any work is done, a model this machine cannot run; says what to do."""
    if choice not in (MODEL_TINY, MODEL_OFFICIAL):
        raise InputError(f"Unknown model {choice!r}; choose the embedded tiny model or official X-Dyna.")
    info = device_info()
    if choice == MODEL_OFFICIAL:
        if info.device != "cuda":
            raise ModelUnavailable(
                "Official X-Dyna needs a CUDA GPU and this machine has none. Choose the embedded tiny "
                "model here, or run the studio on a machine (or a Hugging Face Space) with a GPU of 12 GB or more.")
        if info.memory_total is not None and info.memory_total < MIN_OFFICIAL_GPU_GB * 1024**3:
            raise ModelUnavailable(
                f"Official X-Dyna needs about {MIN_OFFICIAL_GPU_GB:.0f} GB of GPU memory; {info.name} has "
                f"{_gib(info.memory_total)}. Use the embedded tiny model or a bigger GPU.")
        official_model_dir()  # a wrong XDYNA_OFFICIAL_MODEL is reported now, not after extraction
    return info


def _load_official(progress: Optional[ProgressFn]) -> LoadedModel:
    import torch

    info = check_model(MODEL_OFFICIAL)
    local = official_model_dir()
    if progress:
        progress(0.0, "Loading official X-Dyna" + (f" from {local}" if local else
                                                   " (downloading ≈ 9 GB on first use — this can take a while)"))
    pipe = official_pipeline(local, getattr(torch, info.dtype, torch.float16)).to("cuda")
    return LoadedModel(pipe, MODEL_OFFICIAL, "Official X-Dyna", True, "cuda", info.dtype)


def official_pipeline(local: Optional[Path], dtype):
    """Official X-Dyna from a local converted folder, else from the hub (cached after the first
    download; download progress goes through tqdm, which the page shows). A failed download
    or missing file is explained with what to do."""
    from xdyna_core.pipeline import XDynaPipeline

    try:
        if local is not None:
            return XDynaPipeline.from_pretrained(local, dtype=dtype)
        return XDynaPipeline.from_official(torch_dtype=dtype)
    except MissingWeightsError as err:
        raise ModelUnavailable(
            f"Official X-Dyna could not be loaded: {err}. To use it here, run once with internet access "
            "(the files are then cached), or download the weights elsewhere, convert them with `xdyna convert` "
            "and set XDYNA_OFFICIAL_MODEL to that folder. The embedded tiny model works offline.") from None


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
    """Refuse clips that are not videos, too big or too long, before decoding anything."""
    from xdyna_core.io import probe_video

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


def describe_clip(path, info) -> str:
    """What the studio sees in an uploaded clip, before step 1 (markdown)."""
    length = f"{info.duration:.1f} s" if info.duration else "unknown length"
    frames = f" · {info.num_frames} frames" if info.num_frames else ""
    text = f"**Driving clip:** {length} · {info.fps:.3g} fps{frames} · {info.width}×{info.height}. "
    playable = (Path(path).suffix.lower(), info.codec) in {(".mp4", "h264"), (".webm", "vp9"), (".webm", "vp8"),
                                                          (".mp4", "av1"), (".webm", "av1")}
    if not playable:
        text += "Your browser may not preview this format, but the studio reads it fine. "
    return text + "Press **Extract motion** to check the movement."


def file_hash(path) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# --------------------------------------------------------------------------------------
# Progress with ETA
# --------------------------------------------------------------------------------------


class ProgressETA:
    """Turns "unit k of n done" into a fraction and a sentence with the time left."""

    def __init__(self, report: Optional[ProgressFn], start: float = 0.0, span: float = 1.0):
        self.report, self.start, self.span = report, start, span
        self.t0 = time.monotonic()
        self.first_done: Optional[tuple] = None

    def __call__(self, done: float, total: float, text: str) -> None:
        if self.report is None or not total:
            return
        frac = min(max(done / total, 0.0), 1.0)
        now = time.monotonic()
        # Measure the rate from the first reported unit on: set-up time is not a step.
        if self.first_done is None:
            self.first_done = (done, now)
        d0, t0 = self.first_done
        eta = ""
        if done > d0:
            left = (now - t0) / (done - d0) * (total - done)
            eta = f" · about {_duration(left)} left"
        self.report(round(self.start + self.span * frac, 4), text + eta)


def _duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds} s"
    return f"{seconds // 60} min {seconds % 60:02d} s"


# --------------------------------------------------------------------------------------
# Step 1: extract motion
# --------------------------------------------------------------------------------------

RETARGET_MODES = ("global", "limbs", "none")


@dataclass(frozen=True)
class MotionSettings:
    """Everything that changes the extracted motion (changing any of these re-extracts)."""

    height: int = 896
    width: int = 512
    fps: Optional[float] = None  # None keeps the clip's frame rate
    max_frames: int = 32
    retarget: str = "global"

    def validate(self, limits: Limits) -> "MotionSettings":
        if self.retarget not in RETARGET_MODES:
            raise InputError(f"Retarget mode must be one of {', '.join(RETARGET_MODES)} (got {self.retarget!r}).")
        if self.height % 64 or self.width % 64 or min(self.height, self.width) < 64:
            raise InputError(f"Resolution {self.width}×{self.height} must be multiples of 64.")
        if max(self.height, self.width) > limits.max_side:
            raise InputError(f"Resolution {self.width}×{self.height} is above this server's limit of "
                             f"{limits.max_side} pixels per side.")
        if not 1 <= self.max_frames <= limits.max_frames:
            raise InputError(f"Frames must be between 1 and {limits.max_frames} on this server (got {self.max_frames}).")
        if self.fps is not None and not 1 <= self.fps <= 60:
            raise InputError(f"Frame rate must be between 1 and 60 fps (got {self.fps:g}).")
        return self


@dataclass
class Extracted:
    """What step 1 hands to step 2 (kept in the page's session state)."""

    key: str  # photo hash + clip hash + settings: step 2 re-uses this only when it matches
    settings: MotionSettings
    motion: object  # xdyna_core.preprocess.motion.Motion
    reference: object  # uint8 [H, W, 3] the photo framed at the generation size
    driving: object  # uint8 [T, H, W, 3] the driving clip framed the same way (for side-by-side)
    skeleton_video: Path
    face_video: Path
    overlay: object  # uint8 [H, W, 3] first retargeted skeleton drawn over the photo
    facts: str  # markdown
    warnings: list = field(default_factory=list)


def extraction_key(photo, clip, settings: MotionSettings) -> str:
    return f"{file_hash(photo)}:{file_hash(clip)}:{settings}"


def _stage_progress(progress: Optional[ProgressFn], cancel: Optional[threading.Event], start: float, span: float):
    """A `progress(fraction, desc)` for one stage of a job that maps onto [start, start+span]
    of the whole job and stops it (returns False) when Cancel was pressed."""

    def report(fraction, desc=None, *_):
        if cancel is not None and cancel.is_set():
            return False
        if progress is not None and fraction is not None:
            progress(round(start + span * min(max(float(fraction), 0.0), 1.0), 4), _sentence(desc or ""))
        return True

    return report


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:] if text else text


def extract(photo, clip, settings: MotionSettings, *, limits: Limits, workdir: os.PathLike,
            progress: Optional[ProgressFn] = None, cancel: Optional[threading.Event] = None) -> Extracted:
    """Step 1: photo + driving clip -> `Extracted` (motion, preview videos, overlay, facts).

    Results of `extract_motion` are cached on disk by content and settings, so extracting
    the same pair again (another visitor, or after a restart) is instant."""
    settings = settings.validate(limits)
    photo = check_photo(photo, limits)
    clip, info = check_clip(clip, limits)
    key = extraction_key(photo, clip, settings)

    from xdyna_core.io import write_video
    from xdyna_core.preprocess.motion import extract_motion, face_patch_video, retarget_overlay

    motion_cache = cache_dir() / "motion"
    motion = extract_motion(
        str(clip), str(photo), size=(settings.height, settings.width), fps=settings.fps,
        max_frames=settings.max_frames, retarget=settings.retarget, keep_frames=True,
        cache_dir=motion_cache, progress=_stage_progress(progress, cancel, 0.0, 0.85))
    prune_cache(motion_cache, limits.cache_max_files)
    if cancel is not None and cancel.is_set():
        raise Cancelled("stopped by the user")
    workdir = Path(workdir)
    report = _stage_progress(progress, cancel, 0.85, 0.15)
    report(0.0, "Writing the previews")
    skeleton = write_video(workdir / "skeleton.mp4", for_display(motion.pose_images), motion.fps)
    report(0.5, "Writing the previews")
    faces = write_video(workdir / "face_patches.mp4", for_display(face_patch_video(motion)), motion.fps)
    overlay = for_display(retarget_overlay(motion=motion))
    return Extracted(key=key, settings=settings, motion=motion, reference=motion.reference_image,
                     driving=motion.driving_frames, skeleton_video=skeleton, face_video=faces, overlay=overlay,
                     facts=describe_motion(motion, info, settings), warnings=[_sentence(w) for w in motion.warnings])


PREVIEW_MIN_HEIGHT = 256  # small canvases (tiny model) are enlarged for viewing, pixels kept sharp


def for_display(frames, min_height: int = PREVIEW_MIN_HEIGHT):
    """Enlarge [.., H, W, 3] images by a whole factor (pixel repeat) so that H >= min_height:
    a 64-pixel skeleton stays crisp instead of being blurred by the browser."""
    import numpy as np

    h = frames.shape[-3]
    k = -(-min_height // h)
    if k <= 1:
        return frames
    return np.repeat(np.repeat(frames, k, axis=-3), k, axis=-2)


def describe_motion(motion, info, settings: MotionSettings) -> str:
    """Per-clip facts for people, as a markdown table."""
    T = motion.num_frames
    no_person = int((~motion.person_found).sum())
    no_face = int((~motion.face_found).sum())
    clip_len = f"{info.duration:.1f} s" if info.duration else "unknown length"
    clip_frames = f"{info.num_frames} frames" if info.num_frames else "? frames"
    rows = [
        ("Your clip", f"{clip_len} · {info.fps:.3g} fps · {clip_frames} · {info.width}×{info.height}"),
        ("Used", f"{T} frames at {motion.fps:.3g} fps = {motion.duration:.1f} s"
                 + (" (the start of the clip)" if info.duration and motion.duration < info.duration - 0.05 else "")),
        ("Video size", f"{motion.width}×{motion.height}"),
        ("Person found", f"{T - no_person} of {T} frames" + ("" if no_person == 0 else
                          f" — {no_person} frame(s) without a person get an empty skeleton")),
        ("Face found", f"{T - no_face} of {T} frames" + ("" if no_face == 0 else
                        f" — {no_face} frame(s) without a face keep a neutral expression")),
        ("Fit to photo", dict(retarget_choices_dict()).get(motion.retarget, motion.retarget)),
    ]
    if settings.fps is not None and info.fps and settings.fps > info.fps + 0.5:
        rows.append(("Note", f"you asked for {settings.fps:g} fps but the clip has {info.fps:.3g}: "
                             "frames are repeated, not invented"))
    return "\n".join(f"- **{k}:** {v}" for k, v in rows)


# --------------------------------------------------------------------------------------
# Step 2: animate
# --------------------------------------------------------------------------------------

WINDOW_SIZE = 16  # frames the motion modules see at once (official)
# Pipeline arguments that widgets (or the motion) set; every other pipeline argument a preset
# names (sampler, DeepCache, ...) has no widget and is applied as the preset says.
WIDGET_OPTIONS = ("height", "width", "num_inference_steps", "guidance_scale", "adapter_scale",
                  "pose_conditioning_scale", "face_conditioning_scale", "window_size", "window_overlap",
                  "window_schedule", "prompt", "negative_prompt")


def _preset_only_options() -> tuple:
    from xdyna_core.presets import CALL_KEYS

    return tuple(k for k in CALL_KEYS if k not in WIDGET_OPTIONS)


PRESET_ONLY_OPTIONS = _preset_only_options()
DEFAULT_FRAMES = 16  # frames animated unless the visitor asks for more: one window, 1.3 s at DEFAULT_FPS
DEFAULT_FPS = "12"  # page default frame rate (the examples' rate; the official launchers used 15)
_GENERATION_LOCK = threading.Lock()  # one generation per process (per GPU), whatever the queue does


@dataclass(frozen=True)
class GenerationSettings:
    """Everything that changes the generated video but not the motion (re-uses step 1)."""

    prompt: str = ""
    negative_prompt: str = ""
    num_inference_steps: int = 25
    guidance_scale: float = 7.5
    adapter_scale: float = 1.0
    pose_conditioning_scale: float = 1.0
    face_conditioning_scale: float = 1.0
    seed: int = 42
    window_size: int = WINDOW_SIZE
    window_overlap: int = 4
    window_schedule: str = "blend"
    extra: tuple = ()  # (name, value) pairs of pipeline options that only presets set (speed options)

    def validate(self, limits: Limits) -> "GenerationSettings":
        unknown = [k for k, _ in self.extra if k not in PRESET_ONLY_OPTIONS]
        if unknown:
            raise InputError(f"Unknown generation options {unknown}; allowed: {', '.join(PRESET_ONLY_OPTIONS)}.")
        if not 1 <= self.num_inference_steps <= limits.max_steps:
            raise InputError(f"Quality steps must be between 1 and {limits.max_steps} (got {self.num_inference_steps}).")
        if not 0 <= self.guidance_scale <= 30:
            raise InputError(f"'Follow the photo and prompt' must be between 0 and 30 (got {self.guidance_scale:g}).")
        # The tiny model's preset amplifies the adapter to 3.5, hence its wider range.
        for name, value, top in (("Look like my photo", self.adapter_scale, 4),
                                 ("Follow the body movement", self.pose_conditioning_scale, 3),
                                 ("Copy the facial expressions", self.face_conditioning_scale, 3)):
            if not 0 <= value <= top:
                raise InputError(f"'{name}' must be between 0 and {top} (got {value:g}).")
        if not 0 <= self.window_overlap < self.window_size:
            raise InputError(f"'Smooth joins' must be between 0 and {self.window_size - 1} frames "
                             f"(got {self.window_overlap}).")
        if not 0 <= self.seed < 2**63:
            raise InputError(f"The seed must be a whole number from 0 (got {self.seed}).")
        if self.window_schedule not in ("blend", "official"):
            raise InputError(f"Window schedule must be 'blend' or 'official' (got {self.window_schedule!r}).")
        return self


@dataclass
class Animation:
    video: Path
    side_by_side: Path
    num_frames: int
    fps: float
    width: int
    height: int
    seconds: float  # wall time of the generation
    seed: int


def generate(extracted: Extracted, settings: GenerationSettings, model: LoadedModel, *,
             progress: Optional[ProgressFn] = None, cancel: Optional[threading.Event] = None) -> tuple:
    """The GPU part of step 2: run the pipeline, return (frames uint8 [T,H,W,3], seconds).

    Progress per denoising step and window with an ETA (fractions 0..0.95); `cancel` is
    checked after every window of every step, the pipeline then raises `Cancelled` and the
    memory it held is freed. One generation at a time per process (one per GPU)."""
    import torch

    motion = extracted.motion
    pipe = model.pipe
    window = min(settings.window_size, motion.num_frames, getattr(pipe, "max_window_size", None) or 10**9)
    overlap = min(settings.window_overlap, window - 1)
    eta = ProgressETA(progress, 0.0, 0.9)
    decode = _stage_progress(progress, cancel, 0.9, 0.05)

    def on_progress(info):
        if cancel is not None and cancel.is_set():
            return False
        if info.stage == "denoise":
            text = f"Animating: step {info.step + 1} of {info.total_steps}"
            if info.num_windows > 1:
                text += f", frames part {info.window} of {info.num_windows}"
            eta(info.step * info.num_windows + info.window, info.total_steps * info.num_windows, text)
        else:
            decode(info.fraction, f"Turning the result into frames ({info.step}/{info.total_steps})")
        return True

    def on_step_end(_pipe, step, _timestep, kwargs):
        if cancel is not None and cancel.is_set():
            raise Cancelled(f"stopped by the user after step {step + 1}")
        return kwargs

    if progress:
        progress(0.0, "Waiting for the model" if _GENERATION_LOCK.locked() else "Preparing")
    with _GENERATION_LOCK:
        started = time.monotonic()
        try:
            out = pipe(
                image=extracted.reference, pose_images=motion.pose_images, face_images=motion.face_images,
                prompt=settings.prompt, negative_prompt=settings.negative_prompt,
                height=motion.height, width=motion.width, num_inference_steps=settings.num_inference_steps,
                guidance_scale=settings.guidance_scale, adapter_scale=settings.adapter_scale,
                pose_conditioning_scale=settings.pose_conditioning_scale,
                face_conditioning_scale=settings.face_conditioning_scale,
                window_size=window, window_overlap=overlap, window_schedule=settings.window_schedule,
                # A CPU generator gives the same video for the same seed on any device.
                generator=torch.Generator("cpu").manual_seed(settings.seed), output_type="uint8",
                progress=on_progress, callback_on_step_end=on_step_end, **dict(settings.extra))
            frames = out.frames
        except torch.cuda.OutOfMemoryError:
            free_memory()
            raise ModelUnavailable(
                f"The GPU ran out of memory for {motion.num_frames} frames at {motion.width}×{motion.height}. "
                "Try a smaller video size or fewer frames (memory grows with both).") from None
        finally:
            out = None
            free_memory()
        return frames, time.monotonic() - started


def save_animation(extracted: Extracted, frames, seconds: float, seed: int, *, workdir: os.PathLike,
                   progress: Optional[ProgressFn] = None) -> Animation:
    """Write the generated video and the side-by-side (driving | skeleton | generated) as
    H.264 mp4 files in `workdir` (no GPU needed: on ZeroGPU this runs after the GPU is released)."""
    from xdyna_core.io import side_by_side, write_video

    motion = extracted.motion
    workdir = Path(workdir)
    write = _stage_progress(progress, None, 0.95, 0.05)
    write(0.0, "Saving the video")
    video = write_video(workdir / f"xdyna_seed{seed}.mp4", frames, motion.fps)
    write(0.5, "Saving the side-by-side video")
    clips = [c for c in (extracted.driving, motion.pose_images) if c is not None] + [frames]
    labels = (["driving clip"] if extracted.driving is not None else []) + ["skeleton", "generated"]
    height = motion.height * -(-PREVIEW_MIN_HEIGHT // motion.height)  # whole-factor enlargement, as previews
    sbs = write_video(workdir / f"xdyna_seed{seed}_side_by_side.mp4",
                      side_by_side(*clips, labels=labels, height=height, length="shortest"), motion.fps)
    write(1.0, "Done")
    return Animation(video, sbs, int(len(frames)), float(motion.fps), motion.width, motion.height, seconds, seed)


def animate(extracted: Extracted, settings: GenerationSettings, model: LoadedModel, *, workdir: os.PathLike,
            progress: Optional[ProgressFn] = None, cancel: Optional[threading.Event] = None) -> Animation:
    """Step 2: `generate` then `save_animation`. Nothing is written when cancelled."""
    frames, seconds = generate(extracted, settings, model, progress=progress, cancel=cancel)
    return save_animation(extracted, frames, seconds, settings.seed, workdir=workdir, progress=progress)


def describe_result(result: Animation, model_label: str, reused: bool, extra: tuple = ()) -> str:
    motion = ("Motion re-used from step 1." if reused else "Motion extracted for this run.")
    if extra:
        motion += " Preset options: " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in extra) + "."
    return (f"**Done in {_duration(result.seconds)}** — {result.num_frames} frames at {result.fps:.3g} fps "
            f"({result.num_frames / result.fps:.1f} s), {result.width}×{result.height}, seed {result.seed}. "
            f"{motion} Model: {model_label}.\n\nChange any setting of step 2 and press Animate again: "
            "the motion is re-used, only the animation is redone.")


# --------------------------------------------------------------------------------------
# What the page offers (choices, presets, examples, system line)
# --------------------------------------------------------------------------------------

_RESOLUTIONS = [  # (width, height, words)
    (512, 896, "portrait · official size"),
    (512, 768, "portrait"),
    (384, 640, "portrait · faster"),
    (256, 448, "portrait · fast"),
    (128, 192, "portrait · tiny-model size"),
    (512, 512, "square"),
    (256, 256, "square · fast"),
    (128, 128, "square · tiny-model size"),
    (896, 512, "landscape"),
    (448, 256, "landscape · fast"),
    (64, 64, "thumbnail · fastest check"),
]


def parse_resolution(value) -> tuple:
    """'512x896' (width x height) -> (512, 896)."""
    try:
        w, h = (int(v) for v in str(value).lower().replace("×", "x").replace(" ", "").split("x"))
    except ValueError:
        raise InputError(f"Video size must look like 512x896 (width x height), got {value!r}.") from None
    return w, h


def resolution_choices(limits: Limits, extra=()) -> list:
    """(label, "WxH") pairs; `extra` adds sizes (e.g. a model's native size) not in the list."""
    known = {(a, b) for a, b, _ in _RESOLUTIONS}
    sizes = [(w, h, "model's own size") for w, h in dict.fromkeys(extra) if (w, h) not in known] + list(_RESOLUTIONS)
    return [(f"{w} × {h} · {words}", f"{w}x{h}") for w, h, words in sizes if max(w, h) <= limits.max_side]


def fps_choices() -> list:
    return [("Same as the clip", "clip"), ("8 fps", "8"), ("12 fps", "12"), ("15 fps · official", "15"),
            ("24 fps", "24"), ("30 fps", "30")]


def parse_fps(value) -> Optional[float]:
    if value in (None, "", "clip", 0, "0"):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        raise InputError(f"Frame rate must be a number or 'clip', got {value!r}.") from None


def retarget_choices_dict() -> list:
    return [("global", "Whole body"), ("limbs", "Limb by limb"), ("none", "Off")]


def retarget_choices() -> list:
    return [(label, value) for value, label in retarget_choices_dict()]


def native_size(choice: str) -> tuple:
    """(width, height) a model was made for, read from config files only (no torch)."""
    import json

    if choice == MODEL_OFFICIAL:
        return 512, 896
    folder = tiny_model_dir()
    if folder is not None:
        try:
            unet = json.loads((folder / "unet" / "config.json").read_text())
            vae = json.loads((folder / "vae" / "config.json").read_text())
            factor = 2 ** (len(vae["block_out_channels"]) - 1)
            size = unet["sample_size"]
            h, w = (size, size) if isinstance(size, int) else size  # an int means square
            return max(64, int(w) * factor // 64 * 64), max(64, int(h) * factor // 64 * 64)
        except (OSError, KeyError, ValueError, TypeError):
            log.warning("could not read the native size of %s", folder)
    return UNTRAINED_TINY_SIZE, UNTRAINED_TINY_SIZE


def preset_choices() -> list:
    from xdyna_core.presets import list_presets, load_preset

    out = []
    for name in list_presets():
        try:
            out.append((f"{name} — {load_preset(name).get('description', '')}".rstrip(" —"), name))
        except InputError as err:  # a hand-edited preset with a mistake must not take the page down
            log.warning("skipping preset %s: %s", name, err)
    return out


def preset_for_model(choice: str) -> str:
    from xdyna_core.presets import list_presets

    names = list_presets()
    want = "official" if choice == MODEL_OFFICIAL else "tiny-offline"
    return want if want in names else (names[0] if names else "")


def preset_values(name: str, limits: Limits, choice: Optional[str] = None) -> dict:
    """A preset file as values for the page's widgets (keys = the app's PRESET_FIELDS)."""
    from xdyna_core.presets import load_preset

    p = load_preset(name) if name else {}
    model = choice or (MODEL_OFFICIAL if p.get("model") == MODEL_OFFICIAL else MODEL_TINY)
    nat_w, nat_h = native_size(model)
    width, height = p.get("width") or nat_w, p.get("height") or nat_h
    scale = min(1.0, limits.max_side / max(width, height))  # respect this server's size limit
    width, height = max(64, int(width * scale) // 64 * 64), max(64, int(height * scale) // 64 * 64)
    defaults = GenerationSettings()
    return {
        "resolution": f"{width}x{height}",
        "guidance_scale": float(p.get("guidance_scale", defaults.guidance_scale)),
        "adapter_scale": float(p.get("adapter_scale", defaults.adapter_scale)),
        "pose_strength": float(p.get("pose_conditioning_scale", defaults.pose_conditioning_scale)),
        "face_strength": float(p.get("face_conditioning_scale", defaults.face_conditioning_scale)),
        "steps": min(int(p.get("num_inference_steps", defaults.num_inference_steps)), limits.max_steps),
        "window_overlap": int(min(p.get("window_overlap", defaults.window_overlap), WINDOW_SIZE // 2)),
        "window_schedule": str(p.get("window_schedule", defaults.window_schedule)),
        "seed": int(p.get("seed", defaults.seed)),
        "prompt": str(p.get("prompt", "")),
        "negative_prompt": str(p.get("negative_prompt", "")),
    }


def preset_extras(name: str) -> tuple:
    """The options of a preset that have no widget (e.g. sampler, DeepCache), as (name, value)
    pairs for `GenerationSettings.extra`. An empty name gives none."""
    from xdyna_core.presets import load_preset

    if not name:
        return ()
    p = load_preset(name)
    return tuple((k, p[k]) for k in PRESET_ONLY_OPTIONS if p.get(k) is not None)


def window_schedule_choices() -> list:
    return [("Blend the pieces (no loop)", "blend"), ("Official (loops back to the start)", "official")]


def example_pairs() -> list:
    """[photo, clip] pairs from assets/examples/ (made by the project's generator, see its
    README). `examples.json` maps each file to its metadata; "photo" and "driving" kinds are
    paired in name order (photo_1 with dance_1, ...). Without a manifest, image and video
    files are paired in name order."""
    import json

    if not EXAMPLES_DIR.is_dir():
        return []
    photos = clips = None
    manifest = EXAMPLES_DIR / "examples.json"
    if manifest.is_file():
        try:
            meta = json.loads(manifest.read_text())
            photos = sorted(EXAMPLES_DIR / k for k, v in meta.items() if v.get("kind") == "photo")
            clips = sorted(EXAMPLES_DIR / k for k, v in meta.items() if v.get("kind") == "driving")
        except (ValueError, AttributeError) as err:
            log.warning("ignoring %s: %s", manifest, err)
    if photos is None:
        photos = sorted(p for p in EXAMPLES_DIR.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".webp"))
        clips = sorted(p for p in EXAMPLES_DIR.iterdir() if p.suffix.lower() in (".mp4", ".webm", ".mov"))
    photos = [p for p in photos if p.is_file()]
    clips = [c for c in clips if c.is_file()]
    if not photos or not clips:
        return []
    n = max(len(photos), len(clips))
    return [[str(photos[i % len(photos)]), str(clips[i % len(clips)])] for i in range(n)]


def describe_system(choice: str, models: Optional[ModelManager] = None) -> str:
    """One line for the page: device, precision, memory, and what the chosen model means here."""
    info = device_info()
    loaded = models.loaded if models is not None else None
    if choice == MODEL_OFFICIAL:
        if info.device != "cuda":
            model = ("**Official X-Dyna needs a CUDA GPU and this machine has none.** Pick the embedded tiny "
                     "model, or run the studio on a GPU machine (12 GB or more).")
        elif loaded is not None and loaded.choice == MODEL_OFFICIAL:
            model = "**Model:** official X-Dyna, loaded and ready."
        else:
            model = ("**Model:** official X-Dyna — " + ("found locally" if official_model_dir() else
                     "downloaded on first use (≈ 9 GB; progress is shown)") + ".")
        dtype = info.dtype
    else:
        trained = tiny_model_dir() is not None
        model = ("**Model:** embedded tiny model" + (" (trained on synthetic dancers; rough, but it moves)" if trained
                 else " — **untrained demo weights**: the trained tiny model is not installed "
                      "(assets/tiny-xdyna), so the video will be noise-like. Everything else works."))
        dtype = "float32"
    return f"{replace(info, dtype=dtype).describe()} · {model}"


def warm_up(models: ModelManager, choice: str) -> None:
    """Import the heavy libraries and load the default model in the background after the page
    is served, so the first click is quick. Failures are only logged: the click will report them."""
    try:
        started = time.monotonic()
        import xdyna_core.preprocess.motion  # noqa: F401
        if choice == MODEL_TINY:
            models.get(choice)
        log.info("warm-up done in %.1f s", time.monotonic() - started)
    except Exception:  # noqa: BLE001
        log.warning("warm-up failed (the first job will try again)", exc_info=True)
