"""Framing: fit a photo or a driving clip to the generation size around the person.

The model generates H×W frames (default 896×512, portrait; any multiple of 64). Inputs come in
any size and aspect, so each one is mapped to the generation canvas by one uniform scale and a
translation (never squashed):

    x' = scale * x + dx,    y' = scale * y + dy        (continuous pixel coordinates)

`fit_framing` chooses that map from the person's box:

1. The box of the person's confident keypoints is widened by `margin` (keypoints stop at the
   eyes and ankles; the head top, hair and feet are outside them).
2. A window of the canvas aspect is chosen around it: as large as the image allows (the official
   centre crop, `imread_resize_crop`), but zoomed in when the person would fill less than `fill`
   of its height (a small dancer in a landscape video; at most `max_zoom` times), and zoomed out
   beyond the image when the person does not fit (arms spread in a portrait photo) — those parts
   are padded, but padding is limited to `max_pad` of the canvas along each axis: a wide
   half-body portrait loses the outer edges of its shoulders rather than getting huge bands.
3. Along an axis where the window fits inside the image it is centred on the person and then
   shifted back inside the image (no padding where the photo has pixels); along an axis where the
   window is larger than the image, the image is centred (letterbox).

No person (`bbox=None`) gives the official behaviour: centre crop to the canvas aspect, resized.
One clip gets one framing (from the union of the person's boxes over the clip), so the framing
never adds camera motion. Padding: black for driving frames; for the reference photo
`fill="extend"`, the photo's edge pixels stretched outwards and blurred (a soft continuation of
its background, no hard band the model would copy).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import cv2
import numpy as np

from ..errors import InputError
from ..sizes import parse_size

DEFAULT_SIZE = (896, 512)  # (height, width) of the official launchers
# Margins around the keypoint box, as fractions of its height: left, top, right, bottom.
DEFAULT_MARGIN = (0.12, 0.22, 0.12, 0.08)
DEFAULT_FILL = 0.85  # zoom in until the (widened) person box is this fraction of the canvas height
DEFAULT_MAX_ZOOM = 2.0  # ... but at most this much closer than the full-image crop (upscaling blurs)
DEFAULT_MAX_PAD = 0.25  # at most this fraction of the canvas (per axis) may be padding


def check_size(size) -> Tuple[int, int]:
    """(height, width) of the generation canvas from a (height, width) pair or a "WIDTHxHEIGHT"
    string (`xdyna_core.sizes`: one convention, one rule: multiples of 64)."""
    return parse_size(size)


@dataclass(frozen=True)
class Framing:
    """Uniform scale + translation from a source image (src_height × src_width) to the canvas
    (height × width): x' = scale·x + dx, y' = scale·y + dy."""

    scale: float
    dx: float
    dy: float
    height: int
    width: int
    src_height: int
    src_width: int

    @property
    def matrix(self) -> np.ndarray:
        """2×3 affine matrix (continuous coordinates)."""
        return np.array([[self.scale, 0.0, self.dx], [0.0, self.scale, self.dy]], np.float64)

    @property
    def source_window(self) -> Tuple[float, float, float, float]:
        """(x0, y0, x1, y1) of the canvas in source coordinates (may extend beyond the image)."""
        s = self.scale
        return (-self.dx / s, -self.dy / s, (self.width - self.dx) / s, (self.height - self.dy) / s)

    def apply_to_points(self, xy: np.ndarray) -> np.ndarray:
        xy = np.asarray(xy, np.float64)
        return xy * self.scale + np.array([self.dx, self.dy])

    def apply_to_keypoints(self, kp):
        """Keypoints (preprocess.pose) mapped to the canvas; None stays None."""
        if kp is None:
            return None
        return kp.transformed(self.scale, self.dx, self.dy)

    def apply_to_image(self, image: np.ndarray, fill="black") -> np.ndarray:
        """The image on the canvas: uint8 [height, width, C].

        fill: "black", "extend" (the image's edge pixels stretched outwards and blurred: a soft
        continuation of a photo's background), "border" (their median colour) or an RGB tuple.
        Downscaling uses an area filter (no aliasing).
        """

        img = np.asarray(image)
        if img.shape[:2] != (self.src_height, self.src_width):
            raise InputError(f"this framing is for {self.src_width}×{self.src_height} images, got {img.shape[1]}×{img.shape[0]}")
        channels = 1 if img.ndim == 2 else img.shape[2]
        if isinstance(fill, str) and fill == "extend":
            return self._extend(img)
        if isinstance(fill, str):
            if fill == "black":
                value = (0,) * channels
            elif fill == "border":
                value = tuple(int(v) for v in border_colour(img).reshape(-1))
            else:
                raise ValueError(f"fill must be 'black', 'border' or a colour, got {fill!r}")
        else:
            value = tuple(int(v) for v in np.broadcast_to(np.asarray(fill), (channels,)))
        s, dx, dy = self.scale, self.dx, self.dy
        src = img
        if s < 0.75:
            # Area-downscale first (warpAffine has no anti-aliasing), then warp with the remainder.
            nw, nh = max(1, round(self.src_width * s)), max(1, round(self.src_height * s))
            src = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA)
            if src.ndim == 2 and channels == 1 and img.ndim == 3:
                src = src[..., None]
            sx, sy = s * self.src_width / nw, s * self.src_height / nh
        else:
            sx = sy = s
        # Continuous coords x' = s x + d  <=>  pixel centres: x'_c = s x_c + d + (s - 1)/2.
        m = np.array([[sx, 0.0, dx + 0.5 * sx - 0.5], [0.0, sy, dy + 0.5 * sy - 0.5]], np.float64)
        # Bilinear, like the official cv2.resize of the reference image.
        out = _warp(src, m, (self.width, self.height), cv2.INTER_LINEAR, value)
        if out.ndim == 2 and img.ndim == 3:
            out = out[..., None]
        return out

    def _extend(self, img: np.ndarray) -> np.ndarray:
        """Padding as blurred stretched edges: warp with replicated borders, then blend a strongly
        blurred copy in where the canvas lies outside the image (feathered over a few pixels)."""

        inside = self.apply_to_image(np.full(img.shape[:2], 255, np.uint8), fill="black").astype(np.float32) / 255.0
        sharp = self._warp_replicate(img)
        if inside.min() >= 0.999:
            return sharp
        # A wide blur, computed at 1/8 resolution (same look, a hundredth of the work).
        small = cv2.resize(sharp, (max(1, self.width // 8), max(1, self.height // 8)), interpolation=cv2.INTER_AREA)
        small = cv2.GaussianBlur(small, (0, 0), 0.005 * max(self.height, self.width))
        blurred = cv2.resize(small, (self.width, self.height), interpolation=cv2.INTER_LINEAR)
        feather = cv2.GaussianBlur(inside, (0, 0), 3.0)
        w = (np.minimum(inside, feather)[..., None] if sharp.ndim == 3 else np.minimum(inside, feather))
        return (sharp.astype(np.float32) * w + blurred.astype(np.float32) * (1.0 - w) + 0.5).astype(np.uint8)

    def _warp_replicate(self, img: np.ndarray) -> np.ndarray:
        s = self.scale
        src, sx, sy = img, s, s
        if s < 0.75:
            nw, nh = max(1, round(self.src_width * s)), max(1, round(self.src_height * s))
            src = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA)
            sx, sy = s * self.src_width / nw, s * self.src_height / nh
        m = np.array([[sx, 0.0, self.dx + 0.5 * sx - 0.5], [0.0, sy, self.dy + 0.5 * sy - 0.5]], np.float64)
        return cv2.warpAffine(src, m, (self.width, self.height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)

    def inverse_points(self, xy: np.ndarray) -> np.ndarray:
        xy = np.asarray(xy, np.float64)
        return (xy - np.array([self.dx, self.dy])) / self.scale

    def to_dict(self) -> dict:
        return {k: (float(v) if isinstance(v, float) else int(v)) for k, v in self.__dict__.items()}

    @classmethod
    def from_dict(cls, d: dict) -> "Framing":
        return cls(float(d["scale"]), float(d["dx"]), float(d["dy"]), int(d["height"]), int(d["width"]),
                   int(d["src_height"]), int(d["src_width"]))


def _warp(src, m, dsize, interp, value):
    channels = 1 if src.ndim == 2 else src.shape[2]
    if channels <= 4:
        return cv2.warpAffine(src, m, dsize, flags=interp, borderMode=cv2.BORDER_CONSTANT, borderValue=tuple(value) + (0,) * (4 - len(value)))
    # cv2 handles at most 4 channels per border value: warp in groups of 3.
    parts = [_warp(np.ascontiguousarray(src[..., i:i + 3]), m, dsize, interp, value[i:i + 3]) for i in range(0, channels, 3)]
    return np.concatenate([p if p.ndim == 3 else p[..., None] for p in parts], axis=2)


def border_colour(image: np.ndarray) -> np.ndarray:
    """Median colour of the outermost pixel rows and columns."""
    img = np.asarray(image)
    if img.ndim == 2:
        img = img[..., None]
    edge = np.concatenate([img[0], img[-1], img[:, 0], img[:, -1]], axis=0)
    return np.median(edge, axis=0).round().astype(np.uint8)


def widen_box(bbox, margin: Sequence[float] = DEFAULT_MARGIN):
    """Keypoint box widened by margins given as fractions of its height (and at least of its width
    for the sides)."""
    x0, y0, x1, y1 = (float(v) for v in bbox)
    h = max(y1 - y0, 1.0)
    w = max(x1 - x0, 1.0)
    ml, mt, mr, mb = margin
    side = max(h, w)
    return x0 - ml * side, y0 - mt * h, x1 + mr * side, y1 + mb * h


def union_box(boxes) -> Optional[Tuple[float, float, float, float]]:
    """Union of boxes (None entries skipped); None when there are none. Uses the 2nd/98th
    percentiles of the box edges over a clip so one wrong detection does not blow up the frame."""
    b = np.array([list(x) for x in boxes if x is not None], np.float64)
    if len(b) == 0:
        return None
    if len(b) >= 10:
        lo = lambda v: float(np.percentile(v, 2, method="nearest"))  # noqa: E731
        hi = lambda v: float(np.percentile(v, 98, method="nearest"))  # noqa: E731
        return lo(b[:, 0]), lo(b[:, 1]), hi(b[:, 2]), hi(b[:, 3])
    return float(b[:, 0].min()), float(b[:, 1].min()), float(b[:, 2].max()), float(b[:, 3].max())


def centre_crop_framing(src_height: int, src_width: int, size=DEFAULT_SIZE) -> Framing:
    """The official `imread_resize_crop`: centre crop to the canvas aspect, then resize."""
    H, W = check_size(size)
    s = max(W / src_width, H / src_height)
    return Framing(s, (W - s * src_width) / 2.0, (H - s * src_height) / 2.0, H, W, int(src_height), int(src_width))


def fit_framing(src_height: int, src_width: int, size=DEFAULT_SIZE, bbox=None, margin: Sequence[float] = DEFAULT_MARGIN,
                fill: float = DEFAULT_FILL, max_zoom: float = DEFAULT_MAX_ZOOM, max_pad: float = DEFAULT_MAX_PAD) -> Framing:
    """Framing of a (src_height × src_width) image onto `size` around the person box `bbox`
    (x0, y0, x1, y1 in source pixels, from the keypoints); see the module docstring for the rule.
    `bbox=None` (no person) gives the official centre crop."""
    H, W = check_size(size)
    if bbox is None:
        return centre_crop_framing(src_height, src_width, (H, W))
    aspect = W / H
    x0, y0, x1, y1 = widen_box(bbox, margin)
    bw, bh = max(x1 - x0, 1.0), max(y1 - y0, 1.0)
    # Window height: the largest of the image's aspect crop ...
    full_h = min(src_height, src_width / aspect)
    # ... zoomed in so the person fills `fill` of it, but never so far the person is cut ...
    need_h = max(bh, bw / aspect)
    win_h = min(full_h, max(bh / fill, full_h / max_zoom))
    win_h = max(win_h, need_h)  # ... and zoomed out past the image when the person needs it,
    # but only so far that padding stays within max_pad of the canvas along each axis.
    cap_h = min(src_height, src_width / aspect) / (1.0 - max_pad)
    win_h = max(min(win_h, cap_h), min(full_h, need_h))
    win_w = win_h * aspect
    cx, cy = (x0 + x1) / 2.0, (y0 + y1) / 2.0
    wx0 = _place(cx, win_w, src_width)
    wy0 = _place(cy, win_h, src_height)
    s = H / win_h
    return Framing(s, -wx0 * s, -wy0 * s, H, W, int(src_height), int(src_width))


def _place(centre: float, window: float, extent: float) -> float:
    """Start of a window of length `window` on an axis of length `extent`, centred on `centre` and
    kept inside the image; a window longer than the image is centred on the image."""
    if window >= extent:
        return (extent - window) / 2.0
    start = centre - window / 2.0
    return float(min(max(start, 0.0), extent - window))
