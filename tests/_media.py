"""Media fixtures generated on the fly (real files encoded with PyAV; no binaries in the repo).

Frames encode their own index as the x position of a white bar (`bar_frame` / `bar_index`), so a
test can tell which source frame a decoded frame came from, whatever the codec's losses.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np


def bar_frame(i: int, height: int = 96, width: int = 160, n: int = 30) -> np.ndarray:
    """Gray frame with a white vertical bar at a position that encodes i (0 <= i < n)."""
    f = np.full((height, width, 3), 40, np.uint8)
    step = width / n
    x0 = int(round(i * step))
    f[:, x0:max(x0 + 1, int(round((i + 1) * step)))] = 255
    f[: height // 6, :, 0] = 200  # a red top band shows orientation (top stays top)
    return f


def bar_index(frame: np.ndarray, n: int = 30) -> int:
    """Inverse of bar_frame: which index the bar position encodes."""
    h, w = frame.shape[:2]
    col = frame[h // 2:, :, 1].astype(np.float32).mean(0)  # green channel: bar only
    x = float(np.flatnonzero(col > 150).mean())
    return int(x // (w / n))


def encode(path, frames, fps=30, codec="libx264", pix_fmt="yuv420p", fmt=None, times=None, rotation=None,
           options=None, container_options=None):
    """Encode RGB frames with PyAV. `times` (seconds per frame) gives variable frame rate;
    `rotation` writes a display matrix (degrees counter-clockwise, as FFmpeg reads it back)."""
    import av

    frames = list(frames)
    h, w = frames[0].shape[:2]
    with av.open(str(path), "w", format=fmt, options=container_options or {}) as c:
        rate = Fraction(fps).limit_denominator(1000)
        s = c.add_stream(codec, rate=rate, options=options or {})
        s.width, s.height = w, h
        s.pix_fmt = pix_fmt
        if times is not None:
            s.time_base = Fraction(1, 1000)
            s.codec_context.time_base = Fraction(1, 1000)
        if rotation is not None:
            s.set_display_rotation(rotation)
        for i, f in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")
            if times is not None:
                vf.pts = int(round(times[i] * 1000))
                vf.time_base = Fraction(1, 1000)
            for p in s.encode(vf):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def moving_photo_clip(photo: np.ndarray, num_frames: int = 16, height: int = 384, width: int = 384,
                      zoom=(0.45, 0.6), start=(10.0, 10.0), end=(60.0, 50.0), angle=(0.0, 0.0)):
    """A clip made by moving a real photo on a black frame: it zooms from zoom[0] to zoom[1] and
    turns from angle[0] to angle[1] degrees (counter-clockwise, about the photo's centre) while the
    photo's (unturned) top-left corner pans from `start` to `end` (pixels).

    Returns (frames uint8 [T,H,W,3], transforms [T,2,3]) with frame t = photo mapped by
    [x', y'] = A_t @ [x, y, 1] in continuous pixel coordinates."""
    import cv2

    ph, pw = photo.shape[:2]
    frames, mats = [], []
    for t in range(num_frames):
        a = t / max(1, num_frames - 1)
        s = zoom[0] + (zoom[1] - zoom[0]) * a
        th = np.deg2rad(angle[0] + (angle[1] - angle[0]) * a)
        dx, dy = start[0] + (end[0] - start[0]) * a, start[1] + (end[1] - start[1]) * a
        rot = s * np.array([[np.cos(th), np.sin(th)], [-np.sin(th), np.cos(th)]])  # CCW on screen
        c = np.array([pw / 2.0, ph / 2.0])
        shift = np.array([dx, dy]) + s * c - rot @ c  # scale about the corner, turn about the centre
        A = np.c_[rot, shift]
        # cv2 works on pixel centres: x'_c + 0.5 = A [x_c + 0.5, y_c + 0.5, 1]
        m = A.copy()
        m[:, 2] = A[:, 2] + rot @ np.array([0.5, 0.5]) - 0.5
        frames.append(cv2.warpAffine(photo, m, (width, height), flags=cv2.INTER_AREA))
        mats.append(A)
    return np.stack(frames), np.stack(mats)


def apply_affine(A: np.ndarray, xy: np.ndarray) -> np.ndarray:
    xy = np.asarray(xy, np.float64)
    return xy @ A[:, :2].T + A[:, 2]
