"""Motion extraction end to end on clips made by moving real photos (embedded estimator, CPU)."""

import time

import numpy as np
import pytest
from _media import apply_affine, moving_photo_clip

from xdyna_core.errors import Cancelled, InputError
from xdyna_core.io import read_video, write_video
from xdyna_core.preprocess.framing import Framing
from xdyna_core.preprocess.motion import (Motion, extract_motion, face_patch_video, preview_side_by_side,
                                          retarget_overlay, skeleton_video)
from xdyna_core.preprocess.pose import BODY, get_estimator

SIZE = (512, 384)  # a small canvas (multiples of 64) keeps the tests fast
FACE = slice(60, 128)  # face landmarks in the flat [128, 3] keypoint layout
HEAD = [BODY[n] for n in ("nose", "r_eye", "l_eye", "r_ear", "l_ear")]


def _astronaut():
    import skimage.data

    return skimage.data.astronaut()


def _hopper():
    import matplotlib

    from xdyna_core.io import load_image

    return load_image(matplotlib.get_data_path() + "/sample_data/grace_hopper.jpg")


def _cameraman():
    import skimage.data

    return np.repeat(skimage.data.camera()[..., None], 3, axis=2)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """Astronaut photo zooming, panning and turning 10° over 16 frames (15 fps)."""
    frames, mats = moving_photo_clip(_astronaut(), 16, angle=(0.0, 10.0))
    path = tmp_path_factory.mktemp("clip") / "moving.mp4"
    write_video(path, frames, fps=15, crf=12)
    return path, frames, mats


@pytest.fixture(scope="module")
def camera_clip(tmp_path_factory):
    """The cameraman (standing, seen down to the knees) zooming, panning and turning 10°."""
    frames, mats = moving_photo_clip(_cameraman(), 16, angle=(0.0, 10.0))
    path = tmp_path_factory.mktemp("clip") / "cameraman.mp4"
    write_video(path, frames, fps=15, crf=12)
    return path, frames, mats


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def motion(camera_clip, cache_dir):
    """The default path (global retargeting) on a self-reenactment: the cameraman photo driven by
    the clip made from it, so the retargeted first frame must land on the photo's own skeleton."""
    seen = []
    t0 = time.perf_counter()
    m = extract_motion(camera_clip[0], _cameraman(), size=SIZE, retarget="global", keep_frames=True,
                       cache_dir=cache_dir, progress=lambda f, d: seen.append((f, d)))
    return m, seen, time.perf_counter() - t0


def test_skeleton_follows_the_known_motion(clip):
    """Keypoints on the canvas, mapped back through the framing, land where the known transform of
    the photo puts the photo's own keypoints (pixels of the clip)."""
    path, frames, mats = clip
    photo = _astronaut()
    ref = get_estimator("mediapipe", static_image_mode=True)(photo)[0].to_array()
    m = extract_motion(path, None, size=SIZE, retarget="none", smooth=False, cache_dir=False)
    assert m.retarget == "none" and m.reference_image is None and m.person_found.all()
    framing = Framing.from_dict(m.framing["driving"])
    face_err, head_err, zoom_err, shift_err = [], [], [], []
    for t in range(len(m)):
        got = m.driving_keypoints[t]
        xy = framing.inverse_points(got[:, :2])  # back to clip pixels
        expected = apply_affine(mats[t], ref[:, :2])
        face = (got[FACE, 2] >= 0.3) & (ref[FACE, 2] >= 0.3)
        head = (got[HEAD, 2] >= 0.3) & (ref[HEAD, 2] >= 0.3)
        assert face.sum() == 68 and head.sum() >= 3
        face_err.append(np.linalg.norm(xy[FACE][face] - expected[FACE][face], axis=1).mean())
        head_err.append(np.linalg.norm(xy[HEAD][head] - expected[HEAD][head], axis=1).mean())
        # zoom of the whole face relative to the photo: the spread of the 68 points
        zoom = xy[FACE].std(0).sum() / ref[FACE, :2].std(0).sum()
        true_zoom = np.sqrt(abs(np.linalg.det(mats[t][:, :2])))
        zoom_err.append(abs(zoom / true_zoom - 1))
        shift_err.append(np.linalg.norm(xy[FACE].mean(0) - expected[FACE].mean(0)))
    print("face px", np.round(face_err, 1), "head px", np.round(head_err, 1))
    assert np.median(face_err) < 3.0 and max(face_err) < 6.0
    assert np.median(head_err) < 6.0 and max(head_err) < 12.0
    assert max(zoom_err) < 0.05  # the zoom from 0.45x to 0.6x is followed within 5 %
    assert max(shift_err) < 4.0  # and the pan of 50 px, 40 px within 4 px


def test_default_extraction(motion):
    m, seen, _ = motion
    T = 16
    H, W = SIZE
    assert m.pose_images.shape == (T, H, W, 3) and m.pose_images.dtype == np.uint8
    assert m.face_images.shape == (T, H, W, 6) and m.face_images.dtype == np.uint8
    assert m.fps == 15.0 and len(m.timestamps) == T
    assert m.person_found.all() and m.face_found.all()
    assert m.reference_image.shape == (H, W, 3) and m.driving_frames.shape == (T, H, W, 3)
    assert m.retarget == "global" and m.settings["retarget_info"]["mode"] == "global"
    # every frame has a skeleton and both face patches
    assert (m.pose_images.reshape(T, -1).max(1) > 0).all()
    assert (m.face_images[..., :3].reshape(T, -1).max(1) > 0).all()
    assert (m.face_images[..., 3:].reshape(T, -1).max(1) > 0).all()
    # self-reenactment: the photo is in the clip, so both framings hold the person
    assert m.reference_image.std() > 20
    # the local patch (eyes + mouth) lies inside the global face box
    local = m.face_images[..., :3].max(-1) > 0
    glob = m.face_images[..., 3:].max(-1) > 0
    assert (local & ~glob).sum() < 0.02 * local.sum()
    # progress: increasing fractions ending at 1.0
    fr = [f for f, _ in seen]
    assert fr == sorted(fr) and fr[-1] == 1.0 and len(fr) > T
    s = m.summary()
    assert s["frames"] == T and s["frames_without_person"] == 0 and s["estimator"] == "MediaPipeEstimator"


def test_retargeting_fits_the_photo_person(motion, camera_clip):
    """Global retargeting puts the first driving skeleton on the photo's person. Here the clip is the
    photo itself, shrunk to 0.45x and moved, so the fitted scale must undo exactly that."""
    m, _, _ = motion
    ref = m.reference_keypoints
    rt0 = m.keypoints[0]
    drv0 = m.driving_keypoints[0]
    info = m.settings["retarget_info"]
    fr, fd = Framing.from_dict(m.framing["reference"]), Framing.from_dict(m.framing["driving"])
    true_scale = fr.scale / (fd.scale * camera_clip[2][0][0, 0])  # photo->canvas over clip->canvas
    assert info["scale"] == pytest.approx(true_scale, rel=0.1)
    # retargeted = scale * driving + offset, for every point
    ok = drv0[:, 2] >= 0.3
    np.testing.assert_allclose(rt0[ok, :2], drv0[ok, :2] * info["scale"] + info["offset"], atol=1e-3)
    # the head lands on the photo's head (within 5 % of the canvas height)
    head = (ref[HEAD, 2] >= 0.3) & (rt0[HEAD, 2] >= 0.3)
    err = np.linalg.norm(rt0[HEAD][head, :2] - ref[HEAD][head, :2], axis=1)
    assert head.sum() >= 3 and err.mean() < 0.05 * SIZE[0], err
    # the skeleton stays on the canvas in every frame
    assert (m.pose_images.reshape(len(m), -1).max(1) > 0).all()
    ov = retarget_overlay(None, m)
    assert ov.shape == (*SIZE, 3) and not np.array_equal(ov, m.reference_image)


def test_face_patches_move_with_the_retargeted_head(motion):
    m, _, _ = motion
    for t in (0, 8, 15):
        glob = m.face_images[t, ..., 3:].max(-1) > 0
        ys, xs = np.nonzero(glob)
        nose = m.keypoints[t, BODY["nose"], :2]  # retargeted nose
        assert xs.min() <= nose[0] <= xs.max() + 1 and ys.min() <= nose[1] <= ys.max() + 1
        face = m.keypoints[t, FACE, :2]
        cx, cy = face.mean(0)
        assert abs((xs.min() + xs.max()) / 2 - cx) < 0.5 * (xs.max() - xs.min())
        # the patch shows the driving face: skin-coloured pixels, not the photo or black
        assert m.face_images[t, int(cy), int(cx), 3:].max() > 60


def test_cache_makes_the_second_run_instant(motion, camera_clip, cache_dir):
    m, _, first = motion
    t0 = time.perf_counter()
    again = extract_motion(camera_clip[0], _cameraman(), size=SIZE, retarget="global", keep_frames=True,
                           cache_dir=cache_dir)
    second = time.perf_counter() - t0
    assert again.settings["cache"] == "hit" and m.settings["cache"] == "miss"
    assert second < 1.5 and second < first / 3, (first, second)
    for k in Motion._ARRAYS:
        np.testing.assert_array_equal(getattr(again, k), getattr(m, k))
    # another setting is another entry
    assert len(list(cache_dir.glob("*.npz"))) == 1


def test_save_load_roundtrip_without_pickles(motion, tmp_path):
    m, _, _ = motion
    p = m.save(tmp_path / "m.npz")
    with np.load(p, allow_pickle=False) as z:  # would raise on object arrays
        assert {"pose_images", "face_images", "meta", "keypoints"} <= set(z.files)
        assert all(z[k].dtype != object for k in z.files)
    back = Motion.load(p)
    for k in Motion._ARRAYS:
        np.testing.assert_array_equal(getattr(back, k), getattr(m, k))
    assert back.fps == m.fps and back.retarget == m.retarget and back.framing == m.framing
    assert back.settings["retarget_info"] == m.settings["retarget_info"]
    small = Motion.load(m.save(tmp_path / "small.npz", frames=False))
    assert small.driving_frames is None and small.pose_images.shape == m.pose_images.shape
    np.savez(tmp_path / "other.npz", a=np.zeros(3))
    with pytest.raises(InputError, match="not a motion file"):
        Motion.load(tmp_path / "other.npz")
    with pytest.raises(InputError, match=r"\.npz"):
        m.save(tmp_path / "m.pkl")


def test_previews(motion):
    m, _, _ = motion
    T, (H, W) = len(m), SIZE
    assert skeleton_video(m).shape == (T, H, W, 3)
    fv = face_patch_video(m)
    assert fv.shape == (T, H, 2 * W, 3)
    np.testing.assert_array_equal(fv[:, :, :W], m.face_images[..., 3:])
    pv = preview_side_by_side(None, m)
    assert pv.shape[0] == T and pv.shape[2] == 4 * W and pv.shape[1] > H  # 4 panels + caption bar
    raw = read_video(m.source["path"]).frames
    pv2 = preview_side_by_side(raw, m, labels=False)
    assert pv2.shape[1] == H and pv2.shape[2] == raw.shape[2] * H // raw.shape[1] + 3 * W


def test_limbs_mode_and_cancel(clip, tmp_path):
    m = extract_motion(clip[0], _hopper(), size=SIZE, retarget="limbs", max_frames=4, cache_dir=tmp_path)
    assert m.retarget == "limbs" and len(m) == 4 and m.settings["retarget_info"]["bone_ratios"]
    assert m.reference_image.shape == (*SIZE, 3) and m.person_found.all()
    calls = []

    def stop(frac, desc):
        calls.append(desc)
        return frac < 0.3

    with pytest.raises(Cancelled):
        extract_motion(clip[0], _hopper(), size=SIZE, retarget="none", cache_dir=tmp_path, progress=stop)
    assert len(list(tmp_path.glob("*.npz"))) == 1  # the cancelled run cached nothing
    with pytest.raises(InputError, match="retarget must be"):
        extract_motion(clip[0], _hopper(), retarget="sideways")
    with pytest.raises(InputError, match="multiples of 64"):
        extract_motion(clip[0], _hopper(), size=(500, 300))


def test_face_patch_shortcut_equals_the_plain_construction(motion, camera_clip):
    """Warping only the face box (framing and head move in one map) gives the patches of the plain
    recipe: frame -> canvas (framing) -> moved with the head -> official patches on the whole image."""
    import cv2

    from xdyna_core.preprocess.face import face_patches
    from xdyna_core.preprocess.motion import _face_patches_for_frame, _head_transform

    m, _, _ = motion
    framing = Framing.from_dict(m.framing["driving"])
    frames = read_video(camera_clip[0], fps=15, max_side=int(1.5 * max(SIZE))).frames
    for t in (0, 9, 15):
        drv, rt = m.driving_keypoints[t], m.keypoints[t]
        fast, found = _face_patches_for_frame(frames[t], framing, drv, rt, 0.3)
        assert found
        np.testing.assert_array_equal(fast, m.face_images[t])
        s, d = _head_transform(drv, rt, 0.3)
        canvas = framing.apply_to_image(frames[t])
        moved = cv2.warpAffine(canvas, np.array([[s, 0, d[0] + 0.5 * s - 0.5], [0, s, d[1] + 0.5 * s - 0.5]]),
                               (SIZE[1], SIZE[0]), flags=cv2.INTER_LINEAR)
        face = drv[FACE].copy()
        face[:, :2] = face[:, :2] * s + d
        plain, ok = face_patches(moved, face)
        assert ok
        assert ((plain > 0) != (fast > 0)).mean() < 0.002  # same patch areas
        assert np.abs(plain.astype(int) - fast).mean() < 1.0  # same pixels up to resampling


def test_pose_every_interpolates_between_analysed_frames(clip):
    """pose_every=3 analyses frames 0, 3, ..., 15 only; the frames between get the linear
    interpolation of their neighbours, which on this smooth motion stays close to a full analysis."""
    full = extract_motion(clip[0], None, size=SIZE, retarget="none", smooth=False, cache_dir=False)
    fast = extract_motion(clip[0], None, size=SIZE, retarget="none", smooth=False, pose_every=3, cache_dir=False)
    assert fast.person_found.all() and fast.settings["pose_every"] == 3
    k = fast.driving_keypoints[:, FACE, :2]
    np.testing.assert_allclose(k[4], k[3] * 2 / 3 + k[6] / 3, atol=1e-3)
    np.testing.assert_allclose(k[14], k[12] / 3 + k[15] * 2 / 3, atol=1e-3)  # the last frame is analysed too
    # in clip pixels (the two runs may frame the clip slightly differently)
    xy_fast = Framing.from_dict(fast.framing["driving"]).inverse_points(k)
    xy_full = Framing.from_dict(full.framing["driving"]).inverse_points(full.driving_keypoints[:, FACE, :2])
    err = np.linalg.norm(xy_fast - xy_full, axis=-1).mean(1)
    assert err[[0, 3, 6, 9, 12, 15]].max() < 2.0 and err.max() < 4.0, err
