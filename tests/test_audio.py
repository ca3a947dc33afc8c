"""The result keeps the driving clip's sound, cut to the animated part and in sync with it.

The clips beep (1 kHz, 0.1 s) at known times over frames of a moving photograph, so a test can
decode the written sound and check where the beeps fall relative to the video's start, how long
the sound lasts and that the tone kept its pitch."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import warnings
from pathlib import Path

import av
import imageio_ffmpeg
import numpy as np
import pytest

from xdyna_core import audio
from xdyna_core.animation import Animation, animate, clip_of, motion_from_videos, resolve_settings, save_side_by_side, save_video
from xdyna_core.errors import InputError
from xdyna_core.io import read_video, write_video
from xdyna_core.preprocess.motion import Motion

from test_app_browser import make_inputs

BEEPS = (0.5, 1.25, 2.0, 2.6)  # seconds of the source clip
BEEP_SECONDS = 0.1
TONE_HZ = 1000.0
SOURCE_FPS = 30  # of the clips; the results are made at 8 fps (resampled by timestamps)
TOLERANCE = 1.0 / SOURCE_FPS  # a beep must land within one source frame (much less than one output frame)
ANIMATE = dict(model="tiny", preset="tiny-offline", size="64x128", fps=8, max_frames=12, retarget="global",
               num_inference_steps=2, seed=3)


# --------------------------------------------------------------------------------------
# Media
# --------------------------------------------------------------------------------------


def beep_track(rate: int, seconds: float, channels: int = 1) -> np.ndarray:
    """float32 [N, channels]: silence with 1 kHz beeps at BEEPS."""
    t = np.arange(int(round(rate * seconds))) / rate
    x = np.zeros_like(t)
    for b in BEEPS:
        on = (t >= b) & (t < b + BEEP_SECONDS)
        x[on] = 0.5 * np.sin(2 * np.pi * TONE_HZ * (t[on] - b))
    return np.repeat(x.astype(np.float32)[:, None], channels, axis=1)


def mux(video: Path, out: Path, codec: str = "aac", rate: int = 44100, seconds: float = 3.0, channels: int = 1,
        extra=()) -> Path:
    """`video` + the beeps encoded with `codec` (ffmpeg), written to `out`."""
    pcm = beep_track(rate, seconds, channels)
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", "-i", str(video), "-f", "f32le", "-ar", str(rate),
           "-ac", str(channels), "-i", "pipe:0", "-map", "0:v", "-map", "1:a", "-c:v", "copy", "-c:a", codec,
           *extra, str(out)]
    subprocess.run(cmd, input=pcm.tobytes(), check=True, capture_output=True)
    return out


def decoded_sound(path):
    """(mono samples, rate, first sample time, stated duration, codec), or None without an audio stream."""
    with av.open(str(path)) as c:
        if not c.streams.audio:
            return None
        s = c.streams.audio[0]
        parts, first = [], None
        for f in c.decode(s):
            first = f.time if first is None else first
            parts.append(f.to_ndarray().reshape(len(f.layout.channels), -1).mean(0) if f.format.is_planar
                         else f.to_ndarray().reshape(-1, len(f.layout.channels)).mean(1))
        x = np.concatenate(parts).astype(np.float64)
        rate = s.codec_context.sample_rate
        # the duration the container states (players trim to it); WebM states none per stream
        stated = float(s.duration * s.time_base) if s.duration else len(x) / rate
        return x, rate, first, stated, s.codec_context.name


def audio_packets(path) -> list:
    """The bytes of the audio packets of a file, in order."""
    with av.open(str(path)) as c:
        return [bytes(p) for p in c.demux(c.streams.audio[0]) if p.size]


def onsets(x: np.ndarray, rate: int) -> list:
    """Start times (s) of the beeps: where the 5 ms envelope rises above a quarter of the beeps' level."""
    k = max(1, int(rate * 0.005))
    env = np.convolve(np.abs(x), np.ones(k) / k, mode="same")
    on = env > 0.08
    edges = np.flatnonzero(on[1:] & ~on[:-1]) + 1
    return ([0.0] if on[0] else []) + [round(float(e) / rate, 4) for e in edges]


def pitch(x: np.ndarray, rate: int, at: float) -> float:
    """Dominant frequency (Hz) of the 0.08 s from `at`."""
    seg = x[int(at * rate) + int(0.01 * rate): int(at * rate) + int(0.09 * rate)]
    spectrum = np.abs(np.fft.rfft(seg * np.hanning(len(seg)), n=1 << 16))
    return float(np.fft.rfftfreq(1 << 16, 1 / rate)[spectrum.argmax()])


def check_beeps(path, animation: Animation):
    """The written sound plays the source's beeps from the source time of the animation's first
    frame, for as long as the video lasts."""
    start, fps = float(animation.motion.timestamps[0]), animation.fps
    duration = animation.num_frames / fps
    got = decoded_sound(path)
    assert got is not None, f"{path} has no sound"
    x, rate, first, stated, codec = got
    video = read_video(path)
    assert len(video) / video.fps == pytest.approx(duration, abs=1e-6)
    assert abs(first) < 1e-3  # the sound starts with the first frame
    assert abs(stated - duration) < 1.0 / fps  # and lasts as long as the video, within one frame
    expected = [b - start for b in BEEPS if 0 < b - start and b - start + BEEP_SECONDS < duration]
    found = onsets(x, rate)
    assert len(found) == len(expected), (found, expected)
    for want, seen in zip(expected, found):
        assert abs(seen - want) < TOLERANCE, (found, expected)
        assert pitch(x, rate, seen) == pytest.approx(TONE_HZ, abs=15)  # same speed, same pitch
    return codec


def make_media(folder: Path) -> dict:
    """The photo, a silent clip, and 3 s clips at 30 fps of a moving photograph: `video` without
    sound, `beeps` with the beeps (AAC), `damaged` with its audio packets overwritten by noise,
    and `audio_only` (the beeps alone)."""
    import cv2

    photo, silent_clip = make_inputs(folder)

    img = cv2.resize(cv2.cvtColor(cv2.imread(str(photo)), cv2.COLOR_BGR2RGB), (256, 256))
    frames = []
    for t in range(int(3.0 * SOURCE_FPS)):  # 3 s of a moving photograph at 30 fps
        m = cv2.getRotationMatrix2D((128, 128), 6 * np.sin(t / 8), 1 + 0.05 * np.sin(t / 12))
        frames.append(cv2.warpAffine(img, m, (256, 256), borderMode=cv2.BORDER_REFLECT))
    video = write_video(folder / "video.mp4", np.stack(frames), SOURCE_FPS)
    beeps = mux(video, folder / "beeps.mp4")
    # The same clip with its audio packets overwritten by noise: the pictures still decode.
    damaged = folder / "damaged.mp4"
    data = bytearray(beeps.read_bytes())
    with av.open(str(beeps)) as c:
        spans = [(p.pos, p.size) for p in c.demux(c.streams.audio[0]) if p.pos is not None and p.size]
    noise = np.random.default_rng(0)
    for pos, size in spans:
        data[pos:pos + size] = noise.integers(0, 256, size, dtype=np.uint8).tobytes()
    damaged.write_bytes(bytes(data))
    audio_only = folder / "music.mp4"
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", "-i", str(beeps), "-vn", "-c:a", "copy",
                    str(audio_only)], check=True)
    return dict(folder=folder, photo=photo, silent=silent_clip, video=video, beeps=beeps, damaged=damaged,
                audio_only=audio_only)


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    return make_media(tmp_path_factory.mktemp("audio"))


@pytest.fixture(scope="module")
def result(media, tmp_path_factory):
    """The beeping clip animated by the tiny model at 8 fps, 12 frames (1.5 s of the 3 s clip)."""
    cache = tmp_path_factory.mktemp("cache")
    return animate(media["photo"], media["beeps"], resolve_settings(**ANIMATE), cache_dir=cache)


def made_from(result: Animation, clip: Path, fps: float, first: int, count: int) -> Animation:
    """`result`'s frames (repeated as needed) as if `count` frames of `clip` from frame `first` at
    `fps` had been animated: the motion's timestamps are the ones read_video resamples to."""
    stamps = read_video(clip, fps=fps).timestamps[first:first + count]
    frames = result.frames[np.arange(count) % len(result.frames)]
    n = len(result.motion)
    pick = lambda a: None if a is None else a[np.arange(count) % n]  # noqa: E731
    motion = dataclasses.replace(result.motion, **{k: pick(getattr(result.motion, k)) for k in (
        "pose_images", "face_images", "person_found", "face_found", "keypoints", "driving_keypoints",
        "driving_frames")}, timestamps=stamps, fps=float(fps))
    return dataclasses.replace(result, frames=frames, fps=float(fps), motion=motion, clip=str(clip), warnings=[])


# --------------------------------------------------------------------------------------
# Through the engine (the tiny model)
# --------------------------------------------------------------------------------------


def test_the_result_plays_the_clips_beeps_in_time(result, media, tmp_path):
    assert result.clip == str(media["beeps"]) and result.fps == 8 and result.num_frames == 12
    with warnings.catch_warnings():
        warnings.simplefilter("error", audio.SoundWarning)
        video = save_video(result, tmp_path / "out.mp4")
        side = save_side_by_side(result, tmp_path / "side.mp4")
    # 30 fps resampled to 8 fps, cut at 12 frames = 1.5 s: the beeps at 0.5 and 1.25 s, at the same
    # times and pitch; the ones at 2.0 and 2.6 s are past the animated part.
    assert check_beeps(video, result) == "aac"
    assert check_beeps(side, result) == "aac"
    assert result.warnings == []
    # AAC that starts with the animated part is copied, not re-encoded (no second generation loss)
    assert audio_packets(video)[:20] == audio_packets(media["beeps"])[:20]
    again = save_video(result, tmp_path / "again.mp4")
    assert again.read_bytes() == video.read_bytes()  # same inputs, same bytes
    silent = save_video(result, tmp_path / "silent.mp4", keep_audio=False)
    assert decoded_sound(silent) is None
    assert np.array_equal(read_video(silent).frames, read_video(video).frames)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["again.mp4", "out.mp4", "side.mp4", "silent.mp4"]


def test_a_later_start_is_cut_from_there(result, media, tmp_path):
    # frames 5..16 at 8 fps: the source frame nearest 0.625 s is at 19/30 s; the sound is cut (and
    # re-encoded) from there, so the beep at 1.25 s plays at 0.617 s and the one at 2.0 s at 1.367 s
    later = made_from(result, media["beeps"], 8, 5, 12)
    assert later.motion.timestamps[0] == pytest.approx(19 / 30)
    assert check_beeps(save_video(later, tmp_path / "later.mp4"), later) == "aac"


def test_other_codecs_rates_and_containers(result, media, tmp_path):
    pcm = made_from(result, mux(media["video"], tmp_path / "pcm.mov", codec="pcm_s16le", rate=22050, channels=2),
                    30, 0, 45)
    assert check_beeps(save_video(pcm, tmp_path / "pcm.mp4"), pcm) == "aac"
    odd = made_from(result, mux(media["video"], tmp_path / "odd.mkv", codec="flac", rate=37800), 8, 0, 12)
    assert check_beeps(save_video(odd, tmp_path / "odd.mp4"), odd) == "aac"  # no AAC rate: resampled to 48 kHz
    later = made_from(result, media["beeps"], 8, 2, 12)
    assert check_beeps(save_video(later, tmp_path / "out.webm"), later) == "opus"  # WebM holds no AAC


@pytest.mark.parametrize("delayed", ["video", "audio"])
def test_streams_that_start_apart_stay_in_sync(result, media, tmp_path, delayed):
    # The file's own sync holds: sound at time t plays with the frame shown at time t.
    shifted = tmp_path / "shifted.mp4"
    first = ["-itsoffset", "0.2"] if delayed == "video" else []
    second = ["-itsoffset", "0.2"] if delayed == "audio" else []
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", *first, "-i", str(media["video"]), *second,
                    "-i", str(media["beeps"]), "-map", "0:v", "-map", "1:a", "-c", "copy", str(shifted)], check=True)
    animation = made_from(result, shifted, 8, 0, 12)
    out = save_video(animation, tmp_path / "out.mp4")
    x, rate, first_time, stated, _ = decoded_sound(out)
    # video first: its first frame is at 0.2 s of the file, so the beep at 0.5 s plays 0.3 s in;
    # sound first: it starts 0.2 s after the first frame, so the beep plays at 0.7 s
    want = [0.3, 1.05] if delayed == "video" else [0.7, 1.45]
    assert onsets(x, rate) == pytest.approx(want, abs=TOLERANCE)
    assert abs(first_time) < 1e-3 and abs(stated - 1.5) < 1 / 8


def test_sound_shorter_than_the_video_is_padded_with_silence(result, media, tmp_path):
    short = mux(media["video"], tmp_path / "short.mp4", seconds=1.0)  # the sound stops after 1 s
    out = save_video(made_from(result, short, 8, 0, 12), tmp_path / "out.mp4")
    x, rate, first, stated, _ = decoded_sound(out)
    assert abs(stated - 1.5) < 1 / 8 and onsets(x, rate) == pytest.approx([0.5], abs=TOLERANCE)


def test_a_clip_without_sound_gives_a_silent_video_and_no_warning(result, media, tmp_path):
    quiet = made_from(result, media["video"], 8, 0, 12)
    with warnings.catch_warnings():
        warnings.simplefilter("error", audio.SoundWarning)
        out = save_video(quiet, tmp_path / "out.mp4")
    assert decoded_sound(out) is None and quiet.warnings == [] and len(read_video(out)) == 12


def test_a_damaged_sound_track_gives_a_silent_video_and_a_warning(result, media, tmp_path):
    damaged = made_from(result, media["damaged"], 8, 0, 12)
    with pytest.warns(audio.SoundWarning, match="sound was left out.*damaged"):
        out = save_video(damaged, tmp_path / "out.mp4")
    assert decoded_sound(out) is None and len(read_video(out)) == 12
    assert len(damaged.warnings) == 1 and "damaged" in damaged.warnings[0]
    with warnings.catch_warnings(record=True) as again:
        warnings.simplefilter("always")
        side = save_side_by_side(damaged, tmp_path / "side.mp4")
    assert decoded_sound(side) is None and len(read_video(side)) == 12
    assert len(damaged.warnings) == 1 and not again  # said once for both videos
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4", "side.mp4"]  # no temporary files left


def test_a_clip_that_went_away_gives_a_silent_video_and_a_warning(result, media, tmp_path):
    gone = tmp_path / "gone.mp4"
    shutil.copy(media["beeps"], gone)
    animation = made_from(result, gone, 8, 0, 12)
    gone.unlink()
    with pytest.warns(audio.SoundWarning, match="gone.mp4"):
        out = save_video(animation, tmp_path / "out.mp4")
    assert decoded_sound(out) is None


def test_a_saved_motion_finds_its_clip_while_it_is_unchanged(result, media, tmp_path):
    clip = tmp_path / "clip.mp4"
    shutil.copy(media["beeps"], clip)
    motion = dataclasses.replace(result.motion, source=dict(result.motion.source, path=str(clip)))
    loaded = Motion.load(motion.save(tmp_path / "motion.npz"))
    assert clip_of(loaded) == str(clip)
    clip.write_bytes(media["video"].read_bytes())  # another file under the same name: not its clip
    assert clip_of(loaded) is None
    clip.unlink()
    assert clip_of(loaded) is None
    assert result.motion.source["path"] == os.path.abspath(media["beeps"])
    pose = write_video(tmp_path / "pose.mp4", result.motion.pose_images, 8)
    assert clip_of(motion_from_videos(pose)) is None  # pose videos have no driving clip: silent


def test_an_audio_only_file_is_refused_clearly(media):
    with pytest.raises(InputError, match="music.mp4 has no video stream: it is an audio-only file"):
        animate(media["photo"], media["audio_only"], resolve_settings(**ANIMATE), cache_dir=False)


# --------------------------------------------------------------------------------------
# The command line
# --------------------------------------------------------------------------------------


def _cli(media, clip, out, *extra) -> int:
    """`xdyna animate` in this process (the model is loaded once per process)."""
    from xdyna_core.cli import main

    return main(["animate", "--image", str(media["photo"]), "--video", str(clip), "--size", ANIMATE["size"],
                 "--fps", str(ANIMATE["fps"]), "--max-frames", str(ANIMATE["max_frames"]), "--preset", ANIMATE["preset"],
                 "--steps", str(ANIMATE["num_inference_steps"]), "--seed", str(ANIMATE["seed"]), "--no-cache",
                 "-o", str(out), "--quiet", *extra])


def test_cli_keeps_the_sound_or_not(media, result, tmp_path, capsys):
    assert _cli(media, media["beeps"], tmp_path / "out.mp4", "--side-by-side", str(tmp_path / "side.mp4")) == 0
    python = save_video(result, tmp_path / "python.mp4")
    assert (tmp_path / "out.mp4").read_bytes() == python.read_bytes()  # one engine behind both doors
    assert check_beeps(tmp_path / "side.mp4", result) == "aac"

    assert _cli(media, media["beeps"], tmp_path / "mute.mp4", "--no-audio") == 0
    assert decoded_sound(tmp_path / "mute.mp4") is None
    assert "warning" not in capsys.readouterr().err

    assert _cli(media, media["damaged"], tmp_path / "damaged.mp4", "--side-by-side", str(tmp_path / "dside.mp4")) == 0
    err = capsys.readouterr().err
    assert err.count("warning: the driving clip's sound was left out") == 1, err
    assert decoded_sound(tmp_path / "damaged.mp4") is None and decoded_sound(tmp_path / "dside.mp4") is None

    assert _cli(media, media["audio_only"], tmp_path / "music_out.mp4") == 2
    assert "music.mp4 has no video stream" in capsys.readouterr().err
    assert not (tmp_path / "music_out.mp4").exists()
