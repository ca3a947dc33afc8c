"""Small numpy/OpenCV rasteriser for the synthetic-data generator.

Everything is drawn with signed distances or OpenCV's anti-aliased polygons onto a float RGB
canvas in [0, 1]; each shape is composited by its coverage (alpha), so edges are smooth at any
size. A shape paints only its bounding box, which keeps one 256×128 frame at ~1-2 ms.

Shapes carry local coordinates (along / across the limb) so clothing patterns and shading stay
attached to the body as it moves.
"""

from __future__ import annotations

import cv2
import numpy as np

_SHIFT = 4  # OpenCV sub-pixel bits for polygons: 1/16 px precision
_ONE = float(1 << _SHIFT)


class Canvas:
    """Float RGB image [H, W, 3] in [0, 1] plus the person coverage [H, W] in [0, 1]."""

    def __init__(self, background: np.ndarray):
        self.image = np.ascontiguousarray(background, dtype=np.float32)
        self.height, self.width = self.image.shape[:2]
        self.person = np.zeros((self.height, self.width), np.float32)
        # style="photo": a `photo.Light` (direction, ambient) that shades bodies; None = the
        # default flat cylinder shading
        self.light = None

    def bbox(self, x0, y0, x1, y1, pad=2.0):
        """Integer box clipped to the image, or None when it is empty."""
        xa, ya = max(0, int(np.floor(x0 - pad))), max(0, int(np.floor(y0 - pad)))
        xb, yb = min(self.width, int(np.ceil(x1 + pad)) + 1), min(self.height, int(np.ceil(y1 + pad)) + 1)
        if xb <= xa or yb <= ya:
            return None
        return xa, ya, xb, yb

    def paint(self, box, alpha: np.ndarray, color, person: bool = True):
        """Composite ``color`` ([h, w, 3] or [3]) with coverage ``alpha`` [h, w] into ``box``."""
        xa, ya, xb, yb = box
        a = alpha[..., None]
        region = self.image[ya:yb, xa:xb]
        region *= 1.0 - a
        region += a * np.asarray(color, np.float32)
        if person:
            p = self.person[ya:yb, xa:xb]
            np.maximum(p, alpha, out=p)

    def to_uint8(self) -> np.ndarray:
        return (np.clip(self.image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def grid(box):
    """Pixel-centre coordinates (xs [1, w], ys [h, 1]) of a box."""
    xa, ya, xb, yb = box
    return np.arange(xa, xb, dtype=np.float32)[None, :] + 0.5, np.arange(ya, yb, dtype=np.float32)[:, None] + 0.5


def tube(canvas: Canvas, pts, radii, cap_start=True, cap_end=True):
    """Coverage of a tapered tube (union of round cones) along the polyline ``pts`` [n, 2] with
    radius ``radii`` [n] at each point. Returns (box, alpha, u, v, r) where u is the arc length
    along the tube, v the signed distance across it and r the local radius (all in pixels), or
    None when the tube is off-canvas. Open ends (cap_* False) are cut flat."""
    return tubes(canvas, [(pts, radii)], cap_start, cap_end)


def tubes(canvas: Canvas, polylines, cap_start=True, cap_end=True):
    """Union of several tubes [(pts, radii) or (pts, radii, u0), ...] in one pass (e.g. an arm and
    the fingers of its hand): the signed distance of every segment is evaluated at once and the
    nearest segment gives the local coordinates (u starts at ``u0`` for each polyline, default 0).
    ``cap_start`` / ``cap_end`` apply to the first polyline."""
    A, B, RA, RB, U0, first, last = [], [], [], [], [], [], []
    lo, hi = np.full(2, np.inf), np.full(2, -np.inf)
    for j, item in enumerate(polylines):
        pts, radii = item[0], item[1]
        u_start = float(item[2]) if len(item) > 2 else 0.0
        pts = np.asarray(pts, np.float32).reshape(-1, 2)
        radii = np.broadcast_to(np.asarray(radii, np.float32), (len(pts),))
        rmax = float(radii.max())
        lo = np.minimum(lo, pts.min(0) - rmax)
        hi = np.maximum(hi, pts.max(0) + rmax)
        if len(pts) == 1:
            pts, radii = np.concatenate([pts, pts]), np.concatenate([radii, radii])
        seg = np.hypot(*(pts[1:] - pts[:-1]).T)
        n = len(pts) - 1
        A.append(pts[:-1]); B.append(pts[1:]); RA.append(radii[:-1]); RB.append(radii[1:])
        U0.append(u_start + np.concatenate([[0.0], np.cumsum(seg)[:-1]]))
        first.append((np.arange(n) == 0) & (j == 0) & (not cap_start))
        last.append((np.arange(n) == n - 1) & (j == 0) & (not cap_end))
    box = canvas.bbox(lo[0], lo[1], hi[0], hi[1])
    if box is None:
        return None
    a, b = np.concatenate(A), np.concatenate(B)
    ra, rb, u0 = np.concatenate(RA), np.concatenate(RB), np.concatenate(U0).astype(np.float32)
    cut0, cut1 = np.concatenate(first), np.concatenate(last)
    ab = b - a
    L = np.maximum(np.hypot(ab[:, 0], ab[:, 1]), 1e-4).astype(np.float32)
    col = lambda x: x.astype(np.float32)[:, None, None]  # noqa: E731
    ex, ey, Lr = col(ab[:, 0] / L), col(ab[:, 1] / L), col(L)
    xs, ys = grid(box)
    px, py = xs[None] - col(a[:, 0]), ys[None] - col(a[:, 1])
    along = px * ex + py * ey                 # [S, h, w]
    across = py * ex - px * ey                # left-hand normal: image x right, y down
    t = np.minimum(np.maximum(along / Lr, 0.0), 1.0)
    r = col(ra) + t * col(rb - ra)
    dx = along - t * Lr
    d = np.sqrt(dx * dx + across * across) - r
    if cut0.any():
        d[cut0] = np.maximum(d[cut0], -along[cut0])
    if cut1.any():
        d[cut1] = np.maximum(d[cut1], along[cut1] - Lr[cut1])
    S, h, w = d.shape
    if S == 1:
        dist, u, v, rr = d[0], (col(u0) + t * Lr)[0], across[0], r[0]
    else:
        idx = np.argmin(d.reshape(S, -1), axis=0)
        cols = np.arange(h * w)
        pick = lambda x: x.reshape(S, -1)[idx, cols].reshape(h, w)  # noqa: E731
        dist, v, rr = pick(d), pick(across), pick(r)
        u = u0[idx].reshape(h, w) + pick(t) * L[idx].reshape(h, w)
    alpha = np.minimum(np.maximum(0.5 - dist, 0.0), 1.0)
    return box, alpha, u, v, np.maximum(rr, 1e-3)


def polygon(canvas: Canvas, pts):
    """Anti-aliased coverage of a filled polygon [n, 2] (float pixel coordinates): (box, alpha)
    or None when off-canvas."""
    pts = np.asarray(pts, np.float64).reshape(-1, 2)
    box = canvas.bbox(pts[:, 0].min(), pts[:, 1].min(), pts[:, 0].max(), pts[:, 1].max())
    if box is None:
        return None
    xa, ya, xb, yb = box
    m = np.zeros((yb - ya, xb - xa), np.uint8)
    # OpenCV's pixel (i, j) is centred on integer coordinates; ours on +0.5.
    p = np.round((pts - [xa + 0.5, ya + 0.5]) * _ONE).astype(np.int32)
    cv2.fillPoly(m, [p], 255, lineType=cv2.LINE_AA, shift=_SHIFT)
    return box, m.astype(np.float32) * (1.0 / 255.0)


def ellipse_points(cx, cy, rx, ry, angle=0.0, n=32, start=0.0, stop=2 * np.pi):
    """Points [n, 2] on an ellipse rotated by ``angle`` radians (image coordinates)."""
    t = np.linspace(start, stop, n, endpoint=(stop - start) < 2 * np.pi - 1e-6)
    x, y = rx * np.cos(t), ry * np.sin(t)
    c, s = np.cos(angle), np.sin(angle)
    return np.stack([cx + c * x - s * y, cy + s * x + c * y], 1)


def smooth_polyline(pts, iterations=2, closed=True):
    """Chaikin corner cutting: a few rounds turn a coarse polygon into a smooth outline."""
    p = np.asarray(pts, np.float64)
    for _ in range(iterations):
        q = np.roll(p, -1, 0) if closed else p[1:]
        a = p if closed else p[:-1]
        new = np.empty((2 * len(a), 2))
        new[0::2] = 0.75 * a + 0.25 * q
        new[1::2] = 0.25 * a + 0.75 * q
        p = new if closed else np.concatenate([p[:1], new, p[-1:]])
    return p


# ---- fabric patterns ---------------------------------------------------------------------------

PATTERNS = ("solid", "stripes", "checks", "dots")


def pattern_mix(kind: str, a, b, period: float, angle: float, px: float, dot_radius: float = 0.28):
    """Fraction [h, w] of the second colour at fabric coordinates (a, b) (body units).

    ``px`` is the size of one pixel in the same units (for anti-aliasing), ``period`` the
    repeat length, ``angle`` the print's rotation."""
    if kind == "solid":
        return None
    c, s = np.cos(angle), np.sin(angle)
    ra, rb = c * a - s * b, s * a + c * b
    k = period / (2 * np.pi * max(px, 1e-6))  # sin's slope -> distance in pixels
    if kind == "stripes":
        return np.clip(0.5 + k * np.sin(2 * np.pi * ra / period), 0.0, 1.0)
    if kind == "checks":
        return np.clip(0.5 + k * np.sin(2 * np.pi * ra / period) * np.sin(2 * np.pi * rb / period) * 2.0, 0.0, 1.0)
    if kind == "dots":
        fa = ra / period - np.round(ra / period)
        fb = rb / period - np.round(rb / period)
        dist = np.hypot(fa, fb) * period
        return np.clip(0.5 + (dot_radius * period - dist) / max(px, 1e-6), 0.0, 1.0)
    raise ValueError(f"unknown pattern {kind!r}")


def shade_tube(v, r, strength=0.28):
    """Cylinder shading across a tube: bright in the middle, darker at the rims, light from
    the upper left."""
    q = np.clip(v / r, -1.0, 1.0)
    return (1.0 - strength) + strength * np.sqrt(1.0 - q * q) - 0.06 * q


def shade_lit(v, r, light):
    """Lambert shading of a cylinder lit by ``light`` (a `photo.Light`: unit direction towards
    the light in image coordinates x right / y down / z towards the camera, ambient share).

    ``v`` [h, w] is the signed distance across the tube; its gradient gives the across
    direction in the image, so the surface normal at a pixel is (q·across, sqrt(1 - q²)) with
    q = v / r, and every limb is lit from the same side whatever its orientation."""
    v = np.asarray(v, np.float32)
    q = np.clip(v / r, -1.0, 1.0)
    nz = np.sqrt(1.0 - q * q)
    lx, ly, lz = light.direction
    if v.shape[0] >= 2 and v.shape[1] >= 2:
        gy, gx = np.gradient(v)
        norm = np.sqrt(gx * gx + gy * gy) + 1e-6
        facing = (gx * lx + gy * ly) / norm
    else:
        facing = 0.0
    lam = np.clip(q * facing + nz * lz, 0.0, 1.0)
    # a little wrap-around light (skin and cloth scatter) keeps the dark side from going flat black
    return light.ambient + (1.0 - light.ambient) * (0.15 + 0.85 * lam) + light.sheen * lam ** 12


def fabric_folds(u, v, r, depth=0.12):
    """style="photo": soft creases round a sleeve, trouser leg or top (a shading factor [h, w]).
    They follow the fabric coordinates (u along, v across, r the local radius, pixels), so they
    stay on the cloth as the body moves, and bend across the limb like real folds."""
    r = np.maximum(np.asarray(r, np.float32), 0.5)
    q = np.clip(v / r, -1.0, 1.0)
    # uneven spacing and strength: two incommensurate waves, so the folds never read as stripes
    phase = 2.0 * np.pi * u / (1.7 * r) + 1.6 * q + 1.9 * np.sin(u / (2.3 * r) + 0.7 * q)
    strength = 0.5 + 0.5 * np.sin(u / (3.1 * r) + 1.3)
    crease = (0.5 + 0.5 * np.sin(phase)) ** 6 * strength
    return 1.0 - depth * crease
