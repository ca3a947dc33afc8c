"""DWPose through onnxruntime: YOLOX-L person detector + RTMPose-L whole-body (133 COCO-WholeBody
points, distilled by DWPose: Yang et al., "Effective Whole-body Pose Estimation with Two-stages
Distillation", ICCV-W 2023). Our implementation of the published pre/post-processing:

1. detector: letterbox to 640×640 (resize by r = min(640/h, 640/w), top-left, pad value 114),
   raw 0..255 BGR pixels (mmdet YOLOX is trained on BGR); outputs [1, 8400, 85] decoded on the
   stride-8/16/32 grids (xy = (o + grid)·stride, wh = exp(o)·stride), score = objectness × class
   probability, NMS IoU 0.45 over boxes with score > 0.1, then person boxes with score > 0.3.
2. pose: for each box, centre and scale (w, h)·1.25, widened to the model's 288:384 aspect,
   affine crop to 288×384, RGB normalised with ImageNet mean/std; outputs SimCC vectors
   simcc_x [1, 133, 576] and simcc_y [1, 133, 768] (split ratio 2): location = argmax / 2,
   score = min(max_x, max_y) (≤ 0 → missing), mapped back: p / input_size · scale + centre − scale/2.
   With no detected box the whole image is used as one box (as DWPose does); people with fewer than
   3 confident body points are then dropped.
3. 133 → ours: COCO body 17 → OpenPose-18 with neck = mid-shoulders (score: the smaller shoulder
   score when both > 0.3, else 0), feet 17-22 dropped, face 23-90 (iBUG-68 order), left hand
   91-111, right hand 112-132. SimCC scores are clipped to 0..1.

Weights: ``yolox_l.onnx`` and ``dw-ll_ucoco_384.onnx`` from the hub repo ``yzd-v/DWPose``
(huggingface_hub; never downloaded unless asked: ``download=True``), or local paths / a folder in
``XDYNA_DWPOSE_DIR``.
"""

from __future__ import annotations

import os

import cv2
import numpy as np
from huggingface_hub import hf_hub_download, try_to_load_from_cache

from ..errors import MissingWeightsError
from .pose import BODY, MIN_CONFIDENCE, Keypoints, check_image

HUB_REPO = "yzd-v/DWPose"
DET_FILE = "yolox_l.onnx"
POSE_FILE = "dw-ll_ucoco_384.onnx"

# COCO-17 index per OpenPose-18 joint (neck computed from the shoulders).
COCO17_TO_BODY18 = {
    "nose": 0, "r_shoulder": 6, "r_elbow": 8, "r_wrist": 10, "l_shoulder": 5, "l_elbow": 7, "l_wrist": 9,
    "r_hip": 12, "r_knee": 14, "r_ankle": 16, "l_hip": 11, "l_knee": 13, "l_ankle": 15,
    "r_eye": 2, "l_eye": 1, "r_ear": 4, "l_ear": 3,
}
FACE_RANGE = slice(23, 91)
LEFT_HAND_RANGE = slice(91, 112)
RIGHT_HAND_RANGE = slice(112, 133)
POSE_MEAN = np.array([123.675, 116.28, 103.53], np.float32)
POSE_STD = np.array([58.395, 57.12, 57.375], np.float32)


# ---- weights ----------------------------------------------------------------------------------
def find_dwpose_weights(det_model: str | None = None, pose_model: str | None = None, download: bool = False,
                        repo_id: str = HUB_REPO) -> tuple[str, str]:
    """Paths of (detector, pose) ONNX files: explicit paths, else ``$XDYNA_DWPOSE_DIR``, else the
    Hugging Face cache, else (download=True) the hub. Raises MissingWeightsError naming each
    missing file and how to get it."""
    found, missing = {}, []
    local_dir = os.environ.get("XDYNA_DWPOSE_DIR")
    for key, given, fname in (("det", det_model, DET_FILE), ("pose", pose_model, POSE_FILE)):
        if given:
            if os.path.isfile(given):
                found[key] = given
            else:
                missing.append(f"{given} (given {key} model path does not exist)")
            continue
        if local_dir and os.path.isfile(os.path.join(local_dir, fname)):
            found[key] = os.path.join(local_dir, fname)
            continue
        path = None
        try:
            hit = try_to_load_from_cache(repo_id, fname)
            path = hit if isinstance(hit, str) and os.path.isfile(hit) else None
        except Exception:  # noqa: BLE001 - a broken cache is the same as no cache here
            path = None
        if path is None and download:
            try:
                path = hf_hub_download(repo_id, fname)
            except Exception as e:  # noqa: BLE001
                missing.append(f"{repo_id}/{fname} (download failed: {e})")
                continue
        if path is None:
            missing.append(f"{repo_id}/{fname}")
        else:
            found[key] = path
    if missing:
        raise MissingWeightsError(
            "DWPose weights not found: " + "; ".join(missing) + ". Get them with "
            f"`huggingface-cli download {repo_id} {DET_FILE} {POSE_FILE}`, or put both files in a folder "
            "named by XDYNA_DWPOSE_DIR, or use the embedded estimator (estimator='mediapipe').")
    return found["det"], found["pose"]


# ---- detector ---------------------------------------------------------------------------------
def letterbox(image: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, float]:
    """Resize keeping the aspect into ``size`` (h, w) at the top-left, pad 114. Returns float32
    [3, h, w] (channel order of ``image``) and the ratio r (model pixels per image pixel)."""
    h, w = size
    r = min(h / image.shape[0], w / image.shape[1])
    nh, nw = int(image.shape[0] * r), int(image.shape[1] * r)
    out = np.full((h, w, 3), 114, np.uint8)
    out[:nh, :nw] = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR)
    return np.ascontiguousarray(out.transpose(2, 0, 1), np.float32), r


def yolox_grids(size: tuple[int, int], strides=(8, 16, 32)) -> tuple[np.ndarray, np.ndarray]:
    """Anchor-free grid cell (x, y) and stride for every output row, in YOLOX's order."""
    grids, st = [], []
    for s in strides:
        gh, gw = size[0] // s, size[1] // s
        xv, yv = np.meshgrid(np.arange(gw), np.arange(gh))
        grids.append(np.stack([xv, yv], -1).reshape(-1, 2))
        st.append(np.full((gh * gw, 1), s))
    return np.concatenate(grids).astype(np.float32), np.concatenate(st).astype(np.float32)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_thr: float) -> list[int]:
    """Greedy NMS (boxes xyxy, the "+1" pixel-area convention of the reference implementation)."""
    x1, y1, x2, y2 = boxes.T
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = scores.argsort()[::-1]
    keep = []
    while order.size:
        i = order[0]
        keep.append(int(i))
        xx1, yy1 = np.maximum(x1[i], x1[order[1:]]), np.maximum(y1[i], y1[order[1:]])
        xx2, yy2 = np.minimum(x2[i], x2[order[1:]]), np.minimum(y2[i], y2[order[1:]])
        inter = np.maximum(0.0, xx2 - xx1 + 1) * np.maximum(0.0, yy2 - yy1 + 1)
        iou = inter / (areas[i] + areas[order[1:]] - inter)
        order = order[1:][iou <= iou_thr]
    return keep


def yolox_decode(pred: np.ndarray, size: tuple[int, int], ratio: float, nms_thr: float = 0.45,
                 pre_thr: float = 0.1, person_thr: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    """YOLOX raw output [N, 5 + C] → person boxes xyxy in image pixels [K, 4] and scores [K],
    highest score first."""
    grid, stride = yolox_grids(size)
    pred = np.asarray(pred, np.float32)
    xy = (pred[:, :2] + grid) * stride
    wh = np.exp(pred[:, 2:4]) * stride
    boxes = np.concatenate([xy - wh / 2, xy + wh / 2], 1) / ratio
    scores = pred[:, 4] * pred[:, 5]  # objectness × P(person); class 0 is person
    m = scores > pre_thr
    boxes, scores = boxes[m], scores[m]
    if len(scores) == 0:
        return np.zeros((0, 4), np.float32), np.zeros((0,), np.float32)
    keep = nms(boxes, scores, nms_thr)
    boxes, scores = boxes[keep], scores[keep]
    m = scores > person_thr
    return boxes[m], scores[m]


# ---- pose -------------------------------------------------------------------------------------
def box_center_scale(box, padding: float = 1.25, aspect: float = 288 / 384):
    """xyxy box → centre (x, y) and scale (w, h)·padding widened to aspect w/h."""
    x0, y0, x1, y1 = [float(v) for v in box]
    center = np.array([(x0 + x1) / 2, (y0 + y1) / 2], np.float32)
    w, h = (x1 - x0) * padding, (y1 - y0) * padding
    if w > h * aspect:
        h = w / aspect
    else:
        w = h * aspect
    return center, np.array([w, h], np.float32)


def crop_matrix(center, scale, out_size: tuple[int, int]) -> np.ndarray:
    """2×3 affine that maps the (center, scale) box onto an out_size (w, h) crop (no rotation)."""
    k = out_size[0] / scale[0]  # uniform: scale already has the crop's aspect
    return np.array([[k, 0, out_size[0] / 2 - k * center[0]], [0, k, out_size[1] / 2 - k * center[1]]], np.float32)


def simcc_decode(simcc_x: np.ndarray, simcc_y: np.ndarray, split_ratio: float = 2.0):
    """SimCC argmax decoding: locations [N, K, 2] in model-input pixels and scores [N, K]
    (score = min of the two maxima; locations of points with score <= 0 are set to -1)."""
    x_loc, y_loc = simcc_x.argmax(-1), simcc_y.argmax(-1)
    vals = np.minimum(simcc_x.max(-1), simcc_y.max(-1))
    locs = np.stack([x_loc, y_loc], -1).astype(np.float32)
    locs[vals <= 0] = -1
    return locs / split_ratio, vals


def wholebody_to_keypoints(points: np.ndarray, scores: np.ndarray) -> Keypoints:
    """133 COCO-WholeBody points [133, 2] + scores [133] (image pixels) → Keypoints."""
    s = np.clip(np.asarray(scores, np.float32), 0, 1)
    p = np.asarray(points, np.float32)
    full = np.concatenate([p, s[:, None]], 1)
    full[s <= 0] = 0
    kp = Keypoints()
    for name, i in COCO17_TO_BODY18.items():
        kp.body[BODY[name]] = full[i]
    ls, rs = full[5], full[6]
    if ls[2] > MIN_CONFIDENCE and rs[2] > MIN_CONFIDENCE:
        kp.body[BODY["neck"]] = ((ls[0] + rs[0]) / 2, (ls[1] + rs[1]) / 2, min(ls[2], rs[2]))
    kp.face = full[FACE_RANGE]
    kp.hands[0] = full[LEFT_HAND_RANGE]
    kp.hands[1] = full[RIGHT_HAND_RANGE]
    return kp


class DWPoseEstimator:
    """``PoseEstimator``: every person YOLOX finds, biggest box first.

    Args:
        det_model, pose_model: ONNX paths (default: found by ``find_dwpose_weights``).
        providers: onnxruntime execution providers (default: CUDA when available, else CPU).
        download: fetch missing weights from the hub.
    """

    def __init__(self, det_model: str | None = None, pose_model: str | None = None, providers=None,
                 download: bool = False):
        import onnxruntime as ort  # heavy: loaded only when DWPose runs

        det_path, pose_path = find_dwpose_weights(det_model, pose_model, download=download)
        if providers is None:
            avail = ort.get_available_providers()
            providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in avail]
        self.det = ort.InferenceSession(det_path, providers=providers)
        self.pose = ort.InferenceSession(pose_path, providers=providers)
        shp = self.det.get_inputs()[0].shape
        self.det_size = tuple(int(v) if isinstance(v, int) else 640 for v in shp[2:4])
        shp = self.pose.get_inputs()[0].shape
        h, w = (int(v) if isinstance(v, int) else d for v, d in zip(shp[2:4], (384, 288)))
        self.pose_size = (w, h)  # (w, h)
        outs = self.pose.get_outputs()
        self.split_ratio = float(outs[0].shape[-1]) / w if isinstance(outs[0].shape[-1], int) else 2.0

    def reset(self):
        pass  # per-frame detection: no tracking state

    def detect(self, image_rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        blob, r = letterbox(np.ascontiguousarray(image_rgb[:, :, ::-1]), self.det_size)
        out = self.det.run(None, {self.det.get_inputs()[0].name: blob[None]})[0]
        return yolox_decode(out[0], self.det_size, r)

    def estimate(self, image_rgb: np.ndarray, boxes: np.ndarray) -> list[Keypoints]:
        w, h = self.pose_size
        people = []
        for box in boxes:
            center, scale = box_center_scale(box, 1.25, w / h)
            crop = cv2.warpAffine(image_rgb, crop_matrix(center, scale, (w, h)), (w, h), flags=cv2.INTER_LINEAR)
            x = ((crop.astype(np.float32) - POSE_MEAN) / POSE_STD).transpose(2, 0, 1)[None]
            sx, sy = self.pose.run(None, {self.pose.get_inputs()[0].name: np.ascontiguousarray(x)})[:2]
            locs, vals = simcc_decode(sx, sy, self.split_ratio)
            pts = locs[0] / np.array([w, h], np.float32) * scale + center - scale / 2
            people.append(wholebody_to_keypoints(pts, vals[0]))
        return people

    def __call__(self, image_rgb: np.ndarray) -> list[Keypoints]:
        img = check_image(image_rgb)
        boxes, _ = self.detect(img)
        if len(boxes) == 0:
            boxes = np.array([[0, 0, img.shape[1], img.shape[0]]], np.float32)
        areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        boxes = boxes[np.argsort(-areas)]
        return [p for p in self.estimate(img, boxes) if p.has_body()]
