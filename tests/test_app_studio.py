"""xdyna_core.studio: the engine-facing glue of the app, tested without a browser
(limits, uploads, settings, presets, model choice, progress, cancel, temporary files)."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from xdyna_core import studio
from xdyna_core.errors import Cancelled, InputError

from test_app_browser import make_inputs

LIMITS = studio.Limits()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return make_inputs(tmp_path_factory.mktemp("inputs"))


@pytest.fixture(scope="module")
def extracted(inputs, tmp_path_factory):
    os.environ["XDYNA_CACHE_DIR"] = str(tmp_path_factory.mktemp("cache"))
    photo, clip = inputs
    settings = studio.MotionSettings(height=64, width=64, fps=15, max_frames=5, retarget="global")
    return studio.extract(photo, clip, settings, limits=LIMITS, workdir=tmp_path_factory.mktemp("ex"))


@pytest.fixture(scope="module")
def tiny():
    return studio.ModelManager().get(studio.MODEL_TINY)


# ---- limits and uploads --------------------------------------------------------------------


def test_limits_from_env():
    assert studio.limits_from_env({}) == studio.Limits()
    lim = studio.limits_from_env({"XDYNA_MAX_FRAMES": "12", "XDYNA_MAX_UPLOAD_MB": "2.5", "XDYNA_MAX_SIDE": ""})
    assert lim.max_frames == 12 and lim.max_upload_mb == 2.5 and lim.max_side == studio.Limits().max_side
    with pytest.raises(InputError, match="XDYNA_MAX_STEPS"):
        studio.limits_from_env({"XDYNA_MAX_STEPS": "lots"})
    with pytest.raises(InputError, match="XDYNA_MAX_FRAMES must be positive"):
        studio.limits_from_env({"XDYNA_MAX_FRAMES": "0"})


def test_uploads_outside_limits_are_refused_politely(inputs, tmp_path):
    photo, clip = inputs
    assert studio.check_photo(photo, LIMITS) == photo
    path, info = studio.check_clip(clip, LIMITS)
    assert path == clip and info.width == 512 and abs(info.duration - 24 / 15) < 0.1

    with pytest.raises(InputError, match="Add a driving clip"):
        studio.check_clip(None, LIMITS)
    with pytest.raises(InputError, match=r"accepts up to 0 MB"):
        studio.check_clip(clip, studio.Limits(max_upload_mb=0.01))
    with pytest.raises(InputError, match=r"lasts 2 s; this studio accepts clips up to 1 s"):
        studio.check_clip(clip, studio.Limits(max_clip_seconds=1))
    text = tmp_path / "song.txt"
    text.write_text("la la la")
    with pytest.raises(InputError, match="“song.txt” does not look like a driving clip"):
        studio.check_clip(text, LIMITS)
    fake = tmp_path / "fake.mp4"
    fake.write_text("not a video")
    with pytest.raises(InputError, match="fake.mp4"):
        studio.check_clip(fake, LIMITS)
    with pytest.raises(InputError, match="does not look like a photo"):
        studio.check_photo(clip, LIMITS)


def test_settings_are_validated_with_messages():
    ok = studio.MotionSettings(height=128, width=64, fps=None, max_frames=8)
    assert ok.validate(LIMITS) is ok
    with pytest.raises(InputError, match="multiples of 64"):
        studio.MotionSettings(height=100, width=64).validate(LIMITS)
    with pytest.raises(InputError, match="limit of 512"):
        studio.MotionSettings(height=896, width=512).validate(studio.Limits(max_side=512))
    with pytest.raises(InputError, match="between 1 and 64"):
        studio.MotionSettings(max_frames=65).validate(LIMITS)
    with pytest.raises(InputError, match="Retarget"):
        studio.MotionSettings(retarget="sideways").validate(LIMITS)
    with pytest.raises(InputError, match="Smooth joins"):
        studio.GenerationSettings(window_overlap=16).validate(LIMITS)
    with pytest.raises(InputError, match="between 1 and 50"):
        studio.GenerationSettings(num_inference_steps=51).validate(LIMITS)
    assert studio.parse_resolution("512×896") == (512, 896)
    assert studio.parse_fps("clip") is None and studio.parse_fps("12") == 12.0
    with pytest.raises(InputError):
        studio.parse_resolution("big")


def test_presets_fill_every_setting_with_allowed_values():
    names = [v for _, v in studio.preset_choices()]
    assert {"official", "fast-preview", "tiny-offline"} <= set(names)
    sizes = [studio.native_size(c) for _, c in studio.model_choices()]
    resolutions = {v for _, v in studio.resolution_choices(LIMITS, extra=sizes)}
    for name in names:
        for choice in (studio.MODEL_TINY, studio.MODEL_OFFICIAL):
            v = studio.preset_values(name, LIMITS, choice)
            assert v["resolution"] in resolutions, (name, v["resolution"])
            assert 1 <= v["steps"] <= LIMITS.max_steps
            assert 0 <= v["window_overlap"] <= studio.WINDOW_SIZE // 2
            studio.GenerationSettings(num_inference_steps=v["steps"], guidance_scale=v["guidance_scale"],
                                      window_overlap=v["window_overlap"],
                                      window_schedule=v["window_schedule"]).validate(LIMITS)
    assert studio.preset_values("official", LIMITS)["resolution"] == "512x896"
    assert studio.preset_values("official", studio.Limits(max_side=512))["resolution"] == "256x512"
    assert studio.preset_for_model(studio.MODEL_OFFICIAL) == "official"
    assert studio.preset_for_model(studio.MODEL_TINY) == "tiny-offline"


def test_preset_options_without_a_widget_reach_the_pipeline(extracted, tiny):
    assert studio.preset_extras("") == () and studio.preset_extras("official") == ()
    extra = dict(studio.preset_extras("fast-all"))
    assert extra["sampler"] == "dpmpp" and extra["deep_cache_interval"] == 2
    with pytest.raises(InputError, match="Unknown generation options"):
        studio.GenerationSettings(extra=(("flux_capacitor", 1),)).validate(LIMITS)
    # The tiny model runs with them (same code path as official X-Dyna).
    settings = studio.GenerationSettings(num_inference_steps=3, guidance_scale=2,
                                         extra=studio.preset_extras("fast-all")).validate(LIMITS)
    frames, _ = studio.generate(extracted, settings, tiny)
    plain, _ = studio.generate(extracted, studio.GenerationSettings(num_inference_steps=3, guidance_scale=2), tiny)
    assert frames.shape == plain.shape and not np.array_equal(frames, plain)


def test_untrained_tiny_size_matches_the_engine():
    from xdyna_core.tiny import TINY_RESOLUTION

    assert studio.UNTRAINED_TINY_SIZE == TINY_RESOLUTION


def test_examples_exist_when_listed():
    for photo, clip in studio.example_pairs():
        assert Path(photo).is_file() and Path(clip).is_file()


# ---- model choice ----------------------------------------------------------------------------


def test_official_model_without_gpu_says_what_to_do(monkeypatch):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU; the no-GPU message cannot be shown here")
    with pytest.raises(studio.ModelUnavailable, match="needs a CUDA GPU.*embedded tiny model"):
        studio.ModelManager().get(studio.MODEL_OFFICIAL)
    assert "needs a CUDA GPU" in studio.describe_system(studio.MODEL_OFFICIAL)
    with pytest.raises(InputError, match="Unknown model"):
        studio.ModelManager().get("huge")
    monkeypatch.setenv("XDYNA_OFFICIAL_MODEL", "/nowhere")
    with pytest.raises(studio.ModelUnavailable, match="XDYNA_OFFICIAL_MODEL=/nowhere is not a model folder"):
        studio.official_model_dir()


def test_system_line_names_device_precision_and_memory():
    line = studio.describe_system(studio.MODEL_TINY)
    assert "Device:" in line and "precision:" in line and " GB free of " in line
    trained = studio.tiny_model_dir() is not None
    assert ("untrained demo weights" in line) != trained


def test_tiny_model_is_loaded_once(tiny):
    manager = studio.ModelManager()
    first = manager.get(studio.MODEL_TINY)
    assert manager.get(studio.MODEL_TINY) is first
    assert first.device in ("cpu", "cuda") and ("UNTRAINED" in first.label) != first.trained


# ---- step 1 and step 2 ---------------------------------------------------------------------


def test_extract_gives_previews_and_facts(extracted, inputs):
    from xdyna_core.io import read_video

    assert extracted.motion.num_frames == 5 and extracted.motion.size == (64, 64)
    skeleton = read_video(extracted.skeleton_video)
    assert len(skeleton) == 5 and skeleton.frames.shape[1] >= studio.PREVIEW_MIN_HEIGHT
    assert extracted.overlay.shape[0] >= studio.PREVIEW_MIN_HEIGHT
    assert "5 of 5 frames" in extracted.facts and "Whole body" in extracted.facts
    photo, clip = inputs
    same = studio.extraction_key(photo, clip, extracted.settings)
    assert same == extracted.key
    other = studio.MotionSettings(height=64, width=64, fps=15, max_frames=5, retarget="none")
    assert studio.extraction_key(photo, clip, other) != extracted.key


def test_animate_reports_steps_with_eta_and_is_reproducible(extracted, tiny, tmp_path):
    from xdyna_core.io import read_video

    seen = []
    settings = studio.GenerationSettings(num_inference_steps=2, guidance_scale=0, seed=3)
    (tmp_path / "a").mkdir()
    a = studio.animate(extracted, settings, tiny, workdir=tmp_path / "a", progress=lambda f, t: seen.append((f, t)))
    fractions = [f for f, _ in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert any("step 2 of 2" in t for _, t in seen) and any("left" in t for _, t in seen)
    video = read_video(a.video)
    assert len(video) == 5 and video.fps == pytest.approx(15)
    # Same seed, same settings: the same frames (compared before video encoding).
    first, _ = studio.generate(extracted, settings, tiny)
    again, _ = studio.generate(extracted, settings, tiny)
    assert np.array_equal(first, again)
    assert "Done in" in studio.describe_result(a, tiny.label, reused=True)


def test_cancel_stops_within_a_step_and_writes_nothing(extracted, tiny, tmp_path):
    cancel = threading.Event()
    steps = []

    def progress(fraction, text):
        steps.append(text)
        if "step 1 of" in text:
            cancel.set()  # as if Cancel was pressed during the first step

    settings = studio.GenerationSettings(num_inference_steps=20, guidance_scale=0)
    started = time.monotonic()
    with pytest.raises(Cancelled):
        studio.animate(extracted, settings, tiny, workdir=tmp_path, progress=progress, cancel=cancel)
    assert not any("step 3 of" in t for t in steps)
    assert not studio._GENERATION_LOCK.locked()
    assert list(tmp_path.iterdir()) == []
    assert time.monotonic() - started < 60


# ---- small pieces --------------------------------------------------------------------------


def test_progress_eta_counts_down():
    out = []
    eta = studio.ProgressETA(lambda f, t: out.append((f, t)), start=0.0, span=0.5)
    for done in range(1, 5):
        eta(done, 4, f"unit {done}")
        time.sleep(0.01)
    assert [f for f, _ in out] == [0.125, 0.25, 0.375, 0.5]
    assert "left" not in out[0][1] and "left" in out[1][1]


def test_workspace_prunes_old_jobs_and_cleans_up(tmp_path):
    ws = studio.Workspace(root=tmp_path, max_age_s=60)
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
    assert studio.prune_cache(tmp_path, 3) == 2
    assert sorted(f.name for f in tmp_path.iterdir()) == ["2.npz", "3.npz", "4.npz"]
    assert studio.prune_cache(tmp_path / "missing", 3) == 0


def test_for_display_enlarges_small_previews_only():
    small = np.zeros((3, 64, 32, 3), np.uint8)
    small[:, 0, 0] = 255
    big = studio.for_display(small)
    assert big.shape == (3, 256, 128, 3) and (big[:, :4, :4] == 255).all()
    assert studio.for_display(np.zeros((300, 200, 3), np.uint8)).shape == (300, 200, 3)


def test_zero_gpu_is_described_without_touching_cuda(monkeypatch):
    monkeypatch.setenv("SPACES_ZERO_GPU", "true")
    info = studio.device_info()
    assert info.device == "cuda" and info.dtype == "float16"
    assert "ZeroGPU" in info.describe() and "not known until a generation starts" in info.describe()
    assert studio.check_model(studio.MODEL_OFFICIAL) == info  # allowed: the GPU comes per call


def test_official_weights_missing_offline_is_explained(monkeypatch, tmp_path):
    import torch

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # an empty hub cache
    with pytest.raises(studio.ModelUnavailable) as err:
        studio.official_pipeline(None, torch.float32)
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
    assert studio.native_size(studio.MODEL_TINY) == (128, 256)  # (width, height) of a portrait model
    (tmp_path / "unet" / "config.json").write_text(json.dumps({"sample_size": 16}))
    assert studio.native_size(studio.MODEL_TINY) == (128, 128)
    assert studio.preset_values("tiny-offline", LIMITS, studio.MODEL_TINY)["resolution"] == "128x128"
    assert "trained on synthetic dancers" in studio.describe_system(studio.MODEL_TINY)
