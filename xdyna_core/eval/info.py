"""What each metric measures, which way is better, and its range (shown in every report)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["MetricInfo", "METRICS", "DEFAULT_METRICS", "REGIONS", "PAPER_TABLE2", "PAPER_TABLE1", "arrow"]


@dataclass(frozen=True)
class MetricInfo:
    key: str
    label: str
    direction: str  # "higher" or "lower" is better
    range: str
    kind: str  # "frame": per-frame pair metric; "set": distribution distance; "face"
    regions: bool  # computed on foreground/background crops as well
    backbone: str
    description: str


METRICS = {
    "l1": MetricInfo("l1", "L1", "lower", "[0, 1]", "frame", True, "-",
                     "mean absolute pixel error on [0,1] values, per frame"),
    "l1-disco": MetricInfo("l1-disco", "L1 (paper scale)", "lower", "[0, 255/(H*W)]", "frame", True, "-",
                           "DisCo/X-Dyna scale: MAE on 0..255 divided by H*W; only comparable at equal frame size"),
    "psnr": MetricInfo("psnr", "PSNR", "higher", "[0, +inf) dB; +inf for identical frames", "frame", True, "-",
                       "peak signal-to-noise ratio on 0..255 RGB, per frame; identical frames are +inf and are left out of means (counted separately)"),
    "ssim": MetricInfo("ssim", "SSIM", "higher", "[-1, 1]", "frame", True, "-",
                       "structural similarity on luma, 7x7 uniform window (scikit-image, as DisCo)"),
    "lpips": MetricInfo("lpips", "LPIPS", "lower", "[0, ~1]", "frame", True, "LPIPS v0.1 / VGG16",
                        "learned perceptual distance, per frame"),
    "fid": MetricInfo("fid", "FID", "lower", "[0, +inf)", "set", True, "Inception-v3 (pytorch-fid)",
                      "Frechet distance of Inception pool3 features of all generated vs all reference frames"),
    "fvd": MetricInfo("fvd", "FVD", "lower", "[0, +inf)", "set", True, "I3D Kinetics-400",
                      "Frechet distance of I3D logits of 16-frame clips"),
    "cdfvd": MetricInfo("cdfvd", "cd-FVD", "lower", "[0, +inf)", "set", True, "VideoMAE-v2 ViT-g SSv2",
                        "content-debiased FVD (Ge et al. 2024): Frechet distance of VideoMAE-v2 features of 16-frame clips"),
    "dtfvd": MetricInfo("dtfvd", "DTFVD", "lower", "[0, +inf)", "set", True, "I3D trained on DTDB",
                        "dynamic-texture FVD (Dorkenwald et al. 2021): Frechet distance of DTDB-I3D features of 16-frame clips"),
    "face-cos": MetricInfo("face-cos", "Face-Cos", "higher", "[-1, 1]", "face", False, "ArcFace R50 (insightface buffalo_l) + MediaPipe",
                           "cosine similarity of face-identity embeddings of generated vs reference frame, over frames where both show a face"),
    "face-det": MetricInfo("face-det", "Face-Det", "higher", "[0, 100] %", "face", False, "MediaPipe face detection",
                           "share of generated frames in which a face is detected"),
}

DEFAULT_METRICS = ("l1", "psnr", "ssim", "lpips", "fid", "fvd", "cdfvd", "face-cos", "face-det", "dtfvd")
REGIONS = ("full", "fg", "bg")

# The paper's Table 2 (human animation, TikTok) and Table 1 (dynamics):
# (group, region, metric[, column label]).
PAPER_TABLE2 = (
    ("Foreground", "fg", "l1"),
    ("Foreground", "fg", "psnr"),
    ("Foreground", "fg", "lpips"),
    ("Foreground", "fg", "ssim"),
    ("Foreground", "full", "face-cos"),
    ("Foreground", "full", "face-det"),
    ("Foreground", "fg", "fid"),
    ("Foreground", "fg", "cdfvd"),
    ("Background", "bg", "fid"),
    ("Background", "bg", "cdfvd"),
)
PAPER_TABLE1 = (
    ("Dynamics", "fg", "dtfvd", "FG-DTFVD"),
    ("Dynamics", "bg", "dtfvd", "BG-DTFVD"),
    ("Dynamics", "full", "dtfvd", "DTFVD"),
)


def arrow(key: str) -> str:
    return "↑" if METRICS[key].direction == "higher" else "↓"
