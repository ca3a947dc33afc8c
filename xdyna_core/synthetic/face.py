"""The synthetic face: iBUG-68 landmarks that *are* the drawing.

The face is built from a 68-point template in head units (x to the image right for a frontal
face, y up; chin at y = -1, eyes at y ≈ 0.2, top of the skull at y ≈ 1.45), shaped by the
identity (face width, jaw, eye size, mouth width) and the expression (eye openness, mouth open,
smile, brows), placed on an ellipsoid so it turns in 3-D with the head, and projected. The skin,
eyes, brows, nose and lips are then drawn *from those projected points*, so the landmarks are
exactly where the features are and the S-Face patches (face.py) crop the right regions.

Point groups (0-based iBUG-68): jaw 0-16 (image left to right, i.e. from the person's right),
brows 17-21 / 22-26, nose bridge 27-30, nostrils 31-35, eyes 36-41 (image left) / 42-47,
outer lips 48-59, inner lips 60-67.
"""

from __future__ import annotations

import numpy as np

from . import raster as rz

JAW = slice(0, 17)
BROW_R, BROW_L = slice(17, 22), slice(22, 27)
NOSE_BRIDGE, NOSTRILS = slice(27, 31), slice(31, 36)
EYE_R, EYE_L = slice(36, 42), slice(42, 48)
LIPS_OUT, LIPS_IN = slice(48, 60), slice(60, 68)

# head ellipsoid (centre, radii) in head units: the skull the face sits on
SKULL_C = np.array([0.0, 0.22, -0.38])
SKULL_R = np.array([1.0, 1.28, 1.1])


def template(face_w=1.0, jaw=1.0, eye=1.0, mouth_w=1.0, nose=1.0, eye_open=1.0, mouth_open=0.0,
             smile=0.0, brow=0.0, gaze=(0.0, 0.0)):
    """68 points [68, 3] in head units for one identity and expression (scalars), plus the iris
    centres [2, 2] and radius. z puts the points on the skull's surface (nose tip in front)."""
    p = np.zeros((68, 2))
    # jaw: ear level (y≈0.08) round to the chin; `jaw` < 1 narrows the chin (V face)
    phi = np.linspace(0, np.pi, 17)
    wj = 0.93 * face_w
    sx = -np.cos(phi)
    taper = 1.0 - (1.0 - jaw) * np.sin(phi) ** 2 * 0.8
    p[JAW, 0] = wj * sx * taper * (0.92 + 0.08 * np.sin(phi))
    p[JAW, 1] = 0.08 - 1.08 * np.sin(phi) ** 0.85
    # brows, outer to inner on the image left, inner to outer on the right
    lift = 0.09 * brow
    s = np.linspace(0, 1, 5)
    bx = -0.78 + 0.6 * s
    by = 0.47 + lift + 0.07 * np.sin(np.pi * (0.25 + 0.75 * s))
    p[BROW_R] = np.stack([bx * face_w, by], 1)
    p[BROW_L] = np.stack([-bx[::-1] * face_w, by[::-1]], 1)
    # nose
    p[NOSE_BRIDGE] = np.stack([np.zeros(4), np.linspace(0.28, -0.18 * nose, 4)], 1)
    nx = np.array([-0.2, -0.1, 0.0, 0.1, 0.2]) * (0.9 + 0.1 * face_w)
    p[NOSTRILS] = np.stack([nx, -0.27 * nose - np.array([0.0, 0.025, 0.04, 0.025, 0.0])], 1)
    # eyes: corners fixed, lids open/close
    ew, eh = 0.19 * eye, 0.085 * eye * (0.55 + 0.45 * eye_open)
    up = eh * np.clip(eye_open, 0.0, 1.0)
    lo = 0.6 * eh * np.clip(eye_open, 0.0, 1.0) ** 0.5
    for sl, cx in ((EYE_R, -0.43 * face_w), (EYE_L, 0.43 * face_w)):
        cy = 0.2
        # both eyes run left corner, upper lid, right corner, lower lid (iBUG order)
        pts = np.array([[-ew, 0.0], [-0.4 * ew, up], [0.4 * ew, up], [ew, 0.0], [0.4 * ew, -lo], [-0.4 * ew, -lo]])
        p[sl] = pts + [cx, cy]
    # mouth: corners move up/out with a smile, the lower lip and inner lips drop when open
    mw = 0.36 * mouth_w * (1.0 + 0.12 * np.clip(smile, 0, 1))
    cy = -0.56
    corner_up = 0.1 * smile
    drop = 0.3 * mouth_open
    ox = np.array([-1.0, -0.62, -0.24, 0.0, 0.24, 0.62, 1.0, 0.62, 0.24, 0.0, -0.24, -0.62])
    oy = np.array([0.0, 0.075, 0.1, 0.085, 0.1, 0.075, 0.0, -0.09, -0.115, -0.12, -0.115, -0.09])
    bend = corner_up * ox ** 2  # the corners move most
    lower = np.array([0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1], bool)
    p[LIPS_OUT, 0] = ox * mw
    p[LIPS_OUT, 1] = cy + oy + bend - lower * drop * (1.0 - 0.5 * np.abs(ox))
    ix = np.array([-0.82, -0.3, 0.0, 0.3, 0.82, 0.3, 0.0, -0.3])
    iy_up = np.array([0.0, 0.025, 0.03, 0.025, 0.0, 0.0, 0.0, 0.0])
    ilow = np.array([0, 0, 0, 0, 0, 1, 1, 1], bool)
    iy = iy_up - ilow * (0.02 + drop * 0.92) * (1.0 - 0.45 * np.abs(ix))
    p[LIPS_IN, 0] = ix * mw
    p[LIPS_IN, 1] = cy + iy + corner_up * np.abs(ix) ** 2
    # the jaw follows an open mouth
    p[JAW, 1] -= drop * 0.75 * np.sin(phi) ** 3
    # irises
    iris = np.array([[-0.43 * face_w, 0.2], [0.43 * face_w, 0.2]]) + np.asarray(gaze) * [0.08 * eye, 0.03 * eye]
    z = _surface_z(p)
    z[27:31] += np.array([0.06, 0.14, 0.24, 0.32]) * nose
    z[31:36] += np.array([0.12, 0.17, 0.2, 0.17, 0.12]) * nose
    z[48:68] += 0.06
    return np.concatenate([p, z[:, None]], 1), iris, 0.085 * eye


def _surface_z(p):
    q = (p - SKULL_C[:2]) / SKULL_R[:2]
    return SKULL_C[2] + SKULL_R[2] * np.sqrt(np.clip(1.0 - (q ** 2).sum(1), 0.04, None))


def head_outline(n=28):
    """3-D points of the skull's outline for the upper head (forehead over to the ears) in head
    units; joined with the jaw they make the skin silhouette."""
    phi = np.linspace(0.0, np.pi, n)
    x = SKULL_R[0] * 0.97 * np.cos(phi)
    y = 0.08 + (1.45 - 0.08) * np.sin(phi)
    return np.stack([x, y, np.full(n, SKULL_C[2] + 0.2)], 1)


# ---- drawing -------------------------------------------------------------------------------------

def draw_face(canvas: rz.Canvas, lm, iris, iris_r, px_unit, ch):
    """Draw eyes, brows, nose and lips from projected landmarks ``lm`` [68, 2] (pixels).

    ``iris`` [2, 2] projected iris centres, ``iris_r`` their radius and ``px_unit`` one head
    unit, in pixels; ``ch`` the character (colours)."""
    skin = np.asarray(ch.skin)
    lw = max(0.6, 0.045 * px_unit)  # line radius (lashes, brows) in pixels
    # nose: a soft shadow down the bridge and along the nostrils
    t = rz.tubes(canvas, [(lm[[28, 29, 30, 33]], [lw * 0.6, lw * 0.7, lw * 0.8, lw * 0.8]), (lm[31:36], lw * 0.7)])
    if t is not None:
        canvas.paint(t[0], t[1] * 0.45, skin * 0.78)
    # eyes: white, iris clipped by the lids, then the upper lash lines
    for k, sl in enumerate((EYE_R, EYE_L)):
        res = rz.polygon(canvas, rz.smooth_polyline(lm[sl], 2))
        if res is None:
            continue
        box, a = res
        canvas.paint(box, a, (0.96, 0.95, 0.93))
        xs, ys = rz.grid(box)
        d = np.hypot(xs - iris[k, 0], ys - iris[k, 1])
        canvas.paint(box, np.clip(iris_r - d + 0.5, 0, 1) * a, ch.eye_color)
        canvas.paint(box, np.clip(iris_r * 0.45 - d + 0.5, 0, 1) * a, (0.03, 0.03, 0.04))
        glint = np.hypot(xs - iris[k, 0] + iris_r * 0.3, ys - iris[k, 1] + iris_r * 0.35)
        canvas.paint(box, np.clip(iris_r * 0.2 - glint + 0.5, 0, 1) * a, (1.0, 1.0, 1.0))
    lash = [lw * 0.7, lw * 1.1, lw * 1.1, lw * 0.6]
    t = rz.tubes(canvas, [(lm[EYE_R][:4], lash), (lm[EYE_L][:4], lash)])
    if t is not None:
        canvas.paint(t[0], t[1], (0.08, 0.06, 0.06))
    brow = [lw * 0.9, lw * 1.5, lw * 1.6, lw * 1.4, lw * 1.0]
    t = rz.tubes(canvas, [(lm[BROW_R], brow), (lm[BROW_L], brow)])
    if t is not None:
        canvas.paint(t[0], t[1], np.asarray(ch.hair_color) * 0.6)
    # lips: outer shape in lip colour; an open mouth dark inside with a row of teeth
    res = rz.polygon(canvas, rz.smooth_polyline(lm[LIPS_OUT], 1))
    if res is not None:
        canvas.paint(res[0], res[1], ch.lip_color)
    inner = lm[LIPS_IN]
    gap = np.linalg.norm(inner[6] - inner[2])
    if gap > 0.8:
        res = rz.polygon(canvas, inner)
        if res is not None:
            box, a = res
            canvas.paint(box, a, (0.28, 0.06, 0.08))
            xs, ys = rz.grid(box)
            canvas.paint(box, a * np.clip(inner[2, 1] + 0.35 * gap - ys + 0.5, 0, 1), (0.95, 0.93, 0.88))
    else:
        t = rz.tube(canvas, inner[[0, 1, 2, 3, 4]], lw * 0.6)
        if t is not None:
            canvas.paint(t[0], t[1] * 0.8, np.asarray(ch.lip_color) * 0.45)
