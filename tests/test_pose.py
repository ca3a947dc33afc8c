"""Keypoints format, tracking, One-Euro smoothing, the embedded mediapipe estimator on real
photographs and a moving clip, and the DWPose path on tiny ONNX models built here."""

import os

import cv2
import numpy as np
import pytest

from xdyna_core.errors import InputError, MissingWeightsError
from xdyna_core.preprocess import dwpose as dw
from xdyna_core.preprocess.pose import (BODY, NUM_POINTS, Keypoints, get_estimator, one_euro_filter,
                                        smooth_keypoints, track_main_person)


# ---- format ------------------------------------------------------------------------------------
def test_keypoints_roundtrip_transform_bbox():
    rng = np.random.default_rng(0)
    a = rng.uniform(0, 500, (NUM_POINTS, 3)).astype(np.float32)
    a[:, 2] = rng.uniform(0, 1, NUM_POINTS)
    a[5, 2] = 0  # a missing point
    kp = Keypoints.from_array(a)
    np.testing.assert_array_equal(kp.to_array(), a)
    assert kp.body.shape == (18, 3) and kp.hands.shape == (2, 21, 3) and kp.face.shape == (68, 3)
    np.testing.assert_array_equal(kp.hands[1, 0], a[18 + 21])
    t = kp.transformed(2.0, 10.0, -5.0).to_array()
    present = a[:, 2] > 0
    np.testing.assert_allclose(t[present, :2], a[present, :2] * 2 + [10, -5], rtol=1e-6)
    np.testing.assert_array_equal(t[~present], a[~present])
    np.testing.assert_array_equal(t[:, 2], a[:, 2])
    pts = a[(a[:, 2] >= 0.3), :2]
    assert kp.bbox() == pytest.approx((*pts.min(0), *pts.max(0)))
    assert Keypoints().bbox() is None
    with pytest.raises(InputError):
        Keypoints.from_array(np.zeros((10, 3)))


# ---- tracking ----------------------------------------------------------------------------------
def box_person(x0, y0, x1, y1):
    kp = Keypoints()
    kp.body[BODY["neck"]] = (x0, y0, 1)
    kp.body[BODY["r_ankle"]] = (x1, y1, 1)
    kp.body[BODY["l_hip"]] = ((x0 + x1) / 2, (y0 + y1) / 2, 1)
    return kp


def test_track_main_person_follows_the_first_biggest():
    main = [box_person(100 + 5 * t, 100, 200 + 5 * t, 400) for t in range(6)]
    # a bystander walks towards the camera and becomes bigger than the main person from frame 3
    other = [box_person(300, 150 - 40 * t, 380 + 40 * t, 300 + 40 * t) for t in range(6)]
    gone = box_person(480, 100, 560, 300)  # main person left; a bystander more than a body diagonal away
    frames = [[], [other[1], main[1]], [main[2], other[2]], [other[3], main[3]], [main[4], other[4]], [gone]]
    picked = track_main_person(frames)
    assert picked[0] is None
    for t in range(1, 5):
        assert picked[t] is main[t]
    assert picked[5] is None  # only a far-away bystander left: no jump to them
    # after `reacquire_after` frames without the main person, the biggest one is taken again
    again = track_main_person(frames + [[gone]] * 3, reacquire_after=3)
    assert again[5] is None and again[6] is None and again[7] is None and again[8] is gone


# ---- smoothing ---------------------------------------------------------------------------------
def test_one_euro_reduces_jitter_and_follows_a_step():
    rng = np.random.default_rng(0)
    T, fps = 120, 30.0
    truth = np.where(np.arange(T) < 60, 100.0, 200.0)
    noisy = truth + rng.normal(0, 3.0, T)
    sm = one_euro_filter(noisy[:, None], np.ones((T, 1), bool), fps)[:, 0]  # defaults: 1 Hz, beta 0.01
    flat = slice(10, 60)
    assert np.var(sm[flat] - truth[flat]) < 0.3 * np.var(noisy[flat] - truth[flat])  # measured 0.24
    assert abs(sm[65] - 200.0) < 5.0  # caught up with the step within 5 frames (measured 2)
    assert abs(sm[-20:] - 200).max() < 4.0
    # a plain low-pass with the same minimum cutoff (beta = 0) lags far behind the step
    lp = one_euro_filter(noisy[:, None], np.ones((T, 1), bool), fps, beta=0.0)[:, 0]
    assert abs(lp[65] - 200.0) > 20.0


def test_smooth_keypoints_handles_gaps():
    rng = np.random.default_rng(1)
    seq = []
    for t in range(40):
        if t == 20:
            seq.append(None)
            continue
        kp = Keypoints()
        kp.body[BODY["nose"]] = (100 + rng.normal(0, 2), 50 + rng.normal(0, 2), 1)
        kp.body[BODY["neck"]] = (0, 0, 0.1)  # unconfident: untouched
        seq.append(kp)
    out = smooth_keypoints(seq, fps=25)
    assert out[20] is None and len(out) == 40
    raw = np.array([k.body[0, :2] for k in seq if k is not None])
    sm = np.array([k.body[0, :2] for k in out if k is not None])
    assert sm[5:].std(0).max() < 0.6 * raw[5:].std(0).min()
    assert all(k.body[BODY["neck"], 2] == pytest.approx(0.1) and not k.body[BODY["neck"], :2].any() for k in out if k)
    assert out[21].body[0, 0] == seq[21].body[0, 0]  # restarts after the gap


# ---- embedded estimator on real photographs ------------------------------------------------------
@pytest.fixture(scope="module")
def photos():
    """Real photographs shipped inside installed packages."""
    import matplotlib.cbook
    import skimage.data

    hopper = cv2.imread(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    return {"astronaut": skimage.data.astronaut(), "grace_hopper": np.ascontiguousarray(hopper[..., ::-1]),
            "camera": np.repeat(skimage.data.camera()[..., None], 3, 2)}


@pytest.fixture(scope="module")
def still():
    return get_estimator("mediapipe", static_image_mode=True)


def haar_face(img):
    c = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    x, y, w, h = max(c.detectMultiScale(cv2.cvtColor(img, cv2.COLOR_RGB2GRAY), 1.1, 5, minSize=(40, 40)),
                     key=lambda f: f[2] * f[3])
    return x, y, x + w, y + h


def conf(kp, name):
    return kp.body[BODY[name], 2] >= 0.3


def xy(kp, name):
    return kp.body[BODY[name], :2]


@pytest.mark.parametrize("name", ["astronaut", "grace_hopper"])
def test_mediapipe_upper_body_in_plausible_places(name, photos, still):
    img = photos[name]
    still.reset()
    people = still(img)
    assert len(people) == 1
    kp = people[0]
    for j in ("nose", "neck", "r_shoulder", "l_shoulder", "r_eye", "l_eye"):
        assert conf(kp, j), j
    x0, y0, x1, y1 = haar_face(img)  # independent face detector
    nx, ny = xy(kp, "nose")
    assert x0 <= nx <= x1 and y0 <= ny <= y1  # nose inside the face box
    assert xy(kp, "r_eye")[1] < ny and xy(kp, "l_eye")[1] < ny  # eyes above the nose
    assert xy(kp, "r_eye")[0] < xy(kp, "l_eye")[0]  # facing the camera: person's right on the image left
    assert xy(kp, "r_shoulder")[0] < nx < xy(kp, "l_shoulder")[0]
    assert xy(kp, "neck")[1] > y1 - 0.2 * (y1 - y0)  # shoulders at/below the chin
    fx = kp.face[:, 0]
    assert kp.has_face() and fx.min() >= x0 - 0.4 * (x1 - x0) and fx.max() <= x1 + 0.4 * (x1 - x0)
    assert kp.face[36:48, 1].mean() < kp.face[48:68, 1].mean()  # eyes above the mouth
    if name == "astronaut":  # her right arm hangs down: elbow and wrist below the shoulder
        assert conf(kp, "r_wrist") and conf(kp, "r_elbow")
        assert xy(kp, "r_wrist")[1] > xy(kp, "r_elbow")[1] > xy(kp, "r_shoulder")[1] + 50


def test_mediapipe_standing_person(photos, still):
    still.reset()
    kp = still(photos["camera"])[0]  # the cameraman: standing, seen from the side
    for j in ("nose", "r_shoulder", "l_shoulder", "r_hip", "l_hip", "r_knee"):
        assert conf(kp, j), j
    sh_y = max(xy(kp, "r_shoulder")[1], xy(kp, "l_shoulder")[1])
    assert xy(kp, "nose")[1] < xy(kp, "r_hip")[1]
    assert min(xy(kp, "r_hip")[1], xy(kp, "l_hip")[1]) > sh_y + 80
    assert xy(kp, "r_knee")[1] > xy(kp, "r_hip")[1] + 60
    assert xy(kp, "nose")[0] > 150 and xy(kp, "nose")[1] < 256  # head in the upper middle of the photo


def test_mediapipe_no_person_and_bad_input(still):
    import skimage.data

    still.reset()
    assert still(skimage.data.coffee()) == []
    with pytest.raises(InputError):
        still(np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(InputError):
        still(np.zeros((64, 64), np.uint8))


def test_mediapipe_follows_a_moving_photo(photos):
    """Clip = the astronaut photo panned, zoomed and rotated by known affines; keypoints must
    follow the first frame's keypoints moved by the same transform."""
    base = photos["astronaut"]
    H, W = base.shape[:2]
    T = 12
    mats = []
    for t in range(T):
        ph = 2 * np.pi * t / T
        M = cv2.getRotationMatrix2D((W / 2, H / 2), 6 * np.sin(ph), 1.1 + 0.1 * np.sin(1.5 * ph))
        M[:, 2] += (20 * np.sin(0.5 * ph), 15 * np.sin(ph))
        mats.append(np.vstack([M, [0, 0, 1]]))
    frames = [cv2.warpAffine(base, M[:2], (W, H)) for M in mats]
    est = get_estimator("mediapipe")  # video (tracking) mode
    est.reset()
    res = [est(f)[0] for f in frames]
    head = [BODY[n] for n in ("nose", "neck", "r_shoulder", "l_shoulder", "r_eye", "l_eye", "r_ear", "l_ear")]
    eb, ef = [], []
    for t in range(1, T):
        R = (mats[t] @ np.linalg.inv(mats[0]))[:2]
        exp_b = res[0].body[head, :2] @ R[:, :2].T + R[:, 2]
        exp_f = res[0].face[:, :2] @ R[:, :2].T + R[:, 2]
        eb.append(np.linalg.norm(res[t].body[head, :2] - exp_b, axis=1))
        ef.append(np.linalg.norm(res[t].face[:, :2] - exp_f, axis=1))
    eb, ef = np.array(eb), np.array(ef)
    # shoulder width is ~200 px here; measured: head joints median ~9 px, max ~25 px; face median ~1.2, max ~5
    assert np.median(eb) < 14 and eb.max() < 40, (np.median(eb), eb.max())
    assert np.median(ef) < 3 and ef.max() < 10, (np.median(ef), ef.max())


# ---- DWPose: decoding math on constructed outputs ---------------------------------------------
def test_simcc_decode_and_wholebody_mapping():
    K = 133
    sx = np.full((1, K, 576), 0.01, np.float32)
    sy = np.full((1, K, 768), 0.01, np.float32)
    bins = {0: (100, 200), 5: (300, 400), 6: (200, 410), 9: (350, 600), 91: (10, 20), 112: (500, 700), 23: (150, 150)}
    for k, (bx, by) in bins.items():
        sx[0, k, bx], sy[0, k, by] = 0.9, 0.8
    sx[0, 10] = -1.0  # r_wrist: no positive response -> missing
    locs, vals = dw.simcc_decode(sx, sy, 2.0)
    assert locs[0, 0].tolist() == [50.0, 100.0] and vals[0, 0] == pytest.approx(0.8)
    assert locs[0, 10].tolist() == [-0.5, -0.5] and vals[0, 10] <= 0
    kp = dw.wholebody_to_keypoints(locs[0], vals[0])
    assert kp.body[BODY["nose"]].tolist() == pytest.approx([50, 100, 0.8])
    assert kp.body[BODY["r_shoulder"]].tolist() == pytest.approx([100, 205, 0.8])  # COCO 6
    assert kp.body[BODY["l_shoulder"]].tolist() == pytest.approx([150, 200, 0.8])  # COCO 5
    assert kp.body[BODY["neck"]].tolist() == pytest.approx([125, 202.5, 0.8])
    assert kp.body[BODY["l_wrist"]].tolist() == pytest.approx([175, 300, 0.8])  # COCO 9
    assert kp.body[BODY["r_wrist"]].tolist() == [0, 0, 0]
    assert kp.hands[0, 0].tolist() == pytest.approx([5, 10, 0.8])  # 91: left hand wrist
    assert kp.hands[1, 0].tolist() == pytest.approx([250, 350, 0.8])  # 112: right hand wrist
    assert kp.face[0].tolist() == pytest.approx([75, 75, 0.8])  # 23: first face point
    assert kp.body[BODY["r_eye"], 2] == pytest.approx(0.01)  # weak point kept with its score


def test_yolox_decode_boxes_nms_thresholds():
    size = (64, 64)
    grid, stride = dw.yolox_grids(size)
    assert len(grid) == 8 * 8 + 4 * 4 + 2 * 2
    pred = np.zeros((len(grid), 85), np.float32)
    pred[:, 4] = 0.0
    row = 4 * 8 + 3  # stride-8 cell (3, 4)
    pred[row, :4] = (0.5, 0.25, np.log(2), np.log(3))
    pred[row, 4], pred[row, 5] = 0.9, 0.8  # score 0.72
    dup = 4 * 8 + 4  # overlapping, weaker: suppressed by NMS
    pred[dup, :4] = (0.0, 0.25, np.log(2), np.log(3))
    pred[dup, 4], pred[dup, 5] = 0.8, 0.6
    far = 64 + 0 * 4 + 0  # stride-16 cell (0, 0): score 0.2 < 0.3 person threshold
    pred[far, 4], pred[far, 5] = 0.5, 0.4
    cat = 64 + 3 * 4 + 3  # high objectness but another class
    pred[cat, 4], pred[cat, 5], pred[cat, 20] = 0.9, 0.01, 0.9
    boxes, scores = dw.yolox_decode(pred, size, ratio=0.5)
    # centre (3.5*8, 4.25*8) = (28, 34), size (16, 24) -> /0.5
    np.testing.assert_allclose(boxes, [[40, 44, 72, 92]], atol=1e-4)
    np.testing.assert_allclose(scores, [0.72], atol=1e-6)


def test_letterbox_and_crop_geometry():
    img = np.zeros((96, 128, 3), np.uint8)
    img[10, 20] = 255
    blob, r = dw.letterbox(img, (64, 64))
    assert r == 0.5 and blob.shape == (3, 64, 64)
    assert (blob[:, 48:, :] == 114).all()  # padding below the 48-row resized image
    c, s = dw.box_center_scale([40, 44, 72, 92], 1.25, 24 / 32)
    np.testing.assert_allclose(c, (56, 68))
    np.testing.assert_allclose(s, (45, 60))  # height-bound: width widened to the 3:4 aspect
    M = dw.crop_matrix(c, s, (24, 32))
    np.testing.assert_allclose(M @ [56, 68, 1], (12, 16), atol=1e-4)
    np.testing.assert_allclose(M @ [56 - 22.5, 68 - 30, 1], (0, 0), atol=1e-4)


# ---- DWPose end to end through onnxruntime, on tiny ONNX models built here ----------------------
def _export(module, inputs, path, in_name, out_names):
    import torch

    torch.onnx.export(module, inputs, path, input_names=[in_name], output_names=out_names, dynamo=False)


@pytest.fixture(scope="module")
def tiny_dwpose(tmp_path_factory):
    pytest.importorskip("onnx", reason="torch.onnx.export needs the onnx package (requirements-dev)")
    import torch

    d = tmp_path_factory.mktemp("dwpose")
    pred = torch.zeros(1, 84, 85)
    row = 4 * 8 + 3
    pred[0, row, :4] = torch.tensor([0.5, 0.25, float(np.log(2)), float(np.log(3))])
    pred[0, row, 4], pred[0, row, 5] = 0.9, 0.8

    class Det(torch.nn.Module):  # constant detections (+0·input so the graph uses the input)
        def __init__(self):
            super().__init__()
            self.register_buffer("pred", pred)

        def forward(self, x):
            return self.pred + 0 * x.mean()

    class Pose(torch.nn.Module):
        """SimCC that peaks where the crop is brightest: column / row sums of channel 0, upsampled
        ×2 (split ratio 2), +100 so scores are positive, the same for all 133 points."""

        def forward(self, x):
            colsum = x[:, 0].sum(1) + 100.0  # [1, W]
            rowsum = x[:, 0].sum(2) + 100.0  # [1, H]
            sx = colsum.repeat_interleave(2, dim=1)[:, None].expand(1, 133, -1) / 100.0
            sy = rowsum.repeat_interleave(2, dim=1)[:, None].expand(1, 133, -1) / 100.0
            return sx, sy

    _export(Det(), torch.zeros(1, 3, 64, 64), str(d / dw.DET_FILE), "images", ["output"])
    _export(Pose(), torch.zeros(1, 3, 32, 24), str(d / dw.POSE_FILE), "input", ["simcc_x", "simcc_y"])
    return d


def test_dwpose_estimator_end_to_end_on_tiny_models(tiny_dwpose):
    est = dw.DWPoseEstimator(str(tiny_dwpose / dw.DET_FILE), str(tiny_dwpose / dw.POSE_FILE),
                             providers=["CPUExecutionProvider"])
    assert est.det_size == (64, 64) and est.pose_size == (24, 32) and est.split_ratio == 2.0
    img = np.zeros((96, 128, 3), np.uint8)
    cv2.circle(img, (60, 70), 2, (255, 255, 255), -1)  # inside the detected box [40, 44, 72, 92]
    people = est(img)
    assert len(people) == 1
    kp = people[0]
    # every point sits on the bright dot, mapped back from the 24x32 crop (1 crop px = 1.875 image px)
    np.testing.assert_allclose(kp.body[BODY["nose"], :2], (60, 70), atol=2.0)
    np.testing.assert_allclose(kp.hands[1, 20, :2], (60, 70), atol=2.0)
    np.testing.assert_allclose(kp.face[:, :2].mean(0), (60, 70), atol=2.0)
    assert (kp.body[:, 2] > 0).all()


def test_get_estimator_auto_and_missing_weights(tiny_dwpose, monkeypatch, tmp_path):
    monkeypatch.setenv("XDYNA_DWPOSE_DIR", str(tiny_dwpose))
    assert isinstance(get_estimator("auto"), dw.DWPoseEstimator)
    monkeypatch.setenv("XDYNA_DWPOSE_DIR", str(tmp_path))  # empty folder
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    from xdyna_core.preprocess.mediapipe_estimator import MediaPipeEstimator

    assert isinstance(get_estimator("auto"), MediaPipeEstimator)
    with pytest.raises(MissingWeightsError, match="yolox_l.onnx.*dw-ll_ucoco_384.onnx"):
        get_estimator("dwpose")
    with pytest.raises(MissingWeightsError, match="does not exist"):
        dw.find_dwpose_weights(os.path.join(str(tmp_path), "nope.onnx"), str(tiny_dwpose / dw.POSE_FILE))
    with pytest.raises(InputError):
        get_estimator("openpose")


@pytest.mark.hub
def test_dwpose_real_weights_on_real_photos(photos):
    """The real DWPose ONNX files (hub repo yzd-v/DWPose), when they are in the local cache."""
    try:
        det, pose = dw.find_dwpose_weights(download=os.environ.get("HF_HUB_OFFLINE") != "1")
    except MissingWeightsError as e:
        pytest.skip(f"DWPose weights not available offline: {e}")
    est = dw.DWPoseEstimator(det, pose)
    img = photos["astronaut"]
    kp = est(img)[0]
    x0, y0, x1, y1 = haar_face(img)
    nx, ny = xy(kp, "nose")
    assert x0 <= nx <= x1 and y0 <= ny <= y1
    assert xy(kp, "r_wrist")[1] > xy(kp, "r_shoulder")[1]
    assert kp.has_face() and kp.face[36:48, 1].mean() < kp.face[48:68, 1].mean()
