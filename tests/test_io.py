"""xdyna_core.io on real files encoded in temporary folders."""

import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from _media import bar_frame, bar_index, encode
from PIL import Image

from xdyna_core.errors import Cancelled, InputError, XDynaError
from xdyna_core.io import (BACKGROUND_RGB, frame_strip, load_image, probe_video, read_video, save_image,
                           side_by_side, write_video)

N = 30
BARS = [bar_frame(i, n=N) for i in range(N)]


def _codec_ok(name):
    import av

    try:
        av.codec.Codec(name, "w")
        return True
    except Exception:  # noqa: BLE001
        return False


FORMATS = [
    ("clip.mp4", dict(codec="libx264")),
    ("clip.mov", dict(codec="libx264")),
    ("clip.mkv", dict(codec="libx265", options={"x265-params": "log-level=error"})),
    ("clip.webm", dict(codec="libvpx-vp9")),
    ("clip.gif", dict(codec="gif", pix_fmt="rgb8")),
    ("av1.mkv", dict(codec="libsvtav1")),
    ("clip.avi", dict(codec="mpeg4")),
]


@pytest.mark.parametrize("name,kw", FORMATS, ids=[f[0] + ":" + f[1]["codec"] for f in FORMATS])
def test_read_common_formats(tmp_path, name, kw):
    if not _codec_ok(kw["codec"]):
        pytest.skip(f"this FFmpeg build has no {kw['codec']} encoder to make the test file")
    path = encode(tmp_path / name, BARS, fps=10, **kw)
    v = read_video(path)
    assert v.frames.dtype == np.uint8 and v.frames.shape == (N, 96, 160, 3)
    assert v.fps == pytest.approx(10.0)
    assert [bar_index(f) for f in v.frames] == list(range(N))
    np.testing.assert_allclose(v.timestamps, np.arange(N) / 10.0, atol=2e-3)
    assert v.frames[:, :10, :, 0].mean() > 150  # red band still at the top


def test_write_then_read_roundtrip_quality(tmp_path):
    rng = np.random.default_rng(0)
    import cv2

    frames = np.stack([cv2.GaussianBlur(rng.integers(0, 255, (120, 160, 3), dtype=np.uint8), (0, 0), 3) for _ in range(8)])
    out = write_video(tmp_path / "out.mp4", frames, fps=12)
    assert out.exists()
    info = probe_video(out)
    assert (info.width, info.height, info.codec) == (160, 120, "h264")
    assert info.fps == pytest.approx(12.0)
    v = read_video(out)
    mse = ((v.frames.astype(float) - frames.astype(float)) ** 2).mean()
    assert 10 * np.log10(255**2 / mse) > 30  # PSNR: H.264 at the default crf keeps the content
    import av

    with av.open(str(out)) as c:
        assert c.streams.video[0].codec_context.pix_fmt == "yuv420p"
    assert [p.name for p in tmp_path.iterdir()] == ["out.mp4"]  # no temp files left


def test_write_odd_size_pads_to_even(tmp_path):
    frames = np.stack([bar_frame(i, height=121, width=161) for i in range(5)])
    out = write_video(tmp_path / "odd.mp4", frames, fps=5)
    v = read_video(out)
    assert v.frames.shape == (5, 122, 162, 3)
    assert np.abs(v.frames[:, :121, :161].astype(int) - frames).mean() < 6


def test_read_odd_size_source(tmp_path):
    frames = [bar_frame(i, height=121, width=161, n=N) for i in range(N)]
    path = encode(tmp_path / "odd.webm", frames, fps=30, codec="libvpx-vp9")
    v = read_video(path)
    assert v.frames.shape == (N, 121, 161, 3)
    assert [bar_index(f) for f in v.frames] == list(range(N))


@pytest.mark.parametrize("rotation", [90, -90, 180])
def test_rotation_metadata_is_applied(tmp_path, rotation):
    frames = [bar_frame(i, height=96, width=160) for i in range(4)]
    path = encode(tmp_path / f"rot{rotation}.mp4", frames, fps=10, rotation=rotation)
    info = probe_video(path)
    v = read_video(path)
    assert v.rotation == rotation % 360
    expected = np.rot90(frames[2], k=rotation // 90)  # display = frame turned counter-clockwise
    assert v.frames.shape[1:3] == expected.shape[:2] == (info.height, info.width)
    assert np.abs(v.frames[2].astype(int) - expected).mean() < 6
    # The same result FFmpeg's own player-style autorotation gives:
    if rotation == 90:
        assert v.frames.shape[1:3] == (160, 96)
        assert v.frames[2, :, :10, 0].mean() > 150  # the red top band is now on the left


def test_variable_frame_rate_resampled_by_timestamps(tmp_path):
    times = [0.0, 0.05, 0.1, 0.4, 0.45, 0.9, 1.0, 1.35, 1.4, 1.6]
    frames = [bar_frame(i, n=len(times)) for i in range(len(times))]
    path = encode(tmp_path / "vfr.mp4", frames, fps=20, times=times)
    v = read_video(path, fps=10)
    # Expected: for each t = k/10 the source frame with the nearest timestamp (ties -> later).
    end = times[-1] + 0.05  # the last frame lasts one nominal interval
    targets = np.arange(0, end - 0.025, 0.1)
    expected = [int(np.argmin([abs(x - t) - 1e-9 * x for x in times])) for t in targets]
    got = [bar_index(f, n=len(times)) for f in v.frames]
    assert got == expected
    assert len(v) == len(targets)
    np.testing.assert_allclose(v.timestamps, [times[i] for i in expected], atol=2e-3)


@pytest.mark.parametrize("fps,count", [(10, 20), (7.5, 15), (60, 120)])
def test_resampling_keeps_real_speed(tmp_path, fps, count):
    frames = [bar_frame(i % N, n=N) for i in range(60)]  # 2 s at 30 fps
    path = encode(tmp_path / "c.mp4", frames, fps=30)
    v = read_video(path, fps=fps)
    assert len(v) == count and v.fps == fps
    assert v.duration == pytest.approx(2.0)
    # frame k shows the source frame nearest to k / fps
    src = np.minimum(np.floor(np.arange(count) / fps * 30 + 0.5).astype(int), 59)  # ties: the later frame
    assert [bar_index(f) for f in v.frames] == list(src % N)


def test_max_frames_truncates_without_decoding_the_rest(tmp_path):
    path = encode(tmp_path / "c.mp4", BARS, fps=30)
    v = read_video(path, fps=10, max_frames=4)
    assert len(v) == 4 and v.truncated
    assert [bar_index(f) for f in v.frames] == [0, 3, 6, 9]
    assert v.source_frames <= 12
    assert not read_video(path).truncated


def test_huge_frames_are_downscaled_while_decoding(tmp_path):
    big = np.zeros((2160, 3840, 3), np.uint8)
    big[:, 1900:1940] = 255
    path = encode(tmp_path / "4k.mp4", [big, big], fps=2, options={"preset": "ultrafast"})
    tracemalloc.start()
    v = read_video(path, max_side=640)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert v.frames.shape == (2, 360, 640, 3)
    assert (v.source_width, v.source_height) == (3840, 2160)
    assert peak < 4e6, "a full-size 4K RGB frame (25 MB) must never be materialised"
    assert v.frames[0, :, 318:322].mean() > 200


def test_long_4k_clip_never_holds_full_size_frames(tmp_path):
    """16 frames of 4K: the decoder keeps one full-size frame alive at a time (a 4K yuv420 frame is
    12 MB, an RGB one 25 MB), measured as the growth of the peak RSS of a fresh process."""
    import subprocess
    import sys

    big = np.zeros((2160, 3840, 3), np.uint8)
    frames = []
    for i in range(16):
        f = big.copy()
        f[:, 200 * i:200 * i + 100] = 255
        frames.append(f)
    path = encode(tmp_path / "4k.mp4", frames, fps=8, options={"preset": "ultrafast"})
    code = (
        "import resource, sys; from xdyna_core.io import read_video; import av, numpy;"
        "r0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss;"
        f"v = read_video({str(path)!r}, max_side=480);"
        "r1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss;"
        "print(len(v), v.frames.shape, (r1 - r0) // 1024)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[0] == "16"
    grown_mb = int(out[-1])
    # the decoder itself keeps its reference frames (~100 MB at 4K); holding all 16 frames adds ~200 MB
    assert grown_mb < 170, f"peak memory grew by {grown_mb} MB"


def test_too_small_video(tmp_path):
    path = encode(tmp_path / "small.mp4", [np.zeros((24, 24, 3), np.uint8)] * 3, fps=5)
    with pytest.raises(InputError, match="only 24×24 pixels"):
        read_video(path)


def test_video_with_an_audio_track(tmp_path):
    import av

    path = tmp_path / "with_audio.mp4"
    with av.open(str(path), "w") as c:
        vs = c.add_stream("libx264", rate=10)
        vs.width, vs.height, vs.pix_fmt = 160, 96, "yuv420p"
        aus = c.add_stream("aac", rate=16000)
        for i in range(10):
            for p in vs.encode(av.VideoFrame.from_ndarray(BARS[i], format="rgb24")):
                c.mux(p)
        for i in range(16):  # 1 s of a 440 Hz tone
            t = (np.arange(1024) + 1024 * i) / 16000
            af = av.AudioFrame.from_ndarray((0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None], format="fltp",
                                            layout="mono")
            af.sample_rate, af.pts = 16000, 1024 * i
            for p in aus.encode(af):
                c.mux(p)
        for s in (vs, aus):
            for p in s.encode():
                c.mux(p)
    v = read_video(path)
    assert len(v) == 10 and [bar_index(f) for f in v.frames] == list(range(10))


def test_limits_give_clear_errors(tmp_path):
    path = encode(tmp_path / "c.mp4", [bar_frame(i % N) for i in range(90)], fps=30)  # 3 s
    with pytest.raises(InputError, match=r"3 s long; the limit is 1 s"):
        read_video(path, max_duration=1.0)
    assert len(read_video(path, max_duration=1.0, max_frames=10, fps=10)) == 10  # only 1 s is used
    with pytest.raises(InputError, match="limit is 50"):
        read_video(path, frame_limit=50)
    with pytest.raises(InputError, match="GiB of memory"):
        read_video(path, max_bytes=1_000_000)
    with pytest.raises(InputError, match="fps must be"):
        read_video(path, fps=0)


def test_progress_can_cancel_reading(tmp_path):
    path = encode(tmp_path / "c.mp4", BARS, fps=30)
    seen = []

    def progress(done, total):
        seen.append((done, total))
        return done < 5

    with pytest.raises(Cancelled):
        read_video(path, progress=progress)
    assert seen[0] == (1, 30) and seen[-1][0] == 5


def test_write_is_atomic_on_error_and_cancel(tmp_path):
    target = tmp_path / "out.mp4"
    target.write_bytes(b"previous result")

    def frames():
        for i in range(5):
            yield bar_frame(i)
        raise RuntimeError("generation failed")

    with pytest.raises(RuntimeError):
        write_video(target, frames(), fps=10)
    assert target.read_bytes() == b"previous result"
    with pytest.raises(Cancelled):
        write_video(target, [bar_frame(i) for i in range(5)], fps=10, progress=lambda d, t: d < 3)
    assert target.read_bytes() == b"previous result"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4"]
    with pytest.raises(InputError, match="same size"):
        write_video(tmp_path / "x.mp4", [bar_frame(0), bar_frame(0, height=50)], fps=10)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4"]
    with pytest.raises(InputError, match="use a .mp4"):
        write_video(tmp_path / "x.avi", [bar_frame(0)], fps=10)



def test_write_is_atomic_on_ctrl_c_and_stops_the_encoder(tmp_path, monkeypatch):
    import subprocess

    started = []
    real_popen = subprocess.Popen

    def keep_handle(*args, **kwargs):  # the real encoder process; the test only keeps a handle on it
        started.append(real_popen(*args, **kwargs))
        return started[-1]

    monkeypatch.setattr(subprocess, "Popen", keep_handle)
    target = tmp_path / "out.mp4"
    target.write_bytes(b"previous result")

    def interrupt(done, total):
        if done == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_video(target, [bar_frame(i) for i in range(8)], fps=10, progress=interrupt)
    assert target.read_bytes() == b"previous result"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4"]
    assert len(started) == 1 and started[0].poll() is not None  # ffmpeg was stopped, not left running



def test_encoder_failure_is_reported_and_leaves_nothing(tmp_path):
    target = tmp_path / "out.mp4"
    target.write_bytes(b"previous result")
    with pytest.raises(XDynaError, match="could not write out.mp4: ffmpeg stopped"):
        write_video(target, [bar_frame(i) for i in range(5)], fps=10, preset="no-such-preset")  # x264 refuses it
    assert target.read_bytes() == b"previous result"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4"]


def test_short_clip_cut_short_is_reported(tmp_path):
    """An 8-frame clip at 15 fps cut after its first two frames' data: those decode, of the 8 the
    header lists (too short a clip for the duration check's 0.5 s margin to notice)."""
    import av

    full = write_video(tmp_path / "full.mp4", [bar_frame(i, 128, 128, n=8) for i in range(8)], fps=15)
    with av.open(str(full)) as c:
        ends = sorted(p.pos + p.size for p in c.demux(video=0) if p.size)
    (tmp_path / "cut.mp4").write_bytes(full.read_bytes()[: ends[1]])  # faststart: the header comes first
    v = read_video(tmp_path / "cut.mp4", allow_truncated=True)
    assert 1 <= v.source_frames <= 2 and "cut short" in " ".join(v.warnings)
    with pytest.raises(InputError, match="cut.mp4 seems cut short"):
        read_video(tmp_path / "cut.mp4")

_WRITE_IN_A_FRESH_PROCESS = """
import sys
import cv2
import numpy as np
from xdyna_core.io import read_video, write_video
clip = read_video("assets/examples/dance_1.mp4").frames  # 36 frames, 512x896
small = np.stack([cv2.resize(f, (64, 128), interpolation=cv2.INTER_AREA) for f in clip])
for path in sys.argv[1:]:
    write_video(path + ".mp4", small, fps=12)  # the tiny model's size
    write_video(path + "_big.mp4", clip[:12], fps=12)  # the generation size
    write_video(path + ".mkv", small, fps=12)
"""


def test_same_frames_give_byte_identical_files_across_processes(tmp_path):
    """Same seed + same settings = the same video: encoding the same frames twice in one process
    and once in another writes the same bytes (PyAV's libx264 did not, even within one process)."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, "-c", _WRITE_IN_A_FRESH_PROCESS, str(tmp_path / "a"), str(tmp_path / "a2")], check=True, cwd=root)
    subprocess.run([sys.executable, "-c", _WRITE_IN_A_FRESH_PROCESS, str(tmp_path / "b")], check=True, cwd=root)
    for name in (".mp4", "_big.mp4", ".mkv"):
        a, a2, b = ((tmp_path / f"{run}{name}").read_bytes() for run in ("a", "a2", "b"))
        assert len(a) > 1000 and a == a2 == b, name  # within one process and across processes



def test_small_clip_stays_faithful(tmp_path):
    """The tiny model's 64x128 output: a real dancing clip at that size, written with the default
    settings, decodes close to the frames. yuv420p's half-resolution colour alone costs up to ~100
    levels at sharp colour edges (mean ~2.5; the lossless crf=0 encode below shows it), so the
    coding error is measured against that lossless encode: crf 18 gave up to 32 levels (mean 1.9)."""
    import av
    import cv2

    clip = read_video(Path(__file__).resolve().parents[1] / "assets" / "examples" / "dance_1.mp4").frames
    frames = np.stack([cv2.resize(f, (64, 128), interpolation=cv2.INTER_AREA) for f in clip])
    out = write_video(tmp_path / "small.mp4", frames, fps=12)
    with av.open(str(out)) as c:  # plays in browsers: H.264 High, 4:2:0
        cc = c.streams.video[0].codec_context
        assert (cc.name, cc.profile, cc.pix_fmt) == ("h264", "High", "yuv420p")
    decoded = read_video(out).frames.astype(int)
    lossless = read_video(write_video(tmp_path / "lossless.mp4", frames, fps=12, crf=0)).frames.astype(int)
    coding = np.abs(decoded - lossless)
    assert coding.max() <= 16 and coding.mean() <= 1.3, (coding.max(), coding.mean())
    error = np.abs(decoded - frames)
    assert error.mean() <= 2.9, error.mean()
    assert 10 * np.log10(255**2 / (error.astype(float) ** 2).mean()) > 33  # PSNR, dB


# ---- images -----------------------------------------------------------------------------


def _photo():
    import skimage.data

    return skimage.data.astronaut()


def test_load_image_exif_rotation(tmp_path):
    img = _photo()[:, :400]  # 512 x 400: portrait-ish, asymmetric
    pil = Image.fromarray(img)
    exif = pil.getexif()
    exif[0x0112] = 6  # orientation 6: the viewer must turn the stored pixels 90° clockwise
    pil.save(tmp_path / "rot.jpg", exif=exif, quality=95)
    out = load_image(tmp_path / "rot.jpg")
    expected = np.rot90(img, k=-1)
    assert out.shape == expected.shape == (400, 512, 3)
    assert np.abs(out.astype(int) - expected).mean() < 4


def test_load_image_alpha_composited_on_white(tmp_path):
    rgba = np.zeros((100, 120, 4), np.uint8)
    rgba[..., :3] = (200, 30, 40)
    rgba[:, :60, 3] = 255  # left half opaque, right half transparent
    rgba[:, 60:90, 3] = 128
    Image.fromarray(rgba, "RGBA").save(tmp_path / "t.png")
    out = load_image(tmp_path / "t.png")
    assert out.shape == (100, 120, 3)
    assert tuple(out[50, 10]) == (200, 30, 40)
    assert tuple(out[50, 110]) == BACKGROUND_RGB == (255, 255, 255)
    assert np.abs(out[50, 70].astype(int) - (228, 142, 147)).max() <= 2  # half-transparent blend
    # palette PNG with a transparent index, and an RGBA array, follow the same rule
    pal = Image.new("P", (120, 100), 0)
    pal.putpalette([0, 0, 0, 200, 30, 40] + [0] * 762)
    pal.paste(1, (0, 0, 60, 100))
    pal.save(tmp_path / "p.png", transparency=0)
    p = load_image(tmp_path / "p.png")
    assert tuple(p[50, 10]) == (200, 30, 40) and tuple(p[50, 110]) == (255, 255, 255)
    assert tuple(load_image(rgba)[50, 110]) == (255, 255, 255)
    assert tuple(load_image(rgba)[50, 10]) == (200, 30, 40)


def test_load_image_gray_cmyk_16bit(tmp_path):
    img = _photo()
    Image.fromarray(img).convert("L").save(tmp_path / "g.png")
    g = load_image(tmp_path / "g.png")
    assert g.shape == (512, 512, 3) and (g[..., 0] == g[..., 2]).all()

    Image.fromarray(img).convert("CMYK").save(tmp_path / "c.jpg", quality=95)
    c = load_image(tmp_path / "c.jpg")
    assert c.shape == (512, 512, 3) and np.abs(c.astype(int) - img).mean() < 8

    import cv2

    img16 = img.astype(np.uint16) * 257
    cv2.imwrite(str(tmp_path / "rgb16.png"), img16[..., ::-1])  # 16-bit RGB PNG
    assert Image.open(tmp_path / "rgb16.png").mode in ("RGB", "I;16", "I")
    c16 = load_image(tmp_path / "rgb16.png")
    assert c16.dtype == np.uint8 and np.abs(c16.astype(int) - img).max() <= 1
    Image.fromarray(img16[..., 0]).save(tmp_path / "g16.png")  # 16-bit grayscale (mode I;16)
    g16 = load_image(tmp_path / "g16.png")
    assert g16.dtype == np.uint8 and np.abs(g16[..., 1].astype(int) - img[..., 0]).max() <= 1
    assert load_image(img.astype(np.float32) / 255).dtype == np.uint8


def test_load_image_errors(tmp_path):
    (tmp_path / "notes.jpg").write_text("this is not an image")
    with pytest.raises(InputError, match="could not read notes.jpg as an image"):
        load_image(tmp_path / "notes.jpg")
    Image.fromarray(np.zeros((40, 30, 3), np.uint8)).save(tmp_path / "tiny.png")
    with pytest.raises(InputError, match=r"only 30×40 pixels"):
        load_image(tmp_path / "tiny.png")
    with pytest.raises(InputError, match="not found"):
        load_image(tmp_path / "missing.png")
    big = load_image(_photo(), max_side=256)
    assert big.shape == (256, 256, 3)


def test_side_by_side_and_strip(tmp_path):
    a = np.stack([bar_frame(i, 96, 160) for i in range(10)])
    b = np.stack([bar_frame(i, 48, 48) for i in range(4)])
    still = np.full((200, 100, 3), 9, np.uint8)
    out = side_by_side(a, b, still)
    assert out.shape == (10, 96, 160 + 96 + 48, 3)
    assert (out[9, :, 160:256] == out[3, :, 160:256]).all()  # shorter clip holds its last frame
    assert side_by_side(a, b, length="shortest").shape[0] == 4
    labelled = side_by_side(a, b, labels=["driving", "skeleton"])
    assert labelled.shape[1] > 96 and labelled.shape[2] == 256
    strip = frame_strip(a, num=4, height=48)
    assert strip.shape == (48, 4 * 80 + 3 * 4, 3)
    p = save_image(tmp_path / "strip.png", strip)
    assert np.array_equal(np.asarray(Image.open(p)), strip)


def test_not_a_video_errors(tmp_path):
    (tmp_path / "notes.mp4").write_text("hello, I am a text file\n" * 20)
    with pytest.raises(InputError, match="could not read notes.mp4 as a video"):
        read_video(tmp_path / "notes.mp4")
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        read_video(tmp_path / "empty.mp4")
    Image.fromarray(_photo()).save(tmp_path / "photo.png")
    with pytest.raises(InputError, match="still image"):
        read_video(tmp_path / "photo.png")
    with pytest.raises(InputError, match="not found"):
        read_video(tmp_path / "nope.mp4")
