"""Whole-body keypoints in one normalised format, pose estimators, tracking and smoothing.

Format (`Keypoints`), everything in PIXELS of the analysed image, confidence in 0..1, 0 = missing:

- ``body``  [18, 3]: OpenPose-18 order (``BODY_NAMES``), the order DWPose draws in. The neck is
  not predicted by any model: it is the mid-point of the shoulders (as DWPose does).
- ``hands`` [2, 21, 3]: the person's LEFT hand then RIGHT hand, standard 21-point hand order
  (wrist, thumb 1-4, index 5-8, middle 9-12, ring 13-16, pinky 17-20).
- ``face``  [68, 3]: iBUG-68 order, so the official S-Face patch indices (face.py) apply.

Confidence thresholds: a point is used (drawn, retargeted, counted in a bbox) when its confidence
is >= ``MIN_CONFIDENCE`` (0.3), the threshold DWPose applies before drawing. DWPose gives SimCC
scores (clipped to 0..1); mediapipe gives BlazePose visibility for the body and no per-point score
for hands and face mesh, whose points get 1 when the hand / face was found. A person counts as
found with >= 3 confident body points (``has_body``), a face with >= 60 confident landmarks.

Estimators (``get_estimator``):
- ``"mediapipe"`` (embedded, offline): mediapipe 0.10.21 legacy Holistic, which ships its models
  in the wheel. Single person per frame (see mediapipe_estimator.py).
- ``"dwpose"``: YOLOX-L person detector + RTMPose-L whole-body (DWPose distillation) through
  onnxruntime; several people (see dwpose.py). Needs the two ONNX files.
- ``"auto"``: DWPose when its weights are found locally or in the Hugging Face cache, else mediapipe.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Protocol, Sequence, runtime_checkable

import numpy as np

from ..errors import InputError, MissingWeightsError

BODY_NAMES = (
    "nose", "neck", "r_shoulder", "r_elbow", "r_wrist", "l_shoulder", "l_elbow", "l_wrist",
    "r_hip", "r_knee", "r_ankle", "l_hip", "l_knee", "l_ankle", "r_eye", "l_eye", "r_ear", "l_ear",
)
BODY = {name: i for i, name in enumerate(BODY_NAMES)}
NUM_BODY, NUM_HAND, NUM_FACE = 18, 21, 68
NUM_POINTS = NUM_BODY + 2 * NUM_HAND + NUM_FACE  # 128 rows in the flat array
LEFT_HAND, RIGHT_HAND = 0, 1
MIN_CONFIDENCE = 0.3


def _points(n: int, value=None) -> np.ndarray:
    if value is None:
        return np.zeros((n, 3), np.float32)
    return np.asarray(value, np.float32).reshape(n, 3).copy()


@dataclass
class Keypoints:
    """One person's whole-body keypoints (see module docstring for the format)."""

    body: np.ndarray = field(default_factory=lambda: _points(NUM_BODY))
    hands: np.ndarray = field(default_factory=lambda: np.zeros((2, NUM_HAND, 3), np.float32))
    face: np.ndarray = field(default_factory=lambda: _points(NUM_FACE))

    def __post_init__(self):
        self.body = _points(NUM_BODY, self.body)
        self.hands = np.asarray(self.hands, np.float32).reshape(2, NUM_HAND, 3).copy()
        self.face = _points(NUM_FACE, self.face)

    # ---- flat form for saving ----------------------------------------------------------------
    def to_array(self) -> np.ndarray:
        """[128, 3] float32: body 18, left hand 21, right hand 21, face 68."""
        return np.concatenate([self.body, self.hands.reshape(-1, 3), self.face], 0)

    @classmethod
    def from_array(cls, a: np.ndarray) -> "Keypoints":
        a = np.asarray(a, np.float32)
        if a.shape != (NUM_POINTS, 3):
            raise InputError(f"Keypoints.from_array expects shape ({NUM_POINTS}, 3), got {a.shape}.")
        b, h = NUM_BODY, NUM_BODY + 2 * NUM_HAND
        return cls(a[:b], a[b:h].reshape(2, NUM_HAND, 3), a[h:])

    def copy(self) -> "Keypoints":
        return Keypoints(self.body, self.hands, self.face)

    # ---- geometry ----------------------------------------------------------------------------
    def transformed(self, scale: float, dx: float, dy: float) -> "Keypoints":
        """x' = scale*x + dx, y' = scale*y + dy for every present point (missing ones stay 0)."""
        arr = self.to_array()
        present = arr[:, 2] > 0
        arr[present, :2] = arr[present, :2] * np.float32(scale) + np.array([dx, dy], np.float32)
        return Keypoints.from_array(arr)

    def points(self, min_conf: float = MIN_CONFIDENCE, parts: str = "body,hands,face") -> np.ndarray:
        """[N, 2] xy of the points with confidence >= min_conf in the named parts."""
        chunks = []
        if "body" in parts:
            chunks.append(self.body)
        if "hands" in parts:
            chunks.append(self.hands.reshape(-1, 3))
        if "face" in parts:
            chunks.append(self.face)
        a = np.concatenate(chunks, 0)
        keep = (a[:, 2] >= min_conf) & (a[:, 2] > 0)
        return a[keep, :2]

    def bbox(self, min_conf: float = MIN_CONFIDENCE, parts: str = "body,hands,face"):
        """(x0, y0, x1, y1) around the confident points, or None when there are none."""
        p = self.points(min_conf, parts)
        if len(p) == 0:
            return None
        x0, y0 = p.min(0)
        x1, y1 = p.max(0)
        return float(x0), float(y0), float(x1), float(y1)

    def area(self, min_conf: float = MIN_CONFIDENCE) -> float:
        b = self.bbox(min_conf)
        return 0.0 if b is None else (b[2] - b[0]) * (b[3] - b[1])

    def has_body(self, min_conf: float = MIN_CONFIDENCE, min_points: int = 3) -> bool:
        return int((self.body[:, 2] >= min_conf).sum()) >= min_points

    def has_face(self, min_conf: float = MIN_CONFIDENCE) -> bool:
        return bool((self.face[:, 2] >= min_conf).sum() >= 60)


@runtime_checkable
class PoseEstimator(Protocol):
    """``estimator(image_rgb uint8 [H, W, 3]) -> list[Keypoints]``: every person found, biggest
    first, coordinates in pixels of that image. ``reset()`` (optional) forgets video tracking state
    before a new clip."""

    def __call__(self, image_rgb: np.ndarray) -> list[Keypoints]: ...


def check_image(image_rgb: np.ndarray) -> np.ndarray:
    """Validate an RGB uint8 [H, W, 3] frame (clear message instead of a deep traceback)."""
    a = np.asarray(image_rgb)
    if a.ndim != 3 or a.shape[2] != 3 or a.dtype != np.uint8:
        raise InputError(f"Pose estimation needs an RGB uint8 image [H, W, 3]; got {a.dtype} {a.shape}.")
    if min(a.shape[:2]) < 16:
        raise InputError(f"Image {a.shape[1]}x{a.shape[0]} is too small to find a person in (min 16 px).")
    return np.ascontiguousarray(a)


def get_estimator(name: str = "auto", **kw) -> PoseEstimator:
    """Build a pose estimator: "auto" | "mediapipe" | "dwpose".

    "auto" = DWPose when both ONNX files are present (``det_model``/``pose_model`` paths, the
    ``XDYNA_DWPOSE_DIR`` folder, or the Hugging Face cache of ``yzd-v/DWPose``), else the embedded
    mediapipe estimator. Keyword arguments go to the chosen estimator.
    """
    name = (name or "auto").lower()
    if name == "auto":
        from .dwpose import find_dwpose_weights  # not at the top: dwpose imports pose (cycle)

        dw_kw = {k: v for k, v in kw.items() if k in ("det_model", "pose_model", "providers")}
        try:
            find_dwpose_weights(dw_kw.get("det_model"), dw_kw.get("pose_model"), download=False)
        except MissingWeightsError:
            name = "mediapipe"
        else:
            name = "dwpose"
        kw = dw_kw if name == "dwpose" else {k: v for k, v in kw.items() if k not in dw_kw}
    if name == "mediapipe":
        from .mediapipe_estimator import MediaPipeEstimator  # not at the top: mediapipe_estimator imports pose (cycle)

        return MediaPipeEstimator(**kw)
    if name == "dwpose":
        from .dwpose import DWPoseEstimator  # not at the top: dwpose imports pose (cycle)

        return DWPoseEstimator(**kw)
    raise InputError(f"Unknown pose estimator {name!r}; use 'auto', 'mediapipe' or 'dwpose'.")


# ---- multi-person: the main person across frames -------------------------------------------
def box_iou(a, b) -> float:
    """Intersection over union of two boxes (x0, y0, x1, y1)."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def track_main_person(per_frame: Sequence[Sequence[Keypoints]], min_conf: float = MIN_CONFIDENCE,
                      max_jump: float = 1.0, reacquire_after: int = 8) -> list[Keypoints | None]:
    """Pick one person per frame consistently.

    The biggest person (body bbox area) in the first frame where anyone appears; then in each later
    frame the candidate that best matches the last seen body box: IoU minus half the centre
    distance in units of the box diagonal. A candidate with no overlap whose centre is more than
    ``max_jump`` diagonals away is someone else: the frame gets None rather than a jump to a
    bystander. After ``reacquire_after`` frames without the main person, the biggest one is taken
    again (the person may have come back elsewhere)."""
    out: list[Keypoints | None] = []
    last, missing = None, 0
    for people in per_frame:
        cands = [(p, p.bbox(min_conf, "body")) for p in (people or [])]
        cands = [(p, b) for p, b in cands if b is not None]
        pick = None
        if cands and (last is None or missing >= reacquire_after):
            pick = max(cands, key=lambda c: (c[1][2] - c[1][0]) * (c[1][3] - c[1][1]))
        elif cands:
            lc = ((last[0] + last[2]) / 2, (last[1] + last[3]) / 2)
            diag = math.hypot(last[2] - last[0], last[3] - last[1]) + 1e-6

            def match(c):
                b = c[1]
                d = math.hypot((b[0] + b[2]) / 2 - lc[0], (b[1] + b[3]) / 2 - lc[1]) / diag
                return box_iou(last, b), d

            best = max(cands, key=lambda c: match(c)[0] - 0.5 * match(c)[1])
            iou, d = match(best)
            pick = best if (iou > 0 or d <= max_jump) else None
        if pick is None:
            out.append(None)
            missing += 1
            continue
        out.append(pick[0])
        last, missing = pick[1], 0
    return out


# ---- temporal smoothing ----------------------------------------------------------------------
def _alpha(cutoff, dt):
    tau = 1.0 / (2 * np.pi * cutoff)
    return 1.0 / (1.0 + tau / dt)


def one_euro_filter(x: np.ndarray, valid: np.ndarray, fps: float, min_cutoff: float = 1.0, beta: float = 0.01,
                    d_cutoff: float = 1.0) -> np.ndarray:
    """One-Euro filter (Casiez, Roussel, Vogel, "1€ Filter: A Simple Speed-based Low-pass Filter
    for Noisy Input in Interactive Systems", CHI 2012), applied independently to each column.

    x: [T, D] signal, valid: [T, D] bool. Per step: dx = (x_t - x̂_{t-1})·fps, smoothed with a
    fixed cutoff ``d_cutoff``; then the cutoff fc = min_cutoff + beta·|dx̂| adapts (slow motion →
    strong smoothing, fast motion → little lag) and x̂_t = α(fc)·x_t + (1−α(fc))·x̂_{t−1} with
    α(fc) = 1 / (1 + τ/T_e), τ = 1/(2π·fc). Invalid samples are left as they are and, after a gap,
    the filter restarts from the next valid sample (no smoothing across a missing stretch).
    """
    x = np.asarray(x, np.float64)
    valid = np.asarray(valid, bool)
    out = x.copy()
    dt = 1.0 / float(fps)
    a_d = _alpha(d_cutoff, dt)
    prev = np.zeros(x.shape[1])
    dprev = np.zeros(x.shape[1])
    alive = np.zeros(x.shape[1], bool)
    for t in range(len(x)):
        v = valid[t]
        start = v & ~alive
        prev[start], dprev[start] = x[t, start], 0.0
        run = v & alive
        dx = (x[t, run] - prev[run]) / dt
        dhat = a_d * dx + (1 - a_d) * dprev[run]
        a = _alpha(min_cutoff + beta * np.abs(dhat), dt)
        xhat = a * x[t, run] + (1 - a) * prev[run]
        out[t, run] = xhat
        prev[run], dprev[run] = xhat, dhat
        alive = v
    return out


def smooth_keypoints(seq: Sequence[Keypoints | None], fps: float, min_cutoff: float = 1.0, beta: float = 0.01,
                     min_conf: float = MIN_CONFIDENCE) -> list[Keypoints | None]:
    """One-Euro smoothing of every keypoint coordinate along time (``one_euro_filter``).

    Coordinates are in pixels, so ``beta`` is in 1/(pixel/second). Defaults (1 Hz, 0.01): on a
    30 fps track with 3 px noise the jitter variance drops to ~0.24x while a 100 px step is
    followed within ~2 frames. A point counts as observed when its
    confidence is >= min_conf; unobserved points and None frames are passed through untouched and
    break the filter's memory for that point. Confidences are not smoothed.
    """
    seq = list(seq)
    present = [k for k in seq if k is not None]
    if not present or fps <= 0:
        return seq
    arrs = np.stack([k.to_array() if k is not None else np.zeros((NUM_POINTS, 3), np.float32) for k in seq])
    valid = arrs[:, :, 2] >= max(min_conf, 1e-6)
    xy = arrs[:, :, :2].reshape(len(seq), -1)
    v2 = np.repeat(valid, 2, axis=1)
    sm = one_euro_filter(xy, v2, fps, min_cutoff, beta).reshape(len(seq), NUM_POINTS, 2)
    arrs[:, :, :2] = sm.astype(np.float32)
    return [Keypoints.from_array(arrs[t]) if seq[t] is not None else None for t in range(len(seq))]
