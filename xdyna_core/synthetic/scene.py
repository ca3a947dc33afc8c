"""Dynamic backgrounds for synthetic clips: drifting clouds, rippling water with moving
highlights, flickering stage lights, shifting gradients and fire, plus where the person stands.

Smooth fields are computed at quarter resolution and resized (cheap); every frame is a pure
function of (scene, time, size), so any frame of any clip can be rendered on its own.
"""

from __future__ import annotations

import colorsys
from dataclasses import asdict, dataclass, field

import cv2
import numpy as np

KINDS = ("sky", "water", "stage", "gradient", "fire")
KIND_WEIGHTS = np.array([0.26, 0.22, 0.22, 0.18, 0.12])


def _rng(*parts):
    return np.random.default_rng([int(p) & 0xFFFFFFFF for p in parts])


def _hsv(h, s, v):
    return np.array(colorsys.hsv_to_rgb(h % 1.0, float(np.clip(s, 0, 1)), float(np.clip(v, 0, 1))), np.float32)


@dataclass
class Scene:
    """A sampled background and the framing of the person in it."""

    seed: int
    kind: str
    horizon: float             # fraction of the height where the ground / water starts
    colors: list               # palette (RGB triples)
    speed: float               # drift speed (image widths per second, sign = direction)
    flicker: float             # 0..1 light flicker strength
    count: int                 # clouds / lights / waves
    ground: str                # "grass", "sand", "floor", "none"
    person_height: float       # person's nominal height as a fraction of the image height
    person_x: float            # horizontal position of the person, fraction of the width
    floor_y: float             # where the feet stand, fraction of the height
    params: dict = field(default_factory=dict)

    @classmethod
    def sample(cls, seed: int, person: bool = True) -> "Scene":
        r = _rng(seed, 0x5CE)
        kind = str(r.choice(KINDS, p=KIND_WEIGHTS))
        hue = r.uniform(0, 1)
        if kind == "sky":
            palette = r.integers(3)
            colors = [
                [(0.28, 0.52, 0.9), (0.72, 0.86, 0.98)],     # day
                [(0.36, 0.22, 0.52), (0.98, 0.6, 0.4)],      # sunset
                [(0.1, 0.14, 0.32), (0.5, 0.42, 0.6)],       # dusk
            ][palette]
        elif kind == "water":
            colors = [(0.45, 0.66, 0.92), (0.86, 0.92, 0.98), tuple(_hsv(0.55 + r.uniform(-0.06, 0.06), 0.7, 0.55))]
        elif kind == "stage":
            colors = [tuple(_hsv(hue + k * r.uniform(0.1, 0.4), r.uniform(0.5, 1.0), 1.0)) for k in range(6)]
        elif kind == "gradient":
            colors = [tuple(_hsv(hue + k * r.uniform(0.08, 0.3), r.uniform(0.2, 0.8), r.uniform(0.35, 0.95))) for k in range(3)]
        else:
            colors = [(0.05, 0.03, 0.05), tuple(_hsv(0.6 + r.uniform(-0.1, 0.1), 0.5, 0.2))]
        ground = {"sky": str(r.choice(["grass", "sand", "floor"])), "water": "sand", "stage": "floor",
                  "gradient": str(r.choice(["floor", "none"])), "fire": "floor"}[kind]
        return cls(
            seed=int(seed), kind=kind,
            horizon=float(r.uniform(0.5, 0.72) if person else r.uniform(0.35, 0.8)),
            colors=[tuple(float(c) for c in col) for col in colors],
            speed=float(r.choice([-1, 1]) * r.uniform(0.03, 0.12)),
            flicker=float(r.uniform(0.3, 1.0)),
            count=int(r.integers(3, 8)),
            ground=ground if person else ("none" if kind != "sky" or r.random() < 0.4 else str(r.choice(["grass", "sand"]))),
            person_height=float(r.uniform(0.6, 0.8)),
            person_x=float(r.uniform(0.4, 0.6)),
            floor_y=float(r.uniform(0.91, 0.975)),
            params={"phases": [float(x) for x in r.uniform(0, 2 * np.pi, 16)],
                    "pos": [float(x) for x in r.uniform(0, 1, 32)],
                    "size": [float(x) for x in r.uniform(0, 1, 16)]},
        )

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Scene":
        return cls(**d)

    # ---- rendering ----
    def render(self, t: float, height: int, width: int) -> np.ndarray:
        """Background at time t: float32 [H, W, 3] in [0, 1]."""
        H, W = int(height), int(width)
        fn = {"sky": _sky, "water": _water, "stage": _stage, "gradient": _gradient, "fire": _fire}[self.kind]
        img = fn(self, float(t), H, W)
        if self.ground != "none":
            _ground(self, img, float(t))
        return np.clip(img, 0.0, 1.0)


def _vgrad(top, bottom, H, W, y0=0.0, y1=1.0):
    y = np.linspace(0, 1, H, dtype=np.float32)[:, None, None]
    y = np.clip((y - y0) / max(y1 - y0, 1e-6), 0, 1)
    img = np.asarray(top, np.float32) * (1 - y) + np.asarray(bottom, np.float32) * y
    return np.ascontiguousarray(np.broadcast_to(img, (H, W, 3)))


def _low(H, W):
    return max(8, H // 4), max(8, W // 4)


def _sky(sc: Scene, t, H, W):
    top, bottom = sc.colors
    img = _vgrad(top, bottom, H, W, 0.0, sc.horizon)
    h, w = _low(H, W)
    alpha = np.zeros((h, w), np.float32)
    ph, pos, size = sc.params["phases"], sc.params["pos"], sc.params["size"]
    for i in range(sc.count):
        # clouds drift across and wrap around (period: image width + margin)
        speed = sc.speed * (0.6 + 0.8 * size[i])
        x = ((pos[i] + speed * t) % 1.4 - 0.2) * w
        y = (0.08 + 0.7 * sc.horizon * pos[i + 8]) * h
        s = (0.35 + 0.5 * size[i]) * w * 0.35
        for j in range(6):
            dx = (j - 2.5) * s * 0.4
            dy = np.sin(ph[i] + j * 1.7) * s * 0.15 - s * 0.1 * (1 - abs(j - 2.5) / 2.5)
            rad = s * (0.35 + 0.2 * np.cos(ph[i] + j * 2.3))
            cv2.circle(alpha, (int((x + dx) * 4), int((y + dy) * 4)), max(1, int(rad * 4)), 1.0, -1,
                       lineType=cv2.LINE_AA, shift=2)
    alpha = cv2.GaussianBlur(alpha, (0, 0), max(1.0, w / 22))
    alpha = np.clip(alpha * 1.3, 0, 1)
    alpha = cv2.resize(alpha, (W, H), interpolation=cv2.INTER_LINEAR)[..., None]
    shade = np.linspace(1.0, 0.82, H, dtype=np.float32)[:, None, None]
    return img * (1 - alpha * 0.9) + alpha * 0.9 * np.array([0.98, 0.97, 0.96], np.float32) * shade


def _water(sc: Scene, t, H, W):
    sky_top, sky_bottom, water = sc.colors
    img = _vgrad(sky_top, sky_bottom, H, W, 0.0, sc.horizon)
    hz = int(sc.horizon * H)
    if hz >= H:
        return img
    ph = sc.params["phases"]
    y = np.arange(hz, H, dtype=np.float32)[:, None]
    x = np.arange(W, dtype=np.float32)[None, :]
    depth = (y - hz + 1) / max(H - hz, 1)          # 0 at the horizon, 1 at the bottom
    k = 1.0 / (0.06 + depth)                        # waves get finer towards the horizon
    wave = (np.sin(x / W * 9.0 + k * 2.2 - t * 2.1 * (1 + sc.speed * 4) + ph[0])
            + 0.6 * np.sin(x / W * 23.0 - k * 3.1 + t * 1.6 + ph[1])
            + 0.4 * np.sin(x / W * 5.0 + k * 5.3 - t * 3.0 + ph[2]))
    base = np.asarray(water, np.float32) * (0.65 + 0.35 * depth[..., None]) + np.asarray(sky_bottom) * 0.25 * (1 - depth[..., None])
    col = base * (1.0 + 0.07 * wave[..., None])
    # moving highlights: bright glints on the wave crests, a sun path down the middle
    sun = np.exp(-((x / W - sc.params["pos"][0] * 0.6 - 0.2) ** 2) / 0.02)
    glint = np.clip((wave - 1.25) * 2.5, 0, 1) * (0.35 + 0.65 * sun)
    col = col + glint[..., None] * (np.array([1.0, 0.98, 0.9], np.float32) - col) * 0.85
    img[hz:] = col
    return img


def _stage(sc: Scene, t, H, W):
    base = np.asarray(sc.colors[0], np.float32) * 0.12
    img = _vgrad(base * 0.6, base * 1.4, H, W)
    h, w = _low(H, W)
    yy = np.linspace(0, 1, h, dtype=np.float32)[:, None]
    xx = np.linspace(0, 1, w, dtype=np.float32)[None, :]
    acc = np.zeros((h, w, 3), np.float32)
    ph, pos, size = sc.params["phases"], sc.params["pos"], sc.params["size"]
    for i in range(sc.count):
        col = np.asarray(sc.colors[i % len(sc.colors)], np.float32)
        # lights sweep slowly and flicker (fast beats + random-looking stutter)
        cx = pos[i] + 0.15 * np.sin(t * 0.7 * (1 + size[i]) + ph[i])
        cy = 0.08 + 0.45 * pos[i + 8]
        r = 0.08 + 0.15 * size[i]
        fl = 1.0 - sc.flicker * 0.5 * (1 + np.sin(t * (6 + 9 * size[i]) + ph[i] * 3)) * (0.5 + 0.5 * np.sin(t * 2.3 + i))
        d2 = ((xx - cx) * (W / H)) ** 2 + (yy - cy) ** 2
        acc += (np.exp(-d2 / (2 * r * r)) * fl)[..., None] * col
        # a beam from the light downwards
        beam = np.exp(-((xx - cx - (yy - cy) * 0.3 * np.sin(ph[i + 1])) ** 2) / (2 * (0.03 + 0.05 * yy) ** 2)) * (yy > cy)
        acc += (beam * 0.18 * fl)[..., None] * col
    acc = cv2.resize(acc, (W, H), interpolation=cv2.INTER_LINEAR)
    return img + (1.0 - np.exp(-acc * 0.9)) * 0.95  # soft tone curve: overlapping lights never clip flat


def _gradient(sc: Scene, t, H, W):
    c = [np.asarray(x, np.float32) for x in sc.colors]
    ang = sc.params["phases"][0] + t * sc.speed * 4.0
    yy = np.linspace(-0.5, 0.5, H, dtype=np.float32)[:, None]
    xx = np.linspace(-0.5, 0.5, W, dtype=np.float32)[None, :] * (W / H)
    s = (xx * np.cos(ang) + yy * np.sin(ang)) + 0.5
    s2 = 0.5 + 0.5 * np.sin(2.5 * (xx * np.sin(ang * 0.7) - yy * np.cos(ang * 0.7)) + t * 0.9 + sc.params["phases"][1])
    img = c[0] * (1 - s[..., None]) + c[1] * s[..., None]
    img = img * (1 - 0.35 * s2[..., None]) + c[2] * 0.35 * s2[..., None]
    # soft bokeh discs drifting upwards
    h, w = _low(H, W)
    bok = np.zeros((h, w), np.float32)
    pos, size = sc.params["pos"], sc.params["size"]
    for i in range(sc.count + 3):
        x = pos[i] * w
        y = ((pos[i + 8] - t * abs(sc.speed) * (0.5 + size[i])) % 1.2 - 0.1) * h
        cv2.circle(bok, (int(x), int(y)), max(1, int((0.03 + 0.06 * size[i]) * w * 2)), 0.25 + 0.25 * size[i], -1, cv2.LINE_AA)
    bok = cv2.GaussianBlur(bok, (0, 0), 1.0)
    bok = cv2.resize(bok, (W, H), interpolation=cv2.INTER_LINEAR)[..., None]
    return img + bok * (1 - img) * 0.8


def _noise_field(seed, h, w, cells=(6, 5)):
    """Smooth value noise [h, w] that tiles (wraps) in both directions."""
    r = _rng(seed, 0xF1E)
    gy, gx = cells
    g = r.random((gy, gx)).astype(np.float32)
    g = np.pad(g, 2, mode="wrap")
    big = cv2.resize(g, ((gx + 4) * w // gx, (gy + 4) * h // gy), interpolation=cv2.INTER_CUBIC)
    oy, ox = 2 * h // gy, 2 * w // gx
    return np.ascontiguousarray(big[oy:oy + h, ox:ox + w])


def _fire(sc: Scene, t, H, W):
    """Flames: two octaves of tiling noise, taller than wide, rising and swaying, shaped by a
    heat profile that fades upwards, through a black-red-orange-yellow-white ramp."""
    img = _vgrad(sc.colors[0], sc.colors[1], H, W)
    h, w = _low(H, W)
    n1 = _noise_field(sc.seed, 2 * h, w, (4, 5))
    n2 = _noise_field(sc.seed + 1, h, w, (4, 9))
    ys = np.arange(h, dtype=np.float32)[:, None]
    xs = np.arange(w, dtype=np.float32)[None, :]
    rise = t * (0.45 + 2.0 * abs(sc.speed)) * h
    sway = 0.06 * w * np.sin(t * 1.3 + ys / h * 4.0 + sc.params["phases"][0])
    a = cv2.remap(n1, np.broadcast_to((xs + sway) % w, (h, w)).astype(np.float32),
                  np.broadcast_to((ys * 0.8 + rise) % (2 * h), (h, w)).astype(np.float32), cv2.INTER_LINEAR,
                  borderMode=cv2.BORDER_WRAP)
    b = cv2.remap(n2, np.broadcast_to((xs - sway * 0.5) % w, (h, w)).astype(np.float32),
                  np.broadcast_to((ys + rise * 1.6) % h, (h, w)).astype(np.float32), cv2.INTER_LINEAR,
                  borderMode=cv2.BORDER_WRAP)
    top = 1.0 - (0.3 + 0.55 * sc.horizon)          # where the flames fade out (fraction of height)
    profile = np.clip((ys / h - top) / (1.0 - top), 0, 1) ** 0.8
    heat = profile * 1.25 + (0.65 * a + 0.35 * b - 0.5) * 1.4 - 0.25
    heat *= 1.0 + 0.08 * sc.flicker * np.sin(t * 9.0 + sc.params["phases"][1])
    heat = cv2.resize(np.clip(heat, 0, 1.2).astype(np.float32), (W, H), interpolation=cv2.INTER_LINEAR)
    fire = np.stack([np.clip(heat * 2.4, 0, 1), np.clip(heat * 2.0 - 0.55, 0, 1), np.clip(heat * 2.6 - 1.9, 0, 1)], -1)
    glow = np.clip(heat * 1.5, 0, 1)[..., None]
    return img * (1 - glow) + fire * glow + np.array([0.25, 0.08, 0.0], np.float32) * np.clip(heat, 0, 1)[..., None] * 0.3


def _ground(sc: Scene, img, t):
    H, W = img.shape[:2]
    y0 = int(sc.horizon * H)
    if sc.kind == "water":  # a beach in front of the water, where the person stands
        y0 = int((sc.floor_y - 0.06 - 0.04 * sc.params["size"][0]) * H)
    if y0 >= H:
        return
    y = np.linspace(0, 1, H - y0, dtype=np.float32)[:, None]
    x = np.linspace(0, 1, W, dtype=np.float32)[None, :]
    ph = sc.params["phases"]
    if sc.ground == "grass":
        c0, c1 = np.array([0.32, 0.55, 0.22], np.float32), np.array([0.18, 0.4, 0.12], np.float32)
        tex = 0.5 + 0.5 * np.sin(x * 140 + np.sin(y * 50 + ph[3]) * 2) * np.sin(y * 90 + ph[4])
    elif sc.ground == "sand":
        c0, c1 = np.array([0.86, 0.76, 0.56], np.float32), np.array([0.72, 0.6, 0.42], np.float32)
        tex = 0.5 + 0.5 * np.sin(x * 30 + y * 60 + ph[5]) * np.sin(y * 200)
    else:  # floor boards in perspective, lit by the scene
        base = np.mean([np.asarray(c) for c in sc.colors], 0)
        c0 = np.clip(0.35 + 0.4 * base, 0, 1).astype(np.float32) * (0.5 if sc.kind in ("stage", "fire") else 1.0)
        c1 = c0 * 0.75
        xp = (x - 0.5) / (0.3 + 0.7 * y)
        tex = (np.sin(xp * 40 + ph[6]) > 0.85).astype(np.float32) * 0.6 + 0.2 * np.sin(y * 3)
    col = c0 * (1 - tex[..., None] * 0.5) + c1 * tex[..., None] * 0.5
    col = col * (0.8 + 0.2 * y[..., None])
    if sc.kind == "stage":  # the lights' colour reflected on the floor, flickering with them
        refl = img[max(0, 2 * y0 - H):y0][::-1]
        if len(refl) == H - y0:
            col = col + 0.25 * refl
    img[y0:] = col
