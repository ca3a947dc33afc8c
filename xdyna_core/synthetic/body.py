"""Synthetic people: a sampled identity (``Character``), its 3-D pose over time with swinging hair
and cloth, ground-truth keypoints, and the renderer that draws it.

Body lengths are in units of a nominal person height (1.0); ``Character.height`` scales all of
them. Appearance (skin, hair, clothes, patterns) is kept apart from geometry so that
``Character.swapped`` can give "the same body and face, another person" (what S-Face training
needs: the same expression on a different identity, landmarks unchanged).
"""

from __future__ import annotations

import colorsys
from dataclasses import asdict, dataclass, fields, replace

import cv2
import numpy as np

from . import face as sf
from . import raster as rz
from .motion import (SIM_RATE, TAU, Choreography, apply, body_pose, chains, hand_points, interp_time,
                               normalize, sim_grid)

SKIN_TONES = np.array([
    (0.99, 0.88, 0.80), (0.95, 0.78, 0.65), (0.87, 0.66, 0.50), (0.74, 0.53, 0.38),
    (0.58, 0.39, 0.26), (0.42, 0.27, 0.18), (0.30, 0.19, 0.13),
])
HAIR_COLORS = np.array([
    (0.07, 0.05, 0.05), (0.18, 0.11, 0.07), (0.33, 0.20, 0.11), (0.55, 0.36, 0.18),
    (0.86, 0.70, 0.42), (0.60, 0.22, 0.09), (0.72, 0.72, 0.74), (0.20, 0.32, 0.80), (0.88, 0.42, 0.66),
])
HAIR_WEIGHTS = np.array([0.24, 0.2, 0.15, 0.1, 0.1, 0.07, 0.06, 0.04, 0.04])
EYE_COLORS = ((0.25, 0.15, 0.08), (0.12, 0.08, 0.05), (0.25, 0.45, 0.65), (0.3, 0.45, 0.3), (0.45, 0.35, 0.2))
HAIR_STYLES = ("short", "buzz", "bob", "long", "ponytail", "bun")
HAIR_STYLE_WEIGHTS = np.array([0.18, 0.07, 0.17, 0.3, 0.18, 0.1])
TOPS = ("tank", "tshirt", "longsleeve")
BOTTOMS = ("trousers", "shorts", "skirt", "dress")

GEOMETRY = ("height", "head_unit", "neck_len", "torso_len", "shoulder_w", "hip_w", "upper_arm", "forearm",
            "hand_len", "thigh", "shin", "foot_len", "ankle_h", "girth", "chest", "waist", "face_w", "jaw",
            "eye_size", "mouth_w", "nose")


def _rng(*parts):
    return np.random.default_rng([int(p) & 0xFFFFFFFF for p in parts])


def _fabric_color(r):
    h = r.uniform(0, 1)
    s = r.choice([r.uniform(0.0, 0.15), r.uniform(0.35, 0.95)], p=[0.25, 0.75])
    v = r.uniform(0.2, 0.97)
    return tuple(float(c) for c in colorsys.hsv_to_rgb(h, s, v))


def _fabric(r, allow_pattern=True) -> dict:
    c1 = _fabric_color(r)
    if r.random() < 0.4:
        c2 = (0.97, 0.97, 0.95) if sum(c1) < 1.6 else (0.08, 0.08, 0.1)
    else:
        c2 = _fabric_color(r)
    kind = str(r.choice(rz.PATTERNS, p=[0.4, 0.25, 0.17, 0.18])) if allow_pattern else "solid"
    return dict(c1=c1, c2=tuple(float(c) for c in c2), pattern=kind, period=float(r.uniform(0.025, 0.07)),
                angle=float(r.choice([0.0, np.pi / 2, r.uniform(0, np.pi)])))


@dataclass
class Character:
    """A synthetic person: geometry (body units) and appearance (RGB in [0, 1])."""

    seed: int
    # geometry
    height: float
    head_unit: float
    neck_len: float
    torso_len: float
    shoulder_w: float
    hip_w: float
    upper_arm: float
    forearm: float
    hand_len: float
    thigh: float
    shin: float
    foot_len: float
    ankle_h: float
    girth: float
    chest: float
    waist: float
    face_w: float
    jaw: float
    eye_size: float
    mouth_w: float
    nose: float
    # appearance
    skin: tuple
    hair_color: tuple
    hair_style: str
    hair_length: float
    hair_volume: float
    eye_color: tuple
    lip_color: tuple
    top: str
    top_fabric: dict
    bottom: str
    bottom_fabric: dict
    shoes: tuple
    cape: bool
    cape_fabric: dict
    cape_len: float
    # secondary dynamics (natural frequency Hz, damping ratio)
    hair_freq: float
    hair_damping: float
    cloth_freq: float
    cloth_damping: float

    @classmethod
    def sample(cls, seed: int) -> "Character":
        r = _rng(seed, 0x1D)
        h = float(r.uniform(0.86, 1.08))
        build = float(r.uniform(0.85, 1.25))
        geo = dict(
            height=h,
            head_unit=h * float(r.uniform(0.05, 0.06)),
            neck_len=h * float(r.uniform(0.035, 0.05)),
            torso_len=h * float(r.uniform(0.28, 0.32)),
            shoulder_w=h * float(r.uniform(0.2, 0.26)) * (0.9 + 0.1 * build),
            hip_w=h * float(r.uniform(0.09, 0.13)),
            upper_arm=h * float(r.uniform(0.16, 0.185)),
            forearm=h * float(r.uniform(0.14, 0.16)),
            hand_len=h * float(r.uniform(0.085, 0.1)),
            thigh=h * float(r.uniform(0.23, 0.255)),
            shin=h * float(r.uniform(0.22, 0.25)),
            foot_len=h * float(r.uniform(0.1, 0.12)),
            ankle_h=h * 0.035,
            girth=build,
            chest=float(r.uniform(0.85, 1.2)),
            waist=float(r.uniform(0.75, 1.1)),
            face_w=float(r.uniform(0.9, 1.1)),
            jaw=float(r.uniform(0.8, 1.1)),
            eye_size=float(r.uniform(0.85, 1.2)),
            mouth_w=float(r.uniform(0.85, 1.15)),
            nose=float(r.uniform(0.85, 1.15)),
        )
        return cls(seed=int(seed), **geo, **_appearance(_rng(seed, 0xA9)))

    def swapped(self, seed: int) -> "Character":
        """Same geometry (body, face shape), new appearance: another identity whose keypoints and
        face landmarks are identical for the same motion."""
        return replace(self, **_appearance(_rng(seed, 0x5A9)))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Character":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def _appearance(r) -> dict:
    t = r.uniform(0, len(SKIN_TONES) - 1)
    i = int(min(t, len(SKIN_TONES) - 2))
    skin = SKIN_TONES[i] * (1 - (t - i)) + SKIN_TONES[i + 1] * (t - i)
    skin = np.clip(skin * r.uniform(0.95, 1.05, 3), 0, 1)
    hair = HAIR_COLORS[r.choice(len(HAIR_COLORS), p=HAIR_WEIGHTS)] * r.uniform(0.85, 1.1)
    style = str(r.choice(HAIR_STYLES, p=HAIR_STYLE_WEIGHTS))
    lip = np.clip(skin * np.array([0.92, 0.62, 0.62]) + np.array([0.08, 0.0, 0.02]) * r.uniform(0.5, 1.5), 0, 1)
    if r.random() < 0.25:  # lipstick
        lip = np.array(colorsys.hsv_to_rgb(r.uniform(0.93, 1.0), r.uniform(0.5, 0.9), r.uniform(0.5, 0.85)))
    bottom = str(r.choice(BOTTOMS, p=[0.38, 0.2, 0.24, 0.18]))
    top_f = _fabric(r)
    return dict(
        skin=tuple(float(c) for c in skin),
        hair_color=tuple(float(c) for c in np.clip(hair, 0, 1)),
        hair_style=style,
        hair_length=float(r.uniform(0.12, 0.3)) if style == "long" else float(r.uniform(0.1, 0.2)),
        hair_volume=float(r.uniform(0.0, 1.0)),
        eye_color=tuple(float(c) for c in EYE_COLORS[r.integers(len(EYE_COLORS))]),
        lip_color=tuple(float(c) for c in lip),
        top=str(r.choice(TOPS, p=[0.25, 0.45, 0.3])),
        top_fabric=top_f,
        bottom=bottom,
        bottom_fabric=top_f if bottom == "dress" else _fabric(r, allow_pattern=r.random() < 0.5),
        shoes=_fabric_color(r),
        cape=bool(r.random() < 0.12),
        cape_fabric=_fabric(r, allow_pattern=False),
        cape_len=float(r.uniform(0.35, 0.55)),
        hair_freq=float(r.uniform(1.2, 2.2)),
        hair_damping=float(r.uniform(0.18, 0.4)),
        cloth_freq=float(r.uniform(1.4, 2.6)),
        cloth_damping=float(r.uniform(0.2, 0.45)),
    )


# ---- projection ------------------------------------------------------------------------------

@dataclass
class Projection:
    """Orthographic camera: x = cx + scale·X, y = floor_y − scale·Y (pixels), depth = scale·Z."""

    cx: float
    floor_y: float
    scale: float

    def __call__(self, p):
        p = np.asarray(p, np.float64)
        return np.stack([self.cx + self.scale * p[..., 0], self.floor_y - self.scale * p[..., 1]], -1)

    def depth(self, p):
        return self.scale * np.asarray(p, np.float64)[..., 2]


# ---- pose over time ------------------------------------------------------------------------------

def _head_points(R_head, head, hu, pts):
    """Head-unit points [K, 3] -> world [N, K, 3]."""
    return head[:, None] + np.einsum("nij,kj->nki", R_head, np.asarray(pts, np.float64) * hu)


def _hair_roots(ch: Character):
    """Root points (head units) and rest directions of the hanging strands for a hair style."""
    if ch.hair_style in ("long", "bob"):
        x = np.linspace(-1.0, 1.0, 7)
        roots = np.stack([x * 1.0, 0.85 - 0.35 * np.abs(x) ** 2, -0.55 - 0.2 * (1 - np.abs(x))], 1)
        out = np.stack([x * 0.35, -np.ones_like(x), -0.25 * np.ones_like(x)], 1)
        return roots, out
    if ch.hair_style == "ponytail":
        return np.array([[0.0, 1.05, -1.3]]), np.array([[0.0, -1.0, -0.6]])
    return None, None


def person_states(ch: Character, motion: Choreography, times) -> dict:
    """World-space 3-D state of the person at ``times`` [T] (seconds of the performance),
    including swinging hair strands, skirt and cape (simulated on a fixed grid from SIM_START,
    so the state at a time never depends on which frames are asked for)."""
    times = np.asarray(times, np.float64)
    channels = motion.angles(times)
    pose = body_pose(channels, ch, times)
    n = len(times)
    hu = ch.head_unit
    st = dict(pose)
    st["face_ch"] = channels  # hand curl and facial expression channels
    roots, out = _hair_roots(ch)
    need_sim = roots is not None or ch.cape or ch.bottom in ("skirt", "dress")
    if need_sim:
        grid = sim_grid(float(times.max()) + 2.0 / SIM_RATE)
        gp = body_pose(motion.angles(grid), ch, grid)
        down = np.array([0.0, -1.0, 0.0])
        if roots is not None:
            J = 3 if ch.hair_style == "bob" else 4
            length = ch.hair_length * ch.height if ch.hair_style != "bob" else 1.25 * hu
            if ch.hair_style == "ponytail":
                length = (0.6 + 1.4 * ch.hair_length) * 0.12 * ch.height
            anchor = _head_points(gp["R_head"], gp["head"], hu, roots)  # [G,K,3]
            off_dir = normalize(np.einsum("gij,kj->gki", gp["R_head"], out) * [0.6, 0.0, 0.6] + down)
            offs = np.repeat(off_dir[:, :, None], J, axis=2) * (length / J)
            strands = chains(anchor, offs, ch.hair_freq, ch.hair_damping)
            st["hair"] = interp_time(grid, strands, times)  # [T,K,J+1,3]
        if ch.bottom in ("skirt", "dress"):
            # a ring of hanging panels round the hips, flaring out; drawn as their outline
            K = 12
            th = np.arange(K) * TAU / K
            hip_half = ch.hip_w / 2 + 0.055 * ch.height * ch.girth
            hip_depth = 0.085 * ch.height * ch.girth
            flare = 1.3 + 0.35 * ch.hair_volume
            skirt_len = (0.2 + 0.08 * ch.hair_volume) * ch.height
            local_anchor = np.stack([np.sin(th) * hip_half * 0.95, np.full(K, -0.02 * ch.height), np.cos(th) * hip_depth], 1)
            anchor = gp["pelvis"][:, None] + np.einsum("gij,kj->gki", gp["R_root"], local_anchor)
            out_ = (flare - 0.95) * hip_half / skirt_len
            local_dir = normalize(np.stack([np.sin(th) * out_, -np.ones(K), np.cos(th) * out_ * 0.8], 1))
            d = normalize(np.einsum("gij,kj->gki", gp["R_root"], local_dir))
            offs = np.repeat(d[:, :, None], 2, axis=2) * (skirt_len / 2)
            st["skirt"] = interp_time(grid, chains(anchor, offs, ch.cloth_freq, ch.cloth_damping), times)
        if ch.cape:
            K = 5
            x = np.linspace(-1.0, 1.0, K)
            local_anchor = np.stack([x * ch.shoulder_w * 0.45, np.full(K, -0.02 * ch.height), np.full(K, -0.05 * ch.height)], 1)
            anchor = gp["neck_base"][:, None] + np.einsum("gij,kj->gki", gp["R_chest"], local_anchor)
            local_dir = normalize(np.stack([x * 0.35, -np.ones(K), -0.25 * np.ones(K)], 1))
            d = normalize(np.einsum("gij,kj->gki", gp["R_root"], local_dir) + down * 0.5)
            offs = np.repeat(d[:, :, None], 3, axis=2) * (ch.cape_len * ch.height / 3)
            st["cape"] = interp_time(grid, chains(anchor, offs, 0.8 * ch.cloth_freq, ch.cloth_damping), times)
    # hands (21 points each; person's right hand is on the image left when facing the camera)
    hands = []
    for i, key, thumb in ((1, "l", 1.0), (0, "r", -1.0)):  # Keypoints order: LEFT hand, then RIGHT
        hands.append(hand_points(pose["wrists"][:, i], pose["hand_dirs"][:, i], st["face_ch"][f"{key}_curl"],
                                 ch.hand_len, side=thumb))
    st["hands"] = np.stack(hands, 1)  # [T, 2(left,right), 21, 3]
    # face landmarks and irises, per frame (expression changes every frame)
    lm = np.zeros((n, 68, 3))
    iris = np.zeros((n, 2, 3))
    f = st["face_ch"]
    for k in range(n):
        p, ir, iris_r = sf.template(ch.face_w, ch.jaw, ch.eye_size, ch.mouth_w, ch.nose, f["eye_open"][k], f["mouth_open"][k],
                                    f["smile"][k], f["brow"][k], f["gaze"][k])
        lm[k] = p
        iris[k, :, :2] = ir
        iris[k, :, 2] = sf._surface_z(ir) + 0.02
    st["iris_r"] = iris_r
    st["hu"] = hu
    st["face3d"] = _head_points_t(pose["R_head"], pose["head"], hu, lm)
    st["iris3d"] = _head_points_t(pose["R_head"], pose["head"], hu, iris)
    st["ears3d"] = _head_points(pose["R_head"], pose["head"], hu, [[-0.98, 0.1, -0.45], [0.98, 0.1, -0.45]])
    st["facing"] = pose["R_head"][:, 2, 2]  # z of the head's forward axis: 1 = looking at the camera
    return st


def _head_points_t(R_head, head, hu, pts):
    """Per-frame head-unit points [N, K, 3] -> world [N, K, 3]."""
    return head[:, None] + np.einsum("nij,nkj->nki", R_head, pts * hu)


# ---- keypoints ---------------------------------------------------------------------------------

FACE_VISIBLE = 0.45  # cos of the head yaw beyond which the face is hidden (~63°)


def keypoint_arrays(st: dict, proj: Projection, height: int, width: int) -> np.ndarray:
    """[T, 128, 3] ground-truth keypoints (Keypoints.to_array layout: body 18, left hand 21,
    right hand 21, face 68) in pixels; confidence 1 for points inside the image (and a visible
    face), 0 otherwise."""
    T = len(st["pelvis"])
    out = np.zeros((T, 128, 3), np.float32)
    face2 = proj(st["face3d"])
    facing = st["facing"] > FACE_VISIBLE
    body = np.zeros((T, 18, 2))
    body[:, 0] = face2[:, 30]
    sh = proj(st["shoulders"])
    body[:, 1] = sh.mean(1)
    body[:, 2], body[:, 5] = sh[:, 0], sh[:, 1]
    el, wr = proj(st["elbows"]), proj(st["wrists"])
    body[:, 3], body[:, 6] = el[:, 0], el[:, 1]
    body[:, 4], body[:, 7] = wr[:, 0], wr[:, 1]
    hp, kn, an = proj(st["hips"]), proj(st["knees"]), proj(st["ankles"])
    body[:, 8], body[:, 11] = hp[:, 0], hp[:, 1]
    body[:, 9], body[:, 12] = kn[:, 0], kn[:, 1]
    body[:, 10], body[:, 13] = an[:, 0], an[:, 1]
    body[:, 14] = face2[:, 36:42].mean(1)
    body[:, 15] = face2[:, 42:48].mean(1)
    ears = proj(st["ears3d"])
    body[:, 16], body[:, 17] = ears[:, 0], ears[:, 1]
    conf = np.ones((T, 18))
    conf[:, [0, 14, 15]] *= facing[:, None]
    # an ear turned away from the camera is hidden behind the head
    ear_z = st["ears3d"][:, :, 2] - st["head"][:, None, 2]
    conf[:, 16] *= ear_z[:, 0] > -0.6 * st["hu"]
    conf[:, 17] *= ear_z[:, 1] > -0.6 * st["hu"]
    hands = proj(st["hands"])  # [T,2,21,2]
    pts = np.concatenate([body, hands.reshape(T, 42, 2), face2], 1)
    c = np.concatenate([conf, np.ones((T, 42)), np.repeat(facing[:, None], 68, 1).astype(float)], 1)
    inside = (pts[..., 0] >= 0) & (pts[..., 0] < width) & (pts[..., 1] >= 0) & (pts[..., 1] < height)
    out[..., :2] = pts
    out[..., 2] = c * inside
    return out


# ---- drawing ----------------------------------------------------------------------------------

def _level_halfwidth(R, w, d, normal2d):
    """Projected half-width, across the image direction ``normal2d`` [N, 2], of a horizontal
    body cross-section (ellipse with half-axes w along the body's x and d along its z)."""
    A = R[:, :2][:, :, [0, 2]]  # world XY rows of the local x and z axes
    A = A * np.array([1.0, -1.0])[None, :, None]  # image y points down
    M = np.einsum("nij,j,nkj->nik", A, np.array([w * w, d * d]), A)
    return np.sqrt(np.einsum("ni,nij,nj->n", normal2d, M, normal2d))


def _perp(a, b):
    d = b - a
    d = d / (np.linalg.norm(d, axis=-1, keepdims=True) + 1e-9)
    return np.stack([-d[..., 1], d[..., 0]], -1)


def _paint_tube(canvas, res, materials, px_unit, light=True):
    """Paint a tube result with ``materials`` [(u_end_px, material), ...] (material = RGB or a
    fabric dict), shaded like a cylinder."""
    if res is None:
        return
    box, alpha, u, v, r = res
    if not light:
        shade = 1.0
    else:
        shade = rz.shade_tube(v, r) if canvas.light is None else rz.shade_lit(v, r, canvas.light)
    color = None
    cloth = None  # style="photo": where the tube is fabric (creases), not skin
    u_start = -1e9
    for u_end, mat in materials:
        sel = (u >= u_start) & (u < u_end) if len(materials) > 1 else None
        col = _material_color(mat, u, v, px_unit)
        if color is None:
            color = np.broadcast_to(col, u.shape + (3,)).copy()
        elif sel is not None:
            color[sel] = np.broadcast_to(col, u.shape + (3,))[sel]
        if light and canvas.light is not None:
            if cloth is None:
                cloth = np.full(u.shape, isinstance(mat, dict))
            elif sel is not None:
                cloth[sel] = isinstance(mat, dict)
        u_start = u_end
    if cloth is not None and cloth.any():
        shade = shade * np.where(cloth, rz.fabric_folds(u, v, r), 1.0)
    canvas.paint(box, alpha, color * (shade[..., None] if light else 1.0))


def _material_color(mat, a, b, px_unit):
    """RGB of a material at fabric coordinates (pixels)."""
    if isinstance(mat, dict):
        m = rz.pattern_mix(mat["pattern"], a / px_unit, b / px_unit, mat["period"], mat["angle"], 1.0 / px_unit)
        c1, c2 = np.asarray(mat["c1"], np.float32), np.asarray(mat["c2"], np.float32)
        if m is None:
            return c1
        return c1 + (c2 - c1) * m[..., None]
    return np.asarray(mat, np.float32)


def _fabric_poly(canvas, pts, mat, px_unit, origin, axis, shade=None):
    res = rz.polygon(canvas, pts)
    if res is None:
        return
    box, a = res
    xs, ys = rz.grid(box)
    ax = np.asarray(axis) / (np.linalg.norm(axis) + 1e-9)
    along = (xs - origin[0]) * ax[0] + (ys - origin[1]) * ax[1]
    across = -(xs - origin[0]) * ax[1] + (ys - origin[1]) * ax[0]
    col = np.broadcast_to(_material_color(mat, along, across, px_unit), a.shape + (3,))
    if shade is not None:
        col = col * (1.0 - shade * np.clip(along / (np.abs(along).max() + 1e-6), 0, 1))[..., None]
    canvas.paint(box, a, col)


def draw_shadow(canvas, st, k, proj, ch):
    c = proj(st["ankles"][k].mean(0) * [1, 0, 1])
    rx = (0.16 + 0.5 * abs(st["ankles"][k, 0, 0] - st["ankles"][k, 1, 0])) * proj.scale
    ry = 0.025 * proj.scale
    box = canvas.bbox(c[0] - rx, c[1] - ry, c[0] + rx, c[1] + ry)
    if box is None:
        return
    xs, ys = rz.grid(box)
    q = np.sqrt(((xs - c[0]) / rx) ** 2 + ((ys - c[1]) / ry) ** 2)
    canvas.paint(box, np.clip(1 - q, 0, 1) * 0.35, (0.0, 0.0, 0.0), person=False)


def _neckline(ch: Character) -> float:
    """Depth of the neckline below the neck's base, in body units (0 = high collar)."""
    if ch.bottom == "dress" or ch.top == "tank":
        return 0.045
    return 0.022 if ch.top == "tshirt" else 0.012


def draw_person(canvas: rz.Canvas, ch: Character, st: dict, k: int, proj: Projection):
    """Draw frame ``k`` of the person states ``st`` (from ``person_states``), back to front."""
    S = proj.scale
    P = lambda a: proj(a[k])  # noqa: E731
    Z = lambda a: proj.depth(a[k])  # noqa: E731
    g, h = ch.girth, ch.height
    skin = np.asarray(ch.skin)
    hair = np.asarray(ch.hair_color)
    top, bot = ch.top_fabric, ch.bottom_fabric
    hu_px = ch.head_unit * S
    draw_shadow(canvas, st, k, proj, ch)
    parts = []  # (depth key, draw function): painter's algorithm

    # -- behind everything: long hair, ponytail, cape --
    if "hair" in st:
        strands = P(st["hair"])  # [K, J+1, 2]
        pony = ch.hair_style == "ponytail"
        rad = hu_px * (0.32 if pony else 0.5 + 0.35 * ch.hair_volume)
        radii = rad * np.linspace(1.0, 0.3 if pony else 0.55, strands.shape[1])
        parts.append((-1e9, lambda: _paint_tube(canvas, rz.tubes(canvas, [(s_, radii) for s_ in strands]), [(1e9, hair)], S)))
    if "cape" in st:
        c = P(st["cape"])  # [K, J+1, 2]
        outline = np.concatenate([c[:, 0], c[-1, 1:], c[::-1, -1][1:], c[0, ::-1][1:-1]], 0)
        parts.append((-1e9 + 1, lambda: _fabric_poly(canvas, outline, ch.cape_fabric, S, c[:, 0].mean(0),
                                                     c[:, -1].mean(0) - c[:, 0].mean(0), shade=0.25)))
    # -- torso: lofted cross-sections projected with the body's turn --
    pel, wai, nb = P(st["pelvis"]), P(st["waist"]), P(st["neck_base"])
    n_low = _perp(pel[None], wai[None])
    n_up = _perp(wai[None], nb[None])
    R_root, R_chest = st["R_root"][k:k + 1], st["R_chest"][k:k + 1]
    hip_half = ch.hip_w / 2 + 0.055 * h * g
    hw = _level_halfwidth(R_root, hip_half, 0.085 * h * g, n_low)[0] * S
    ww = _level_halfwidth(R_root, 0.075 * h * g * ch.waist, 0.068 * h * g, (n_low + n_up) / 2)[0] * S
    cw = _level_halfwidth(R_chest, (ch.shoulder_w / 2 - 0.005 * h) * (0.85 + 0.15 * ch.chest), 0.075 * h * g * ch.chest, n_up)[0] * S
    tw = _level_halfwidth(R_chest, ch.shoulder_w / 2 - 0.015 * h, 0.05 * h * g, n_up)[0] * S
    up = (nb - pel) / (np.linalg.norm(nb - pel) + 1e-9)
    n_mid = (n_low[0] + n_up[0]) / np.linalg.norm(n_low[0] + n_up[0] + 1e-9)
    centres = np.stack([pel - up * 0.045 * h * S, pel, wai, wai + (nb - wai) * 0.62, nb - up * 0.015 * h * S])
    normals = np.stack([n_low[0], n_low[0], n_mid, n_up[0], n_up[0]])
    widths = np.array([hw * 0.75, hw, ww, cw, tw])
    top_c = centres[-1]
    u_waist = float((pel + (wai - pel) * 0.4 - centres[0]) @ up)  # the waistband, a little above the hips
    tmats = [(1e9, top)] if ch.bottom == "dress" else [(u_waist, bot), (1e9, top)]
    sh = P(st["shoulders"])
    arm_r = np.array([0.036, 0.03, 0.023]) * h * S * g ** 0.7
    zt = Z(st["pelvis"])

    def torso():
        # the neck first: the garment's neckline covers its base
        nt = P(st["neck_top"])
        chin = P(st["face3d"])[8]
        neck_r = 0.55 * hu_px * g ** 0.5
        _paint_tube(canvas, rz.tube(canvas, np.stack([nb - up * 0.03 * h * S, nt + (chin - nt) * 0.3]), neck_r), [(1e9, skin * 0.92)], S)
        _paint_torso(canvas, centres, normals, widths, up, tmats, S)
        # shoulders: a slope from the neck to the top of each arm, in the top's fabric
        side = n_up[0]
        yoke = np.stack([top_c - side * tw, sh[0] - up * arm_r[0] * 0.2 if side @ (sh[0] - top_c) < 0 else sh[1] - up * arm_r[0] * 0.2,
                         sh[0] + up * arm_r[0] * 0.85 if side @ (sh[0] - top_c) < 0 else sh[1] + up * arm_r[0] * 0.85,
                         nb + up * 0.004 * h * S - side * neck_r, nb + up * 0.004 * h * S + side * neck_r,
                         sh[1] + up * arm_r[0] * 0.85 if side @ (sh[0] - top_c) < 0 else sh[0] + up * arm_r[0] * 0.85,
                         sh[1] - up * arm_r[0] * 0.2 if side @ (sh[0] - top_c) < 0 else sh[0] - up * arm_r[0] * 0.2,
                         top_c + side * tw])
        bare = ch.top == "tank" or ch.bottom == "dress"
        if bare:
            _paint_poly_color(canvas, rz.smooth_polyline(yoke, 1), skin * 0.97)
        else:
            _fabric_poly(canvas, rz.smooth_polyline(yoke, 1), top, S, top_c, up)
        # neckline: skin showing below the neck (deep for tank tops and dresses)
        dip = _neckline(ch) * h * S
        neck_w = neck_r * (1.6 if dip > 0.03 * h * S else 1.15)
        base = nb + up * 0.004 * h * S
        pts = rz.ellipse_points(0, 0, neck_w, dip, 0.0, 14, 0.0, np.pi)
        loop = base[None] + pts[:, :1] * side[None] - pts[:, 1:] * up[None]
        res = rz.polygon(canvas, np.concatenate([loop, [base - side * neck_w * 0.9 + up * 0.01 * h * S, base + side * neck_w * 0.9 + up * 0.01 * h * S]], 0))
        if res is not None:
            canvas.paint(res[0], res[1], skin * 0.92)
    parts.append((zt - 0.04 * S, torso))
    # -- legs and feet: behind the torso unless a knee is lifted well forwards --
    hips, knees, ankles = P(st["hips"]), P(st["knees"]), P(st["ankles"])
    toes, heels = P(st["toes"]), P(st["heels"])
    leg_r = np.array([0.062, 0.044, 0.03]) * h * S * g ** 0.7
    foot_r = np.array([0.028, 0.03, 0.022]) * h * S
    for i in range(2):
        pts = np.stack([hips[i], knees[i], ankles[i]])
        thigh_px = np.linalg.norm(pts[1] - pts[0])
        leg_px = thigh_px + np.linalg.norm(pts[2] - pts[1])
        if ch.bottom == "trousers":
            mats = [(leg_px * 0.97, bot), (1e9, ch.shoes)]
        elif ch.bottom == "shorts":
            mats = [(thigh_px * 0.55, bot), (leg_px * 0.95, skin), (1e9, ch.shoes)]
        else:
            mats = [(leg_px * 0.95, skin), (1e9, ch.shoes)]
        foot = np.stack([heels[i], ankles[i] + (toes[i] - ankles[i]) * 0.4, toes[i]])
        lifted = Z(st["knees"])[i] - zt > 0.12 * h * S
        key = zt - 0.04 * S + (0.002 if lifted else -0.002) + 1e-4 * i
        parts.append((key, lambda pts=pts, foot=foot, mats=mats: _paint_tube(
            canvas, rz.tubes(canvas, [(pts, leg_r), (foot, foot_r, 1e6)]), mats, S)))
    if "skirt" in st:
        sk = P(st["skirt"]).reshape(-1, 2)  # every panel point, [K * 3, 2]
        # the legs push the cloth: the upper thighs always stay inside the skirt (no collisions
        # are simulated, so a skirt swinging one way would otherwise uncover the other leg)
        thighs = []
        for i in range(2):
            for f in (0.0, 0.35, 0.7):
                c_ = hips[i] + (knees[i] - hips[i]) * f
                nrm = _perp(hips[i][None], knees[i][None])[0]
                thighs += [c_ + nrm * leg_r[0] * 1.08, c_ - nrm * leg_r[0] * 1.08]
        pts = np.concatenate([sk, [wai - n_low[0] * ww * 1.02, wai + n_low[0] * ww * 1.02], thighs], 0)
        hull = cv2.convexHull(pts.astype(np.float32)).reshape(-1, 2)
        outline = rz.smooth_polyline(hull, 1)
        parts.append((zt - 0.04 * S + 0.003, lambda: _fabric_poly(canvas, outline, bot, S, wai, pel - wai, shade=0.2)))
    # -- arms with their hands --
    el, wr = P(st["elbows"]), P(st["wrists"])
    hands2 = P(st["hands"])  # [2 (left, right), 21, 2]
    for i in range(2):  # 0 = the person's right arm
        pts = np.stack([sh[i], el[i], wr[i]])
        up_px = np.linalg.norm(pts[1] - pts[0])
        arm_px = up_px + np.linalg.norm(pts[2] - pts[1])
        if ch.top == "tank":
            mats = [(up_px * 0.1, top), (1e9, skin)]
        elif ch.top == "tshirt":
            mats = [(up_px * 0.5, top), (1e9, skin)]
        else:
            mats = [(arm_px * 0.96, top), (1e9, skin)]
        hand = hands2[1 - i]
        depth = (Z(st["elbows"])[i] + Z(st["wrists"])[i]) / 2
        def arm(pts=pts, mats=mats, hand=hand):
            _paint_tube(canvas, rz.tube(canvas, pts, arm_r), mats, S)
            # the hand in its own (small) box: cheaper than one box round arm and hand
            _paint_tube(canvas, rz.tubes(canvas, _hand_tubes(hand, ch.hand_len * S)), [(1e9, skin)], S)
        parts.append((depth, arm))
    # -- head, face, hair on top --
    parts.append((Z(st["head"]) + 0.05 * S, lambda: _draw_head(canvas, ch, st, k, proj)))
    for _, fn in sorted(parts, key=lambda p: p[0]):
        fn()


def _paint_poly_color(canvas, pts, color):
    res = rz.polygon(canvas, pts)
    if res is not None:
        canvas.paint(res[0], res[1], color)


def _paint_torso(canvas, centres, normals, widths, up, materials, px_unit):
    """The torso as one smooth outline through its cross-sections (a lofted shape), with
    fabric coordinates along / across the spine and cylinder shading."""
    left, right = centres - normals * widths[:, None], centres + normals * widths[:, None]
    outline = rz.smooth_polyline(np.concatenate([left, right[::-1]], 0), 2)
    res = rz.polygon(canvas, outline)
    if res is None:
        return
    box, a = res
    xs, ys = rz.grid(box)
    o = centres[0]
    along = (xs - o[0]) * up[0] + (ys - o[1]) * up[1]
    across = (xs - o[0]) * up[1] - (ys - o[1]) * up[0]
    levels = (centres - o) @ up
    centre_off = np.interp(along, levels, (centres - o) @ np.array([up[1], -up[0]]))
    w = np.interp(along, levels, widths)
    v = across - centre_off
    color = None
    u_start = -1e9
    for u_end, mat in materials:
        col = np.broadcast_to(_material_color(mat, along, v, px_unit), along.shape + (3,))
        if color is None:
            color = col.copy()
        else:
            sel = (along >= u_start) & (along < u_end)
            color[sel] = col[sel]
        u_start = u_end
    if canvas.light is None:
        shade = rz.shade_tube(v, w)
    else:
        shade = rz.shade_lit(v, w, canvas.light) * rz.fabric_folds(along, v, w, depth=0.08)
    canvas.paint(box, a, color * shade[..., None])


def _hand_tubes(hand, hand_px):
    """Palm, thumb and fingers as tubes (u starts far along, so the arm's last material, skin,
    applies)."""
    palm = np.stack([hand[0], (hand[5] + hand[17]) / 2 * 0.5 + hand[9] * 0.5])
    r = max(0.045 * hand_px, 0.5)
    out = [(palm, [0.14 * hand_px, 0.19 * hand_px], 1e6), (hand[[1, 2, 3, 4]], [r * 1.3, r * 1.2, r * 1.1, r], 1e6)]
    if hand_px > 12:  # separate fingers only where they are big enough to see
        out += [(hand[[5 + 4 * f, 6 + 4 * f, 7 + 4 * f, 8 + 4 * f]], [r * 1.15, r * 1.05, r, r * 0.9], 1e6) for f in range(4)]
    else:
        out += [(np.stack([hand[9], (hand[8] + hand[12] + hand[16]) / 3]), [0.17 * hand_px, 0.12 * hand_px], 1e6)]
    return out


def _ellipse2d(R_head, head, hu, proj, scale=1.0):
    """Centre [2] and 2x2 factor L (pixels) of the skull's projected outline: orthographic
    projection of an ellipsoid keeps the XY block of R·diag(r²)·Rᵀ."""
    c = head + R_head @ (sf.SKULL_C * hu)
    M = R_head @ np.diag((sf.SKULL_R * hu * scale) ** 2) @ R_head.T
    a, b, d = M[0, 0], -M[0, 1], M[1, 1]  # image y points down
    l11 = np.sqrt(a)
    l21 = b / l11
    l22 = np.sqrt(max(d - l21 * l21, 1e-12))
    return proj(c), np.array([[l11, 0.0], [l21, l22]]) * proj.scale


def _skull_ellipse(R_head, head, hu, proj, scale=1.0, n=40):
    cc, L = _ellipse2d(R_head, head, hu, proj, scale)
    t = np.linspace(0, TAU, n, endpoint=False)
    return cc + (L @ np.stack([np.cos(t), np.sin(t)])).T, cc


def _draw_head(canvas, ch: Character, st: dict, k: int, proj: Projection):
    S = proj.scale
    hu = ch.head_unit
    hu_px = hu * S
    R, head = st["R_head"][k], st["head"][k]
    skin = np.asarray(ch.skin)
    hair = np.asarray(ch.hair_color)
    if ch.hair_style == "bun":
        bun = proj(head + R @ (np.array([0.0, 1.45, -0.7]) * hu))
        _paint_tube(canvas, rz.tube(canvas, bun[None], 0.55 * hu_px), [(1e9, hair)], S)
    # ears (behind the skull outline)
    for e in range(2):
        if st["ears3d"][k, e, 2] - head[2] > -0.35 * hu:
            c = proj(st["ears3d"][k, e])
            res = rz.polygon(canvas, rz.ellipse_points(c[0], c[1], 0.2 * hu_px, 0.33 * hu_px, 0.0, 12))
            if res is not None:
                canvas.paint(res[0], res[1], skin * 0.88)
    # skin: skull silhouette + jaw (the jaw landmarks are the face's lower outline)
    outline, cc = _skull_ellipse(R, head, hu, proj, n=32)
    face = proj(st["face3d"][k])
    res = rz.polygon(canvas, outline)
    if res is not None:
        canvas.paint(res[0], res[1], skin)
    res = rz.polygon(canvas, rz.smooth_polyline(np.concatenate([face[0:17], [cc]], 0), 1))
    if res is not None:
        canvas.paint(res[0], res[1], skin)
    if st["facing"][k] > 0.25:
        sf.draw_face(canvas, face, proj(st["iris3d"][k]), st["iris_r"] * hu_px, hu_px, ch)
    # hair on the head: the skull outline (a bit larger) down to a hairline across the forehead
    vol = 1.04 + (0.07 * ch.hair_volume if ch.hair_style != "buzz" else 0.0)
    hl2 = proj(head + (R @ (_hairline(ch) * hu).T).T)
    arc = _arc_over_top(R, head, hu, proj, vol, hl2[-1], hl2[0])
    res = rz.polygon(canvas, np.concatenate([hl2, arc], 0))
    if res is not None:
        box, al = res
        xs, ys = rz.grid(box)
        q = ((xs - cc[0]) * 0.5 + (ys - cc[1])) / (2.5 * hu_px)  # sheen: lighter at the top left
        canvas.paint(box, al, hair[None, None] * (1.0 - 0.25 * np.clip(q, -1, 1)[..., None]))
    if ch.hair_style == "long":  # locks framing the face
        locks = []
        for s_ in (-1.0, 1.0):
            lock = np.array([[s_ * 0.97, 0.8, -0.1], [s_ * 1.0, 0.1, -0.15], [s_ * 0.9, -0.7, -0.25]])
            locks.append((proj(head + (R @ (lock * hu).T).T), hu_px * np.array([0.2, 0.17, 0.1])))
        _paint_tube(canvas, rz.tubes(canvas, locks), [(1e9, hair)], S)
    if canvas.light is not None:
        _shade_head(canvas, R, head, hu, proj)


def _shade_head(canvas, R_head, head, hu, proj):
    """style="photo": light the drawn head (skin, face, hair) as a sphere-like ellipsoid: the
    projected skull outline, a little enlarged for the hair, gives each pixel's normal."""
    cc, L = _ellipse2d(R_head, head, hu, proj, 1.12)
    ext = np.abs(L).sum(1)
    box = canvas.bbox(cc[0] - ext[0], cc[1] - ext[1], cc[0] + ext[0], cc[1] + ext[1], pad=1.0)
    if box is None:
        return
    xs, ys = rz.grid(box)
    Li = np.linalg.inv(L)
    dx, dy = xs - cc[0], ys - cc[1]
    qx, qy = Li[0, 0] * dx + Li[0, 1] * dy, Li[1, 0] * dx + Li[1, 1] * dy
    rho2 = qx * qx + qy * qy
    nz = np.sqrt(np.clip(1.0 - rho2, 0.0, 1.0))
    light = canvas.light
    lx, ly, lz = light.direction
    lam = np.clip(qx * lx + qy * ly + nz * lz, 0.0, 1.0)
    factor = light.ambient + (1.0 - light.ambient) * (0.15 + 0.85 * lam) + light.sheen * lam ** 12
    xa, ya, xb, yb = box
    weight = np.clip((1.0 - rho2) * 6.0, 0.0, 1.0) * canvas.person[ya:yb, xa:xb]
    canvas.image[ya:yb, xa:xb] *= (1.0 + (factor - 1.0) * weight)[..., None]


def _arc_over_top(R_head, head, hu, proj, scale, start, stop, n=24):
    """Points of the (scaled) skull outline from ``start`` over the top of the head to ``stop``."""
    cc, L = _ellipse2d(R_head, head, hu, proj, scale)
    Li = np.array([[L[1, 1], 0.0], [-L[1, 0], L[0, 0]]]) / (L[0, 0] * L[1, 1])
    ang = lambda p: float(np.arctan2(*(Li @ (p - cc))[::-1]))  # noqa: E731 ellipse parameter of a point
    t0, t1 = ang(start), ang(stop)
    # the parameter of the outline's highest point (smallest image y): y = cc_y + L[1] @ (cos, sin)
    t_top = float(np.arctan2(-L[1, 1], -L[1, 0]))
    d = (t1 - t0) % TAU
    ts = t0 + np.linspace(0, d, n) if (t_top - t0) % TAU < d else t0 - np.linspace(0, TAU - d, n)
    return cc + (L @ np.stack([np.cos(ts), np.sin(ts)])).T


def _hairline(ch: Character):
    """3-D hairline (head units) from the right temple across the forehead to the left temple."""
    if ch.hair_style == "buzz":
        ys = 1.05
    else:
        ys = 0.88 - 0.18 * ch.hair_volume
    x = np.linspace(-0.97, 0.97, 15)
    y = np.where(np.abs(x) > 0.75, 0.25 + (ys - 0.25) * (1 - (np.abs(x) - 0.75) / 0.22), ys)
    if ch.hair_style in ("long", "bob", "short"):
        y = y + 0.05 * np.cos(x * 9.0 + ch.hair_volume * 6)  # a fringe with strands
    q = np.stack([x, y], 1)
    z = sf._surface_z(q) + 0.05
    return np.concatenate([q, z[:, None]], 1)
