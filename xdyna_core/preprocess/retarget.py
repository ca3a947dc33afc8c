"""Retargeting: fit the driving person's skeleton to the reference photo's person.

The official X-Dyna code has none (pose videos are used as they are). Modes:

- ``"none"``: keypoints unchanged.
- ``"global"``: one uniform scale + translation for the whole clip, computed on the ANCHOR frame
  (the first frame where the driving person is found). Scale = reference body span / driving body
  span, where the span is the neck → mid-ankles distance, or, when either person lacks ankles,
  neck → mid-knees, neck → mid-hips, shoulder width, neck → nose (first level both people have).
  Translation puts the driving anchor point on the reference's: x of the mid-hips (the neck when
  either lacks hips), y of the lowest level both have (ankles, knees, hips, neck), so the feet stand
  where the reference's stand.
- ``"limbs"``: every bone of the kinematic tree rooted at the neck gets the reference's length:
  child' = parent' + r_bone·(child − parent), r_bone = reference length / driving length (driving
  length = 90th percentile over the clip, robust to foreshortening; bones the reference lacks use
  the global scale). The neck path itself is scaled globally, then the result is re-anchored like
  ``global``. Hands follow their wrist and the face follows the nose (rigidly, scaled by the global
  scale).

All coordinates are pixels of the common (framed) canvas. Only points with confidence >=
MIN_CONFIDENCE are used for measurements; missing points stay missing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from ..errors import InputError
from .pose import BODY, MIN_CONFIDENCE, Keypoints

MODES = ("none", "global", "limbs")

# Kinematic tree from the neck (parent, child), breadth first.
BONES = (
    ("neck", "r_shoulder"), ("neck", "l_shoulder"), ("neck", "r_hip"), ("neck", "l_hip"), ("neck", "nose"),
    ("r_shoulder", "r_elbow"), ("l_shoulder", "l_elbow"), ("r_hip", "r_knee"), ("l_hip", "l_knee"),
    ("nose", "r_eye"), ("nose", "l_eye"),
    ("r_elbow", "r_wrist"), ("l_elbow", "l_wrist"), ("r_knee", "r_ankle"), ("l_knee", "l_ankle"),
    ("r_eye", "r_ear"), ("l_eye", "l_ear"),
)
PARENT = {BODY[c]: BODY[p] for p, c in BONES}


@dataclass
class RetargetInfo:
    """What was applied (saved with the Motion so a preview can show it)."""

    mode: str
    scale: float = 1.0
    offset: tuple[float, float] = (0.0, 0.0)
    anchor_frame: int | None = None
    level: str | None = None  # which body span was matched
    bone_ratios: dict = field(default_factory=dict)


def _ok(kp: Keypoints, *names, min_conf=MIN_CONFIDENCE) -> bool:
    return all(kp.body[BODY[n], 2] >= min_conf for n in names)


def _mid(kp: Keypoints, a: str, b: str, min_conf=MIN_CONFIDENCE):
    """Mean of the confident ones of two joints, or None."""
    pts = [kp.body[BODY[n], :2] for n in (a, b) if kp.body[BODY[n], 2] >= min_conf]
    return np.mean(pts, 0) if pts else None


def _neck(kp):
    return kp.body[BODY["neck"], :2] if _ok(kp, "neck") else _mid(kp, "r_shoulder", "l_shoulder")


def _levels(kp: Keypoints) -> dict:
    """Body spans and anchor heights available for this person."""
    out = {}
    neck = _neck(kp)
    if neck is None:
        return out
    for level, (a, b) in (("ankles", ("r_ankle", "l_ankle")), ("knees", ("r_knee", "l_knee")),
                          ("hips", ("r_hip", "l_hip"))):
        m = _mid(kp, a, b)
        if m is not None:
            out[level] = (float(np.linalg.norm(m - neck)), float(m[1]))
    if _ok(kp, "r_shoulder", "l_shoulder"):
        d = kp.body[BODY["r_shoulder"], :2] - kp.body[BODY["l_shoulder"], :2]
        out["shoulders"] = (float(np.linalg.norm(d)), float(neck[1]))
    if _ok(kp, "nose"):
        out["head"] = (float(np.linalg.norm(kp.body[BODY["nose"], :2] - neck)), float(neck[1]))
    return out


LEVEL_ORDER = ("ankles", "knees", "hips", "shoulders", "head")


def _anchor_xs(a: Keypoints, b: Keypoints) -> tuple[float, float]:
    """Anchor x of two people measured the same way: mid-hips when both have hips, else the neck."""
    ha, hb = _mid(a, "r_hip", "l_hip"), _mid(b, "r_hip", "l_hip")
    if ha is None or hb is None:
        ha, hb = _neck(a), _neck(b)
    return float(ha[0]), float(hb[0])


def global_transform(driving: Keypoints, reference: Keypoints) -> tuple[float, float, float, str]:
    """(scale, dx, dy, level) mapping the driving person onto the reference person (see module doc)."""
    ld, lr = _levels(driving), _levels(reference)
    level = next((lv for lv in LEVEL_ORDER if lv in ld and lv in lr and ld[lv][0] > 1e-3), None)
    if level is None:
        raise InputError("Cannot measure the body in the driving frame and the reference photo at a common "
                         "level (neck plus hips, knees, ankles, both shoulders or nose); use retarget='none'.")
    s = lr[level][0] / ld[level][0]
    # anchor y: the lowest level both have (feet on the reference's feet); "head" = the neck height
    y_level = next(lv for lv in ("ankles", "knees", "hips", "head", "shoulders") if lv in ld and lv in lr)
    ax_ref, ax_drv = _anchor_xs(reference, driving)
    dx = ax_ref - s * ax_drv
    dy = lr[y_level][1] - s * ld[y_level][1]
    return float(s), float(dx), float(dy), level


def _bone_len(kp: Keypoints, p: int, c: int):
    if kp.body[p, 2] >= MIN_CONFIDENCE and kp.body[c, 2] >= MIN_CONFIDENCE:
        return float(np.linalg.norm(kp.body[c, :2] - kp.body[p, :2]))
    return None


def _with_neck(kp: Keypoints) -> Keypoints:
    """Copy with a neck point filled from the shoulders when missing (the tree root)."""
    kp = kp.copy()
    if kp.body[BODY["neck"], 2] < MIN_CONFIDENCE and _ok(kp, "r_shoulder", "l_shoulder"):
        n = _mid(kp, "r_shoulder", "l_shoulder")
        kp.body[BODY["neck"]] = (n[0], n[1], min(kp.body[BODY["r_shoulder"], 2], kp.body[BODY["l_shoulder"], 2]))
    return kp


def bone_ratios(driving: Sequence[Keypoints | None], reference: Keypoints, fallback: float) -> dict:
    """reference length / driving length per bone (driving: 90th percentile over the clip)."""
    ref = _with_neck(reference)
    ratios = {}
    for p, c in BONES:
        pi, ci = BODY[p], BODY[c]
        lens = [L for k in driving if k is not None for L in [_bone_len(_with_neck(k), pi, ci)] if L]
        r_len = _bone_len(ref, pi, ci)
        if lens and r_len and np.percentile(lens, 90) > 1e-3:
            ratios[(p, c)] = r_len / float(np.percentile(lens, 90))
        else:
            ratios[(p, c)] = fallback
    return ratios


def _limbs_frame(kp: Keypoints, ratios: dict, s: float) -> Keypoints:
    src = _with_neck(kp)
    out = src.copy()
    neck = BODY["neck"]
    if src.body[neck, 2] < MIN_CONFIDENCE:
        return kp.transformed(s, 0.0, 0.0)  # no root: plain global scaling
    new = {neck: src.body[neck, :2] * s}
    for p, c in BONES:
        pi, ci = BODY[p], BODY[c]
        if src.body[ci, 2] < MIN_CONFIDENCE:
            continue
        if pi in new:
            new[ci] = new[pi] + ratios[(p, c)] * (src.body[ci, :2] - src.body[pi, :2])
        else:  # parent missing: hang it from the nearest placed ancestor at the global scale
            a = PARENT.get(pi)
            while a is not None and a not in new:
                a = PARENT.get(a)
            a = neck if a is None else a
            new[ci] = new[a] + s * (src.body[ci, :2] - src.body[a, :2])
    for j, xy in new.items():
        out.body[j, :2] = xy
    if kp.body[neck, 2] < MIN_CONFIDENCE:  # the filled-in neck was only a root for the tree
        out.body[neck] = kp.body[neck]
    # hands follow their wrist, the face follows the nose (rigid, global scale)
    for side, wrist in ((0, BODY["l_wrist"]), (1, BODY["r_wrist"])):
        _attach(out.hands[side], src.hands[side], src.body[wrist], out.body[wrist], s, new.get(neck), src.body[neck])
    _attach(out.face, src.face, src.body[BODY["nose"]], out.body[BODY["nose"]], s, new.get(neck), src.body[neck])
    return out


def _attach(dst, src, parent_src, parent_dst, s, neck_new, neck_src):
    present = src[:, 2] > 0
    if not present.any():
        return
    if parent_src[2] >= MIN_CONFIDENCE:
        dst[present, :2] = parent_dst[:2] + s * (src[present, :2] - parent_src[:2])
    else:
        dst[present, :2] = neck_new + s * (src[present, :2] - neck_src[:2])


def retarget_sequence(driving: Sequence[Keypoints | None], reference: Keypoints | None,
                      mode: str = "global") -> tuple[list[Keypoints | None], RetargetInfo]:
    """Retarget a clip of driving keypoints (None = no person in that frame) onto the reference."""
    mode = (mode or "none").lower()
    if mode not in MODES:
        raise InputError(f"Unknown retarget mode {mode!r}; use one of {', '.join(MODES)}.")
    driving = list(driving)
    if mode == "none":
        return [None if k is None else k.copy() for k in driving], RetargetInfo("none")
    if reference is None or not reference.has_body():
        raise InputError("No person was found in the reference photo, so the driving skeleton cannot be fitted to it. "
                         "Use a photo where the person's shoulders are visible, or retarget='none'.")
    anchor = next((i for i, k in enumerate(driving) if k is not None and _levels(k)), None)
    if anchor is None:  # nobody in the clip: nothing to fit
        return [None if k is None else k.copy() for k in driving], RetargetInfo(mode)
    s, dx, dy, level = global_transform(driving[anchor], reference)
    if mode == "global":
        out = [None if k is None else k.transformed(s, dx, dy) for k in driving]
        return out, RetargetInfo("global", s, (dx, dy), anchor, level)
    ratios = bone_ratios(driving, reference, s)
    limbed = [None if k is None else _limbs_frame(k, ratios, s) for k in driving]
    # re-anchor: put the anchor frame's anchor point where the reference's is
    la, lr = _levels(limbed[anchor]), _levels(reference)
    y_level = next((lv for lv in ("ankles", "knees", "hips", "head", "shoulders") if lv in la and lv in lr), None)
    ax_ref, ax_drv = _anchor_xs(reference, limbed[anchor])
    ox = ax_ref - ax_drv
    oy = (lr[y_level][1] - la[y_level][1]) if y_level else 0.0
    out = [None if k is None else k.transformed(1.0, ox, oy) for k in limbed]
    named = {f"{p}-{c}": float(r) for (p, c), r in ratios.items()}
    return out, RetargetInfo("limbs", s, (float(ox), float(oy)), anchor, level, named)
