"""Tiny random backbones of the real classes, for tests and dry runs (no weights needed).

They run the same code path as the real networks: same classes, same preprocessing,
same feature extraction; only the sizes differ. Their numbers mean nothing.
"""

from __future__ import annotations

import torch

from xdyna_core.eval.backbones import LPIPS, InceptionI3d, InceptionV3FID, VideoMAEv2

__all__ = ["tiny_backbones", "tiny_face_onnx", "TINY_SIZES"]

TINY_SIZES = {
    "fid": dict(width=1 / 16, input_size=75),
    "lpips": dict(width=1 / 16),
    "fvd": dict(width=1 / 16, input_size=32, num_frames=4),
    "dtfvd": dict(width=1 / 16, input_size=32, num_frames=4),
    "cdfvd": dict(input_size=28, num_frames=4, embed_dim=32, depth=2, num_heads=2),
}


def tiny_backbones(seed: int = 0) -> dict:
    """{metric: tiny random network} for the learned set/pair metrics."""
    torch.manual_seed(seed)
    return {
        "fid": InceptionV3FID(**TINY_SIZES["fid"]),
        "lpips": LPIPS(**TINY_SIZES["lpips"]),
        "fvd": InceptionI3d(num_classes=400, output="logits", **TINY_SIZES["fvd"]),
        "dtfvd": InceptionI3d(num_classes=18, output="features", align_corners=True, **TINY_SIZES["dtfvd"]),
        "cdfvd": VideoMAEv2(**TINY_SIZES["cdfvd"]),
    }


class _TinyFaceNet(torch.nn.Module):
    """A small conv net with ArcFace's interface: [N,3,112,112] in [-1,1] -> [N,dim]."""

    def __init__(self, dim: int = 16):
        super().__init__()
        self.body = torch.nn.Sequential(
            torch.nn.Conv2d(3, 8, 5, stride=4), torch.nn.ReLU(), torch.nn.Conv2d(8, 16, 3, stride=2), torch.nn.ReLU(),
            torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(16, dim),
        )

    def forward(self, x):
        return self.body(x)


def tiny_face_onnx(path, dim: int = 16, seed: int = 0):
    """Write a tiny random face-embedding ONNX model (ArcFace I/O layout) to `path`.
    Needs the `onnx` package (a test dependency)."""
    import warnings

    torch.manual_seed(seed)
    net = _TinyFaceNet(dim).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net, (torch.zeros(1, 3, 112, 112),), str(path), dynamo=False,
            input_names=["input.1"], output_names=["embedding"], dynamic_axes={"input.1": {0: "batch"}, "embedding": {0: "batch"}},
        )
    return path
