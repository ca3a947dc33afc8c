"""DWPose-style skeleton drawing: colours, omitted parts, stick width."""

import numpy as np
import pytest

from xdyna_core.preprocess.draw import (COLORS, HAND_EDGE_COLORS, HAND_EDGES, LIMBS, draw_pose, overlay)
from xdyna_core.preprocess.pose import BODY, Keypoints

H, W = 896, 512
# A spread-out standing person: every limb long enough that its midpoint is clear of other limbs.
JOINTS = {
    "nose": (256, 150), "neck": (256, 250), "r_shoulder": (176, 250), "r_elbow": (120, 360), "r_wrist": (70, 470),
    "l_shoulder": (336, 250), "l_elbow": (392, 360), "l_wrist": (442, 470), "r_hip": (206, 480),
    "r_knee": (170, 640), "r_ankle": (150, 800), "l_hip": (306, 480), "l_knee": (342, 640), "l_ankle": (362, 800),
    "r_eye": (226, 120), "l_eye": (286, 120), "r_ear": (190, 140), "l_ear": (322, 140),
}


def person(conf=1.0):
    body = np.zeros((18, 3), np.float32)
    for name, (x, y) in JOINTS.items():
        body[BODY[name]] = (x, y, conf)
    return Keypoints(body=body)


def dimmed(c):
    return tuple(int(v * 0.6) for v in c)


def px(img, x, y):
    return tuple(int(v) for v in img[int(y), int(x)])


def test_limb_midpoints_have_dwpose_colours_and_joints_full_colours():
    kp = person()
    img = draw_pose(kp, H, W)
    assert img.shape == (H, W, 3) and img.dtype == np.uint8
    for i, (a, b) in enumerate(LIMBS):
        if i in (13, 14, 15, 16):
            continue
        pa, pb = kp.body[a, :2], kp.body[b, :2]
        mx, my = (pa + pb) / 2
        assert px(img, mx, my) == dimmed(COLORS[i]), f"limb {i} {a}-{b}"
    for j in range(14):  # nose .. l_ankle: dots in full colour
        x, y = kp.body[j, :2]
        assert px(img, x, y) == COLORS[j], f"joint {j}"


def test_head_limbs_and_eye_ear_dots_omitted_by_default_drawn_on_request():
    kp = person()
    img = draw_pose(kp, H, W)
    head = draw_pose(kp, H, W, draw_head=True)
    for i in (13, 14, 15, 16):
        a, b = LIMBS[i]
        mx, my = (kp.body[a, :2] + kp.body[b, :2]) / 2
        assert px(img, mx, my) == (0, 0, 0)
        assert px(head, mx, my) == dimmed(COLORS[i])
    for j in (14, 15, 16, 17):
        x, y = kp.body[j, :2]
        assert px(img, x, y) == (0, 0, 0)
        assert px(head, x, y) == COLORS[j]
    # neck-nose limb is kept (official data keep it)
    mx, my = (kp.body[0, :2] + kp.body[1, :2]) / 2
    assert px(img, mx, my) == dimmed(COLORS[12])


def test_stick_width_is_fixed_4px_independent_of_canvas():
    kp = person()
    for h, w in ((896, 512), (1792, 1024)):
        img = draw_pose(kp, h, w)
        # neck -> r_hip limb is long; measure horizontal thickness of the r_knee->r_ankle-free
        # horizontal shoulder limb: vertical run of coloured pixels at the limb midpoint
        x = int((JOINTS["neck"][0] + JOINTS["r_shoulder"][0]) / 2)
        col = img[230:270, x].any(axis=1)
        assert col.sum() == 9  # 2 * stickwidth + 1


def test_low_confidence_points_and_none():
    kp = person()
    kp.body[BODY["r_elbow"], 2] = 0.2  # below the 0.3 threshold
    img = draw_pose(kp, H, W)
    x, y = JOINTS["r_elbow"]
    assert px(img, x, y) == (0, 0, 0)
    sx, sy = np.add(JOINTS["r_shoulder"], JOINTS["r_elbow"]) / 2
    assert px(img, sx, sy) == (0, 0, 0)
    assert not draw_pose(None, H, W).any()
    assert draw_pose(None, 64, 32).shape == (64, 32, 3)
    assert not draw_pose(person(conf=0.0), H, W).any()


def test_hands_hsv_edges_and_blue_dots():
    kp = person()
    hand = np.zeros((21, 3), np.float32)
    # a fan of long fingers from the right wrist so every edge midpoint is isolated
    wrist = np.array([256.0, 720.0])  # between the legs, clear of the body
    hand[0] = (*wrist, 1)
    for f in range(5):
        ang = np.deg2rad(200 + f * 35)
        d = np.array([np.cos(ang), np.sin(ang)])
        for k in range(4):
            hand[1 + 4 * f + k] = (*(wrist + d * 36 * (k + 1)), 1)
    kp.hands[1] = hand
    img = draw_pose(kp, H, W)
    for ie, (a, b) in enumerate(HAND_EDGES):
        mx, my = (hand[a, :2] + hand[b, :2]) / 2
        expect = tuple(int(round(c)) for c in HAND_EDGE_COLORS[ie])
        got = px(img, mx, my)
        assert max(abs(g - e) for g, e in zip(got, expect)) <= 1, (ie, got, expect)
    for p in hand:
        assert px(img, p[0], p[1]) == (0, 0, 255)
    no_hands = draw_pose(kp, H, W, draw_hands=False)
    assert px(no_hands, *hand[4, :2]) == (0, 0, 0)
    # the hue ramp: first edge red, edge 5 (of 20) at hue 0.25
    assert HAND_EDGE_COLORS[0] == (255.0, 0.0, 0.0)
    assert np.allclose(HAND_EDGE_COLORS[5], (127.5, 255.0, 0.0))


def test_face_points_only_on_request():
    kp = person()
    kp.face[:, :2] = np.stack([np.linspace(200, 312, 68), np.full(68, 60.0)], 1)
    kp.face[:, 2] = 1
    assert not draw_pose(kp, H, W)[55:66].any()
    img = draw_pose(kp, H, W, draw_face=True)
    assert px(img, 200, 60) == (255, 255, 255)


def test_body_off_and_overlay():
    kp = person()
    assert not draw_pose(kp, H, W, draw_body=False).any()  # no hands / face set
    photo = np.full((H, W, 3), 100, np.uint8)
    sk = draw_pose(kp, H, W)
    ov = overlay(photo, sk, alpha=1.0)
    assert (ov[sk.max(2) > 0] == sk[sk.max(2) > 0]).all()
    assert (ov[sk.max(2) == 0] == 100).all()


@pytest.mark.parametrize("bad", [np.nan, 1e12])
def test_non_finite_or_huge_coordinates_are_skipped(bad):
    kp = person()
    kp.body[BODY["l_wrist"], 0] = bad
    img = draw_pose(kp, H, W)
    mx, my = np.add(JOINTS["l_elbow"], JOINTS["l_shoulder"]) / 2
    assert px(img, mx, my) == dimmed(COLORS[4])
