"""S-Face control images: the global face patch and the local eyes+mouth patch (X-Dyna §3.3).

The paper trains the S-Face ControlNet on face patches "reinserted at the original position, with
other pixels masked as blank"; at inference the patches are cropped straight from the driving
frame. We reproduce the official inference construction (``extract_local_feature_from_single_img``;
docs/official-behaviour.md §37-40) on 68 iBUG landmarks:

- box: landmark extent (x_min, y_min, x_max, y_max), centre (cx, cy), L = max(width, height);
  ``[int(cx - 1.35L), int(cy - 1.25L), int(cx + 1.35L), int(cy + 1.45L)]`` (int truncates toward
  zero), then clamped to the image: x0, y0 >= 0, x1 <= W, y1 <= H.
- global patch: the frame inside the box, black elsewhere.
- local patch: three rectangles ``[c - half, c + half)`` around the rounded means of points 43-47
  ("left eye"), 37-41 ("right eye") and 49-67 (mouth) — 0-based, each range skipping the first
  point of its group exactly as the official code does — with half sizes
  ``(int(box_w / 8), int(box_h / 8))``, copied from the frame onto black.
- no face: both patches black, ``found`` False.

One deliberate difference: where a rectangle starts left of / above the image, the official
numpy slice with a negative start wraps around (or comes out empty); we clamp the start at 0.
Everything else (factors, truncation, rounding, the skipped points) is kept as is.

Channel order of the 6-channel image: [local RGB, global RGB] (the official face input order).

Landmark sources (``get_face_landmarker``): the embedded mediapipe Face Mesh mapped to 68 points
(offline, default); ``face_alignment`` (FAN, what the official code used) or ``insightface``
(buffalo_l 1k3d68) when the package is installed and its weights are already on disk.
"""

from __future__ import annotations

import os
from typing import Callable

import numpy as np
import torch

from ..errors import InputError, MissingWeightsError
from .mediapipe_estimator import MediaPipeFace
from .pose import MIN_CONFIDENCE

BOX_FACTORS = (1.35, 1.25, 1.35, 1.45)  # left, top, right, bottom, × max(landmark width, height)
LEFT_EYE = slice(43, 48)   # official lmks[43:48]
RIGHT_EYE = slice(37, 42)  # official lmks[37:42]
MOUTH = slice(49, 68)      # official lmks[49:68]


def _xy(face68) -> np.ndarray | None:
    if face68 is None:
        return None
    a = np.asarray(face68, np.float64)
    if a.ndim != 2 or a.shape[0] != 68 or a.shape[1] not in (2, 3):
        raise InputError(f"face landmarks must be [68, 2] or [68, 3]; got {a.shape}.")
    if a.shape[1] == 3 and (a[:, 2] < MIN_CONFIDENCE).sum() > 8:
        return None  # too few confident landmarks: treated as no face
    xy = a[:, :2]
    if not np.isfinite(xy).all():
        return None
    return xy


def face_box(face68, height: int, width: int) -> tuple[int, int, int, int] | None:
    """Official face box (x0, y0, x1, y1), clamped to the image; None when there is no face or the
    clamped box is empty."""
    xy = _xy(face68)
    if xy is None:
        return None
    x_min, y_min = xy.min(0)
    x_max, y_max = xy.max(0)
    cx, cy = (x_min + x_max) * 0.5, (y_min + y_max) * 0.5
    L = max(x_max - x_min, y_max - y_min)
    fl, ft, fr, fb = BOX_FACTORS
    x0, y0, x1, y1 = int(cx - fl * L), int(cy - ft * L), int(cx + fr * L), int(cy + fb * L)
    x0, y0, x1, y1 = max(0, x0), max(0, y0), min(int(width), x1), min(int(height), y1)
    if x1 <= x0 or y1 <= y0:
        return None
    return x0, y0, x1, y1


def local_centres(face68) -> np.ndarray:
    """[3, 2] int: rounded means of the official "left eye", "right eye" and mouth point ranges."""
    xy = np.asarray(face68, np.float64)[:, :2]
    return np.stack([np.round(xy[s].mean(0)) for s in (LEFT_EYE, RIGHT_EYE, MOUTH)]).astype(np.int64)


def face_patches(image_rgb: np.ndarray, face68, out: np.ndarray | None = None) -> tuple[np.ndarray, bool]:
    """(uint8 [H, W, 6] = [local RGB, global RGB], found) for one frame and its 68 landmarks (or None).
    `out`: a black uint8 [H, W, 6] array to draw into (saves a frame-sized copy per frame)."""
    img = np.asarray(image_rgb)
    if img.ndim != 3 or img.shape[2] != 3:
        raise InputError(f"face_patches needs an RGB image [H, W, 3]; got {img.shape}.")
    H, W = img.shape[:2]
    out = np.zeros((H, W, 6), np.uint8) if out is None else out
    box = face_box(face68, H, W)
    if box is None:
        return out, False
    x0, y0, x1, y1 = box
    out[y0:y1, x0:x1, 3:] = img[y0:y1, x0:x1]
    hx, hy = int((x1 - x0) / 8), int((y1 - y0) / 8)
    for cx, cy in local_centres(face68):
        # Official: img[cy-hy:cy+hy, cx-hx:cx+hx]; a negative start would wrap -> clamp at 0.
        ys, ye = max(0, cy - hy), max(0, cy + hy)
        xs, xe = max(0, cx - hx), max(0, cx + hx)
        out[ys:ye, xs:xe, :3] = img[ys:ye, xs:xe]
    return out, True


def blank_patches(height: int, width: int) -> np.ndarray:
    return np.zeros((int(height), int(width), 6), np.uint8)


# ---- landmark sources --------------------------------------------------------------------------
FaceLandmarker = Callable[[np.ndarray], "np.ndarray | None"]  # image RGB -> [68, 3] or None


class MediaPipeFaceLandmarker:
    """Embedded, offline: mediapipe Face Mesh (468 points, models shipped in the wheel) mapped to
    iBUG-68 (see mediapipe_estimator.MESH_TO_68). The biggest face is used."""

    def __init__(self, static_image_mode: bool = True, min_detection_confidence: float = 0.5):
        self._mesh = MediaPipeFace(static_image_mode=static_image_mode,
                                   min_detection_confidence=min_detection_confidence)

    def __call__(self, image_rgb: np.ndarray):
        return self._mesh(image_rgb)

    def reset(self):
        self._mesh.reset()


class FaceAlignmentLandmarker:
    """FAN 2D-68 from the ``face_alignment`` package (the landmarker of the official code).
    Used only when the package is installed and its weights are already in the torch hub cache
    (this project never downloads them implicitly)."""

    def __init__(self, device: str = "cpu"):
        try:
            import face_alignment  # noqa: F401 - optional: only installed with the face extra
        except ImportError as e:
            raise MissingWeightsError("The optional package 'face-alignment' is not installed "
                                      "(pip install face-alignment); using the embedded landmarker instead.") from e

        ckpt_dir = os.path.join(torch.hub.get_dir(), "checkpoints")
        have = os.path.isdir(ckpt_dir) and any(n.startswith("2DFAN4") for n in os.listdir(ckpt_dir)) \
            and any(n.startswith("s3fd") for n in os.listdir(ckpt_dir))
        if not have:
            raise MissingWeightsError(f"face-alignment weights (2DFAN4*.zip and s3fd*.pth) are not in {ckpt_dir}; "
                                      "run face_alignment once with network access to fetch them.")
        self._fa = face_alignment.FaceAlignment(face_alignment.LandmarksType.TWO_D, flip_input=True, device=device)

    def __call__(self, image_rgb):
        res = self._fa.get_landmarks_from_image(np.asarray(image_rgb))
        if not res:
            return None
        lm = np.asarray(res[0], np.float32)[:, :2]  # first face, as the official code
        return np.concatenate([lm, np.ones((68, 1), np.float32)], 1)


class InsightFaceLandmarker:
    """insightface buffalo_l (detector + 1k3d68 landmarks) when installed and its model folder
    exists in ~/.insightface/models (or ``root``)."""

    def __init__(self, root: str | None = None, name: str = "buffalo_l"):
        try:
            from insightface.app import FaceAnalysis  # optional: only installed with the face extra
        except ImportError as e:
            raise MissingWeightsError("The optional package 'insightface' is not installed; "
                                      "using the embedded landmarker instead.") from e
        root = root or os.path.expanduser("~/.insightface")
        model_dir = os.path.join(root, "models", name)
        if not os.path.isdir(model_dir) or not any(f.startswith("1k3d68") for f in os.listdir(model_dir)):
            raise MissingWeightsError(f"insightface model folder {model_dir} with 1k3d68.onnx is missing.")
        self._app = FaceAnalysis(name=name, root=root, allowed_modules=["detection", "landmark_3d_68"],
                                 providers=["CPUExecutionProvider"])
        self._app.prepare(ctx_id=-1, det_size=(640, 640))

    def __call__(self, image_rgb):
        faces = self._app.get(np.ascontiguousarray(np.asarray(image_rgb)[:, :, ::-1]))
        if not faces:
            return None
        f = max(faces, key=lambda f: (f.bbox[2] - f.bbox[0]) * (f.bbox[3] - f.bbox[1]))
        lm = np.asarray(f.landmark_3d_68, np.float32)[:, :2]
        return np.concatenate([lm, np.full((68, 1), float(f.det_score), np.float32)], 1)


def get_face_landmarker(name: str = "auto", **kw) -> FaceLandmarker:
    """"auto" = face_alignment, then insightface, when installed with weights on disk, else the
    embedded mediapipe Face Mesh. Or name one: "mediapipe" | "face_alignment" | "insightface"."""
    name = (name or "auto").lower()
    if name == "auto":
        for cls in (FaceAlignmentLandmarker, InsightFaceLandmarker):
            try:
                return cls()
            except (MissingWeightsError, ImportError, OSError):
                continue
        return MediaPipeFaceLandmarker(**kw)
    table = {"mediapipe": MediaPipeFaceLandmarker, "face_alignment": FaceAlignmentLandmarker,
             "insightface": InsightFaceLandmarker}
    if name not in table:
        raise InputError(f"Unknown face landmarker {name!r}; use one of auto, {', '.join(table)}.")
    return table[name](**kw)
