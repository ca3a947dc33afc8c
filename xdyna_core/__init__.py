"""X-Dyna Studio engine: animate a photo with the motion of a driving video.

Public API (imported lazily so `import xdyna_core` stays fast):
    animate, resolve_settings, Animation (the one orchestration home, `xdyna_core.animation`),
    XDynaPipeline, extract_motion, Motion, load_preset
"""

import importlib

__version__ = "0.1.0"

_LAZY = {
    "animate": ("xdyna_core.animation", "animate"),
    "resolve_settings": ("xdyna_core.animation", "resolve_settings"),
    "Animation": ("xdyna_core.animation", "Animation"),
    "XDynaPipeline": ("xdyna_core.pipeline", "XDynaPipeline"),
    "extract_motion": ("xdyna_core.preprocess.motion", "extract_motion"),
    "Motion": ("xdyna_core.preprocess.motion", "Motion"),
    "load_preset": ("xdyna_core.presets", "load_preset"),
}

__all__ = list(_LAZY) + ["__version__"]


def __getattr__(name):
    if name in _LAZY:
        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'xdyna_core' has no attribute {name!r}")
