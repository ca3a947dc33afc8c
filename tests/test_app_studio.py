"""The studio's view-model (`app_view.py`) and the engine services behind it (limits, uploads,
settings, presets, model choice, progress, cancel, temporary files), tested without a browser."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import app_view as view
from xdyna_core import runtime
from xdyna_core.animation import (WINDOW_SIZE, GenerationSettings, MotionSettings, animate, generate,
                                resolve_settings, save_video)
from xdyna_core.errors import Cancelled, InputError, ModelUnavailable
from xdyna_core.io import load_image
from xdyna_core.limits import Limits, Workspace, check_clip, check_photo, limits_from_env, prune_cache
from xdyna_core.sizes import parse_size

from test_app_browser import make_inputs

LIMITS = Limits()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return make_inputs(tmp_path_factory.mktemp("inputs"))


@pytest.fixture(scope="module")
def extracted(inputs, tmp_path_factory):
    os.environ["XDYNA_CACHE_DIR"] = str(tmp_path_factory.mktemp("cache"))
    photo, clip = inputs
    settings = MotionSettings(height=64, width=64, fps=15, max_frames=5, retarget="global")
    return view.extract_with_previews(photo, clip, settings, limits=LIMITS, workdir=tmp_path_factory.mktemp("ex"))


@pytest.fixture(scope="module")
def motion(extracted):
    return extracted[1]


def _tiny_settings(**overrides):
    return resolve_settings(model=runtime.MODEL_TINY, preset="tiny-offline", size=(64, 64), fps=15, max_frames=5,
                            **overrides)


@pytest.fixture(scope="module")
def tiny():
    s = _tiny_settings()
    return runtime.ModelManager().get(s.model, torch.device("cpu"), torch.float32)


# ---- limits and uploads --------------------------------------------------------------------


def test_limits_from_env():
    assert limits_from_env({}) == Limits()
    lim = limits_from_env({"XDYNA_MAX_FRAMES": "12", "XDYNA_MAX_UPLOAD_MB": "2.5", "XDYNA_MAX_SIDE": ""})
    assert lim.max_frames == 12 and lim.max_upload_mb == 2.5 and lim.max_side == Limits().max_side
    with pytest.raises(InputError, match="XDYNA_MAX_STEPS"):
        limits_from_env({"XDYNA_MAX_STEPS": "lots"})
    with pytest.raises(InputError, match="XDYNA_MAX_FRAMES must be positive"):
        limits_from_env({"XDYNA_MAX_FRAMES": "0"})


def test_uploads_outside_limits_are_refused_politely(inputs, tmp_path):
    photo, clip = inputs
    assert check_photo(photo, LIMITS) == photo
    path, info = check_clip(clip, LIMITS)
    assert path == clip and info.width == 512 and abs(info.duration - 24 / 15) < 0.1

    with pytest.raises(InputError, match="Add a driving clip"):
        check_clip(None, LIMITS)
    with pytest.raises(InputError, match=r"accepts up to 0 MB"):
        check_clip(clip, Limits(max_upload_mb=0.01))
    with pytest.raises(InputError, match=r"lasts 2 s; this studio accepts clips up to 1 s"):
        check_clip(clip, Limits(max_clip_seconds=1))
    text = tmp_path / "song.txt"
    text.write_text("la la la")
    with pytest.raises(InputError, match="“song.txt” does not look like a driving clip"):
        check_clip(text, LIMITS)
    fake = tmp_path / "fake.mp4"
    fake.write_text("not a video")
    with pytest.raises(InputError, match="fake.mp4"):
        check_clip(fake, LIMITS)
    with pytest.raises(InputError, match="does not look like a photo"):
        check_photo(clip, LIMITS)


def test_settings_are_validated_with_messages():
    ok = MotionSettings(height=128, width=64, fps=None, max_frames=8)
    assert ok.validate(LIMITS) is ok
    with pytest.raises(InputError, match="multiples of 64"):
        MotionSettings(height=100, width=64).validate(LIMITS)
    with pytest.raises(InputError, match="limit of 512"):
        MotionSettings(height=896, width=512).validate(Limits(max_side=512))
    with pytest.raises(InputError, match="between 1 and 64"):
        MotionSettings(max_frames=65).validate(LIMITS)
    with pytest.raises(InputError, match="retarget"):
        MotionSettings(retarget="sideways").validate(LIMITS)
    with pytest.raises(InputError, match="window_overlap") as err:
        GenerationSettings(window_overlap=16).validate(LIMITS)
    assert view.in_words(str(err.value)).startswith("'Smooth joins' must be between")
    with pytest.raises(InputError, match="between 1 and 50"):
        GenerationSettings(num_inference_steps=51).validate(LIMITS)
    assert parse_size("512×896") == (896, 512)  # people write WIDTHxHEIGHT; code keeps (height, width)
    assert view.parse_fps("clip") is None and view.parse_fps("12") == 12.0
    with pytest.raises(InputError, match="width x height"):
        parse_size("big")
    with pytest.raises(InputError, match="must be a number"):
        resolve_settings(model="tiny", num_inference_steps=float("nan"))


def test_presets_fill_every_setting_with_allowed_values():
    names = [v for _, v in view.preset_choices()]
    assert {"official", "fast-preview", "tiny-offline"} <= set(names)
    sizes = [view.native_size_of(c) for _, c in view.model_choices()]
    resolutions = {v for _, v in view.resolution_choices(LIMITS, extra=sizes)}
    for name in names:
        for choice in (runtime.MODEL_TINY, runtime.MODEL_OFFICIAL):
            v = view.preset_values(name, LIMITS, choice)
            assert v["resolution"] in resolutions, (name, v["resolution"])
            assert 1 <= v["steps"] <= LIMITS.max_steps
            assert 0 <= v["window_overlap"] <= WINDOW_SIZE // 2
            GenerationSettings(num_inference_steps=v["steps"], guidance_scale=v["guidance_scale"],
                                      window_overlap=v["window_overlap"],
                                      window_schedule=v["window_schedule"]).validate(LIMITS)
    assert view.preset_values("official", LIMITS)["resolution"] == "512x896"
    assert view.preset_values("official", Limits(max_side=512))["resolution"] == "256x512"
    assert view.preset_for_model(runtime.MODEL_OFFICIAL) == "official"
    assert view.preset_for_model(runtime.MODEL_TINY) == "tiny-offline"


def test_preset_options_without_a_widget_reach_the_pipeline(motion, tiny):
    assert resolve_settings(model="official", preset="official").generation.extra == ()
    extra = dict(resolve_settings(model="tiny", preset="fast-all").generation.extra)
    assert extra["sampler"] == "dpmpp" and extra["deep_cache_interval"] == 2
    with pytest.raises(InputError, match="Unknown generation options"):
        GenerationSettings(extra=(("flux_capacitor", 1),)).validate(LIMITS)
    # The tiny model runs with them (same code path as official X-Dyna).
    settings = GenerationSettings(num_inference_steps=3, guidance_scale=2,
                                  extra=resolve_settings(model="tiny", preset="fast-all").generation.extra)
    photo = load_image(motion.reference_image)
    frames = generate(tiny, photo, motion, settings.validate(LIMITS))
    plain = generate(tiny, photo, motion, GenerationSettings(num_inference_steps=3, guidance_scale=2))
    assert frames.shape == plain.shape and not np.array_equal(frames, plain)


def test_untrained_tiny_size_matches_the_engine():
    from xdyna_core.testing import TINY_RESOLUTION

    assert runtime.UNTRAINED_TINY_SIZE == (TINY_RESOLUTION, TINY_RESOLUTION)


def test_examples_exist_when_listed():
    assert view.example_pairs(), "the shipped examples should be found"
    for photo, clip in view.example_pairs():
        assert Path(photo).is_file() and Path(clip).is_file()


# ---- model choice ----------------------------------------------------------------------------


def test_official_model_without_gpu_says_what_to_do(monkeypatch):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU; the no-GPU message cannot be shown here")
    with pytest.raises(ModelUnavailable, match="needs a CUDA GPU.*embedded tiny model"):
        runtime.ModelManager().get(runtime.resolve_model("official"), torch.device("cpu"), torch.float32)
    assert "needs a CUDA GPU" in view.describe_system(runtime.MODEL_OFFICIAL)
    with pytest.raises(ModelUnavailable, match="huge is not a model folder"):
        runtime.resolve_model("huge")
    monkeypatch.setenv("XDYNA_OFFICIAL_MODEL", "/nowhere")
    with pytest.raises(ModelUnavailable, match="XDYNA_OFFICIAL_MODEL=/nowhere is not a model folder"):
        runtime.official_model_dir()


def test_system_line_names_device_precision_and_memory():
    line = view.describe_system(runtime.MODEL_TINY)
    assert "Device:" in line and "precision:" in line and " GB free of " in line
    trained = runtime.tiny_model_dir() is not None
    assert ("untrained demo weights" in line) != trained


def test_tiny_model_is_loaded_once(tiny):
    manager = runtime.ModelManager()
    spec = runtime.resolve_model("tiny")
    first = manager.get(spec, torch.device("cpu"), torch.float32)
    assert manager.get(spec, torch.device("cpu"), torch.float32) is first
    assert first.device.type == "cpu" and ("UNTRAINED" in view.model_label("tiny")) != first.trained


def test_one_dtype_policy(monkeypatch):
    cpu = torch.device("cpu")
    assert runtime.resolve_dtype(cpu) == torch.float32
    assert runtime.resolve_dtype(cpu, preset_dtype="bfloat16") == torch.float32  # a preset's GPU dtype
    assert runtime.resolve_dtype(cpu, "bfloat16") == torch.bfloat16  # asked for explicitly
    monkeypatch.setenv("XDYNA_DTYPE", "float16")
    assert runtime.resolve_dtype(cpu) == torch.float16
    with pytest.raises(InputError, match="dtype must be one of"):
        runtime.resolve_dtype(cpu, "float8")


# ---- step 1 and step 2 ---------------------------------------------------------------------


def test_extract_gives_previews_and_facts(extracted, inputs):
    from xdyna_core.io import load_image, read_video

    extracted, motion = extracted
    assert motion.num_frames == 5 and motion.size == (64, 64)
    skeleton = read_video(extracted.skeleton_video)
    assert len(skeleton) == 5 and skeleton.frames.shape[1] >= view.PREVIEW_MIN_HEIGHT
    assert load_image(extracted.overlay).shape[0] >= view.PREVIEW_MIN_HEIGHT
    assert "5 of 5 frames" in extracted.facts and "Whole body" in extracted.facts
    photo, clip = inputs
    same = view.extraction_key(photo, clip, extracted.settings)
    assert same == extracted.key
    other = MotionSettings(height=64, width=64, fps=15, max_frames=5, retarget="none")
    assert view.extraction_key(photo, clip, other) != extracted.key


def test_animate_reports_steps_with_eta_and_is_reproducible(motion, inputs, tiny, tmp_path):
    from xdyna_core.io import read_video

    seen = []
    settings = _tiny_settings(num_inference_steps=2, guidance_scale=0, seed=3, strength=1.0)
    manager = runtime.ModelManager()
    a = animate(inputs[0], motion, settings, models=manager,
                progress=view.progress_sentences(lambda f, t: seen.append((f, t))))
    fractions = [f for f, _ in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert any("step 2 of 2" in t for _, t in seen) and any("left" in t for _, t in seen)
    video = read_video(save_video(a, tmp_path / "a.mp4"))
    assert len(video) == 5 and video.fps == pytest.approx(15)
    # Same seed, same settings: the same frames (compared before video encoding).
    again = animate(inputs[0], motion, settings, models=manager)
    assert np.array_equal(a.frames, again.frames)
    assert "Done in" in view.describe_result(a, view.model_label("tiny"), reused=True, seconds=1.0)


def test_cancel_stops_within_a_step_and_writes_nothing(motion, inputs, tmp_path):
    from xdyna_core.animation import GENERATION_LOCK

    cancel = threading.Event()
    steps = []

    def progress(fraction, text):
        steps.append(text)
        if "step 1 of" in text:
            cancel.set()  # as if Cancel was pressed during the first step

    settings = _tiny_settings(num_inference_steps=20, guidance_scale=0, strength=1.0)
    started = time.monotonic()
    with pytest.raises(Cancelled):
        animate(inputs[0], motion, settings, progress=view.progress_sentences(progress), cancel=cancel)
    assert not any("step 3 of" in t for t in steps)
    assert not GENERATION_LOCK.locked()
    assert time.monotonic() - started < 60


# ---- small pieces --------------------------------------------------------------------------


def test_progress_eta_counts_down():
    out = []
    eta = view.ProgressETA(lambda f, t: out.append((f, t)), start=0.0, span=0.5)
    for done in range(1, 5):
        eta(done, 4, f"unit {done}")
        time.sleep(0.01)
    assert [f for f, _ in out] == [0.125, 0.25, 0.375, 0.5]
    assert "left" not in out[0][1] and "left" in out[1][1]


def test_workspace_prunes_old_jobs_and_cleans_up(tmp_path):
    ws = Workspace(root=tmp_path, max_age_s=60)
    old = ws.new_job("animate")
    (old / "video.mp4").write_bytes(b"x")
    past = time.time() - 120
    os.utime(old, (past, past))
    new = ws.new_job("animate")
    assert not old.exists() and new.exists()
    ws.close()
    assert not ws.root.exists()


def test_motion_cache_keeps_the_newest_files(tmp_path):
    for i in range(5):
        f = tmp_path / f"{i}.npz"
        f.write_bytes(b"x")
        os.utime(f, (1000 + i, 1000 + i))
    assert prune_cache(tmp_path, 3) == 2
    assert sorted(f.name for f in tmp_path.iterdir()) == ["2.npz", "3.npz", "4.npz"]
    assert prune_cache(tmp_path / "missing", 3) == 0


def test_for_display_enlarges_small_previews_only():
    small = np.zeros((3, 64, 32, 3), np.uint8)
    small[:, 0, 0] = 255
    big = view.for_display(small)
    assert big.shape == (3, 256, 128, 3) and (big[:, :4, :4] == 255).all()
    assert view.for_display(np.zeros((300, 200, 3), np.uint8)).shape == (300, 200, 3)


def test_zero_gpu_is_described_without_touching_cuda(monkeypatch):
    monkeypatch.setenv("SPACES_ZERO_GPU", "true")
    info = runtime.device_info()
    assert info.device == "cuda" and info.dtype == "float16"
    text = view.describe_device(info)
    assert "ZeroGPU" in text and "not known until a generation starts" in text
    runtime.check_model(runtime.resolve_model("official"))  # allowed: the GPU comes per call


def test_official_weights_missing_offline_is_explained(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # an empty hub cache
    with pytest.raises(ModelUnavailable) as err:
        runtime.load_pipeline(runtime.ModelSpec("official", None), torch.device("cpu"), torch.float32)
    text = str(err.value)
    assert "could not be loaded" in text and "xdyna convert" in text and "XDYNA_OFFICIAL_MODEL" in text


def test_native_size_of_a_tiny_model_folder(monkeypatch, tmp_path):
    import json

    (tmp_path / "unet").mkdir()
    (tmp_path / "vae").mkdir()
    (tmp_path / "model_index.json").write_text("{}")
    (tmp_path / "vae" / "config.json").write_text(json.dumps({"block_out_channels": [16, 32, 64, 64]}))
    monkeypatch.setenv("XDYNA_TINY_MODEL", str(tmp_path))
    (tmp_path / "unet" / "config.json").write_text(json.dumps({"sample_size": [32, 16]}))
    assert runtime.native_size(runtime.resolve_model("tiny")) == (256, 128)  # (height, width) of a portrait model
    (tmp_path / "unet" / "config.json").write_text(json.dumps({"sample_size": 16}))
    assert runtime.native_size(runtime.resolve_model("tiny")) == (128, 128)
    assert view.preset_values("tiny-offline", LIMITS, runtime.MODEL_TINY)["resolution"] == "128x128"
    assert "trained on synthetic dancers" in view.describe_system(runtime.MODEL_TINY)


def test_what_the_page_says_of_real_photos_is_what_was_measured():
    import json

    measured = json.loads((Path(__file__).resolve().parents[1] / "benchmarks" / "results"
                           / "real_photo_eval_tiny_2clips.json").read_text())["summary"]
    assert "none of its frames" in view.TINY_MODEL_ON_REAL_PHOTOS and measured["model"]["follows"] == 0
    assert "repeating the photo does better" in view.TINY_MODEL_ON_REAL_PHOTOS
    assert measured["repeat_photo"]["pck"] > measured["model"]["pck"]
    if runtime.tiny_model_dir() is not None:
        assert view.TINY_MODEL_ON_REAL_PHOTOS in view.describe_system(runtime.MODEL_TINY)


# ---- choosing the dancer -------------------------------------------------------------------


def test_dancer_widget_values_become_the_engines_person():
    assert view.parse_dancer("auto") is None and view.parse_dancer(None) is None
    assert view.parse_dancer("2") == 2 and view.parse_dancer(3) == 3 and view.parse_dancer("Dancer 4") == 4
    for bad in ("-1", "1.5", "left", 0.5):
        with pytest.raises(InputError, match="Dancer must be a number"):
            view.parse_dancer(bad)
    assert view.motion_settings("64x128", "15", 12, "none", LIMITS, "2").person == 2
    assert [v for _, v in view.dancer_choices(2)] == [view.MOST_VISIBLE, "1", "2"]


def test_dancers_of_a_clip_are_numbered_and_clickable(tmp_path):
    """Two real photos side by side: the page counts two dancers on the part of the clip step 1
    uses, draws them numbered from the left, and a click on one gives its number."""
    from test_people import A_LEFT, B_LEFT, FPS, _compose, _photos
    from xdyna_core.io import write_video

    clip = write_video(tmp_path / "duet.mp4", _compose(_photos(), [A_LEFT, B_LEFT]), fps=FPS, crf=14)
    dancers = view.find_dancers_view(clip, "15", 12, LIMITS, tmp_path)
    assert dancers.count == 2 and dancers.image.is_file() and "2 dancers" in dancers.text
    (a0, _, a1, _), (b0, _, b1, _) = dancers.dancers.boxes
    assert a1 <= b0  # left to right
    for n, (x0, y0, x1, y1) in enumerate(dancers.dancers.boxes, 1):
        assert view.dancer_clicked(dancers, (x0 + x1) / 2, (y0 + y1) / 2) == n
    assert view.dancer_clicked(dancers, 1, 1) is None
    assert dancers.dancers.frame.size <= 3  # the session keeps the boxes, not the frame

    alone = write_video(tmp_path / "solo.mp4", _compose(_photos()[:1], [[100] * 12]), fps=FPS, crf=14)
    solo = view.find_dancers_view(alone, "15", 12, LIMITS, tmp_path)
    assert solo.count == 1 and solo.image is None and "One dancer" in solo.text
