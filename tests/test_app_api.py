"""The studio's named API endpoints, scripted with gradio_client as Space users do."""

from __future__ import annotations

import os
import socket

import pytest

from test_app_browser import make_inputs


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def url(tmp_path_factory):
    os.environ["XDYNA_CACHE_DIR"] = str(tmp_path_factory.mktemp("cache"))
    import app

    demo = app.build_demo()
    port = _free_port()
    app.launch(demo, server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    yield f"http://127.0.0.1:{port}"
    demo.close()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return make_inputs(tmp_path_factory.mktemp("inputs"))


def test_api_lists_extract_and_animate(url):
    from gradio_client import Client

    api = Client(url, verbose=False).view_api(return_format="dict", print_info=False)
    named = api["named_endpoints"]
    assert "/extract" in named and "/animate" in named
    params = [p["parameter_name"] for p in named["/animate"]["parameters"]]
    assert params[:2] == ["photo", "driving_clip"] and "seed" in params and "motion_state" not in params
    assert params[-1] == "keep_audio"  # added last, with a default: older scripts keep working
    # The page's helpers (cancel, presets, seed dice) are not part of the public API.
    assert set(named) == {"/extract", "/animate"}


def test_extract_then_animate_with_gradio_client(url, inputs):
    from gradio_client import Client, handle_file

    from xdyna_core.io import read_video

    photo, clip = inputs
    client = Client(url, verbose=False)
    skeleton, faces, overlay, facts = client.predict(
        photo=handle_file(str(photo)), driving_clip=handle_file(str(clip)), resolution="64x64", fps="15",
        max_frames=6, retarget="global", api_name="/extract")
    skeleton_video = read_video(skeleton["video"] if isinstance(skeleton, dict) else skeleton)
    assert len(skeleton_video) == 6 and skeleton_video.frames.shape[1] == skeleton_video.frames.shape[2] >= 64
    assert os.path.isfile(faces["video"] if isinstance(faces, dict) else faces)
    assert os.path.isfile(overlay)
    assert "6 of 6 frames" in facts

    out = client.predict(
        photo=handle_file(str(photo)), driving_clip=handle_file(str(clip)), model="tiny", resolution="64x64",
        fps="15", max_frames=6, retarget="global", prompt="", negative_prompt="", guidance_scale=0,
        adapter_scale=1.0, pose_strength=1.0, face_strength=1.0, steps=2, seed=7, window_overlap=4,
        window_schedule="blend", api_name="/animate")
    result, side, files, status = out[:4]
    video = read_video(result["video"] if isinstance(result, dict) else result)
    assert len(video) == 6 and video.fps == pytest.approx(15, abs=0.01) and video.frames.shape[1:3] == (64, 64)
    assert len(files) == 2 and all(os.path.isfile(f) for f in files)
    # Same client = same session: the motion extracted by /extract was re-used.
    assert "Motion re-used" in status and "seed 7" in status


def test_api_error_is_a_message(url, inputs, tmp_path):
    from gradio_client import Client, handle_file

    photo, _ = inputs
    fake = tmp_path / "notes.mp4"
    fake.write_text("not a video")
    client = Client(url, verbose=False)
    with pytest.raises(Exception) as err:
        client.predict(photo=handle_file(str(photo)), driving_clip=handle_file(str(fake)), resolution="64x64",
                       fps="15", max_frames=6, retarget="global", api_name="/extract")
    assert "notes.mp4" in str(err.value) and "Traceback" not in str(err.value)


def test_animate_keeps_the_clips_sound(url, tmp_path):
    from gradio_client import Client, handle_file

    from test_audio import decoded_sound, make_media, onsets

    media = make_media(tmp_path)
    client = Client(url, verbose=False)
    args = dict(photo=handle_file(str(media["photo"])), driving_clip=handle_file(str(media["beeps"])), model="tiny",
                resolution="64x128", fps="8", max_frames=12, retarget="global", prompt="", negative_prompt="",
                guidance_scale=0, adapter_scale=1.0, pose_strength=1.0, face_strength=1.0, steps=1, seed=7,
                window_overlap=4, window_schedule="blend", api_name="/animate")
    for keep in (None, False):  # the default (not given), then switched off
        out = client.predict(**args, **({} if keep is None else {"keep_audio": keep}))
        for video in out[:2]:  # the result and the side-by-side
            path = video["video"] if isinstance(video, dict) else video
            sound = decoded_sound(path)
            if keep is None:
                x, rate = sound[:2]
                assert onsets(x, rate) == pytest.approx([0.5, 1.25], abs=1 / 30)  # 30 fps clip, animated at 8 fps
            else:
                assert sound is None
