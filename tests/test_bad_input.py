"""Every bad input of issue 4 gives a clear message or a documented fallback: never a traceback,
never a partial output file. Checked through `extract_motion` and through `xdyna extract`."""

import subprocess
import sys

import cv2
import numpy as np
import pytest
from _media import encode, moving_photo_clip
from PIL import Image

from xdyna_core.errors import InputError
from xdyna_core.io import read_video, write_video
from xdyna_core.preprocess.motion import extract_motion
from xdyna_core.preprocess.pose import get_estimator

SIZE = (256, 192)


def _cameraman():
    import skimage.data

    return np.repeat(skimage.data.camera()[..., None], 3, axis=2)


def _astronaut():
    import skimage.data

    return skimage.data.astronaut()


def _cat():
    import skimage.data

    return skimage.data.chelsea()


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    d = tmp_path_factory.mktemp("media")
    frames, _ = moving_photo_clip(_cameraman(), 8, height=256, width=256, zoom=(0.5, 0.5), start=(0, 0), end=(6, 4))
    write_video(d / "person.mp4", frames, fps=15)
    Image.fromarray(_cameraman()).save(d / "photo.png")
    # some frames without anybody: 3 gray frames in the middle of the clip
    gaps = np.concatenate([frames[:3], np.full((3, 256, 256, 3), 110, np.uint8), frames[3:6]])
    write_video(d / "gaps.mp4", gaps, fps=15)
    cat = cv2.resize(_cat(), (256, 170))
    write_video(d / "cat.mp4", np.stack([cat] * 4), fps=15)
    Image.fromarray(_cat()).save(d / "cat.jpg")
    (d / "notes.mp4").write_text("Not a video. Just some notes.\n" * 50)
    data = (d / "person.mp4").read_bytes()
    (d / "truncated.mp4").write_bytes(data[: len(data) // 2])
    import av

    with av.open(str(d / "zero.mp4"), "w") as c:  # a video track with no frames at all
        s = c.add_stream("libx264", rate=15)
        s.width, s.height, s.pix_fmt = 64, 64, "yuv420p"
        c.start_encoding()
    Image.fromarray(np.zeros((40, 30, 3), np.uint8)).save(d / "tiny.png")
    # a transparent PNG of a person: the cameraman with the sky (top-right) transparent
    rgba = np.dstack([_cameraman(), np.full((512, 512), 255, np.uint8)])
    rgba[:150, 330:, 3] = 0
    Image.fromarray(rgba, "RGBA").save(d / "cutout.png")
    return d


def test_no_person_in_the_photo(media):
    with pytest.raises(InputError, match="no person found in the photo; use a photo where one person is clearly visible"):
        extract_motion(media / "person.mp4", media / "cat.jpg", size=SIZE, cache_dir=False)


def test_no_person_in_any_frame(media):
    with pytest.raises(InputError, match="no person found in any frame of the driving video"):
        extract_motion(media / "cat.mp4", media / "photo.png", size=SIZE, cache_dir=False)


def test_no_person_in_some_frames_gives_blank_controls(media):
    m = extract_motion(media / "gaps.mp4", media / "photo.png", size=SIZE, cache_dir=False)
    assert len(m) == 9
    assert m.person_found.tolist() == [True] * 3 + [False] * 3 + [True] * 3
    assert m.pose_images[3:6].max() == 0 and m.face_images[3:6].max() == 0
    assert not m.face_found[3:6].any() and (m.keypoints[3:6] == 0).all()
    assert m.pose_images[[0, 1, 2, 6, 7, 8]].reshape(6, -1).max(1).min() > 0
    assert any("3 of 9 frames show no person" in w for w in m.warnings)
    assert m.summary()["frames_without_person"] == 3


class BodyOnly:
    """The real embedded estimator with the face points dropped: what a back view, or an estimator
    that finds no face, gives."""

    def __init__(self):
        self.est = get_estimator("mediapipe", static_image_mode=False)

    def __call__(self, image):
        out = []
        for kp in self.est(image):
            kp = kp.copy()
            kp.face[:] = 0
            out.append(kp)
        return out

    def reset(self):
        self.est.reset()


def test_no_face_gives_blank_patches_and_flags(media):
    m = extract_motion(media / "person.mp4", media / "photo.png", size=SIZE, estimator=BodyOnly(), cache_dir=False)
    assert m.person_found.all() and not m.face_found.any()
    assert m.face_images.max() == 0 and m.pose_images.max() > 0
    assert any("no face found in any frame" in w for w in m.warnings)


class TwoPeopleSideBySide:
    """A multi-person estimator made of the real single-person one: each half of the image is
    analysed on its own; people are returned smallest first (extract_motion must not rely on order)."""

    def __init__(self):
        self.est = get_estimator("mediapipe", static_image_mode=True)

    def __call__(self, image):
        w = image.shape[1] // 2
        people = []
        for x0 in (0, w):
            for kp in self.est(np.ascontiguousarray(image[:, x0:x0 + w])):
                people.append(kp.transformed(1.0, x0, 0.0))
        return sorted(people, key=lambda k: k.area())

    def reset(self):
        self.est.reset()


def test_several_people_in_the_photo_picks_the_biggest(media, tmp_path):
    big, small = _cameraman(), cv2.resize(_astronaut(), (256, 256))
    photo = np.full((512, 1024, 3), 200, np.uint8)
    photo[:, 512:] = big
    photo[200:456, 100:356] = small
    est = TwoPeopleSideBySide()
    found = est(photo)
    assert len(found) == 2 and found[0].bbox()[0] < 512 < found[1].bbox()[0]
    m = extract_motion(media / "person.mp4", photo, size=SIZE, estimator=est, cache_dir=False)
    assert any("2 people; the biggest one is animated" in w for w in m.warnings)
    # the framed photo shows the cameraman (right half), not the astronaut
    crop = m.framing["reference"]
    assert -crop["dx"] / crop["scale"] > 400  # the canvas window starts in the right half


def test_transparent_png_photo_is_composited_on_white(media):
    m = extract_motion(media / "person.mp4", media / "cutout.png", size=SIZE, cache_dir=False)
    assert m.person_found.all()
    from xdyna_core.preprocess.framing import Framing

    f = Framing.from_dict(m.framing["reference"])
    x, y = f.apply_to_points([[480.0, 20.0]])[0]  # a pixel of the transparent sky
    if 0 <= x < SIZE[1] and 0 <= y < SIZE[0]:
        assert m.reference_image[int(y), int(x)].min() >= 250


@pytest.mark.parametrize("name,message", [
    ("notes.mp4", "could not read notes.mp4 as a video"),
    ("truncated.mp4", "truncated.mp4"),
    ("zero.mp4", "contains no video frames"),
    ("missing.mp4", "not found"),
])
def test_unreadable_videos(media, name, message):
    with pytest.raises(InputError, match=message):
        extract_motion(media / name, media / "photo.png", size=SIZE, cache_dir=False)


def test_tiny_or_broken_photo(media):
    with pytest.raises(InputError, match="only 30×40 pixels"):
        extract_motion(media / "person.mp4", media / "tiny.png", size=SIZE, cache_dir=False)
    with pytest.raises(InputError, match="could not read notes.mp4 as an image"):
        extract_motion(media / "person.mp4", media / "notes.mp4", size=SIZE, cache_dir=False)


def test_huge_video_is_downscaled_while_decoding(tmp_path):
    frames, _ = moving_photo_clip(_cameraman(), 2, height=2160, width=3840, zoom=(4.0, 4.0), start=(1000, 80),
                                  end=(1010, 80))
    path = encode(tmp_path / "uhd.mp4", frames, fps=15, options={"preset": "ultrafast"})
    m = extract_motion(path, None, size=(512, 384), cache_dir=False)
    assert m.person_found.all()
    assert (m.source["source_width"], m.source["source_height"]) == (3840, 2160)
    assert max(m.source["width"], m.source["height"]) <= 1.5 * 512  # never decoded at 4K


def test_very_long_video(tmp_path):
    # 11 minutes at 1 frame per second (tiny frames keep the file small)
    gray = np.full((64, 64, 3), 100, np.uint8)
    path = encode(tmp_path / "long.mp4", [gray] * 660, fps=1, options={"preset": "ultrafast"})
    with pytest.raises(InputError, match="660 s long; the limit is 600 s"):
        extract_motion(path, None, size=SIZE, max_frames=None, cache_dir=False)
    with pytest.raises(InputError, match="limit is 600 s"):
        read_video(path)


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "xdyna_core", "extract", *map(str, args)], capture_output=True,
                          text=True, timeout=300)


@pytest.mark.parametrize("video,image,message", [
    ("notes.mp4", "photo.png", "could not read notes.mp4 as a video"),
    ("person.mp4", "cat.jpg", "no person found in the photo"),
    ("cat.mp4", "photo.png", "no person found in any frame"),
    ("zero.mp4", "photo.png", "contains no video frames"),
    ("person.mp4", "tiny.png", "only 30×40 pixels"),
])
def test_cli_bad_input_clear_error_and_no_output(media, tmp_path, video, image, message):
    out = tmp_path / "out"
    r = _cli("--video", media / video, "--image", media / image, "-o", out / "motion.npz", "--preview",
             out / "preview.mp4", "--size", "192x256", "--no-cache", "-q")
    assert r.returncode == 2, r.stderr
    assert "error: " in r.stderr and message in r.stderr
    assert "Traceback" not in r.stderr
    assert not out.exists() or list(out.iterdir()) == []


def test_cli_extract_writes_motion_preview_and_overlay(media, tmp_path):
    r = _cli("--video", media / "person.mp4", "--image", media / "photo.png", "-o", tmp_path / "m.npz", "--preview",
             tmp_path / "p.mp4", "--overlay", tmp_path / "o.png", "--size", "192x256", "--cache-dir", tmp_path / "c")
    assert r.returncode == 0, r.stderr
    assert "wrote" in r.stdout and "8 frames at 15 fps" in r.stdout
    from xdyna_core.preprocess.motion import Motion

    m = Motion.load(tmp_path / "m.npz")
    assert len(m) == 8 and m.driving_frames is None
    p = read_video(tmp_path / "p.mp4")
    assert len(p) == 8 and p.fps == 15 and p.width == 4 * 192
    assert Image.open(tmp_path / "o.png").size == (192, 256)
    assert sorted(x.name for x in tmp_path.iterdir()) == ["c", "m.npz", "o.png", "p.mp4"]
    r = _cli("--video", media / "person.mp4", "-o", tmp_path / "m.txt")
    assert r.returncode == 2 and "must end in .npz" in r.stderr
