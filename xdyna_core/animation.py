"""The one orchestration home: a photo + a driving clip (or a saved `Motion`) + settings ->
an `Animation`. The studio, `xdyna animate`, `xdyna extract` and Python callers all come
through here, so the same inputs, settings and seed give the same frames through every door.

    from xdyna_core import animate, resolve_settings
    result = animate("photo.jpg", "dance.mp4", resolve_settings(model="tiny", size="64x128", seed=5))
    save_video(result, "out.mp4")

Steps: resolve the settings (preset < explicit values; `resolve_settings`), check the inputs,
extract the motion (cached on disk; `extract`), load the model once per process
(`runtime.MODELS`), generate (`generate`), and write videos (`save_video`, `save_side_by_side`).
"""

from __future__ import annotations

import os
import threading
import time
import warnings
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple, Union

import cv2
import numpy as np
import torch

from xdyna_core import audio, distributed, io
from xdyna_core.distributed import World
from xdyna_core.errors import Cancelled, InputError, ModelUnavailable
from xdyna_core.limits import Limits, check_clip, check_photo, prune_cache
from xdyna_core.pipeline import XDynaPipeline
from xdyna_core.preprocess.motion import RETARGET_MODES, Motion, check_person, default_cache_dir, extract_motion
from xdyna_core.presets import CALL_KEYS, load_preset
from xdyna_core.runtime import (MODEL_TINY, MODELS, LoadedModel, ModelManager, ModelSpec, free_memory, native_size,
                                resolve_device, resolve_dtype, resolve_model)
from xdyna_core.sizes import format_size, parse_size

WINDOW_SIZE = 16  # frames the motion modules see at once (official)
SIDE_BY_SIDE_MIN_HEIGHT = 256  # small canvases (tiny model) are enlarged by a whole factor for viewing

# Generation settings with a field of their own; every other pipeline argument a preset or a
# caller names (sampler, DeepCache, strength, ...) travels in `GenerationSettings.extra`.
NAMED_OPTIONS = ("prompt", "negative_prompt", "num_inference_steps", "guidance_scale", "adapter_scale",
                 "pose_conditioning_scale", "face_conditioning_scale", "window_size", "window_overlap",
                 "window_schedule")
EXTRA_OPTIONS = tuple(k for k in CALL_KEYS if k not in NAMED_OPTIONS + ("height", "width"))
MOTION_OPTIONS = ("size", "height", "width", "fps", "max_frames", "retarget", "estimator", "pose_every", "smooth",
                  "person")

ProgressFn = Callable[["Progress"], Optional[bool]]
GENERATION_LOCK = threading.Lock()  # one generation per process (one per GPU), whatever the callers do


# --------------------------------------------------------------------------------------
# Settings
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MotionSettings:
    """Everything that changes the extracted motion. `height`/`width` None: the model's (or the
    preset's) size for a clip, the saved size for a `Motion`."""

    height: Optional[int] = None
    width: Optional[int] = None
    fps: Optional[float] = None  # None keeps the clip's frame rate
    max_frames: Optional[int] = None  # None: extract_motion's default (600)
    retarget: str = "global"
    estimator: str = "auto"
    pose_every: int = 1
    smooth: bool = True
    person: Optional[int] = None  # the dancer to follow (1 = leftmost, `people.find_dancers`); None: the most visible

    @property
    def size(self) -> Optional[Tuple[int, int]]:
        return None if self.height is None else (self.height, self.width)

    def validate(self, limits: Optional[Limits] = None) -> "MotionSettings":
        if self.retarget not in RETARGET_MODES:
            raise InputError(f"retarget must be one of {', '.join(RETARGET_MODES)} (got {self.retarget!r}).")
        if (self.height is None) != (self.width is None):
            raise InputError("give both height and width, or neither")
        if self.height is not None:
            parse_size((self.height, self.width))
            if limits is not None and max(self.height, self.width) > limits.max_side:
                raise InputError(f"size {format_size(self.height, self.width)} is above this server's limit of "
                                 f"{limits.max_side} pixels per side.")
        top = limits.max_frames if limits is not None else None
        if self.max_frames is not None and not (1 <= self.max_frames and (top is None or self.max_frames <= top)):
            raise InputError(f"max_frames must be between 1 and {top or 'the clip length'} (got {self.max_frames}).")
        if self.fps is not None and not 1 <= self.fps <= 60:
            raise InputError(f"fps must be between 1 and 60 (got {self.fps:g}).")
        if int(self.pose_every) < 1:
            raise InputError(f"pose_every must be at least 1 (got {self.pose_every}).")
        check_person(self.person)
        return self


@dataclass(frozen=True)
class GenerationSettings:
    """Everything that changes the generated video but not the motion."""

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
    extra: tuple = ()  # sorted (name, value) pairs of the other pipeline options (EXTRA_OPTIONS)

    def validate(self, limits: Optional[Limits] = None) -> "GenerationSettings":
        unknown = [k for k, _ in self.extra if k not in EXTRA_OPTIONS]
        if unknown:
            raise InputError(f"Unknown generation options {unknown}; allowed: {', '.join(EXTRA_OPTIONS)}.")
        top = limits.max_steps if limits is not None else 1000
        if not 1 <= self.num_inference_steps <= top:
            raise InputError(f"num_inference_steps must be between 1 and {top} (got {self.num_inference_steps}).")
        if not 0 <= self.guidance_scale <= 30:
            raise InputError(f"guidance_scale must be between 0 and 30 (got {self.guidance_scale:g}).")
        # The tiny model's preset amplifies the adapter to 3.5, hence its wider range.
        for name, top in (("adapter_scale", 4), ("pose_conditioning_scale", 3), ("face_conditioning_scale", 3)):
            value = getattr(self, name)
            if not 0 <= value <= top:
                raise InputError(f"{name} must be between 0 and {top} (got {value:g}).")
        if not 0 <= self.window_overlap < self.window_size:
            raise InputError(f"window_overlap must be between 0 and {self.window_size - 1} frames "
                             f"(got {self.window_overlap}).")
        if not 0 <= self.seed < 2**63:
            raise InputError(f"seed must be a whole number from 0 (got {self.seed}).")
        if self.window_schedule not in ("blend", "official"):
            raise InputError(f"window_schedule must be 'blend' or 'official' (got {self.window_schedule!r}).")
        return self

    def pipeline_kwargs(self) -> Dict[str, Any]:
        """The `XDynaPipeline.__call__` arguments these settings stand for (not the seed)."""
        kwargs = {name: getattr(self, name) for name in NAMED_OPTIONS}
        kwargs.update(dict(self.extra))
        return kwargs


@dataclass(frozen=True)
class Settings:
    """A resolved request: which model, how to extract, how to generate, where to run."""

    model: ModelSpec
    motion: MotionSettings
    generation: GenerationSettings
    default_size: Tuple[int, int]  # (height, width) for clips when motion.size is None
    dtype: str = "auto"  # asked for explicitly ("auto": `runtime.resolve_dtype` decides)
    preset_dtype: Optional[str] = None  # the preset's dtype (used on a GPU)
    device: str = "auto"
    preset: str = ""  # the preset's name or path, for the record

    def validate(self, limits: Optional[Limits] = None) -> "Settings":
        self.motion.validate(limits)
        self.generation.validate(limits)
        return self


def _number(name: str, value, kind):
    try:
        out = kind(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a number, got {value!r}") from None
    if isinstance(out, float) and not np.isfinite(out):
        raise InputError(f"{name} must be a finite number, got {value!r}")
    return out


def resolve_settings(model: Union[str, ModelSpec, None] = None, preset: Union[str, dict, None] = None,
                     **overrides) -> Settings:
    """The one place that turns what someone asked into settings: the preset's values (default:
    "tiny-offline" for the tiny model, else "official"), overridden by every value given here
    that is not None. Names: `MOTION_OPTIONS` (`size` as "WIDTHxHEIGHT" or (height, width)),
    the pipeline's argument names, `seed`, `dtype`, `device`."""
    values = None
    if preset not in (None, ""):
        values = dict(preset) if isinstance(preset, dict) else load_preset(preset)
        model = model or values.get("model")  # a preset may name its model ("tiny", "official", a folder)
    spec = model if isinstance(model, ModelSpec) else resolve_model(model)
    if values is None:
        preset = "tiny-offline" if spec.choice == MODEL_TINY else "official"
        values = load_preset(preset)
    preset_name = "" if isinstance(preset, dict) else str(preset)
    given = {k: v for k, v in overrides.items() if v is not None}
    unknown = sorted(set(given) - set(MOTION_OPTIONS) - set(CALL_KEYS) - {"seed", "dtype", "device"})
    if unknown:
        raise InputError(f"unknown settings {unknown}")

    preset_size = (values.get("height"), values.get("width"))
    default_size = preset_size if None not in preset_size else native_size(spec)
    size = given.pop("size", None)
    height, width = given.pop("height", None), given.pop("width", None)
    if size is not None:
        height, width = parse_size(size)
    elif (height is None) != (width is None):
        raise InputError("give both height and width, or neither")
    motion = MotionSettings(
        height=None if height is None else int(height), width=None if width is None else int(width),
        fps=None if given.get("fps") is None else _number("fps", given.pop("fps"), float),
        max_frames=None if given.get("max_frames") is None else _number("max_frames", given.pop("max_frames"), int),
        retarget=str(given.pop("retarget", "global")), estimator=str(given.pop("estimator", "auto")),
        pose_every=int(given.pop("pose_every", 1)), smooth=bool(given.pop("smooth", True)),
        person=check_person(given.pop("person", None)))

    merged = {k: v for k, v in values.items() if k in CALL_KEYS and k not in ("height", "width")}
    merged.update({k: v for k, v in given.items() if k in CALL_KEYS})
    defaults = GenerationSettings()
    named = {}
    for name in NAMED_OPTIONS:
        value = merged.pop(name, getattr(defaults, name))
        kind = type(getattr(defaults, name))
        named[name] = str(value) if kind is str else _number(name, value, kind)
    seed = _number("seed", given.get("seed", values.get("seed", defaults.seed)), int)
    generation = GenerationSettings(**named, seed=seed, extra=tuple(sorted(merged.items())))
    return Settings(model=spec, motion=motion, generation=generation, default_size=tuple(default_size),
                    dtype=str(given.get("dtype") or "auto"), preset_dtype=values.get("dtype"),
                    device=str(given.get("device") or "auto"), preset=preset_name).validate()


# --------------------------------------------------------------------------------------
# Progress
# --------------------------------------------------------------------------------------


@dataclass
class Progress:
    """What a `progress` callable receives: the stage ("extract", "load", "denoise", "decode"),
    the share of the whole job done (0..1), and the units of this stage (`done` of `total`: 1/1000
    of the extraction, steps x windows for denoising, VAE chunks for decoding). Denoising also
    names the step and window; `detail` is the extraction's own word for its stage. Returning
    False stops the job (`Cancelled`)."""

    stage: str
    fraction: float
    done: int
    total: int
    step: int = 0  # denoise: 1-based step, of num_steps
    num_steps: int = 0
    window: int = 0  # denoise: windows of this step done, of num_windows
    num_windows: int = 0
    detail: str = ""


class _Job:
    """Forwards progress of one stage, mapped onto [start, start + span] of the whole job, and
    stops the job when `cancel` is set or the callable returns False."""

    def __init__(self, progress: Optional[ProgressFn], cancel: Optional[threading.Event]):
        self.progress, self.cancel = progress, cancel

    def stopped(self) -> bool:
        return self.cancel is not None and self.cancel.is_set()

    def report(self, event: Progress) -> bool:
        if self.stopped():
            return False
        if self.progress is not None and self.progress(event) is False:
            if self.cancel is not None:
                self.cancel.set()
            return False
        return True

    def check(self, what: str = "stopped by the user") -> None:
        if self.stopped():
            raise Cancelled(what)


# --------------------------------------------------------------------------------------
# Step 1: motion
# --------------------------------------------------------------------------------------


def extract(photo, clip, settings: MotionSettings, *, size: Optional[Tuple[int, int]] = None,
            keep_frames: bool = False, cache_dir=None, limits: Optional[Limits] = None,
            progress: Optional[ProgressFn] = None, cancel: Optional[threading.Event] = None,
            span: Tuple[float, float] = (0.0, 1.0)) -> Motion:
    """Photo + driving clip -> `Motion` at `settings.size` (or `size` when that is None).
    Results are cached on disk by content and settings (`cache_dir`, default
    `$XDYNA_CACHE_DIR/motion`; False turns the cache off), so the same pair is extracted once.
    `limits` (a server's) refuses files and settings beyond them before anything is decoded."""
    settings = settings.validate(limits)
    if limits is not None:
        check_photo(photo, limits)
        check_clip(clip, limits)
    size = settings.size or size
    if size is None:
        raise InputError("no size given for the motion: pass a size, e.g. 512x896")
    job = _Job(progress, cancel)
    start, width = span

    def on_progress(fraction, desc=None, *_):
        fraction = min(max(float(fraction or 0.0), 0.0), 1.0)
        return job.report(Progress("extract", round(start + width * fraction, 4), int(1000 * fraction), 1000,
                                   detail=desc or ""))

    cache = default_cache_dir() if cache_dir is None else cache_dir
    motion = extract_motion(
        str(clip), photo if not isinstance(photo, Path) else str(photo), size=size, fps=settings.fps,
        **({} if settings.max_frames is None else {"max_frames": settings.max_frames}),
        retarget=settings.retarget, estimator=settings.estimator, smooth=settings.smooth,
        pose_every=settings.pose_every, keep_frames=keep_frames, cache_dir=cache, progress=on_progress,
        person=settings.person)
    if cache is not False and limits is not None:
        prune_cache(Path(cache), limits.cache_max_files, limits.cache_max_mb)
    job.check("motion extraction stopped by the user")
    return motion


def fit_frames(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bring control frames [T, h, w, C] to height x width: crop to the aspect the way the
    official S-Face mode does (`crop2ratio`: centred horizontally, a quarter of the excess from
    the top; a no-op when the aspect already matches, as for the official pose videos), then
    resize with INTER_AREA (the official pose-video filter)."""
    t, h, w, c = frames.shape
    if (h, w) == (height, width):
        return frames
    if w / h < width / height:
        tw, th = w, int(w / width * height)
    else:
        th, tw = h, int(h / height * width)
    y0, x0 = (h - th) // 4, (w - tw) // 2
    out = np.empty((t, height, width, c), np.uint8)
    for i in range(t):
        crop = np.ascontiguousarray(frames[i, y0: y0 + th, x0: x0 + tw])
        # cv2 resizes at most 4 channels at once: 6-channel face patches go 3 at a time
        parts = [cv2.resize(np.ascontiguousarray(crop[..., k: k + 3]), (width, height), interpolation=cv2.INTER_AREA)
                 for k in range(0, c, 3)]
        out[i] = np.concatenate([p.reshape(height, width, -1) for p in parts], axis=-1)
    return out


def fit_motion(motion: Motion, size: Optional[Tuple[int, int]], max_frames: Optional[int] = None) -> Motion:
    """A saved motion brought to another canvas size (and cut to `max_frames`)."""
    if max_frames is not None and max_frames < motion.num_frames:
        cut = {name: getattr(motion, name)[:max_frames] for name in
               ("pose_images", "face_images", "person_found", "face_found", "keypoints", "driving_keypoints")}
        for name in ("driving_frames", "timestamps"):
            value = getattr(motion, name)
            cut[name] = None if value is None else value[:max_frames]
        motion = replace(motion, **cut)
    if size is None or tuple(size) == motion.size:
        return motion
    h, w = size
    ref = motion.reference_image
    drv = motion.driving_frames
    return replace(motion, pose_images=fit_frames(motion.pose_images, h, w),
                   face_images=fit_frames(motion.face_images, h, w),
                   reference_image=None if ref is None else fit_frames(ref[None], h, w)[0],
                   driving_frames=None if drv is None else fit_frames(drv, h, w))


def motion_from_videos(pose_video, face_video=None, face_local_video=None, face_global_video=None, *,
                       fps: Optional[float] = None, max_frames: Optional[int] = None) -> Motion:
    """Official-style pre-rendered inputs -> `Motion`: a skeleton video on black, and S-Face
    patches as one video of [local | global] halves or as two videos. No photo framing: the
    pipeline crops the photo to the output aspect itself (docs/official-behaviour.md §34)."""
    pose_clip = io.read_video(pose_video, fps=fps, max_frames=max_frames)
    rate, n = float(pose_clip.fps), len(pose_clip.frames)
    pose = pose_clip.frames
    h, w = pose.shape[1:3]

    def read_same(path, what):
        clip = io.read_video(path, fps=rate, max_frames=n)
        if len(clip.frames) < n:
            raise InputError(f"{what} {Path(path).name} has {len(clip.frames)} frames at {rate:g} fps but the pose "
                             f"video has {n}; they must cover the same frames")
        return clip.frames

    face = np.zeros((n, h, w, 6), np.uint8)
    if face_video:
        sbs = read_same(face_video, "face video")
        half = sbs.shape[2] // 2
        if half == 0 or sbs.shape[2] % 2:
            raise InputError(f"the face video must hold [local | global] patches side by side (even width); it is "
                             f"{sbs.shape[2]} pixels wide")
        face = np.concatenate([fit_frames(sbs[:, :, :half], h, w), fit_frames(sbs[:, :, half:], h, w)], axis=-1)
    elif face_local_video or face_global_video:
        if not (face_local_video and face_global_video):
            raise InputError("the local and global face videos go together")
        face = np.concatenate([fit_frames(read_same(face_local_video, "face local video"), h, w),
                               fit_frames(read_same(face_global_video, "face global video"), h, w)], axis=-1)
    found = (pose.reshape(n, -1).max(axis=1) > 0)
    zeros = np.zeros((n, 128, 3), np.float32)
    return Motion(pose_images=pose, face_images=face, fps=rate, person_found=found,
                  face_found=face.reshape(n, -1).max(axis=1) > 0, keypoints=zeros, driving_keypoints=zeros,
                  source={"pose_video": str(pose_video)}).validate()


# --------------------------------------------------------------------------------------
# Step 2: generation
# --------------------------------------------------------------------------------------


@dataclass
class Animation:
    """The result of `animate`: uint8 frames [T, H, W, 3] at `fps`, the `Motion` that drove them,
    the resolved settings, seconds per stage, the driving clip whose sound goes with the frames
    (None: no clip known, the videos are silent) and warnings the writing gave."""

    frames: np.ndarray
    fps: float
    motion: Motion
    settings: Settings
    timings: Dict[str, float] = field(default_factory=dict)
    clip: Optional[str] = None
    warnings: list = field(default_factory=list)

    @property
    def num_frames(self) -> int:
        return int(len(self.frames))

    @property
    def height(self) -> int:
        return int(self.frames.shape[1])

    @property
    def width(self) -> int:
        return int(self.frames.shape[2])

    @property
    def seed(self) -> int:
        return self.settings.generation.seed


def load_model(settings: Settings, models: ModelManager = MODELS, offload: bool = False,
               progress: Optional[ProgressFn] = None) -> LoadedModel:
    """The settings' model on their device and dtype (`runtime.resolve_dtype`), loaded once per process."""
    device = resolve_device(settings.device)
    dtype = resolve_dtype(device, settings.dtype, preset_dtype=settings.preset_dtype)
    on_load = None if progress is None else (lambda spec: progress(Progress("load", 0.0, 0, 1)))
    loaded = models.get(settings.model, device, dtype, offload=offload, on_load=on_load)
    if progress is not None:
        progress(Progress("load", 0.0, 1, 1))
    return loaded


def generate(model: LoadedModel, photo: np.ndarray, motion: Motion, settings: GenerationSettings, *,
             progress: Optional[ProgressFn] = None, cancel: Optional[threading.Event] = None,
             span: Tuple[float, float] = (0.0, 1.0), world: Optional[World] = None) -> np.ndarray:
    """Run the pipeline on a motion: uint8 frames [T, H, W, 3]. The VAE sees the photo as framed
    by the extraction (`motion.reference_image`; the pipeline crops a raw photo itself), the CLIP
    image encoder the photo as given, uncropped (docs/official-behaviour.md §22). A CPU generator
    seeded with `settings.seed`: the same video for the same seed on any device. One generation
    at a time per process; `cancel` is checked after every window of every step. `world`: the
    processes sharing this generation's windows (`XDynaPipeline.__call__`); each of them calls
    this with the same arguments and gets the same frames."""
    pipe: XDynaPipeline = model.pipe
    job = _Job(progress, cancel)
    start, width = span
    denoise_end = start + width * 0.94
    face = motion.face_images if pipe.controlnet_face is not None else None
    kwargs = settings.pipeline_kwargs()
    window = min(kwargs["window_size"], motion.num_frames, getattr(pipe, "max_window_size", None) or 10**9)
    kwargs["window_size"], kwargs["window_overlap"] = window, min(kwargs["window_overlap"], window - 1)

    def on_progress(info):
        if info.stage == "denoise":
            total = info.total_steps * info.num_windows
            done = info.step * info.num_windows + info.window
            event = Progress("denoise", round(start + (denoise_end - start) * done / total, 4), done, total,
                             step=info.step + 1, num_steps=info.total_steps, window=info.window,
                             num_windows=info.num_windows)
        else:
            event = Progress("decode", round(denoise_end + (start + width - denoise_end) * info.step / info.total_steps, 4),
                             info.step, info.total_steps)
        return job.report(event)

    def on_step_end(_pipe, step, _timestep, step_kwargs):
        job.check(f"stopped by the user after step {step + 1}")
        return step_kwargs

    with GENERATION_LOCK:
        try:
            out = pipe(
                image=motion.reference_image if motion.reference_image is not None else photo,
                ip_adapter_image=photo, pose_images=motion.pose_images, face_images=face,
                height=motion.height, width=motion.width,
                generator=torch.Generator("cpu").manual_seed(settings.seed), output_type="uint8",
                progress=on_progress, callback_on_step_end=on_step_end, world=world, **kwargs)
            return out.frames
        except torch.cuda.OutOfMemoryError:
            raise ModelUnavailable(
                f"The GPU ran out of memory for {motion.num_frames} frames at {format_size(*motion.size)}. "
                "Try a smaller video size or fewer frames (memory grows with both).") from None
        finally:
            out = None
            free_memory()


def clip_of(motion: Motion) -> Optional[str]:
    """The clip a motion was extracted from, when that file is still there with the same content
    (its sha256 is recorded at extraction); else None."""
    path, digest = motion.source.get("path"), motion.source.get("sha256")
    if not path or not digest or not os.path.isfile(path):
        return None
    try:
        return path if io.file_digest(path) == digest else None
    except OSError:
        return None


def animate(photo, clip_or_motion, settings: Union[Settings, dict, None] = None, *, model=None,
            models: ModelManager = MODELS, limits: Optional[Limits] = None, cache_dir=None,
            keep_frames: bool = True, offload: bool = False, progress: Optional[ProgressFn] = None,
            cancel: Optional[threading.Event] = None, audio_clip=None,
            world: Union[World, None, str] = "auto") -> Animation:
    """Animate `photo` (path, PIL image or uint8 array) with `clip_or_motion`: a driving clip
    (path; its motion is extracted, cached) or a `Motion` (`extract`, `Motion.load`,
    `motion_from_videos`). `settings`: a `Settings` from `resolve_settings`, or a dict of its
    keyword arguments (then `model` picks the model: "tiny", "official" or a folder).
    `audio_clip`: the clip a given `Motion` was extracted from, whose sound goes with the result
    (default: the clip the motion records, if that file is still there unchanged; pose videos
    have none). Inputs are checked before the model is loaded; nothing is written.

    Several processes (`torchrun`, `accelerate launch`; `world` "auto" joins their process group,
    a `World` names it, None keeps this process alone): every rank calls `animate` with the same
    arguments; rank 0 reads the photo and extracts the motion and shares both, each rank loads
    the model on its own device (cuda:LOCAL_RANK) and denoises its share of the windows, and every
    rank returns the same `Animation` (only rank 0's motion keeps the driving frames). Under torchrun
    a rank that animates alone (its own job) passes `world=None`."""
    if not isinstance(settings, Settings):
        settings = resolve_settings(model=model, **(settings or {}))
    settings.validate(limits)
    if world == "auto":
        world = distributed.auto_world()
    timings = {}
    job = _Job(progress, cancel)
    started = time.monotonic()
    if world is None:
        image, motion, gen_span, clip = _inputs(photo, clip_or_motion, settings, limits, cache_dir, keep_frames,
                                                progress, cancel, audio_clip)
    else:
        kept = {}

        def on_main():  # the other ranks need neither the files nor the driving frames
            image, motion, gen_span, clip = _inputs(photo, clip_or_motion, settings, limits, cache_dir, keep_frames,
                                                    progress, cancel, audio_clip)
            kept["motion"] = motion
            return image, replace(motion, driving_frames=None), gen_span, clip

        image, motion, gen_span, clip = world.from_main(on_main)
        motion = kept.get("motion", motion)
        world.log(f"{'extracted the motion and shared it' if world.is_main else 'motion from rank 0'}: "
                  f"{motion.num_frames} frames at {format_size(*motion.size)}")
        settings = replace(settings, device=world.device(settings.device))  # each rank its own GPU
    timings["extract"] = time.monotonic() - started

    started = time.monotonic()
    with (world.together() if world is not None else nullcontext()):  # a rank cancelled or failing to load stops all
        job.check()
        loaded = load_model(settings, models, offload=offload, progress=progress)
    timings["load"] = time.monotonic() - started
    started = time.monotonic()
    frames = generate(loaded, image, motion, settings.generation, progress=progress, cancel=cancel, span=gen_span,
                      world=world)
    timings["generate"] = time.monotonic() - started
    return Animation(frames=frames, fps=float(motion.fps), motion=motion, settings=settings, timings=timings, clip=clip)


def _inputs(photo, clip_or_motion, settings: Settings, limits, cache_dir, keep_frames, progress, cancel,
            audio_clip=None):
    """`animate`'s first stage: (photo as uint8 RGB, the motion on the canvas, the progress span
    left for generation, the clip whose sound goes with the result)."""
    if limits is not None and isinstance(photo, (str, Path)):
        check_photo(photo, limits)
    image = io.load_image(photo)  # an unreadable photo is refused before any model is loaded
    if isinstance(clip_or_motion, Motion):
        clip = os.fspath(audio_clip) if audio_clip is not None else clip_of(clip_or_motion)
        return image, fit_motion(clip_or_motion, settings.motion.size, settings.motion.max_frames), (0.0, 1.0), clip
    if clip_or_motion is None or not Path(clip_or_motion).is_file():
        raise InputError(f"driving clip not found: {clip_or_motion}")
    motion = extract(photo, clip_or_motion, settings.motion, size=settings.default_size, keep_frames=keep_frames,
                     cache_dir=cache_dir, limits=limits, progress=progress, cancel=cancel, span=(0.0, 0.3))
    return image, motion, (0.3, 0.7), os.fspath(clip_or_motion)


# --------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------


def _write(animation: Animation, path, frames, keep_audio: bool) -> Path:
    """Write frames at the animation's rate with the stretch of the driving clip's sound they
    cover (`audio`); when the sound cannot be kept the video is written silent, and the warning
    goes to `animation.warnings` and Python's warnings (`audio.SoundWarning`)."""
    sound = warning = None
    if keep_audio and animation.clip is not None:
        try:
            sound = audio.sound_for(animation.clip, animation.motion.timestamps, animation.num_frames, animation.fps)
        except audio.SoundError as err:
            warning = audio.left_out(err)
    written, mux_warning = audio.write_with_sound(path, frames, animation.fps, sound)
    warning = warning or mux_warning
    if warning and warning not in animation.warnings:  # said once for the video and the side-by-side
        animation.warnings.append(warning)
        warnings.warn(warning, audio.SoundWarning, stacklevel=3)
    return written


def save_video(animation: Animation, path, keep_audio: bool = True) -> Path:
    """The generated video as H.264 mp4 at the motion's frame rate, written atomically, with the
    driving clip's sound cut to the animated stretch (keep_audio=False: silent)."""
    return _write(animation, path, animation.frames, keep_audio)


def save_side_by_side(animation: Animation, path, min_height: int = SIDE_BY_SIDE_MIN_HEIGHT,
                      keep_audio: bool = True) -> Path:
    """driving clip | skeleton | generated, side by side (small canvases enlarged by a whole
    factor so they stay sharp), written atomically, with the sound as `save_video`."""
    motion = animation.motion
    clips = [c for c in (motion.driving_frames, motion.pose_images) if c is not None] + [animation.frames]
    labels = (["driving clip"] if motion.driving_frames is not None else []) + ["skeleton", "generated"]
    height = motion.height * -(-min_height // motion.height)
    return _write(animation, path, io.side_by_side(*clips, labels=labels, height=height, length="shortest"), keep_audio)
