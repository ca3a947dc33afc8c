"""Evaluation: the X-Dyna paper's metrics on folders of generated and reference videos.

    from xdyna_core.eval import evaluate, EvalConfig, render_report
    result = evaluate("out/", "gt/", EvalConfig(regions=("fg", "bg")))
    result.save_json("metrics.json"); render_report(result, "report.html")

Plain metric functions: `xdyna_core.eval.metrics` (L1, PSNR, SSIM) and
`xdyna_core.eval.frechet` (Fréchet distance). Networks: `backbones`, `faces`, `masks`.
Metric directions and ranges: `xdyna_core.eval.info.METRICS`. Protocol: `protocol.md`.
The tiny model's card (held-out synthetic clips, PSNR and pose-following IoU against baselines):
`xdyna_core.eval.model_card.evaluate_model_card`. Tiny random backbones for tests:
`xdyna_core.testing.tiny_backbones`.
"""

import importlib

_LAZY = {
    "evaluate": "xdyna_core.eval.runner",
    "evaluate_pairs": "xdyna_core.eval.runner",
    "EvalConfig": "xdyna_core.eval.runner",
    "EvalResult": "xdyna_core.eval.runner",
    "VideoPair": "xdyna_core.eval.runner",
    "pair_videos": "xdyna_core.eval.runner",
    "render_report": "xdyna_core.eval.report",
    "METRICS": "xdyna_core.eval.info",
    "DEFAULT_METRICS": "xdyna_core.eval.info",
    "frechet_distance": "xdyna_core.eval.frechet",
    "evaluate_model_card": "xdyna_core.eval.model_card",
}

__all__ = list(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'xdyna_core.eval' has no attribute {name!r}")
