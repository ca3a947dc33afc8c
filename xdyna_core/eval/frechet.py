"""Fréchet distance between Gaussians fitted to features: FID, FVD, cd-FVD, DTFVD.

    d^2((mu1, S1), (mu2, S2)) = ||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2))

(Dowson & Landau 1982; used as FID by Heusel et al. 2017, as FVD by Unterthiner et al.
2018, as cd-FVD with VideoMAE-v2 features by Ge et al. 2024, and as DTFVD with a
dynamic-texture I3D by Dorkenwald et al. 2021). The metrics differ only in the features.
"""

from __future__ import annotations

import numpy as np

__all__ = ["gaussian_statistics", "frechet_distance", "frechet_distance_from_features", "trace_sqrt_product"]


def gaussian_statistics(features) -> tuple:
    """Mean [D] and unbiased covariance [D, D] of features [N, D] (N >= 2)."""
    feats = np.asarray(features, dtype=np.float64)
    if feats.ndim != 2:
        raise ValueError(f"features must be [N, D], got {feats.shape}")
    if len(feats) < 2:
        raise ValueError(f"a covariance needs at least 2 samples, got {len(feats)}")
    return feats.mean(axis=0), np.cov(feats, rowvar=False)


def _sqrt_psd(matrix: np.ndarray) -> np.ndarray:
    """Square root of a symmetric positive semi-definite matrix (round-off negatives -> 0)."""
    w, v = np.linalg.eigh((matrix + matrix.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def trace_sqrt_product(sigma1, sigma2) -> float:
    """Tr((S1 S2)^(1/2)) = Tr((S1^(1/2) S2 S1^(1/2))^(1/2)) = sum of sqrt of the eigenvalues
    of the symmetric PSD matrix S1^(1/2) S2 S1^(1/2) (the TF-GAN formulation): exact,
    fast, and stable for the singular covariances of small sample sets."""
    root = _sqrt_psd(sigma1)
    inner = root @ sigma2 @ root
    eig = np.linalg.eigvalsh((inner + inner.T) / 2)
    return float(np.sqrt(np.clip(eig, 0, None)).sum())


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Squared Fréchet distance of N(mu1, sigma1) and N(mu2, sigma2) (lower is better,
    range [0, +inf), 0 for equal Gaussians)."""
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ValueError(f"statistics differ in size: {mu1.shape} vs {mu2.shape}, {sigma1.shape} vs {sigma2.shape}")
    diff = mu1 - mu2
    value = float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_sqrt_product(sigma1, sigma2))
    # Round-off can make the distance of a set to itself slightly negative.
    return max(value, 0.0)


def frechet_distance_from_features(features1, features2) -> float:
    """Fréchet distance of Gaussians fitted to two feature sets [N1, D] and [N2, D]."""
    return frechet_distance(*gaussian_statistics(features1), *gaussian_statistics(features2))
