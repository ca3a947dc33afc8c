"""Retargeting the driving skeleton onto the reference person, with numbers."""

import numpy as np
import pytest

from xdyna_core.errors import InputError
from xdyna_core.preprocess.pose import BODY, Keypoints
from xdyna_core.preprocess.retarget import BONES, retarget_sequence

REF = {
    "nose": (256, 200), "neck": (256, 260), "r_shoulder": (216, 262), "r_elbow": (196, 340), "r_wrist": (186, 410),
    "l_shoulder": (296, 262), "l_elbow": (316, 340), "l_wrist": (326, 410), "r_hip": (230, 450),
    "r_knee": (226, 580), "r_ankle": (224, 700), "l_hip": (282, 450), "l_knee": (286, 580), "l_ankle": (288, 700),
    "r_eye": (246, 190), "l_eye": (266, 190), "r_ear": (236, 196), "l_ear": (276, 196),
}


def make(joints, drop=()):
    body = np.zeros((18, 3), np.float32)
    for n, (x, y) in joints.items():
        if n not in drop:
            body[BODY[n]] = (x, y, 1.0)
    kp = Keypoints(body=body)
    # a hand at the right wrist and a face round the nose
    w = kp.body[BODY["r_wrist"], :2]
    kp.hands[1, :, :2] = w + np.stack([np.linspace(0, 20, 21), np.linspace(0, 30, 21)], 1)
    kp.hands[1, :, 2] = 1
    nose = kp.body[BODY["nose"], :2]
    kp.face[:, :2] = nose + np.stack([np.linspace(-15, 15, 68), np.linspace(-20, 20, 68)], 1)
    kp.face[:, 2] = 1
    return kp


def height(kp):
    b = kp.body
    return (b[BODY["r_ankle"], 1] + b[BODY["l_ankle"], 1]) / 2 - b[BODY["neck"], 1]


def test_global_twice_as_tall_comes_out_at_reference_height_and_position():
    ref = make(REF)
    drv0 = ref.transformed(2.0, -100.0, 37.0)  # twice as tall, elsewhere
    # the clip: the person then walks 10 px right per frame and raises the right wrist
    clip = [None, drv0]
    for t in range(1, 4):
        k = drv0.transformed(1.0, 10.0 * t, 0.0)
        k.body[BODY["r_wrist"], 1] -= 40 * t
        clip.append(k)
    out, info = retarget_sequence(clip, ref, "global")
    assert out[0] is None and info.anchor_frame == 1 and info.level == "ankles"
    assert info.scale == pytest.approx(0.5, abs=1e-6)
    assert height(out[1]) == pytest.approx(height(ref), abs=1e-3)
    np.testing.assert_allclose(out[1].to_array(), ref.to_array(), atol=1e-3)  # same size, same place
    for t in range(1, 4):  # motion is kept, at the reference's scale
        d = out[1 + t].body[BODY["neck"], :2] - ref.body[BODY["neck"], :2]
        np.testing.assert_allclose(d, (5.0 * t, 0.0), atol=1e-3)
        assert out[1 + t].body[BODY["r_wrist"], 1] == pytest.approx(ref.body[BODY["r_wrist"], 1] - 20 * t, abs=1e-3)


def test_global_with_half_body_reference_uses_hips():
    legs = ("r_knee", "r_ankle", "l_knee", "l_ankle")
    ref = make(REF, drop=legs)
    drv = make(REF).transformed(1.5, 40.0, -60.0)
    out, info = retarget_sequence([drv], ref, "global")
    assert info.level == "hips"
    np.testing.assert_allclose(out[0].body[BODY["r_hip"], :2], ref.body[BODY["r_hip"], :2], atol=1e-3)
    np.testing.assert_allclose(out[0].body[BODY["neck"], :2], ref.body[BODY["neck"], :2], atol=1e-3)
    # legs the reference lacks are still drawn, scaled along
    assert out[0].body[BODY["r_ankle"], 2] == 1


def test_global_with_head_and_shoulders_reference():
    ref = make(REF, drop=("r_hip", "l_hip", "r_knee", "r_ankle", "l_knee", "l_ankle", "r_elbow", "r_wrist"))
    drv = make(REF).transformed(0.5, 300.0, 10.0)  # half as big
    out, info = retarget_sequence([drv], ref, "global")
    assert info.level == "shoulders" and info.scale == pytest.approx(2.0)
    np.testing.assert_allclose(out[0].body[BODY["neck"], :2], ref.body[BODY["neck"], :2], atol=1e-3)
    np.testing.assert_allclose(out[0].body[BODY["nose"], :2], ref.body[BODY["nose"], :2], atol=1e-3)


def bone(kp, p, c):
    return float(np.linalg.norm(kp.body[BODY[c], :2] - kp.body[BODY[p], :2]))


def test_limbs_gives_reference_bone_lengths_and_position():
    ref = make(REF)
    # driving person: twice as tall, arms 1.5x longer relative to the body, legs shorter
    d = {n: np.array(v, np.float64) for n, v in REF.items()}
    for side in ("r", "l"):
        sh = d[f"{side}_shoulder"]
        d[f"{side}_elbow"] = sh + 1.5 * (d[f"{side}_elbow"] - sh)
        d[f"{side}_wrist"] = d[f"{side}_elbow"] + 1.5 * (np.array(REF[f"{side}_wrist"]) - REF[f"{side}_elbow"])
        kn = d[f"{side}_knee"]
        d[f"{side}_ankle"] = kn + 0.7 * (d[f"{side}_ankle"] - kn)
    drv = make({n: tuple(v) for n, v in d.items()}).transformed(2.0, -150.0, -300.0)
    clip = [drv, drv.transformed(1.0, 30.0, 0.0)]
    out, info = retarget_sequence(clip, ref, "limbs")
    assert info.mode == "limbs" and info.anchor_frame == 0
    for p, c in BONES:
        assert bone(out[0], p, c) == pytest.approx(bone(ref, p, c), rel=1e-4), (p, c)
    # re-anchored: feet on the reference's feet line, hips centred on the reference's
    ank = lambda k: (k.body[BODY["r_ankle"], 1] + k.body[BODY["l_ankle"], 1]) / 2  # noqa: E731
    hipx = lambda k: (k.body[BODY["r_hip"], 0] + k.body[BODY["l_hip"], 0]) / 2  # noqa: E731
    assert ank(out[0]) == pytest.approx(ank(ref), abs=1e-3)
    assert hipx(out[0]) == pytest.approx(hipx(ref), abs=1e-3)
    # global translation of the driving person is scaled by the global scale (neck-ankle span ratio)
    def span(k):
        feet = (k.body[BODY["r_ankle"], :2] + k.body[BODY["l_ankle"], :2]) / 2
        return np.linalg.norm(feet - k.body[BODY["neck"], :2])

    assert info.scale == pytest.approx(span(ref) / span(drv), rel=1e-6)
    shift = out[1].body[:, :2] - out[0].body[:, :2]
    np.testing.assert_allclose(shift, np.tile([30 * info.scale, 0.0], (18, 1)), atol=1e-3)
    # hand follows its wrist rigidly at the global scale; face follows the nose
    w = out[0].body[BODY["r_wrist"], :2]
    np.testing.assert_allclose(out[0].hands[1, 0, :2], w, atol=1e-3)
    np.testing.assert_allclose(out[0].hands[1, -1, :2] - w, np.array([20.0, 30.0]) * 2 * info.scale, atol=1e-3)
    nose = out[0].body[BODY["nose"], :2]
    np.testing.assert_allclose(out[0].face[:, :2].mean(0), nose, atol=1e-3)


def test_limbs_missing_joints_stay_missing():
    ref = make(REF)
    drv = make(REF, drop=("r_elbow",)).transformed(2.0, 0.0, 0.0)
    out, _ = retarget_sequence([drv], ref, "limbs")
    assert out[0].body[BODY["r_elbow"], 2] == 0
    assert out[0].body[BODY["r_wrist"], 2] == 1  # hung from the shoulder at the global scale
    exp = out[0].body[BODY["r_shoulder"], :2] + 0.5 * (drv.body[BODY["r_wrist"], :2] - drv.body[BODY["r_shoulder"], :2])
    np.testing.assert_allclose(out[0].body[BODY["r_wrist"], :2], exp, atol=1e-3)


def test_none_mode_errors_and_empty_clips():
    ref = make(REF)
    drv = make(REF).transformed(2.0, 5.0, 5.0)
    out, info = retarget_sequence([drv, None], ref, "none")
    assert info.mode == "none" and out[1] is None
    np.testing.assert_array_equal(out[0].to_array(), drv.to_array())
    with pytest.raises(InputError, match="reference photo"):
        retarget_sequence([drv], None, "global")
    with pytest.raises(InputError, match="reference photo"):
        retarget_sequence([drv], Keypoints(), "limbs")
    with pytest.raises(InputError, match="Unknown retarget mode"):
        retarget_sequence([drv], ref, "stretch")
    out, info = retarget_sequence([None, None], ref, "global")
    assert out == [None, None] and info.anchor_frame is None
