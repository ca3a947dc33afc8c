"""Several people in the driving clip (issue #19 items 2 and 4): count and number them, follow the
chosen one through a crossing and a short exit, refuse what cannot be followed.

The clips are made of two real photos (scikit-image's astronaut, matplotlib's Grace Hopper) moved
on a grey frame with known positions; the dancer drawn last (Hopper) passes in front of the other."""

import subprocess
import sys

import cv2
import numpy as np
import pytest

from xdyna_core.errors import InputError
from xdyna_core.io import load_image, write_video
from xdyna_core.preprocess.framing import Framing
from xdyna_core.preprocess.motion import extract_motion
from xdyna_core.preprocess.people import dancer_at, draw_dancers, find_dancers
from xdyna_core.preprocess.pose import get_estimator

H, W, TOP, FPS = 512, 384, 150, 15
SIZE = (512, 384)
NOSE = 0


def _photos():
    import matplotlib
    import skimage.data

    hopper = load_image(matplotlib.get_data_path() + "/sample_data/grace_hopper.jpg")
    out = []
    for photo, width in ((skimage.data.astronaut(), 170), (hopper, 150)):
        out.append(cv2.resize(photo, (width, round(photo.shape[0] * width / photo.shape[1])), interpolation=cv2.INTER_AREA))
    return out


def _compose(photos, lefts):
    """Frames with photo k's left edge at lefts[k][t] (None: not in this frame); later photos in front."""
    frames = []
    for t in range(len(lefts[0])):
        img = np.full((H, W, 3), 35, np.uint8)
        for p, xs in zip(photos, lefts):
            if xs[t] is None:
                continue
            x0 = int(round(xs[t]))
            a0, a1 = max(0, x0), min(W, x0 + p.shape[1])
            if a1 > a0:
                img[TOP:TOP + p.shape[0], a0:a1] = p[:H - TOP, a0 - x0:a1 - x0]
        frames.append(img)
    return np.stack(frames)


# Astronaut (A) starts left and walks right behind Hopper (B), leaves on the right for 5 frames
# and comes back; B walks from the right to the left.
A_LEFT = [10] * 6 + list(np.linspace(10, 200, 14)) + [260, 330, 400, 400, 400, 330, 260] + [200] * 5
B_LEFT = [220] * 6 + list(np.linspace(220, 10, 14)) + [10] * 12


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    d = tmp_path_factory.mktemp("dancers")
    photos = _photos()
    write_video(d / "duet.mp4", _compose(photos, [A_LEFT, B_LEFT]), fps=FPS, crf=14)
    # A leaves after 0.8 s and stays away for the last 1.6 s
    write_video(d / "exit.mp4", _compose(photos, [[10] * 12 + [None] * 24, [220] * 36]), fps=FPS, crf=14)
    # nobody for the first 20 frames (1.33 s), then the astronaut alone
    write_video(d / "late.mp4", _compose(photos, [[None] * 20 + [100] * 10, [None] * 30]), fps=FPS, crf=14)
    # the photos' own noses (static estimator on each photo), for the expected positions
    est = get_estimator("mediapipe", static_image_mode=True)
    noses = [est(p)[0].body[NOSE, :2] for p in photos]
    return d, photos, noses


def _visible(photo, left, other_left=None, other=None):
    """The photo's face (top third, a 40 px margin) is fully in the frame and not covered by the
    other photo (which is in front)."""
    x0, x1 = left + 40, left + photo.shape[1] - 40
    if x0 < 0 or x1 > W:
        return False
    return other_left is None or x1 <= other_left or x0 >= other_left + other.shape[1]


def test_dancers_are_counted_numbered_and_clickable(media):
    d, photos, noses = media
    dancers = find_dancers(d / "duet.mp4")
    assert dancers.count == 2 and len(dancers.boxes) == 2
    assert dancers.frame.dtype == np.uint8 and dancers.frame.shape == (H, W, 3)
    t = dancers.frame_index  # at the clip's own 15 fps
    assert 0 <= t < 6 and abs(dancers.time - t / FPS) < 1e-6  # both apart: the first frames
    # left to right: box 1 holds the astronaut's nose, box 2 Hopper's
    for n, (photo, left, nose) in enumerate(zip(photos, (A_LEFT[t], B_LEFT[t]), noses), 1):
        x, y = nose[0] + left, nose[1] + TOP
        x0, y0, x1, y1 = dancers.boxes[n - 1]
        assert x0 <= x <= x1 and y0 <= y <= y1
        assert dancer_at(dancers, x, y) == n
    assert dancer_at(dancers, 2, 2) is None
    shown = draw_dancers(dancers)
    assert shown.shape == dancers.frame.shape and (shown != dancers.frame).any()
    assert (dancers.frame == find_dancers(d / "duet.mp4").frame).all()  # the same frame every time


@pytest.mark.parametrize("person", [1, 2])
def test_the_chosen_dancer_is_followed_through_crossing_and_exit(media, person):
    d, photos, noses = media
    m = extract_motion(d / "duet.mp4", None, size=SIZE, fps=None, retarget="none", smooth=False, keep_frames=True,
                       cache_dir=False, person=person)
    assert len(m) == 32 and m.settings["person"] == person
    framing = Framing.from_dict(m.framing["driving"])
    me, other = person - 1, 2 - person
    lefts = (A_LEFT, B_LEFT)
    checked = 0
    for t in range(len(m)):
        mine = noses[me] + (lefts[me][t], TOP)
        theirs = noses[other] + (lefts[other][t], TOP)
        covered_by = (lefts[1][t], photos[1]) if me == 0 else (None, None)
        seen = _visible(photos[me], lefts[me][t], *covered_by)
        if not m.person_found[t]:
            assert not seen or me == 0 and t >= 20, f"dancer {person} lost in frame {t} although in full view"
            continue
        got = framing.inverse_points(m.driving_keypoints[t, NOSE:NOSE + 1, :2])[0]
        # never the other dancer: nearer to the chosen one's nose than to the other's
        assert np.linalg.norm(got - mine) < np.linalg.norm(got - theirs), f"frame {t} follows the other dancer"
        if seen:
            assert np.linalg.norm(got - mine) < 15, f"frame {t}: nose {got} expected {mine}"
            checked += 1
    assert checked >= 14
    if person == 2:
        assert m.person_found.all()  # Hopper is never covered
    else:
        assert not m.person_found[12:15].any()  # behind Hopper
        assert not m.person_found[22:25].any()  # out of the frame
        assert m.person_found[29:].all()  # back
    # the face patches are the chosen dancer's face: the global patch is the framed frame around its nose
    for t in np.flatnonzero(m.face_found)[::4]:
        patch = m.face_images[t, ..., 3:6]
        mask = patch.max(-1) > 0
        assert (patch[mask] == m.driving_frames[t][mask]).mean() > 0.9
        ys, xs = np.nonzero(mask)
        centre = framing.inverse_points(np.array([[xs.mean(), ys.mean()]]))[0]
        mine = noses[me] + (lefts[me][t], TOP)
        theirs = noses[other] + (lefts[other][t], TOP)
        assert np.linalg.norm(centre - mine) < np.linalg.norm(centre - theirs)


def test_without_a_choice_the_halves_of_the_clip_follow_one_person(tmp_path):
    """The embedded estimator runs on both halves of the clip at once; the second half's tracker
    starts on whoever is most prominent there. Here the astronaut shrinks while Hopper grows, so it
    starts on Hopper: the second half is analysed again from where the first left off."""
    photos = _photos()
    frames = []
    for t in range(32):
        a = t / 31
        img = np.full((H, W, 3), 35, np.uint8)
        for p, s, x0 in ((photos[0], 1.1 - 0.6 * a, 5), (photos[1], 0.5 + 0.6 * a, 200)):
            q = cv2.resize(p, (int(p.shape[1] * s), int(p.shape[0] * s)))[: H - 120, : W - x0]
            img[120:120 + q.shape[0], x0:x0 + q.shape[1]] = q
        frames.append(img)
    write_video(tmp_path / "swap.mp4", np.stack(frames), fps=FPS)
    m = extract_motion(tmp_path / "swap.mp4", None, size=SIZE, fps=None, retarget="none", cache_dir=False)
    framing = Framing.from_dict(m.framing["driving"])
    x = [framing.inverse_points(m.driving_keypoints[t, :1, :2])[0, 0] for t in range(20)]
    assert m.person_found[:20].all() and max(x) < 150  # the astronaut, on the left, across frame 16


def test_following_in_two_halves_at_once_finds_the_same_dancer(media, monkeypatch):
    """Long clips are followed in two halves at once, the second starting by finding the dancer by
    its look (here in the middle of the crossing, where the astronaut is hidden)."""
    import xdyna_core.preprocess.people as people
    from xdyna_core.io import read_video

    d, photos, noses = media
    video = read_video(d / "duet.mp4")
    dancers = find_dancers(d / "duet.mp4")
    whole = people.follow_dancer(video.frames, dancers, 1, dancers.frame_index)
    monkeypatch.setattr(people, "SPLIT_MIN_FRAMES", 8)
    halves = people.follow_dancer(video.frames, dancers, 1, dancers.frame_index)
    assert [k is None for k in halves] == [k is None for k in whole]
    for a, b in zip(whole, halves):
        if a is not None:
            assert np.linalg.norm(a.body[NOSE, :2] - b.body[NOSE, :2]) < 8


class Everyone:
    """A multi-person estimator (what DWPose is): the detector, then the body model on each person."""

    def __init__(self):
        from xdyna_core.preprocess.mediapipe_estimator import PersonDetector, WholeBodyByRoi

        self.detector, self.body = PersonDetector(), WholeBodyByRoi(body_only=True)

    def __call__(self, image):
        from xdyna_core.preprocess.people import people_in_frame

        return [p[0] for p in people_in_frame(image, self.detector, self.body)]


def test_estimators_that_see_everybody_follow_the_chosen_dancer_too(media):
    d, photos, noses = media
    m = extract_motion(d / "duet.mp4", None, size=SIZE, fps=None, retarget="none", smooth=False, cache_dir=False,
                       person=2, estimator=Everyone())
    framing = Framing.from_dict(m.framing["driving"])
    assert m.person_found.sum() >= 28
    for t in np.flatnonzero(m.person_found):
        got = framing.inverse_points(m.driving_keypoints[t, :1, :2])[0]
        mine, theirs = noses[1] + (B_LEFT[t], TOP), noses[0] + (A_LEFT[t], TOP)
        assert np.linalg.norm(got - mine) < np.linalg.norm(got - theirs), f"frame {t} follows the other dancer"


def test_dancer_numbers_beyond_the_clip_are_refused(media):
    d, _, _ = media
    with pytest.raises(InputError, match="the clip shows 2 dancers; choose 1 or 2"):
        extract_motion(d / "duet.mp4", None, size=SIZE, cache_dir=False, person=3)
    for bad in (0, -1, "first", 1.5):
        with pytest.raises(InputError, match="person must be a dancer number from 1"):
            extract_motion(d / "duet.mp4", None, size=SIZE, cache_dir=False, person=bad)
    nobody = d / "nobody.mp4"
    write_video(nobody, _compose(_photos(), [[None] * 8, [None] * 8]), fps=FPS)
    found = find_dancers(nobody)
    assert found.count == 0 and found.boxes == [] and (draw_dancers(found) == found.frame).all()
    with pytest.raises(InputError, match="no person found in the first seconds of the driving video, so there is no "
                                         "dancer to choose"):
        extract_motion(nobody, None, size=SIZE, cache_dir=False, person=1)


def test_a_dancer_who_leaves_for_good_is_refused_with_the_second(media):
    d, _, _ = media
    with pytest.raises(InputError, match=r"dancer 1 leaves the frame at 0\.8 s and does not come back; "
                                         r"choose another dancer, or extract only the part before: at most 12 frames"):
        extract_motion(d / "exit.mp4", None, size=SIZE, fps=None, cache_dir=False, person=1)
    m = extract_motion(d / "exit.mp4", None, size=SIZE, fps=None, max_frames=12, cache_dir=False, person=1)
    assert len(m) == 12 and m.person_found.all()


def test_nobody_in_the_first_second_starts_the_motion_later(media):
    d, _, _ = media
    m = extract_motion(d / "late.mp4", None, size=SIZE, fps=None, cache_dir=False)
    assert len(m) == 10 and m.person_found.all()
    assert abs(m.timestamps[0] - 20 / FPS) < 1e-3
    assert any("nobody is seen in the first 1.3 s of the clip; the motion starts at 1.3 s" in w for w in m.warnings)


def test_cli_lists_dancers_and_follows_the_chosen_one(media, tmp_path):
    d, photos, noses = media
    listed = subprocess.run([sys.executable, "-m", "xdyna_core", "extract", "--video", str(d / "duet.mp4"),
                             "--list-dancers", str(tmp_path / "dancers.png")], capture_output=True, text=True)
    assert listed.returncode == 0, listed.stderr
    assert "shows 2 dancers" in listed.stdout and "Dancer 2" in listed.stdout and (tmp_path / "dancers.png").is_file()
    out = tmp_path / "m.npz"
    run = subprocess.run([sys.executable, "-m", "xdyna_core", "extract", "--video", str(d / "duet.mp4"), "-o", str(out),
                          "--person", "2", "--size", "384x512", "--retarget", "none", "--fps", "15", "--max-frames", "8",
                          "--no-cache", "-q"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "W0000" not in run.stderr + listed.stderr  # the graphs' start-up chatter stays out (threads too)
    from xdyna_core.preprocess.motion import Motion

    m = Motion.load(out)
    framing = Framing.from_dict(m.framing["driving"])
    got = framing.inverse_points(m.driving_keypoints[0, :1, :2])[0]
    assert np.linalg.norm(got - (noses[1] + (B_LEFT[0], TOP))) < 15  # Hopper, the right one
    bad = subprocess.run([sys.executable, "-m", "xdyna_core", "extract", "--video", str(d / "duet.mp4"), "-o",
                          str(tmp_path / "n.npz"), "--person", "3", "--size", "384x512", "--no-cache", "-q"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "the clip shows 2 dancers; choose 1 or 2" in bad.stderr
    assert not (tmp_path / "n.npz").exists()


def test_person_is_a_motion_setting():
    from xdyna_core.animation import MotionSettings, resolve_settings

    assert resolve_settings(model="tiny", person=2).motion.person == 2
    assert resolve_settings(model="tiny").motion.person is None
    with pytest.raises(InputError, match="person must be a dancer number from 1"):
        resolve_settings(model="tiny", person=0)
    with pytest.raises(InputError, match="person must be a dancer number from 1"):
        MotionSettings(person=-2).validate()
    from xdyna_core.commands.animate import add_motion_arguments

    import argparse

    parser = argparse.ArgumentParser()
    add_motion_arguments(parser)
    assert parser.parse_args(["--person", "3"]).person == 3
