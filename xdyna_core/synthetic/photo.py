"""A photographic look for synthetic clips (``render_clip(..., style="photo")``, issue #17).

The default style draws flat-shaded people over graphic, animated backgrounds; a model trained
only on it never sees what makes a photograph a photograph. A ``PhotoLook`` adds, per clip:

- light: one light direction for the whole person (Lambert shading of every limb, the torso and
  the head, with a soft sheen) and its colour; a soft shadow cast on the floor away from the light;
- backdrops that look photographed: a studio backdrop, a room (textured wall, window light,
  frames, a floor in perspective), outdoors (sky, a blurred tree line, grass or pavement), a
  street (buildings with windows), or the default animated scene; depth-of-field blur;
- camera framing: full body, three-quarter, half body (legs out of frame), small and distant,
  off-centre; the person's size follows;
- the camera: white balance, contrast and gamma, vignetting and sensor grain.

Ground truth is computed exactly as in the default style (same keypoints for the same
projection, masks from the drawn coverage), so a photo-style clip is as well labelled.
Everything is a pure function of (look, time, size): the backdrop is static and cached, the
grain is seeded by the look and the frame's time.
"""

from __future__ import annotations

import colorsys
from dataclasses import asdict, dataclass, field

import cv2
import numpy as np

from .body import Projection
from .scene import Scene, _noise_field

STYLES = ("default", "photo")
BACKDROPS = ("scene", "studio", "room", "outdoor", "street")
BACKDROP_WEIGHTS = np.array([0.2, 0.2, 0.25, 0.2, 0.15])
FRAMINGS = ("full", "three_quarter", "half", "distant")
FRAMING_WEIGHTS = np.array([0.45, 0.15, 0.25, 0.15])


def _rng(*parts):
    return np.random.default_rng([int(p) & 0xFFFFFFFF for p in parts])


def _hsv(h, s, v):
    return tuple(float(c) for c in colorsys.hsv_to_rgb(h % 1.0, float(np.clip(s, 0, 1)), float(np.clip(v, 0, 1))))


@dataclass(frozen=True)
class Light:
    """What ``raster.shade_lit`` needs: unit direction towards the light (x right, y down, z
    towards the camera), the ambient share and a specular sheen."""

    direction: tuple
    ambient: float
    sheen: float


@dataclass
class PhotoLook:
    """The sampled photographic look of one clip (see the module docstring)."""

    seed: int
    backdrop: str
    framing: str
    zoom: float               # the person's nominal height as a fraction of the frame height
    person_x: float           # where the person stands, fraction of the width
    floor_y: float            # where the feet are, fraction of the height (> 1: below the frame)
    horizon: float            # where the floor / ground meets the wall / sky, fraction of the height
    light_dir: tuple          # towards the light: x right, y down, z towards the camera (unit)
    ambient: float
    sheen: float
    key_color: tuple          # RGB gain of the light on the person
    shadow: float             # darkness of the cast shadow (0 = none)
    shadow_len: float         # its length as a fraction of the person's height
    bg_blur: float            # depth of field: background blur sigma, fraction of the height
    vignette: float
    grain: float
    contrast: float
    gamma: float
    white_balance: tuple
    colors: list              # backdrop palette
    params: dict = field(default_factory=dict)

    @classmethod
    def sample(cls, seed: int) -> "PhotoLook":
        r = _rng(seed, 0xF070)
        backdrop = str(r.choice(BACKDROPS, p=BACKDROP_WEIGHTS))
        framing = str(r.choice(FRAMINGS, p=FRAMING_WEIGHTS))
        if framing == "full":
            zoom, px, floor = r.uniform(0.6, 0.88), r.uniform(0.3, 0.7), r.uniform(0.88, 0.98)
        elif framing == "distant":
            zoom, px, floor = r.uniform(0.28, 0.48), r.uniform(0.2, 0.8), r.uniform(0.65, 0.92)
        else:  # the head near the top, the legs (partly) out of frame
            zoom = r.uniform(0.95, 1.25) if framing == "three_quarter" else r.uniform(1.35, 1.9)
            px = r.uniform(0.35, 0.65)
            floor = r.uniform(0.05, 0.13) + zoom * 1.1
        horizon = min(floor, 0.98) - r.uniform(0.12, 0.35) * min(zoom, 1.0)
        az = r.uniform(-np.pi, 0.0) if r.random() < 0.85 else r.uniform(0.0, np.pi)  # mostly from above
        el = r.uniform(0.45, 1.2)  # angle off the camera axis
        light = (np.cos(az) * np.sin(el), np.sin(az) * np.sin(el), np.cos(el))
        temp = r.uniform(-1, 1)
        hue = r.uniform(0, 1)
        colors = [_hsv(hue, r.uniform(0.03, 0.35), r.uniform(0.45, 0.92)),         # wall / backdrop
                  _hsv(r.uniform(0.05, 0.11), r.uniform(0.3, 0.65), r.uniform(0.3, 0.7)),  # wood / earth
                  _hsv(hue + r.uniform(0.3, 0.7), r.uniform(0.1, 0.6), r.uniform(0.2, 0.8)),  # accent
                  _hsv(r.uniform(0.55, 0.63), r.uniform(0.2, 0.6), r.uniform(0.7, 0.98)),  # sky
                  _hsv(r.uniform(0.2, 0.38), r.uniform(0.35, 0.75), r.uniform(0.2, 0.55))]  # foliage
        blur = r.uniform(0.0, 0.008) if r.random() < 0.6 else r.uniform(0.008, 0.025)
        return cls(
            seed=int(seed), backdrop=backdrop, framing=framing, zoom=float(zoom), person_x=float(px),
            floor_y=float(floor), horizon=float(horizon), light_dir=tuple(float(x) for x in light),
            ambient=float(r.uniform(0.3, 0.6)), sheen=float(r.uniform(0.0, 0.12)),
            key_color=(float(1 + 0.07 * temp), 1.0, float(1 - 0.09 * temp)),
            shadow=float(r.uniform(0.2, 0.55)), shadow_len=float(r.uniform(0.2, 0.6)),
            bg_blur=float(blur), vignette=float(r.uniform(0.0, 0.45)), grain=float(r.uniform(0.004, 0.03)),
            contrast=float(r.uniform(0.85, 1.15)), gamma=float(r.uniform(0.85, 1.15)),
            white_balance=(float(1 + r.uniform(-0.06, 0.06)), 1.0, float(1 + r.uniform(-0.06, 0.06))),
            colors=[tuple(c) for c in colors],
            params={"u": [float(x) for x in r.uniform(0, 1, 24)], "ground": str(r.choice(["grass", "pavement", "dirt"])),
                    "floor": str(r.choice(["planks", "tiles", "carpet"]))},
        )

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "PhotoLook":
        d = dict(d)
        for k in ("light_dir", "key_color", "white_balance"):
            d[k] = tuple(d[k])
        d["colors"] = [tuple(c) for c in d["colors"]]
        return cls(**d)

    # ---- what the renderer asks ---------------------------------------------------------
    def light(self) -> Light:
        return Light(self.light_dir, self.ambient, self.sheen)

    def projection(self, height: int, width: int) -> Projection:
        scale = self.zoom * height
        if self.framing in ("full", "distant"):
            scale = min(scale, 1.6 * width)  # narrow frames: keep most of the arms in view
        return Projection(cx=self.person_x * width, floor_y=self.floor_y * height, scale=scale)

    def background(self, scene: Scene, t: float, height: int, width: int) -> np.ndarray:
        """Float32 [H, W, 3] background at time t (a fresh array: the canvas paints into it)."""
        if self.backdrop == "scene":
            return _blur(scene.render(t, height, width).astype(np.float32), self.bg_blur * height)
        return _static_backdrop(self, height, width).copy()

    def light_person(self, canvas, proj: Projection) -> None:
        """After the person is drawn: the light's colour on them and their soft cast shadow."""
        person = canvas.person
        canvas.image *= 1.0 + (np.asarray(self.key_color, np.float32) - 1.0) * person[..., None]
        if self.shadow <= 0 or proj.floor_y >= canvas.height or not person.any():
            return
        # the silhouette flattened onto the floor about the feet line, leaning away from the light
        floor = float(proj.floor_y)
        lx = self.light_dir[0]
        squash = self.shadow_len
        shear = -lx * 0.8
        M = np.float32([[1.0, -shear, shear * floor], [0.0, -squash, floor * (1.0 + squash)]])
        h, w = person.shape
        shadow = cv2.warpAffine(person, M, (w, h), flags=cv2.INTER_LINEAR, borderValue=0.0)
        shadow = _blur(shadow, 0.012 * proj.scale + 0.6)
        canvas.image *= (1.0 - self.shadow * shadow * (1.0 - person))[..., None]

    def finish(self, image: np.ndarray, t: float) -> np.ndarray:
        """The camera: white balance, contrast, gamma, vignette and grain (float32 in, out)."""
        H, W = image.shape[:2]
        img = image * np.asarray(self.white_balance, np.float32)
        img = (img - 0.5) * self.contrast + 0.5
        img = np.clip(img, 0.0, 1.0) ** np.float32(self.gamma)
        if self.vignette > 0:
            img *= _vignette(H, W, self.vignette)[..., None]
        if self.grain > 0:
            g = _rng(self.seed, 0x6EA1, int(round(float(t) * 1000))).standard_normal((H, W), dtype=np.float32)
            img += (g * self.grain)[..., None]
        return img


# ---- helpers ---------------------------------------------------------------------------------

def _blur(img: np.ndarray, sigma: float) -> np.ndarray:
    if sigma < 0.3:
        return img
    return cv2.GaussianBlur(img, (0, 0), float(sigma))


_VIGNETTES: dict = {}


def _vignette(H: int, W: int, strength: float) -> np.ndarray:
    key = (H, W)
    if key not in _VIGNETTES:
        y = np.linspace(-1, 1, H, dtype=np.float32)[:, None]
        x = np.linspace(-1, 1, W, dtype=np.float32)[None, :]
        _VIGNETTES[key] = (x * x + y * y) / 2.0
        if len(_VIGNETTES) > 16:
            _VIGNETTES.pop(next(iter(_VIGNETTES)))
    return 1.0 - strength * _VIGNETTES[key]


def _fbm(seed: int, H: int, W: int, cells=(3, 3), octaves: int = 4) -> np.ndarray:
    """Fractal value noise [H, W] in about [0, 1]: octaves of smooth noise, each twice as fine."""
    out = np.zeros((H, W), np.float32)
    amp, total = 1.0, 0.0
    for o in range(octaves):
        gy, gx = cells[0] << o, cells[1] << o
        if gy > H or gx > W:
            break
        out += amp * _noise_field(seed + 101 * o, H, W, (gy, gx))
        total += amp
        amp *= 0.5
    return out / max(total, 1e-6)


_BACKDROPS: dict = {}


def _static_backdrop(look: PhotoLook, H: int, W: int) -> np.ndarray:
    """The look's backdrop at H x W, depth-of-field blurred; cached (pure function of look, size)."""
    key = (look.seed, look.backdrop, H, W, look.horizon, look.bg_blur, tuple(look.colors))
    img = _BACKDROPS.get(key)
    if img is None:
        fn = {"studio": _studio, "room": _room, "outdoor": _outdoor, "street": _street}[look.backdrop]
        img = _blur(np.clip(fn(look, H, W), 0.0, 1.0).astype(np.float32), look.bg_blur * H)
        while len(_BACKDROPS) >= 8:
            _BACKDROPS.pop(next(iter(_BACKDROPS)))
        _BACKDROPS[key] = img
    return img


def _grid(H, W):
    return (np.arange(H, dtype=np.float32)[:, None] + 0.5) / H, (np.arange(W, dtype=np.float32)[None, :] + 0.5) / W


def _studio(lk: PhotoLook, H, W):
    """A seamless paper / canvas backdrop: a soft light spot behind the person, mottled texture,
    the floor sweep darker towards the bottom."""
    y, x = _grid(H, W)
    u = lk.params["u"]
    base = np.asarray(lk.colors[0], np.float32)
    d2 = ((x - lk.person_x) * W / H) ** 2 + (y - 0.35 - 0.2 * u[0]) ** 2
    spot = np.exp(-d2 / (2 * (0.25 + 0.25 * u[1]) ** 2))
    mottle = _fbm(lk.seed, H, W, (2, 2), 4) - 0.5
    img = base * (0.55 + 0.55 * spot + 0.18 * mottle)[..., None]
    sweep = np.clip((y - lk.horizon) / 0.25, 0, 1)
    return img * (1.0 - 0.18 * sweep)[..., None]


def _room(lk: PhotoLook, H, W):
    """A room: a plaster wall lit by a window, one or two picture frames, a skirting board and a
    floor (planks, tiles or carpet) in perspective."""
    y, x = _grid(H, W)
    u = lk.params["u"]
    wall = np.asarray(lk.colors[0], np.float32)
    plaster = _fbm(lk.seed, H, W, (3, 3), 5) - 0.5
    side = 1.0 if u[2] < 0.5 else -1.0
    window = 0.75 + 0.45 * np.clip(0.5 + side * (x - 0.5) * (0.8 + u[3]), 0, 1) ** 2
    img = wall * ((window + 0.12 * plaster) * (0.9 + 0.1 * y))[..., None]
    hz = lk.horizon
    for i in range(1 + int(u[4] * 2.2)):  # picture frames on the wall
        cx, cy = u[5 + i], hz * (0.3 + 0.3 * u[8 + i])
        hw, hh = 0.08 + 0.12 * u[11 + i], 0.05 + 0.08 * u[14 + i]
        inside = (np.abs(x - cx) < hw) & (np.abs(y - cy) < hh)
        inner = (np.abs(x - cx) < hw * 0.85) & (np.abs(y - cy) < hh * 0.8)
        pic = np.asarray(lk.colors[2], np.float32) * (0.7 + 0.6 * _fbm(lk.seed + 7 + i, H, W, (4, 4), 3))[..., None]
        img = np.where(inside[..., None], np.asarray(lk.colors[1], np.float32) * 0.6, img)
        img = np.where(inner[..., None], pic, img)
    if hz < 1.0:
        z = np.clip((y - hz) / max(1.0 - hz, 1e-3), 0, 1)  # 0 at the horizon, 1 at the bottom
        floor_on = (y >= hz)[..., None]
        xp = (x - lk.person_x) / (0.15 + z)
        wood = np.asarray(lk.colors[1], np.float32)
        kind = lk.params["floor"]
        if kind == "planks":
            plank = np.floor(xp * 6.0)
            jitter = 0.85 + 0.3 * ((np.sin(plank * 12.9898 + lk.seed % 1000) * 43758.5453) % 1.0)
            seam = np.abs(((xp * 6.0) % 1.0) - 0.5) > 0.47
            grain = 0.08 * np.sin(xp * 90.0 + 3.0 * _fbm(lk.seed + 3, H, W, (2, 6), 3))
            col = wood * (jitter * (1.0 + grain) * (1.0 - 0.35 * seam))[..., None]
        elif kind == "tiles":
            zz = 1.0 / (0.15 + z)
            line = (np.abs(((xp * 4.0) % 1.0) - 0.5) > 0.46) | (np.abs(((zz * 1.2) % 1.0) - 0.5) > 0.46)
            tile = np.asarray(lk.colors[0], np.float32) * 0.95 + 0.05
            col = tile * (1.0 - 0.25 * line)[..., None]
        else:
            col = np.asarray(lk.colors[2], np.float32) * (0.55 + 0.15 * _fbm(lk.seed + 5, H, W, (8, 8), 3))[..., None]
        col = col * (0.75 + 0.35 * z)[..., None]
        board = (y >= hz) & (y < hz + 0.012 + 0.01 * u[17])
        col = np.where(board[..., None], wall * 0.8 + 0.15, col)
        img = np.where(floor_on, col, img)
    return img


def _outdoor(lk: PhotoLook, H, W):
    """Outdoors: sky, a blurred line of trees and bushes, grass / pavement / dirt in perspective."""
    y, x = _grid(H, W)
    u = lk.params["u"]
    sky = np.asarray(lk.colors[3], np.float32)
    img = sky * (0.85 + 0.3 * y / max(lk.horizon, 0.1))[..., None]
    clouds = np.clip((_fbm(lk.seed + 11, H, W, (2, 3), 4) - 0.5) * 3.0, 0, 1)
    img = img * (1 - 0.7 * clouds[..., None]) + 0.95 * 0.7 * clouds[..., None]
    leaves = _fbm(lk.seed + 13, H, W, (3, 4), 5)
    top = lk.horizon - (0.15 + 0.35 * u[0]) + 0.12 * (leaves - 0.5)
    tree = (y > top) & (y < lk.horizon + 0.02)
    foliage = np.asarray(lk.colors[4], np.float32) * (0.55 + 0.9 * leaves)[..., None]
    img = np.where(tree[..., None], foliage, img)
    if lk.horizon < 1.0:
        z = np.clip((y - lk.horizon) / max(1.0 - lk.horizon, 1e-3), 0, 1)
        tex = _fbm(lk.seed + 17, H, W, (6, 6), 4)
        base = {"grass": (0.3, 0.45, 0.2), "pavement": (0.5, 0.5, 0.5), "dirt": (0.5, 0.4, 0.3)}[lk.params["ground"]]
        col = np.asarray(base, np.float32) * (0.7 + 0.5 * tex * (0.5 + z))[..., None] * (0.85 + 0.25 * z)[..., None]
        img = np.where((y >= lk.horizon)[..., None], col, img)
    return img


def _street(lk: PhotoLook, H, W):
    """A street: sky, a row of buildings with windows, a pavement and the road."""
    y, x = _grid(H, W)
    u = lk.params["u"]
    img = np.asarray(lk.colors[3], np.float32) * (0.9 + 0.2 * y)[..., None]
    edges = np.cumsum([0.0] + [0.15 + 0.3 * u[i] for i in range(6)])
    edges = edges / edges[-1] * 1.2 - 0.1
    wall_tex = _fbm(lk.seed + 19, H, W, (4, 4), 4)
    for i in range(6):
        top = lk.horizon - (0.25 + 0.55 * u[6 + i]) * max(lk.horizon, 0.2)
        inside = (x >= edges[i]) & (x < edges[i + 1]) & (y >= top) & (y < lk.horizon)
        col = np.asarray(_hsv(0.05 + 0.1 * u[12 + i], 0.1 + 0.4 * u[18 + i], 0.35 + 0.5 * u[i + 1]), np.float32)
        fx = (x - edges[i]) * (14 + 10 * u[i])
        fy = (y - top) * (18 + 8 * u[i])
        win = ((fx % 1.0) > 0.35) & ((fy % 1.0) > 0.4)
        shade = (0.85 + 0.3 * wall_tex) * np.where(win, 0.45 + 0.5 * u[(i + 3) % 24], 1.0)
        img = np.where(inside[..., None], col * shade[..., None], img)
    if lk.horizon < 1.0:
        z = np.clip((y - lk.horizon) / max(1.0 - lk.horizon, 1e-3), 0, 1)
        tex = _fbm(lk.seed + 23, H, W, (8, 8), 3)
        kerb = z < 0.35
        col = np.where(kerb, 0.55, 0.3)[..., None] * np.ones(3, np.float32) * (0.8 + 0.4 * tex)[..., None]
        img = np.where((y >= lk.horizon)[..., None], col, img)
    return img
