"""Per-frame reconstruction metrics: L1, PSNR, SSIM (plain functions).

Every function takes two clips of the same shape, uint8 RGB [T, H, W, 3] (a single
[H, W, 3] frame is treated as a clip of one), and returns one value per frame as a
float64 array [T]. Averaging over frames and videos is the runner's job.

Conventions follow the evaluation code the X-Dyna paper inherits from DisCo
(Wang et al. 2023, `tool/metrics/ssim_l1_lpips_psnr.py`), which produced the numbers of
the paper's Table 2, with two deliberate differences that are documented where they apply:
PSNR of identical frames is +inf (DisCo writes 100) and L1 is a plain mean absolute error
(DisCo's scale is available as `l1_disco`).
"""

from __future__ import annotations

import numpy as np
from skimage.metrics import structural_similarity

__all__ = ["as_clip", "l1", "l1_disco", "mse", "psnr", "psnr_from_mse", "ssim", "to_gray"]


def as_clip(frames) -> np.ndarray:
    """uint8 [T,H,W,3] view of a clip or a single frame."""
    arr = np.asarray(frames)
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise ValueError(f"expected frames shaped [T,H,W,3] or [H,W,3], got {arr.shape}")
    if arr.dtype != np.uint8:
        raise ValueError(f"expected uint8 frames (0..255), got {arr.dtype}")
    return arr


def _pair(generated, reference):
    g, r = as_clip(generated), as_clip(reference)
    if g.shape != r.shape:
        raise ValueError(f"clips differ in shape: generated {g.shape} vs reference {r.shape}; align them first")
    return g, r


def l1(generated, reference) -> np.ndarray:
    """Mean absolute error per frame on [0, 1] pixel values (lower is better, range [0, 1]).

    0 means identical frames. This is the usual L1; the paper's Table 2 prints a different
    scale (about 1e-4), see `l1_disco`.
    """
    g, r = _pair(generated, reference)
    diff = np.abs(g.astype(np.float32) - r.astype(np.float32))
    return diff.reshape(len(g), -1).mean(axis=1, dtype=np.float64) / 255.0


def l1_disco(generated, reference) -> np.ndarray:
    """L1 on the scale of the paper's Table 2 (DisCo's code): the mean absolute error on
    0..255 values divided by the number of pixels H*W of the frame (lower is better, range
    [0, 255/(H*W)]). It depends on the frame size, so compare it only at equal sizes
    (DisCo evaluates at 256x256, where MAE 4.9/255 gives the paper's ~7.4e-05).
    """
    g, r = _pair(generated, reference)
    h, w = g.shape[1:3]
    return l1(g, r) * 255.0 / float(h * w)


def mse(generated, reference) -> np.ndarray:
    """Mean squared error per frame on 0..255 values (over all pixels and channels)."""
    g, r = _pair(generated, reference)
    diff = g.astype(np.float64) - r.astype(np.float64)
    return (diff * diff).reshape(len(g), -1).mean(axis=1)


def psnr_from_mse(err, data_range: float = 255.0) -> np.ndarray:
    """PSNR = 10 log10(data_range^2 / MSE) in dB; +inf where MSE == 0 (identical frames)."""
    err = np.asarray(err, dtype=np.float64)
    with np.errstate(divide="ignore"):
        return np.where(err > 0, 10.0 * np.log10(data_range**2 / np.maximum(err, 1e-300)), np.inf)


def psnr(generated, reference) -> np.ndarray:
    """Peak signal-to-noise ratio per frame in dB, on 0..255 RGB values, MSE over all pixels
    and channels (higher is better, range [0, +inf)).

    Identical frames give +inf (no noise). DisCo's code returns 100 instead; we keep the
    honest value and let the report say how many frames were identical. For additive
    Gaussian noise of standard deviation sigma (in 0..255 units) the expected value is
    20 log10(255 / sigma).
    """
    return psnr_from_mse(mse(generated, reference))


def to_gray(frames) -> np.ndarray:
    """ITU-R BT.601 luma (the weights of OpenCV's RGB2GRAY), float64 [T,H,W] on 0..255,
    rounded to integers like OpenCV's uint8 conversion that DisCo's SSIM ran on."""
    clip = as_clip(frames).astype(np.float64)
    y = clip[..., 0] * 0.299 + clip[..., 1] * 0.587 + clip[..., 2] * 0.114
    return np.round(y)


def ssim(generated, reference, win_size: int = 7) -> np.ndarray:
    """Structural similarity per frame (Wang et al. 2004) on the luma channel (higher is
    better, range [-1, 1], 1 for identical frames).

    Same settings as DisCo (scikit-image defaults on uint8 grayscale): 7x7 uniform window,
    K1 = 0.01, K2 = 0.03, data range 255, sample covariance, mean over the valid interior.
    """

    g, r = _pair(generated, reference)
    if min(g.shape[1:3]) < win_size:
        raise ValueError(f"frames of {g.shape[2]}x{g.shape[1]} are smaller than the {win_size}x{win_size} SSIM window")
    gy, ry = to_gray(g), to_gray(r)
    return np.array([structural_similarity(a, b, win_size=win_size, data_range=255.0) for a, b in zip(gy, ry)], dtype=np.float64)
