"""The studio's view-model: what `app.py`'s widgets offer and say (choices, labels, sentences,
previews), over the engine's services (`xdyna_core.animation`, `.runtime`, `.limits`).
Nothing here imports gradio, so it is tested without a browser.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from xdyna_core import resources
from xdyna_core.animation import WINDOW_SIZE, MotionSettings, Progress, Settings, extract, load_model, resolve_settings
from xdyna_core.errors import InputError
from xdyna_core.io import file_digest, save_image, write_video
from xdyna_core.limits import Limits, check_clip, check_photo
from xdyna_core.preprocess.motion import face_patch_video, retarget_overlay
from xdyna_core.preprocess.people import Dancers, dancer_at, draw_dancers, find_dancers
from xdyna_core.presets import list_presets, load_preset
from xdyna_core.runtime import MODEL_OFFICIAL, MODEL_TINY, DeviceInfo, ModelManager, device_info, native_size, \
    official_model_dir, resolve_model, tiny_model_dir
from xdyna_core.sizes import format_size, parse_size

log = logging.getLogger("xdyna.app")

# Progress shown to people: fraction in [0, 1] and a sentence.
ReportFn = Callable[[float, str], None]

DEFAULT_FRAMES = 16  # frames animated unless the visitor asks for more: one window, 1.3 s at DEFAULT_FPS
DEFAULT_FPS = "12"  # page default frame rate (the examples' rate; the official launchers used 15)
PREVIEW_MIN_HEIGHT = 256  # small canvases (tiny model) are enlarged for viewing, pixels kept sharp

# The engine names settings as the pipeline does; people see the widgets' labels.
LABELS = {
    "window_overlap": "Smooth joins",
    "num_inference_steps": "Quality steps",
    "guidance_scale": "Follow the photo and prompt",
    "adapter_scale": "Look like my photo",
    "pose_conditioning_scale": "Follow the body movement",
    "face_conditioning_scale": "Copy the facial expressions",
    "max_frames": "Frames to animate",
    "retarget": "Retarget mode",
    "fps": "Frame rate",
    "seed": "The seed",
    "window_schedule": "Window schedule",
    "size": "Video size",
    "person": "Dancer to follow",
}


def in_words(message: str) -> str:
    """An engine message with its setting names replaced by the labels people see."""
    text = re.sub(r"\b(" + "|".join(LABELS) + r")\b", lambda m: f"'{LABELS[m.group(1)]}'", message)
    return text[:1].upper() + text[1:]


# --------------------------------------------------------------------------------------
# Choices
# --------------------------------------------------------------------------------------


def model_choices() -> list:
    """(label, value) pairs for the model dropdown."""
    return [
        ("Embedded tiny model — runs on this CPU, offline, rough preview quality", MODEL_TINY),
        ("Official X-Dyna — best quality, needs a CUDA GPU with ≥ 12 GB (≈ 9 GB download on first use)", MODEL_OFFICIAL),
    ]


def model_label(choice: str) -> str:
    if choice == MODEL_OFFICIAL:
        return "Official X-Dyna"
    if tiny_model_dir() is None:
        return "Embedded tiny model — UNTRAINED demo weights (output is noise-like)"
    return "Embedded tiny model (trained on synthetic dancers)"


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


def resolution_choices(limits: Limits, extra=()) -> list:
    """(label, "WxH") pairs; `extra` adds (height, width) sizes (a model's own) not in the list."""
    known = {(w, h) for w, h, _ in _RESOLUTIONS}
    sizes = [(w, h, "model's own size") for h, w in dict.fromkeys(extra) if (w, h) not in known] + list(_RESOLUTIONS)
    return [(f"{w} × {h} · {words}", format_size(h, w)) for w, h, words in sizes if max(w, h) <= limits.max_side]


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


def window_schedule_choices() -> list:
    return [("Blend the pieces (no loop)", "blend"), ("Official (loops back to the start)", "official")]


def preset_choices() -> list:
    out = []
    for name in list_presets():
        try:
            out.append((f"{name} — {load_preset(name).get('description', '')}".rstrip(" —"), name))
        except InputError as err:  # a hand-edited preset with a mistake must not take the page down
            log.warning("skipping preset %s: %s", name, err)
    return out


def preset_for_model(choice: str) -> str:
    names = list_presets()
    want = "official" if choice == MODEL_OFFICIAL else "tiny-offline"
    return want if want in names else (names[0] if names else "")


def preset_values(name: str, limits: Limits, choice: Optional[str] = None) -> dict:
    """A preset as values for the page's widgets (keys = the app's PRESET_FIELDS), through the
    engine's resolver so the page starts from exactly what the CLI would use."""
    p = load_preset(name) if name else {}
    choice = choice or (MODEL_OFFICIAL if p.get("model") == MODEL_OFFICIAL else MODEL_TINY)
    s = resolve_settings(model=choice, preset=name or None)
    height, width = s.default_size
    scale = min(1.0, limits.max_side / max(width, height))  # respect this server's size limit
    width, height = max(64, int(width * scale) // 64 * 64), max(64, int(height * scale) // 64 * 64)
    g = s.generation
    return {
        "resolution": format_size(height, width),
        "guidance_scale": float(g.guidance_scale),
        "adapter_scale": float(g.adapter_scale),
        "pose_strength": float(g.pose_conditioning_scale),
        "face_strength": float(g.face_conditioning_scale),
        "steps": min(int(g.num_inference_steps), limits.max_steps),
        "window_overlap": int(min(g.window_overlap, WINDOW_SIZE // 2)),
        "window_schedule": str(g.window_schedule),
        "seed": int(g.seed),
        "prompt": g.prompt,
        "negative_prompt": g.negative_prompt,
    }


def example_pairs() -> list:
    """[photo, clip] pairs from the shipped examples (made by the project's generator, see their
    README). `examples.json` maps each file to its metadata; "photo" and "driving" kinds are
    paired in name order (photo_1 with dance_1, ...). Without a manifest, image and video
    files are paired in name order."""
    folder = resources.examples_dir()
    if not folder.is_dir():
        return []
    photos = clips = None
    manifest = folder / "examples.json"
    if manifest.is_file():
        try:
            meta = json.loads(manifest.read_text())
            photos = sorted(folder / k for k, v in meta.items() if v.get("kind") == "photo")
            clips = sorted(folder / k for k, v in meta.items() if v.get("kind") == "driving")
        except (ValueError, AttributeError) as err:
            log.warning("ignoring %s: %s", manifest, err)
    if photos is None:
        photos = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".webp"))
        clips = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".mp4", ".webm", ".mov"))
    photos = [p for p in photos if p.is_file()]
    clips = [c for c in clips if c.is_file()]
    if not photos or not clips:
        return []
    n = max(len(photos), len(clips))
    return [[str(photos[i % len(photos)]), str(clips[i % len(clips)])] for i in range(n)]


# --------------------------------------------------------------------------------------
# Sentences
# --------------------------------------------------------------------------------------


def _gib(n: Optional[float]) -> str:
    return "?" if n is None else f"{n / 1024**3:.1f} GB"


def describe_device(info: DeviceInfo) -> str:
    kind = "GPU" if info.device == "cuda" else "RAM"
    name = "ZeroGPU (a GPU is attached for each generation)" if info.name == "ZeroGPU" else info.name
    memory = ("not known until a generation starts" if info.memory_total is None else
              f"{_gib(info.memory_free)} free of {_gib(info.memory_total)}")
    return f"**Device:** {name} · **precision:** {info.dtype} · **{kind}:** {memory}"


# Measured with benchmarks/real_photo_eval.py (3 public-domain photos x 2 example dances, pose
# estimator on the enlarged result); keep in step with benchmarks/results/real_photo_eval_tiny_2clips.json.
TINY_MODEL_ON_REAL_PHOTOS = (
    "It shows how the studio works; it does not animate real photos yet: on real people's photos a pose "
    "estimator finds a person following the skeleton in none of its frames (repeating the photo does "
    "better). For real photos choose **Official X-Dyna** on a GPU.")


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
        model = ("**Model:** embedded tiny model" + (" (trained on synthetic dancers; rough, but it moves). "
                                                     + TINY_MODEL_ON_REAL_PHOTOS if trained
                 else " — **untrained demo weights**: the trained tiny model is not installed "
                      "(assets/tiny-xdyna), so the video will be noise-like. Everything else works."))
        dtype = "float32"
    info.dtype = dtype
    return f"{describe_device(info)} · {model}"


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


def describe_motion(motion, info, settings: MotionSettings) -> str:
    """Per-clip facts for people, as a markdown list."""
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


def _duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds} s"
    return f"{seconds // 60} min {seconds % 60:02d} s"


def describe_result(result, model_label: str, reused: bool, seconds: float) -> str:
    settings: Settings = result.settings
    motion = "Motion re-used from step 1." if reused else "Motion extracted for this run."
    if settings.generation.extra:
        motion += " Preset options: " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in settings.generation.extra) + "."
    return (f"**Done in {_duration(seconds)}** — {result.num_frames} frames at {result.fps:.3g} fps "
            f"({result.num_frames / result.fps:.1f} s), {result.width}×{result.height}, seed {result.seed}. "
            f"{motion} Model: {model_label}.\n\nChange any setting of step 2 and press Animate again: "
            "the motion is re-used, only the animation is redone."
            + "".join(f"\n\n**Note:** {text}" for text in getattr(result, "warnings", [])))


# --------------------------------------------------------------------------------------
# Progress with ETA
# --------------------------------------------------------------------------------------


class ProgressETA:
    """Turns "unit k of n done" into a fraction and a sentence with the time left."""

    def __init__(self, report: Optional[ReportFn] = None, start: float = 0.0, span: float = 1.0):
        self.report, self.start, self.span = report, start, span
        self.first_done: Optional[tuple] = None

    def left(self, done: float, total: float) -> str:
        """" · about 12 s left", measured from the first unit reported (set-up time is not a step)."""
        now = time.monotonic()
        if self.first_done is None:
            self.first_done = (done, now)
        d0, t0 = self.first_done
        if done <= d0:
            return ""
        return f" · about {_duration((now - t0) / (done - d0) * (total - done))} left"

    def __call__(self, done: float, total: float, text: str) -> None:
        if self.report is None or not total:
            return
        frac = min(max(done / total, 0.0), 1.0)
        self.report(round(self.start + self.span * frac, 4), text + self.left(done, total))


def progress_sentences(report: Optional[ReportFn], start: float = 0.0, span: float = 1.0) -> Callable[[Progress], None]:
    """An engine `progress` callable that tells people what is happening, mapped onto
    [start, start + span] of the page's progress bar."""
    eta = ProgressETA()

    def on_progress(event: Progress) -> None:
        if report is None:
            return
        at = round(start + span * event.fraction, 4)
        if event.stage == "extract":
            detail = event.detail or "reading the movement"
            report(at, detail[:1].upper() + detail[1:])
        elif event.stage == "load":
            report(at, "Loading the model" if event.done == 0 else "Model ready")
        elif event.stage == "denoise":
            text = f"Animating: step {event.step} of {event.num_steps}"
            if event.num_windows > 1:
                text += f", frames part {event.window} of {event.num_windows}"
            report(at, text + eta.left(event.done, event.total))
        else:
            report(at, f"Turning the result into frames ({event.done}/{event.total})")

    return on_progress


# --------------------------------------------------------------------------------------
# Step 1 as the page shows it
# --------------------------------------------------------------------------------------


@dataclass
class Extracted:
    """What step 1 hands to step 2, kept in the page's session state. Small on purpose: the motion
    itself stays in the engine's disk cache (step 2 reads it back by the same key), so memory
    does not grow with the number of visitors."""

    key: str  # photo hash + clip hash + motion settings: step 2 re-uses this only when it matches
    settings: MotionSettings
    skeleton_video: Path
    face_video: Path
    overlay: Path  # png: the first retargeted skeleton drawn over the photo
    facts: str  # markdown
    warnings: list = field(default_factory=list)


def extraction_key(photo, clip, settings: MotionSettings) -> str:
    return f"{file_digest(photo)}:{file_digest(clip)}:{settings}"


def for_display(frames, min_height: int = PREVIEW_MIN_HEIGHT):
    """Enlarge [.., H, W, 3] images by a whole factor (pixel repeat) so that H >= min_height:
    a 64-pixel skeleton stays crisp instead of being blurred by the browser."""
    h = frames.shape[-3]
    k = -(-min_height // h)
    if k <= 1:
        return frames
    return np.repeat(np.repeat(frames, k, axis=-3), k, axis=-2)


def extract_with_previews(photo, clip, settings: MotionSettings, *, limits: Limits, workdir,
                          report: Optional[ReportFn] = None, cancel: Optional[threading.Event] = None) -> tuple:
    """Step 1: the engine's `extract` (cached on disk), then the previews the page shows.
    Returns (`Extracted`, the `Motion`)."""
    settings = settings.validate(limits)
    photo = check_photo(photo, limits)
    clip, info = check_clip(clip, limits)
    key = extraction_key(photo, clip, settings)
    motion = extract(photo, clip, settings, keep_frames=True, limits=limits,
                     progress=progress_sentences(report, 0.0, 0.85), cancel=cancel)
    workdir = Path(workdir)
    if report:
        report(0.85, "Writing the previews")
    skeleton = write_video(workdir / "skeleton.mp4", for_display(motion.pose_images), motion.fps)
    faces = write_video(workdir / "face_patches.mp4", for_display(face_patch_video(motion)), motion.fps)
    overlay = save_image(workdir / "overlay.png", for_display(retarget_overlay(motion=motion)))
    return Extracted(key=key, settings=settings, skeleton_video=skeleton, face_video=faces, overlay=overlay,
                     facts=describe_motion(motion, info, settings),
                     warnings=[w[:1].upper() + w[1:] for w in motion.warnings]), motion


def motion_settings(resolution, fps, max_frames, retarget, limits: Limits, dancer=None) -> MotionSettings:
    """The page's step-1 widgets -> validated `MotionSettings`."""
    height, width = parse_size(str(resolution), "Video size")
    try:
        frames = int(max_frames)
    except (TypeError, ValueError):
        raise InputError(f"Frames to animate must be a whole number, got {max_frames!r}.") from None
    return MotionSettings(height=height, width=width, fps=parse_fps(fps), max_frames=frames,
                          retarget=str(retarget), person=parse_dancer(dancer)).validate(limits)


# --------------------------------------------------------------------------------------
# Choosing the dancer
# --------------------------------------------------------------------------------------

MOST_VISIBLE = "auto"  # the dancer dropdown's value for "the most visible person" (the engine's default)


def dancer_choices(count: int = 0) -> list:
    """(label, value) pairs for the dancer dropdown: the most visible person, then Dancer 1..count
    (numbered from left to right as on the numbered frame, the engine's `person`)."""
    return [("The most visible person", MOST_VISIBLE)] + [(f"Dancer {i}", str(i)) for i in range(1, count + 1)]


def parse_dancer(value) -> Optional[int]:
    """The dropdown's (or an API caller's) dancer -> the engine's `person` (None: most visible)."""
    if value in (None, "", MOST_VISIBLE, 0, "0"):
        return None
    text = str(value).strip()
    text = text[len("Dancer"):].strip() if text.lower().startswith("dancer") else text
    try:
        number = int(float(text))
    except ValueError:
        raise InputError(f"Dancer must be a number from 1 (the leftmost) or 'auto', got {value!r}.") from None
    if number < 1 or number != float(text):
        raise InputError(f"Dancer must be a number from 1 (the leftmost) or 'auto', got {value!r}.")
    return number


@dataclass
class DancersView:
    """The dancers of an uploaded clip as the page shows them, kept in the session for clicks
    (without the frame: session state stays small)."""

    dancers: Dancers
    image: Optional[Path]  # the numbered frame (png), None when the clip shows at most one person
    text: str  # markdown sentence

    @property
    def count(self) -> int:
        return self.dancers.count


def find_dancers_view(clip, fps, max_frames, limits: Limits, workdir) -> DancersView:
    """Count the people of an uploaded clip, on the part of it that step 1 uses (the page's frame
    rate and frame count, so that the numbers are the engine's `person`), and when there are
    several, draw them numbered."""
    clip, _ = check_clip(clip, limits)
    try:
        frames = int(max_frames)
    except (TypeError, ValueError):
        frames = None
    dancers = find_dancers(clip, fps=parse_fps(fps), max_frames=frames)
    image = None
    if dancers.count > 1:
        image = save_image(Path(workdir) / "dancers.png", draw_dancers(dancers))
        text = (f"**{dancers.count} dancers** in this clip, numbered from left to right at {dancers.time:.1f} s. "
                "Choose who to follow in *Dancer to follow*, or click on them in the picture; by default the "
                "most visible person is followed.")
    elif dancers.count == 1:
        text = "**One dancer** in this clip."
    else:
        text = "**Nobody found** in the first seconds of this clip; step 1 looks through all of it."
    small = replace(dancers, frame=dancers.frame[:1, :1].copy(), rois=[])
    return DancersView(small, image, text)


def dancer_clicked(view: Optional[DancersView], x, y) -> Optional[int]:
    """The dancer under a click at pixel (x, y) of the numbered frame, or None."""
    if view is None or x is None or y is None:
        return None
    return dancer_at(view.dancers, float(x), float(y))


def warm_up(models: ModelManager, choice: str) -> None:
    """Load the default model in the background after the page is served, so the first click is
    quick. Failures are only logged: the click will report them."""
    try:
        started = time.monotonic()
        if choice == MODEL_TINY:
            load_model(resolve_settings(model=choice), models)
        log.info("warm-up done in %.1f s", time.monotonic() - started)
    except Exception:  # noqa: BLE001
        log.warning("warm-up failed (the first job will try again)", exc_info=True)


def native_size_of(choice: str) -> tuple:
    """(height, width) the model behind a dropdown value was made for."""
    return native_size(resolve_model(choice))
