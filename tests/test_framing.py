"""Framing onto the generation canvas: geometry in numbers."""

import cv2
import numpy as np
import pytest

from xdyna_core.errors import InputError
from xdyna_core.preprocess.framing import (Framing, centre_crop_framing, check_size, fit_framing, union_box,
                                           widen_box)
from xdyna_core.preprocess.pose import Keypoints


def _smooth_image(h, w, seed=0):
    rng = np.random.default_rng(seed)
    return cv2.GaussianBlur(rng.integers(0, 255, (h, w, 3), dtype=np.uint8), (0, 0), 4)


def test_check_size():
    assert check_size((896, 512)) == (896, 512)
    assert check_size("512x768") == (768, 512)  # people write WIDTHxHEIGHT
    for bad in ["900x512", (896, 500), "big", (0, 64)]:
        with pytest.raises(InputError, match="size"):
            check_size(bad)


def test_no_person_is_the_official_centre_crop():
    img = _smooth_image(300, 400)
    f = fit_framing(300, 400, (896, 512), bbox=None)
    assert f == centre_crop_framing(300, 400, (896, 512))
    out = f.apply_to_image(img)
    # official imread_resize_crop: centre crop to W:H, cv2.resize to W×H (bilinear)
    cw = 300 * 512 / 896
    x0 = (400 - cw) / 2
    assert f.source_window == pytest.approx((x0, 0.0, x0 + cw, 300.0))
    ref = cv2.resize(img[:, int(round(x0)): int(round(x0 + cw))], (512, 896))
    assert out.shape == (896, 512, 3)
    assert np.abs(out.astype(int) - ref)[8:-8, 8:-8].mean() < 2.0


@pytest.mark.parametrize("src,bbox", [
    ((720, 1280), (560, 100, 720, 650)),   # landscape clip, dancer in the middle
    ((720, 1280), (40, 300, 140, 560)),    # small person at the left edge
    ((512, 512), (150, 120, 380, 512)),    # upper body
    ((1920, 1080), (300, 200, 800, 1800)),  # portrait phone video
])
def test_person_is_centred_contained_and_never_squashed(src, bbox):
    h, w = src
    H, W = 896, 512
    f = fit_framing(h, w, (H, W), bbox)
    wx0, wy0, wx1, wy1 = f.source_window
    assert (wx1 - wx0) / (wy1 - wy0) == pytest.approx(W / H)  # one scale for x and y
    # the widened person box is fully on the canvas
    bx0, by0, bx1, by1 = widen_box(bbox)
    p = f.apply_to_points([[max(bx0, 0), max(by0, 0)], [min(bx1, w), min(by1, h)]])
    assert p[0, 0] >= -1e-6 and p[0, 1] >= -1e-6 and p[1, 0] <= W + 1e-6 and p[1, 1] <= H + 1e-6
    # no padding along an axis where the image is larger than the window
    if wx1 - wx0 <= w:
        assert wx0 >= -1e-6 and wx1 <= w + 1e-6
    if wy1 - wy0 <= h:
        assert wy0 >= -1e-6 and wy1 <= h + 1e-6
    # centred on the person unless that would leave the image
    cx = f.apply_to_points([[(bx0 + bx1) / 2, 0]])[0, 0]
    if wx1 - wx0 < w and 0 < (bx0 + bx1) / 2 - (wx1 - wx0) / 2 and (bx0 + bx1) / 2 + (wx1 - wx0) / 2 < w:
        assert cx == pytest.approx(W / 2)


def test_wide_person_padding_is_capped():
    """A half-body portrait wider than the canvas aspect allows: padding stops at max_pad (25 %) of
    the canvas height; the outer edges of the shoulders are cut instead, the head stays centred."""
    bbox = (20, 150, 500, 600)  # 512 x 600 photo (W x H), shoulders span the whole width
    f = fit_framing(600, 512, (896, 512), bbox)
    wx0, wy0, wx1, wy1 = f.source_window
    pad = (max(0, -wy0) + max(0, wy1 - 600)) / (wy1 - wy0)
    assert pad == pytest.approx(0.25)
    assert wx0 > 0 and wx1 < 512  # sides cut
    assert (wx0 + wx1) / 2 == pytest.approx(260, abs=1)  # centred on the person
    no_cap = fit_framing(600, 512, (896, 512), bbox, max_pad=0.9)
    assert no_cap.source_window[0] < 0  # without the cap the whole box would fit, with big bands
    # the padding is a soft continuation of the photo's edges ("extend"), not a flat band
    img = np.zeros((600, 512, 3), np.uint8)
    img[:, :256] = (200, 40, 40)
    img[:, 256:] = (40, 40, 200)
    out = f.apply_to_image(img, fill="extend")
    top = out[5]
    assert top[20].tolist() == [200, 40, 40] and top[-20].tolist() == [40, 40, 200]
    inside = f.apply_to_image(img)
    assert np.array_equal(out[400], inside[400])


def test_small_person_is_zoomed_in_but_not_past_max_zoom():
    f = fit_framing(720, 1280, (896, 512), (600, 400, 650, 500))  # tiny person
    full = centre_crop_framing(720, 1280, (896, 512))
    assert f.scale == pytest.approx(2.0 * full.scale)  # capped at max_zoom=2
    f2 = fit_framing(720, 1280, (896, 512), (600, 200, 700, 600))
    person_h = (widen_box((600, 200, 700, 600))[3] - widen_box((600, 200, 700, 600))[1]) * f2.scale
    assert person_h == pytest.approx(0.85 * 896, rel=1e-6)  # fills 85 % of the height


def test_image_and_keypoints_get_the_same_map():
    img = np.zeros((300, 400, 3), np.uint8)
    pts = np.array([[250.5, 100.5], [60.5, 260.5], [390.5, 10.5]])
    for x, y in pts:
        cv2.circle(img, (int(x), int(y)), 2, (255, 255, 255), -1)
    kp = Keypoints()
    kp.body[:3] = np.c_[pts, np.ones(3)]
    for bbox in [None, (200, 50, 300, 280), (10, 10, 390, 290), (180, 120, 220, 200)]:
        f = fit_framing(300, 400, (512, 384), bbox)
        out = f.apply_to_image(img)
        mapped = f.apply_to_keypoints(kp).body[:3, :2]
        np.testing.assert_allclose(mapped, f.apply_to_points(pts), atol=1e-3)
        for x, y in mapped:
            if 3 <= x < 381 and 3 <= y < 509:
                ys, xs = np.nonzero(out[int(y) - 12:int(y) + 13, int(x) - 12:int(x) + 13, 0] > 60)
                assert len(xs) > 0
                w = out[int(y) - 12:int(y) + 13, int(x) - 12:int(x) + 13, 0][ys, xs].astype(float)
                cx = (xs * w).sum() / w.sum() + int(x) - 12 + 0.5
                cy = (ys * w).sum() / w.sum() + int(y) - 12 + 0.5
                assert abs(cx - x) < 1.0 and abs(cy - y) < 1.0
        np.testing.assert_allclose(f.inverse_points(f.apply_to_points(pts)), pts, atol=1e-9)
    assert f.apply_to_keypoints(None) is None


def test_padding_fill_and_many_channels():
    img = np.full((100, 400, 3), 77, np.uint8)
    f = fit_framing(100, 400, (512, 512), (0, 0, 400, 100))  # wide person: letterbox top/bottom
    black = f.apply_to_image(img)
    border = f.apply_to_image(img, fill="border")
    assert black[0, 256].tolist() == [0, 0, 0] and border[0, 256].tolist() == [77, 77, 77]
    assert black[256, 256].tolist() == [77, 77, 77]
    six = f.apply_to_image(np.concatenate([img, img // 2], axis=2))
    assert six.shape == (512, 512, 6) and six[256, 256].tolist() == [77, 77, 77, 38, 38, 38]
    with pytest.raises(InputError, match="framing is for"):
        f.apply_to_image(np.zeros((10, 10, 3), np.uint8))
    assert Framing.from_dict(f.to_dict()) == f


def test_union_box_ignores_outliers():
    boxes = [(100, 100, 200, 300)] * 40 + [(0, 0, 1000, 1000), None]
    u = union_box(boxes)
    assert u == pytest.approx((100, 100, 200, 300))
    assert union_box([None]) is None
    assert union_box([(1, 2, 3, 4), (0, 5, 2, 9)]) == (0, 2, 3, 9)
