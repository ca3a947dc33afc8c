"""Closed-form checks of the plain metrics (L1, PSNR, SSIM) and the Fréchet distance."""

import json
import math

import numpy as np
import pytest

from xdyna_core.eval import metrics as M
from xdyna_core.eval.frechet import frechet_distance, frechet_distance_from_features, gaussian_statistics
from xdyna_core.eval.info import DEFAULT_METRICS, METRICS
from xdyna_core.eval.runner import EvalResult, mean_psnr


@pytest.fixture
def clip(rng):
    return rng.integers(0, 256, size=(4, 48, 40, 3), dtype=np.uint8)


def test_identical_clips_give_l1_zero_ssim_one_psnr_infinite(clip):
    np.testing.assert_array_equal(M.l1(clip, clip.copy()), 0.0)
    np.testing.assert_allclose(M.ssim(clip, clip.copy()), 1.0, atol=1e-12)
    assert np.all(np.isposinf(M.psnr(clip, clip.copy())))
    # Aggregation rule: all identical -> +inf, counted; JSON writes the string "inf".
    value, n_inf = mean_psnr(M.psnr(clip, clip))
    assert value == math.inf and n_inf == len(clip)
    res = EvalResult({"full": {"psnr": value}}, [], {}, ("psnr",), ("full",), {})
    assert json.loads(json.dumps(res.to_dict()))["aggregate"]["full"]["psnr"] == "inf"


@pytest.mark.parametrize("sigma", [3.0, 10.0, 25.0])
def test_psnr_of_gaussian_noise_matches_formula(rng, sigma):
    ref = np.full((6, 96, 96, 3), 128, dtype=np.uint8)
    noisy = np.clip(np.round(ref + rng.normal(0.0, sigma, ref.shape)), 0, 255).astype(np.uint8)
    expected = 20 * math.log10(255.0 / sigma)
    measured = M.psnr(noisy, ref)
    assert abs(measured.mean() - expected) < 0.1, (measured.mean(), expected)
    assert np.all(np.abs(measured - expected) < 0.25)  # each frame too


def test_psnr_mean_leaves_identical_frames_out(clip):
    other = clip.copy()
    other[1:] = 255 - other[1:]
    values = M.psnr(other, clip)
    value, n_inf = mean_psnr(values)
    assert n_inf == 1 and value == pytest.approx(values[1:].mean())


def test_l1_of_constant_offset():
    ref = np.full((2, 16, 24, 3), 100, np.uint8)
    gen = ref + 10
    np.testing.assert_allclose(M.l1(gen, ref), 10 / 255)
    # The paper's (DisCo's) scale: MAE on 0..255 divided by H*W.
    np.testing.assert_allclose(M.l1_disco(gen, ref), 10 / (16 * 24))


def test_ssim_of_constant_frames_matches_formula():
    # For flat frames the variances vanish: SSIM = (2ab + C1) / (a^2 + b^2 + C1), C1 = (0.01*255)^2.
    a, b = 100, 120
    gen, ref = np.full((1, 32, 32, 3), a, np.uint8), np.full((1, 32, 32, 3), b, np.uint8)
    c1 = (0.01 * 255) ** 2
    assert M.ssim(gen, ref)[0] == pytest.approx((2 * a * b + c1) / (a * a + b * b + c1), abs=1e-9)


def test_ssim_falls_with_noise(rng):
    ref = rng.integers(60, 200, size=(2, 64, 64, 3)).astype(np.uint8)
    values = [M.ssim(np.clip(ref + rng.normal(0, s, ref.shape), 0, 255).astype(np.uint8), ref).mean() for s in (2, 10, 40)]
    assert 1 > values[0] > values[1] > values[2]


def test_shape_and_dtype_errors(clip):
    with pytest.raises(ValueError, match="differ in shape"):
        M.psnr(clip, clip[:, :-2])
    with pytest.raises(ValueError, match="uint8"):
        M.l1(clip.astype(np.float32), clip.astype(np.float32))


def test_frechet_distance_of_known_gaussians(rng):
    # d^2 = |mu1 - mu2|^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)); with S2 = R diag R^T and S1 = R diag' R^T
    # (commuting) the square root is R sqrt(diag diag') R^T.
    q, _ = np.linalg.qr(rng.normal(size=(5, 5)))
    d1, d2 = np.array([1.0, 2.0, 0.5, 3.0, 4.0]), np.array([2.0, 0.5, 0.5, 1.0, 9.0])
    s1, s2 = q @ np.diag(d1) @ q.T, q @ np.diag(d2) @ q.T
    mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(d1 + d2 - 2 * np.sqrt(d1 * d2))
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-8)
    # 1-D: (m1 - m2)^2 + (s1 - s2)^2
    assert frechet_distance([1.0], [[4.0]], [3.0], [[9.0]]) == pytest.approx(4.0 + 1.0)
    # A general (non-commuting) pair: symmetric, zero for itself.
    a, b = rng.normal(size=(5, 5)), rng.normal(size=(5, 5))
    sa, sb = a @ a.T + np.eye(5), b @ b.T + np.eye(5)
    assert frechet_distance(mu1, sa, mu2, sb) == pytest.approx(frechet_distance(mu2, sb, mu1, sa), rel=1e-6)
    assert frechet_distance(mu1, sa, mu1, sa) == pytest.approx(0.0, abs=1e-8)


def test_frechet_distance_from_samples_approaches_formula(rng):
    mu1, mu2 = np.zeros(3), np.array([1.0, -1.0, 0.5])
    d1, d2 = np.array([1.0, 2.0, 3.0]), np.array([0.5, 2.0, 6.0])
    x = rng.normal(size=(40000, 3)) * np.sqrt(d1) + mu1
    y = rng.normal(size=(40000, 3)) * np.sqrt(d2) + mu2
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(d1 + d2 - 2 * np.sqrt(d1 * d2))
    assert frechet_distance_from_features(x, y) == pytest.approx(expected, rel=0.03)
    assert frechet_distance_from_features(x, x) == pytest.approx(0.0, abs=1e-9)
    mu, sigma = gaussian_statistics(x)
    np.testing.assert_allclose(sigma, np.cov(x, rowvar=False))
    with pytest.raises(ValueError, match="at least 2"):
        gaussian_statistics(x[:1])


def test_every_metric_documents_direction_and_range():
    for key in DEFAULT_METRICS:
        info = METRICS[key]
        assert info.direction in ("higher", "lower") and info.range and info.description
    assert METRICS["psnr"].direction == "higher" and "inf" in METRICS["psnr"].range
    assert all(METRICS[k].direction == "lower" for k in ("l1", "lpips", "fid", "fvd", "cdfvd", "dtfvd"))
    assert all(METRICS[k].direction == "higher" for k in ("ssim", "face-cos", "face-det"))
