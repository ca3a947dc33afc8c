"""One engine behind every door: the same photo, clip, settings and seed give the same video
through the CLI (`xdyna animate --video`), the running studio's `/animate` endpoint (gradio_client)
and Python (`xdyna_core.animation`), on a real photograph and a real clip; and the same command run
twice, in two processes, writes the same file byte for byte."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import numpy as np
import pytest

import app_view as view
from xdyna_core.animation import animate, resolve_settings, save_video
from xdyna_core.io import read_video

from test_app_browser import make_inputs

pytestmark = pytest.mark.slow

SETTINGS = dict(size="64x128", fps=8, max_frames=8, retarget="global", preset="tiny-offline", steps=3, seed=5)


def _cli(photo, clip, out, cache):
    cmd = [sys.executable, "-m", "xdyna_core.cli", "animate", "--image", str(photo), "--video", str(clip),
           "--size", SETTINGS["size"], "--fps", str(SETTINGS["fps"]), "--max-frames", str(SETTINGS["max_frames"]),
           "--retarget", SETTINGS["retarget"], "--preset", SETTINGS["preset"], "--steps", str(SETTINGS["steps"]),
           "--seed", str(SETTINGS["seed"]), "-o", str(out), "--quiet"]
    env = dict(os.environ, XDYNA_CACHE_DIR=str(cache))
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return out


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return make_inputs(tmp_path_factory.mktemp("inputs"))


@pytest.fixture(scope="module")
def cli_video(inputs, tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli")
    return _cli(*inputs, folder / "out.mp4", folder / "cache")


def test_the_same_command_twice_writes_the_same_file(inputs, cli_video, tmp_path):
    again = _cli(*inputs, tmp_path / "again.mp4", tmp_path / "cache")  # another process, a cold cache
    assert again.read_bytes() == cli_video.read_bytes()
    video = read_video(cli_video)
    assert len(video) == SETTINGS["max_frames"] and video.frames.shape[1:3] == (128, 64) and video.fps == 8


def test_python_gives_the_cli_frames(inputs, cli_video, tmp_path, monkeypatch):
    monkeypatch.setenv("XDYNA_CACHE_DIR", str(tmp_path / "cache"))
    photo, clip = inputs
    settings = resolve_settings(model="tiny", preset=SETTINGS["preset"], size=SETTINGS["size"], fps=SETTINGS["fps"],
                                max_frames=SETTINGS["max_frames"], retarget=SETTINGS["retarget"],
                                num_inference_steps=SETTINGS["steps"], seed=SETTINGS["seed"])
    result = animate(photo, clip, settings)
    written = save_video(result, tmp_path / "python.mp4")
    assert written.read_bytes() == cli_video.read_bytes()
    assert np.array_equal(read_video(written).frames, read_video(cli_video).frames)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_studio_gives_the_cli_video(inputs, cli_video, tmp_path):
    from gradio_client import Client, handle_file

    os.environ["XDYNA_CACHE_DIR"] = str(tmp_path / "cache")
    import app

    demo = app.build_demo()
    port = _free_port()
    app.launch(demo, server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        p = view.preset_values(SETTINGS["preset"], app.LIMITS, "tiny")  # the sliders as the preset sets them
        photo, clip = inputs
        video, *_ = Client(f"http://127.0.0.1:{port}", verbose=False).predict(
            photo=handle_file(str(photo)), driving_clip=handle_file(str(clip)), model="tiny",
            resolution=SETTINGS["size"], fps=str(SETTINGS["fps"]), max_frames=SETTINGS["max_frames"],
            retarget=SETTINGS["retarget"], prompt=p["prompt"], negative_prompt=p["negative_prompt"],
            guidance_scale=p["guidance_scale"], adapter_scale=p["adapter_scale"], pose_strength=p["pose_strength"],
            face_strength=p["face_strength"], steps=SETTINGS["steps"], seed=SETTINGS["seed"],
            window_overlap=p["window_overlap"], window_schedule=p["window_schedule"], preset=SETTINGS["preset"],
            api_name="/animate")
    finally:
        demo.close()
    path = video["video"] if isinstance(video, dict) else video
    assert np.array_equal(read_video(path).frames, read_video(cli_video).frames)
    with open(path, "rb") as fh:
        assert fh.read() == cli_video.read_bytes()
