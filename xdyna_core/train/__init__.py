"""Training X-Dyna (paper Sec. 3.4 / 4.1). The synthetic data the embedded tiny model is
trained on is rendered by `xdyna_core.synthetic`.

Public API (imported lazily, so `import xdyna_core.train.config` stays light):

    load_config, TrainConfig            YAML stage configs (configs/train/*.yaml)
    Trainer                             runs one stage with accelerate (`xdyna train`)
    harmonic_data_fusion                human + natural-scene clips at a fixed ratio per epoch
    HumanVideoDataset, SceneVideoDataset, SyntheticHumanDataset, SyntheticSceneDataset
"""

import importlib

_LAZY = {
    "load_config": ("xdyna_core.train.config", "load_config"),
    "TrainConfig": ("xdyna_core.train.config", "TrainConfig"),
    "Trainer": ("xdyna_core.train.trainer", "Trainer"),
    "harmonic_data_fusion": ("xdyna_core.train.data", "harmonic_data_fusion"),
    "HumanVideoDataset": ("xdyna_core.train.data", "HumanVideoDataset"),
    "SceneVideoDataset": ("xdyna_core.train.data", "SceneVideoDataset"),
    "SyntheticHumanDataset": ("xdyna_core.train.data", "SyntheticHumanDataset"),
    "SyntheticSceneDataset": ("xdyna_core.train.data", "SyntheticSceneDataset"),
}

__all__ = list(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'xdyna_core.train' has no attribute {name!r}")
