"""X-Dyna Studio: animate a photo of a person with the motion of a driving clip.

Gradio Blocks UI, wiring only: the engine (`xdyna_core.animation`: settings, extraction, models,
generation, writing) does the work, and the page's words and choices live in `app_view.py`.
The same photo, clip, settings and seed give the same video here as with `xdyna animate` and
Python's `xdyna_core.animate`.

Hosting: `python app.py` honours GRADIO_SERVER_NAME, GRADIO_SERVER_PORT and GRADIO_SHARE;
XDYNA_* variables set the model and the limits (see `xdyna_core/limits.py`). On a Hugging
Face ZeroGPU Space the generation runs under `spaces.GPU` when the package is installed.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import random
import signal
import sys
import threading
import time

import gradio as gr  # the UI library: only this file and the browser tests import it
from gradio.context import LocalContext

import app_view as view
from xdyna_core import resources, runtime
from xdyna_core.animation import animate as run_animation
from xdyna_core.animation import WINDOW_SIZE, resolve_settings, save_side_by_side, save_video
from xdyna_core.animation import extract as extract_motion
from xdyna_core.errors import Cancelled, InputError, XDynaError
from xdyna_core.animation import GENERATION_LOCK
from xdyna_core.limits import Limits, Workspace, check_clip, check_photo, limits_from_env, prune_cache
from xdyna_core.preprocess.motion import default_cache_dir

log = logging.getLogger("xdyna.app")

def _limit_malloc_arenas(arenas: int = 2) -> None:
    """glibc gives each thread its own malloc arena, and memory freed after a job stays scattered
    over them: with Gradio's worker threads serving several visitors the server grew job after job
    (+555 MB over 32 concurrent jobs in tests/test_faults.py's soak; flat with 2 arenas). An explicit
    MALLOC_ARENA_MAX in the environment wins; elsewhere than glibc this does nothing."""
    if os.environ.get("MALLOC_ARENA_MAX"):
        return
    try:
        ctypes.CDLL("libc.so.6").mallopt(-8, arenas)  # -8 = M_ARENA_MAX
    except (OSError, AttributeError):
        pass


_limit_malloc_arenas()  # before any worker thread starts


def _settings_from_env() -> Limits:
    """Every XDYNA_* setting checked before anything starts: each bad one is one line on stderr
    (what is wrong, what to do), then exit 2 — never a traceback, never a limit silently off."""
    errors, limits = [], None
    try:
        limits = limits_from_env()
    except InputError as err:
        errors += str(err).splitlines()
    for var, check in (("XDYNA_DEVICE", lambda: runtime.resolve_device("auto")),
                       ("XDYNA_DTYPE", lambda: runtime.resolve_dtype(runtime.resolve_device("cpu"))),
                       ("XDYNA_MODEL", runtime.official_model_dir)):
        try:
            check()
        except XDynaError as err:
            errors.append(f"{var}: {err}")
    if errors:
        for line in errors:
            print(f"error: {line}", file=sys.stderr)
        sys.exit(2)
    return limits


LIMITS = _settings_from_env()
WORKSPACE = Workspace(max_age_s=LIMITS.temp_max_age_s)  # also removes what a hard-killed server left
prune_cache(default_cache_dir(), LIMITS.cache_max_files, LIMITS.cache_max_mb)  # and its temporary cache files
MODELS = runtime.MODELS
_CANCEL: dict = {}  # session -> threading.Event that the running job checks at every step
_CANCEL_LOCK = threading.Lock()

try:  # Hugging Face Spaces: on ZeroGPU a GPU is attached only while a decorated call runs
    import spaces  # optional: only installed on Hugging Face Spaces

    _on_gpu = spaces.GPU(duration=LIMITS.gpu_duration_s)
except ImportError:
    spaces = None

    def _on_gpu(fn):
        return fn


# On ZeroGPU the decorated call runs in another process: its arguments and results must be
# plain, picklable data, so live progress and the cancel event stay on this side there.
ZERO_GPU = spaces is not None and bool(os.environ.get("SPACES_ZERO_GPU"))


CSS = """
#title { margin-bottom: 0; }
.step-heading { margin-top: 0.6em; }
#status { min-height: 2.5em; }
"""

INTRO = """# X-Dyna Studio
**Make a photo dance.** Give a photo of a person and a short clip of someone moving.
**Step 1** reads the movement from the clip (a stick-figure skeleton and the face) and fits it to your photo,
so you can check it before spending time. **Step 2** animates your photo with that movement —
hair, clothes and background keep moving naturally."""

HOW_TO = (
    "Full-body photos facing the camera work best. The clip's person can be anywhere in the frame: "
    "the movement is re-sized to your photo's person."
)


# --------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------


def _friendly_photo_reading(image: gr.Image) -> gr.Image:
    """Make a photo input answer unreadable uploads with a sentence instead of a bare "Error".
    (Wrapping the instance's `preprocess`, not subclassing: Gradio writes a .pyi stub next to
    any module that defines a component class.)"""
    preprocess = image.preprocess

    def friendly(payload):
        try:
            return preprocess(payload)
        except gr.Error:
            raise
        except Exception:  # noqa: BLE001 - PIL raises many kinds for files that are not images
            name = getattr(payload, "orig_name", None) or "This file"
            raise gr.Error(f"“{name}” is not a photo this studio can read. Please upload a png, jpg or webp "
                           "image of a person.", title="Please check your input", print_exception=False) from None

    image.preprocess = friendly
    return image


def _session(request: gr.Request | None) -> str:
    return getattr(request, "session_hash", None) or "default"


def _still_wanted() -> callable:
    """A check of whether Gradio still wants the running event's result: False once the event was
    cancelled (the Cancel button, `Job.cancel()` of gradio_client, which cancel its task) or its
    client went away (which marks the event not alive). The handler's thread itself is never
    interrupted by Gradio, so the job asks this at every progress report and stops within one step.
    Relies on Gradio's queue internals (LocalContext, the queue's active jobs, Event.alive); the API
    cancel test in tests/test_faults.py pins that contract."""

    blocks, event_id = LocalContext.blocks.get(None), LocalContext.event_id.get(None)
    if blocks is None or event_id is None or getattr(blocks, "_queue", None) is None:
        return lambda: True

    def wanted() -> bool:
        for job in list(blocks._queue.active_jobs):
            for event in job or ():
                if event._id == event_id:
                    return bool(getattr(event, "alive", True))
        return False  # no longer among the running jobs: cancelled

    return wanted


def _new_cancel_event(request: gr.Request | None) -> threading.Event:
    """A fresh event per job: a cancelled job that is still finishing its current step keeps
    its own (set) event, so starting the next job cannot un-cancel it."""
    event = threading.Event()
    with _CANCEL_LOCK:
        _CANCEL[_session(request)] = event
    return event


def _forget_session(request: gr.Request):
    with _CANCEL_LOCK:
        event = _CANCEL.pop(_session(request), None)
    if event is not None:
        event.set()  # the visitor left: stop whatever they started


def _friendly_errors(fn):
    """Show people a message, never a traceback: our own errors say what to do (in the page's
    words); anything unexpected is logged in full and summarised in one sentence."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except Cancelled:
            raise gr.Error("Stopped — nothing was saved. Change settings and press Animate again.",
                           title="Stopped", print_exception=False) from None
        except InputError as err:
            raise gr.Error(view.in_words(str(err)), title="Please check your input", print_exception=False) from None
        except XDynaError as err:
            raise gr.Error(str(err), title="Cannot do that here", print_exception=False) from None
        except Exception as err:  # noqa: BLE001 - last line of defence for people
            log.exception("unexpected error in %s", fn.__name__)
            raise gr.Error(f"Something went wrong on the server ({type(err).__name__}). Details are in the "
                           "server log. Please try again, or with a different photo, clip or settings.",
                           title="Error", print_exception=False) from None

    return wrapper


def _progress_fn(progress: gr.Progress, cancel: threading.Event):
    """Progress for the page that also turns Gradio's cancel (or a client gone) into our stop flag."""
    wanted = _still_wanted()

    def report(frac, text):
        if not wanted():
            cancel.set()
            return
        progress(frac, desc=text)

    return report


# --------------------------------------------------------------------------------------
# Event handlers
# --------------------------------------------------------------------------------------


@_friendly_errors
def extract(photo, driving_clip, resolution, fps, max_frames, retarget, person="auto", request: gr.Request = None,
            progress=gr.Progress()):
    """Step 1: read the movement of a driving clip and fit it to the person in a photo.

    Args:
        photo: photo of one person (png, jpg, webp); full body works best.
        driving_clip: video of someone moving (mp4, mov, webm, mkv, gif).
        resolution: output size "WIDTHxHEIGHT", multiples of 64, e.g. "512x896" or "64x64".
        fps: frame rate to sample the clip at ("8", "12", "15", "24", "30") or "clip" for the clip's own.
        max_frames: frames to use from the start of the clip (at most XDYNA_MAX_FRAMES).
        retarget: fit the movement to the photo's person: "global", "limbs" or "none".
        person: the dancer to follow when the clip shows several people: 1 = the leftmost, 2 = the
            next, ... (as numbered by the page), or "auto" for the most visible person.
    Returns:
        skeleton video, face-patch video, the first fitted skeleton drawn over the photo, facts (markdown).
    """
    settings = view.motion_settings(resolution, fps, max_frames, retarget, LIMITS, person)
    cancel = _new_cancel_event(request)
    ex, _ = view.extract_with_previews(photo, driving_clip, settings, limits=LIMITS,
                                       workdir=WORKSPACE.new_job("extract"), report=_progress_fn(progress, cancel),
                                       cancel=cancel)
    for text in ex.warnings:
        gr.Warning(text)
    return str(ex.skeleton_video), str(ex.face_video), str(ex.overlay), ex.facts, ex


@_on_gpu
def _generate(photo, motion, settings, report=None, cancel=None, clip=None):
    """The part that needs the GPU (under `spaces.GPU` on ZeroGPU): the engine's `animate` on an
    extracted motion (`clip`: the upload it came from, whose sound the result keeps). Its result is
    plain data, which can cross ZeroGPU's process boundary."""
    return run_animation(photo, motion, settings, models=MODELS, limits=LIMITS,
                         progress=view.progress_sentences(report, 0.0, 0.95), cancel=cancel, audio_clip=clip)


@_friendly_errors
def animate(photo, driving_clip, model, resolution, fps, max_frames, retarget, prompt, negative_prompt,
            guidance_scale, adapter_scale, pose_strength, face_strength, steps, seed, window_overlap,
            window_schedule="blend", preset="", motion_state=None, keep_audio=True, person="auto",
            request: gr.Request = None, progress=gr.Progress(track_tqdm=True)):
    """Step 2: animate a photo with the movement of a driving clip. Re-uses the motion of /extract
    from the same session when photo, clip and motion settings are unchanged; extracts it otherwise.

    Args:
        photo: photo of one person (as for /extract).
        driving_clip: video of someone moving (as for /extract).
        model: "tiny" (embedded, CPU) or "official" (X-Dyna, CUDA GPU).
        resolution: output size "WIDTHxHEIGHT" (as for /extract).
        fps: frame rate (as for /extract).
        max_frames: frames to animate (as for /extract).
        retarget: "global", "limbs" or "none" (as for /extract).
        prompt: optional text describing the scene.
        negative_prompt: optional text of things to avoid (used when guidance_scale >= 1).
        guidance_scale: classifier-free guidance (official 7.5; below 1 switches it off).
        adapter_scale: strength of the Dynamics-Adapter, i.e. of the photo's appearance (1 = paper).
        pose_strength: pose ControlNet scale (0 ignores the skeleton).
        face_strength: S-Face ControlNet scale (0 ignores the expressions).
        steps: DDIM denoising steps (official 25).
        seed: random seed; the same seed and settings give the same video.
        window_overlap: frames shared by consecutive 16-frame windows (0-8).
        window_schedule: "blend" (non-looping windows) or "official" (the official closed loop).
        preset: optional preset name (presets/*.yaml; default: the model's own) whose options without
            a widget (sampler, strength, guidance truncation, DeepCache, ...) are applied; the values
            above still win.
        keep_audio: keep the driving clip's sound, cut to the animated part (default True).
        person: the dancer to follow (as for /extract).
    Returns:
        generated video, side-by-side video (driving | skeleton | generated), both mp4 files, status (markdown),
        and the four previews of /extract.
    """
    motion_settings = view.motion_settings(resolution, fps, max_frames, retarget, LIMITS, person)
    if model not in (runtime.MODEL_TINY, runtime.MODEL_OFFICIAL):
        raise InputError(f"Unknown model {model!r}; choose the embedded tiny model or official X-Dyna.")
    settings = resolve_settings(
        model=model, preset=preset or None, size=motion_settings.size, fps=motion_settings.fps,
        max_frames=motion_settings.max_frames, retarget=motion_settings.retarget, person=motion_settings.person,
        prompt=prompt or "",
        negative_prompt=negative_prompt or "", num_inference_steps=steps, guidance_scale=guidance_scale,
        adapter_scale=adapter_scale, pose_conditioning_scale=pose_strength,
        face_conditioning_scale=face_strength, seed=seed, window_overlap=window_overlap,
        window_schedule=window_schedule).validate(LIMITS)
    runtime.check_model(settings.model)  # before any work: no GPU for official X-Dyna is said at once
    started = time.monotonic()
    cancel = _new_cancel_event(request)
    report = _progress_fn(progress, cancel)

    previews = [gr.skip()] * 4
    key = view.extraction_key(check_photo(photo, LIMITS), check_clip(driving_clip, LIMITS)[0], motion_settings)
    reused = motion_state is not None and motion_state.key == key
    if reused:  # the motion is in the engine's disk cache: read back, or extracted again if it went
        motion = extract_motion(photo, driving_clip, motion_settings, keep_frames=True, limits=LIMITS, cancel=cancel)
        extracted = motion_state
    else:
        extracted, motion = view.extract_with_previews(photo, driving_clip, motion_settings, limits=LIMITS,
                                                       workdir=WORKSPACE.new_job("extract"), report=report,
                                                       cancel=cancel)
        previews = [str(extracted.skeleton_video), str(extracted.face_video), str(extracted.overlay), extracted.facts]
        for text in extracted.warnings:
            gr.Warning(text)

    if ZERO_GPU:
        report(0.05, "Waiting for a GPU (ZeroGPU); progress shows again when the video is ready")
        result = _generate(photo, motion, settings, clip=driving_clip)
    else:
        result = _generate(photo, motion, settings, report, cancel, clip=driving_clip)
    if cancel.is_set():  # stopped after the last step: nothing is saved
        raise Cancelled("stopped by the user")
    workdir = WORKSPACE.new_job("animate")
    report(0.95, "Saving the video")
    keep_audio = keep_audio is not False  # None (an older client) keeps the default
    video = save_video(result, workdir / f"xdyna_seed{result.seed}.mp4", keep_audio=keep_audio)
    side = save_side_by_side(result, workdir / f"xdyna_seed{result.seed}_side_by_side.mp4", keep_audio=keep_audio)
    for text in result.warnings:
        gr.Warning(text)
    report(1.0, "Done")
    status = view.describe_result(result, view.model_label(model), reused, time.monotonic() - started)
    return (str(video), str(side), [str(video), str(side)], status, *previews, extracted)


def clip_uploaded(driving_clip):
    """Check an upload at once, so a wrong file is reported before anyone presses a button."""
    if not driving_clip:
        return "*Facts about your clip appear here after step 1.*"
    try:
        path, info = check_clip(driving_clip, LIMITS)
    except XDynaError as err:
        gr.Warning(str(err), title="This clip cannot be used")
        return f"**This clip cannot be used:** {err}"
    return view.describe_clip(path, info)


def count_dancers(driving_clip, fps=None, max_frames=None):
    """Count the clip's dancers (on the part step 1 uses) and, when there are several, show them
    numbered so that one can be chosen. Its own event with its own outputs: it takes seconds, and
    must never overwrite what step 1 shows meanwhile."""
    nobody = ("", gr.update(choices=view.dancer_choices(0), value=view.MOST_VISIBLE),
              gr.update(value=None, visible=False), None)
    if not driving_clip:
        return nobody
    try:
        path, _ = check_clip(driving_clip, LIMITS)
        dancers = view.find_dancers_view(path, fps, max_frames, LIMITS, WORKSPACE.new_job("dancers"))
    except XDynaError:  # the upload check and step 1 say what is wrong, with what to do
        return nobody
    except Exception:  # noqa: BLE001 - counting dancers is a convenience: it must never break the page
        log.exception("counting the dancers failed")
        return nobody
    image = (gr.update(value=str(dancers.image), visible=True) if dancers.image is not None
             else gr.update(value=None, visible=False))
    return (dancers.text, gr.update(choices=view.dancer_choices(dancers.count), value=view.MOST_VISIBLE),
            image, dancers)


def dancer_selected(dancers, evt: gr.SelectData):
    """A click on the numbered frame chooses the dancer under it."""
    x, y = (list(evt.index or ()) + [None, None])[:2]
    number = view.dancer_clicked(dancers, x, y)
    return gr.update(value=str(number)) if number is not None else gr.skip()


def photo_uploaded(photo):
    """Check a photo upload at once: size and type here; unreadable files are reported while
    Gradio reads them (`_friendly_photo_reading`)."""
    if photo:
        try:
            check_photo(photo, LIMITS)
        except XDynaError as err:
            gr.Warning(str(err), title="This photo cannot be used")


def cancel(request: gr.Request = None):
    """Stop the running job of this visitor within one denoising step."""
    with _CANCEL_LOCK:
        event = _CANCEL.get(_session(request))
    if event is not None:
        event.set()
    return "Stopped. Nothing was saved — change settings and press **Animate** again."


def system_info(model_choice):
    """Device, precision and memory of this server, and what the chosen model means here."""
    try:
        return view.describe_system(model_choice, MODELS)
    except Exception:  # noqa: BLE001 - an info line must never break the page
        log.exception("system info failed")
        return "Device information is not available."


PRESET_FIELDS = ("resolution", "guidance_scale", "adapter_scale", "pose_strength", "face_strength", "steps",
                 "window_overlap", "window_schedule", "seed", "prompt", "negative_prompt")


def apply_preset(name, model_choice):
    """Set the settings from a preset file in presets/ (the model stays as chosen)."""
    p = view.preset_values(name, LIMITS, model_choice)
    return [p[k] for k in PRESET_FIELDS]


def model_changed(model_choice):
    """A new model brings its own preset (its size, steps and guidance) and system line."""
    name = view.preset_for_model(model_choice)
    return [system_info(model_choice), name, *apply_preset(name, model_choice)]


# --------------------------------------------------------------------------------------
# Page
# --------------------------------------------------------------------------------------


def build_demo() -> gr.Blocks:
    model_default = runtime.default_model_choice()
    preset_default = view.preset_for_model(model_default)
    p = view.preset_values(preset_default, LIMITS, model_default)
    sizes = [view.native_size_of(c) for _, c in view.model_choices()]

    with gr.Blocks(title="X-Dyna Studio — make a photo dance",
                   delete_cache=(600, int(LIMITS.temp_max_age_s))) as demo:
        gr.Markdown(INTRO, elem_id="title")
        with gr.Row(equal_height=True):
            model = gr.Dropdown(view.model_choices(), value=model_default, label="Model", elem_id="model",
                                info="The tiny model runs anywhere in seconds but looks rough; official X-Dyna "
                                     "gives the real quality on a big GPU.", scale=3)
            preset = gr.Dropdown(view.preset_choices(), value=preset_default, label="Quality preset",
                                 elem_id="preset", scale=2,
                                 info="Fills in all the settings below; you can still change any of them.")
        sysinfo = gr.Markdown("Checking this machine…", elem_id="system")

        # ---------------- step 1 ----------------
        gr.Markdown("## Step 1 · Your photo and the movement to copy", elem_classes="step-heading")
        with gr.Row():
            with gr.Column(scale=1):
                with gr.Row():
                    photo = gr.Image(type="filepath", image_mode=None, label="Photo of a person", elem_id="photo",
                                     sources=["upload", "clipboard"], height=320)
                    _friendly_photo_reading(photo)
                    clip = gr.Video(label="Driving clip (the dance)", elem_id="clip",
                                    sources=["upload"], height=320)
                with gr.Row():
                    # Custom values: API callers may send a number before the page counted the dancers.
                    dancer = gr.Dropdown(view.dancer_choices(0), value=view.MOST_VISIBLE, label="Dancer to follow",
                                         allow_custom_value=True, elem_id="dancer", info="When the clip shows several people: who to copy "
                                         "(numbered from left to right once the clip is uploaded).")
                dancers_note = gr.Markdown("", elem_id="dancers-note")
                dancers_image = gr.Image(label="Dancers in your clip — click one to follow them", elem_id="dancers",
                                         interactive=False, visible=False, height=240)
                gr.Markdown(HOW_TO + f" Up to {LIMITS.max_upload_mb:.0f} MB and "
                            f"{LIMITS.max_clip_seconds:.0f} s per file.", elem_id="howto")
                examples = view.example_pairs()
                if examples:
                    gr.Examples(examples, inputs=[photo, clip], label="Or start from an example (click one)",
                                elem_id="examples", cache_examples=False)
                with gr.Accordion("Motion settings", open=True):
                    with gr.Row():
                        resolution = gr.Dropdown(view.resolution_choices(LIMITS, extra=sizes), value=p["resolution"],
                                                 label="Video size (width × height)", elem_id="resolution",
                                                 info="Bigger is sharper but slower. The tiny model was made "
                                                      "for small sizes.")
                        fps = gr.Dropdown(view.fps_choices(), value=view.DEFAULT_FPS, label="Frame rate",
                                          elem_id="fps", info="Fewer frames per second = faster, choppier.")
                    with gr.Row():
                        max_frames = gr.Slider(1, LIMITS.max_frames, value=min(view.DEFAULT_FRAMES, LIMITS.max_frames), step=1,
                                               label="Frames to animate", elem_id="max_frames",
                                               info=f"Only the start of the clip is used (up to "
                                                    f"{LIMITS.max_frames} frames on this server).")
                        retarget = gr.Radio(view.retarget_choices(), value="global", label="Fit the movement "
                                            "to my photo", elem_id="retarget",
                                            info="Whole body: resize and move the dancer to your person. "
                                                 "Limb by limb: also match arm and leg lengths. Off: copy as is.")
                extract_btn = gr.Button("① Extract motion", variant="secondary", elem_id="extract-btn")
            with gr.Column(scale=1):
                with gr.Row():
                    skeleton = gr.Video(label="Skeleton to follow", elem_id="skeleton",
                                        interactive=False, height=320, autoplay=True, loop=True)
                    faces = gr.Video(label="Facial expression to copy", elem_id="faces",
                                     interactive=False, height=320, autoplay=True, loop=True)
                with gr.Row():
                    overlay = gr.Image(label="Fitted to your photo", elem_id="overlay",
                                       interactive=False, height=320)
                    facts = gr.Markdown("*Facts about your clip appear here after step 1.*", elem_id="facts")

        # ---------------- step 2 ----------------
        gr.Markdown("## Step 2 · Animate", elem_classes="step-heading")
        with gr.Row():
            with gr.Column(scale=1):
                with gr.Row():
                    pose_strength = gr.Slider(0.0, 2.0, value=p["pose_strength"], step=0.05,
                                              label="Follow the body movement", elem_id="pose_strength",
                                              info="How strictly the body follows the skeleton. 0 ignores it.")
                    face_strength = gr.Slider(0.0, 2.0, value=p["face_strength"], step=0.05,
                                              label="Copy the facial expressions", elem_id="face_strength",
                                              info="How strongly eyes and mouth follow the clip's face. "
                                                   "0 ignores it.")
                with gr.Row():
                    adapter_scale = gr.Slider(0.0, 4.0, value=p["adapter_scale"], step=0.05,
                                              label="Look like my photo", elem_id="adapter",
                                              info="How strongly every frame copies the look of your photo "
                                                   "(1 = the paper's; the small built-in model needs about 3.5). Lower lets hair, clothes and background "
                                                   "move more freely.")
                    guidance_scale = gr.Slider(0.0, 15.0, value=p["guidance_scale"], step=0.5,
                                               label="Follow the photo and prompt", elem_id="guidance",
                                               info="Higher sticks closer to your photo and words; too high looks "
                                                    "harsh. Under 1 switches this off (twice as fast).")
                with gr.Row():
                    steps = gr.Slider(1, LIMITS.max_steps, value=p["steps"], step=1, label="Quality steps",
                                      elem_id="steps", info="More steps = cleaner but slower (25 is the "
                                                            "official setting).")
                    with gr.Column():
                        seed = gr.Number(value=p["seed"], precision=0, minimum=0, maximum=2**31 - 1, label="Seed",
                                         elem_id="seed", info="Same seed + same settings = the same video.")
                        dice = gr.Button("New random seed", elem_id="dice", size="sm")
                with gr.Accordion("More settings: prompt, long videos", open=False, elem_id="more"):
                    prompt = gr.Textbox(value=p["prompt"], label="Describe the scene (optional)", elem_id="prompt",
                                        lines=1, info="The photo matters much more than words; X-Dyna works "
                                                      "with an empty prompt.")
                    negative_prompt = gr.Textbox(value=p["negative_prompt"], label="Things to avoid (optional)",
                                                 elem_id="negative_prompt", lines=1,
                                                 info="Only used when 'Follow the photo and prompt' is 1 or more.")
                    with gr.Row():
                        window_overlap = gr.Slider(0, WINDOW_SIZE // 2, value=p["window_overlap"], step=1,
                                                   label="Smooth joins in long videos", elem_id="overlap",
                                                   info=f"Videos are made {WINDOW_SIZE} frames at a time; "
                                                        "frames shared between pieces hide the seams (slower).")
                        window_schedule = gr.Radio(view.window_schedule_choices(), value=p["window_schedule"],
                                                   label="How the pieces join", elem_id="window_schedule",
                                                   info="Blend suits most clips. Official reproduces the "
                                                        "paper's code, which loops the end back to the start.")
                keep_audio = gr.Checkbox(value=True, label="Keep the clip's sound", elem_id="keep_audio",
                                         info="The video plays the driving clip's music, cut to the animated "
                                              "part and in time with it.")
                with gr.Row():
                    animate_btn = gr.Button("② Animate", variant="primary", elem_id="animate-btn", scale=3)
                    cancel_btn = gr.Button("Cancel", variant="stop", elem_id="cancel-btn", scale=1)
                status = gr.Markdown("*Press Animate. Step 1 is done for you if you skipped it; progress "
                                     "and the time left show on the video.*", elem_id="status")
            with gr.Column(scale=1):
                result = gr.Video(label="Your animated photo", elem_id="result", interactive=False,
                                  autoplay=True, loop=True, buttons=["download"], height=420)
                side = gr.Video(label="Side by side: clip | skeleton | result", elem_id="side-by-side",
                                interactive=False, loop=True, buttons=["download"], height=260)
                downloads = gr.File(label="Downloads (mp4)", elem_id="downloads", file_count="multiple",
                                    interactive=False)

        motion_state = gr.State(None, time_to_live=int(LIMITS.temp_max_age_s))
        dancers_state = gr.State(None, time_to_live=int(LIMITS.temp_max_age_s))

        # ---------------- wiring ----------------
        motion_inputs = [photo, clip, resolution, fps, max_frames, retarget, dancer]
        previews = [skeleton, faces, overlay, facts]
        ev_extract = extract_btn.click(extract, inputs=motion_inputs, outputs=[*previews, motion_state],
                                       api_name="extract", concurrency_id="extract", concurrency_limit=2,
                                       show_progress_on=[skeleton])
        ev_animate = animate_btn.click(
            animate,
            inputs=[photo, clip, model, resolution, fps, max_frames, retarget, prompt, negative_prompt,
                    guidance_scale, adapter_scale, pose_strength, face_strength, steps, seed, window_overlap,
                    window_schedule, preset, motion_state, keep_audio, dancer],
            outputs=[result, side, downloads, status, *previews, motion_state],
            api_name="animate", concurrency_id="gpu", concurrency_limit=1, show_progress_on=[result])
        cancel_btn.click(cancel, outputs=status, cancels=[ev_extract, ev_animate], queue=False,
                         api_visibility="private")
        photo.change(photo_uploaded, inputs=photo, api_visibility="private")
        # The dancers are counted on the part of the clip step 1 uses: again when that changes.
        counting = dict(fn=count_dancers, inputs=[clip, fps, max_frames],
                        outputs=[dancers_note, dancer, dancers_image, dancers_state], api_visibility="private")
        clip.change(clip_uploaded, inputs=clip, outputs=facts, api_visibility="private").then(**counting)
        fps.input(**counting)
        max_frames.release(**counting)
        dancers_image.select(dancer_selected, inputs=dancers_state, outputs=dancer, api_visibility="private")
        dice.click(lambda: random.randint(0, 2**31 - 1), outputs=seed, queue=False, api_visibility="private")
        preset_outputs = [resolution, guidance_scale, adapter_scale, pose_strength, face_strength, steps,
                          window_overlap, window_schedule, seed, prompt, negative_prompt]
        # .input fires for people's choices only, so the two dropdowns cannot trigger each other.
        preset.input(apply_preset, inputs=[preset, model], outputs=preset_outputs, api_visibility="private")
        model.input(model_changed, inputs=model, outputs=[sysinfo, preset, *preset_outputs],
                    api_visibility="private")
        demo.unload(_forget_session)
        demo.load(system_info, inputs=model, outputs=sysinfo, api_visibility="private")
    return demo


def launch(demo: gr.Blocks | None = None, **overrides):
    """Queue (one generation per GPU at a time) and serve, with settings from the usual
    Gradio environment variables. Returns what `Blocks.launch` returns."""
    demo = demo or build_demo()
    demo.queue(default_concurrency_limit=1, max_size=LIMITS.queue_size)
    kwargs = dict(
        server_name=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
        server_port=int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
        share=os.environ.get("GRADIO_SHARE", "").lower() in ("1", "true", "yes"),
        max_file_size=int(LIMITS.max_upload_mb * 1024**2),
        allowed_paths=[str(resources.examples_dir())],
        css=CSS,
        theme=gr.themes.Soft(),
    )
    kwargs.update(overrides)
    return demo.launch(**kwargs)


def _shut_down(signum, _frame):
    """SIGTERM (a Space restart, `kill`): stop the running jobs within a step, remove the
    temporary files, exit 0. `os._exit` after the clean-up: unwinding the interpreter while
    torch's worker threads run aborts the process ("terminate called without an active exception")."""
    log.info("signal %s: stopping jobs and cleaning up", signum)
    with _CANCEL_LOCK:
        for event in _CANCEL.values():
            event.set()
    deadline = time.monotonic() + 30
    while GENERATION_LOCK.locked() and time.monotonic() < deadline:
        time.sleep(0.05)
    WORKSPACE.close()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def main():
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    signal.signal(signal.SIGTERM, _shut_down)
    demo = build_demo()
    launch(demo, prevent_thread_lock=True)
    if os.environ.get("XDYNA_WARMUP", "1") != "0":
        # Import torch/diffusers and load the default model while the visitor picks files.
        threading.Thread(target=view.warm_up, args=(MODELS, runtime.default_model_choice()), daemon=True).start()
    demo.block_thread()


if __name__ == "__main__":
    main()
