"""Skeleton images in the DWPose / OpenPose-ControlNet style the pose ControlNet was trained on.

Style (as DWPose's ControlNet annotator draws it; our own implementation):
- body: 17 limbs of the OpenPose-18 skeleton (``LIMBS``), each a filled ellipse along the bone
  (``cv2.ellipse2Poly``, semi-axes ``(int(length/2), 4)``, angle in whole degrees) in the limb's
  colour (``COLORS``); after all limbs the canvas is multiplied by 0.6 (limbs come out darker);
  then a filled circle of radius 4 in full colour on every joint.
- hands: 20 bones as 2-px lines coloured by an HSV hue ramp (bone i → hue i/20), then a pure blue
  (0, 0, 255) dot of radius 4 on every hand point.
- face (off by default): white dots of radius 3.
Sizes are fixed in pixels (the official data are drawn at 512×896 with stick width 4), so the
skeleton is NOT scaled with the canvas size: draw at the generation size.

Defaults reproduce the official X-Dyna training / example data (``--no_head_skeleton``): body with
the neck–nose limb and the nose dot, no eye/ear limbs and no eye/ear dots, both hands, no face
points, black background. Colours are RGB.
"""

from __future__ import annotations

import colorsys
import math
from typing import Sequence

import cv2
import numpy as np

from .pose import MIN_CONFIDENCE, Keypoints

# (a, b) joint indices into the OpenPose-18 body, in DWPose's limb order (its limbSeq minus 1).
LIMBS = (
    (1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11), (11, 12),
    (12, 13), (1, 0), (0, 14), (14, 16), (0, 15), (15, 17),
)
HEAD_LIMBS = (13, 14, 15, 16)  # nose–eye and eye–ear limbs: omitted unless draw_head
HEAD_POINTS = (14, 15, 16, 17)  # eyes and ears: no dots unless draw_head
COLORS = (
    (255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0), (0, 255, 0),
    (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255), (0, 0, 255), (85, 0, 255),
    (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85),
)
HAND_EDGES = (
    (0, 1), (1, 2), (2, 3), (3, 4), (0, 5), (5, 6), (6, 7), (7, 8), (0, 9), (9, 10), (10, 11), (11, 12),
    (0, 13), (13, 14), (14, 15), (15, 16), (0, 17), (17, 18), (18, 19), (19, 20),
)
HAND_EDGE_COLORS = tuple(tuple(c * 255.0 for c in colorsys.hsv_to_rgb(i / len(HAND_EDGES), 1.0, 1.0))
                         for i in range(len(HAND_EDGES)))
HAND_POINT_COLOR = (0, 0, 255)
FACE_POINT_COLOR = (255, 255, 255)
STICK_WIDTH = 4
LIMB_DIM = 0.6


def _ok(p, min_conf):
    return p[2] >= min_conf and p[2] > 0 and np.isfinite(p[:2]).all() and np.abs(p[:2]).max() < 1e6


def draw_bodypose(canvas: np.ndarray, people: Sequence[Keypoints], draw_head: bool = False,
                  min_conf: float = MIN_CONFIDENCE) -> np.ndarray:
    """Body limbs (ellipses, then ×0.6 on the whole canvas) and joint dots. Returns a new canvas."""
    canvas = canvas.copy()
    for i, (a, b) in enumerate(LIMBS):
        if i in HEAD_LIMBS and not draw_head:
            continue
        for kp in people:
            pa, pb = kp.body[a], kp.body[b]
            if not (_ok(pa, min_conf) and _ok(pb, min_conf)):
                continue
            mx, my = (pa[0] + pb[0]) / 2, (pa[1] + pb[1]) / 2
            length = math.hypot(pa[0] - pb[0], pa[1] - pb[1])
            angle = math.degrees(math.atan2(pa[1] - pb[1], pa[0] - pb[0]))
            poly = cv2.ellipse2Poly((int(mx), int(my)), (int(length / 2), STICK_WIDTH), int(angle), 0, 360, 1)
            cv2.fillConvexPoly(canvas, poly, COLORS[i])
    canvas = (canvas * LIMB_DIM).astype(np.uint8)
    for j in range(18):
        if j in HEAD_POINTS and not draw_head:
            continue
        for kp in people:
            p = kp.body[j]
            if _ok(p, min_conf):
                cv2.circle(canvas, (int(p[0]), int(p[1])), 4, COLORS[j], thickness=-1)
    return canvas


def draw_handpose(canvas: np.ndarray, people: Sequence[Keypoints], min_conf: float = MIN_CONFIDENCE) -> np.ndarray:
    """Hand bones (2-px HSV-ramp lines) then blue dots, both hands of every person, in place."""
    for kp in people:
        for hand in kp.hands:
            for ie, (a, b) in enumerate(HAND_EDGES):
                if _ok(hand[a], min_conf) and _ok(hand[b], min_conf):
                    cv2.line(canvas, (int(hand[a, 0]), int(hand[a, 1])), (int(hand[b, 0]), int(hand[b, 1])),
                             HAND_EDGE_COLORS[ie], thickness=2)
            for p in hand:
                if _ok(p, min_conf):
                    cv2.circle(canvas, (int(p[0]), int(p[1])), 4, HAND_POINT_COLOR, thickness=-1)
    return canvas


def draw_facepose(canvas: np.ndarray, people: Sequence[Keypoints], min_conf: float = MIN_CONFIDENCE) -> np.ndarray:
    """White dots of radius 3 on the 68 face landmarks, in place."""
    for kp in people:
        for p in kp.face:
            if _ok(p, min_conf):
                cv2.circle(canvas, (int(p[0]), int(p[1])), 3, FACE_POINT_COLOR, thickness=-1)
    return canvas


def draw_pose(kp: Keypoints | Sequence[Keypoints] | None, height: int, width: int, draw_body: bool = True,
              draw_hands: bool = True, draw_face: bool = False, draw_head: bool = False,
              min_conf: float = MIN_CONFIDENCE) -> np.ndarray:
    """Skeleton image uint8 [height, width, 3] (RGB, black background) of one person (or a list).

    Keypoints are in pixels of this canvas. ``None`` (no person) gives an all-black image, which is
    what the model was trained with for frames without a person. Defaults = the official data.
    """
    canvas = np.zeros((int(height), int(width), 3), np.uint8)
    if kp is None:
        return canvas
    people = [kp] if isinstance(kp, Keypoints) else [p for p in kp if p is not None]
    if draw_body:
        canvas = draw_bodypose(canvas, people, draw_head=draw_head, min_conf=min_conf)
    if draw_hands:
        canvas = draw_handpose(canvas, people, min_conf=min_conf)
    if draw_face:
        canvas = draw_facepose(canvas, people, min_conf=min_conf)
    return canvas


def overlay(image_rgb: np.ndarray, skeleton: np.ndarray, alpha: float = 0.7) -> np.ndarray:
    """Skeleton pixels blended over a photo (for previews): non-black skeleton pixels replace the
    photo with weight ``alpha``."""
    img = np.asarray(image_rgb, np.float32)
    sk = np.asarray(skeleton, np.float32)
    mask = (skeleton.max(axis=2, keepdims=True) > 0).astype(np.float32) * alpha
    return (img * (1 - mask) + sk * mask).round().clip(0, 255).astype(np.uint8)
