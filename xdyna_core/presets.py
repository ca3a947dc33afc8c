"""Named generation settings, kept as readable YAML files in `presets/`.

    >>> load_preset("official")["num_inference_steps"]
    25
    >>> list_presets()
    ['fast-preview', 'official', 'tiny-offline']

The files are found with `resources.presets_dir()`: the clone's `presets/` folder, or the
package data of an installed package. A preset is a flat mapping. Keys that are arguments
of `XDynaPipeline.__call__` (`height`, `num_inference_steps`, `window_schedule`, ...) go to
the pipeline (`call_kwargs(preset)`); `model` (a diffusers folder or "official"), `dtype`
and `seed` say how to load and seed; `description` is for people. `null`
height/width mean "the model's native size".
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Union

import yaml

from xdyna_core.errors import InputError
from xdyna_core.resources import presets_dir

CALL_KEYS = {
    "height": (int, type(None)),
    "width": (int, type(None)),
    "num_inference_steps": (int,),
    "guidance_scale": (int, float),
    "adapter_scale": (int, float),
    "pose_conditioning_scale": (int, float),
    "face_conditioning_scale": (int, float),
    "window_size": (int,),
    "window_overlap": (int,),
    "window_schedule": (str,),
    "window_weighting": (str,),
    "decode_chunk_size": (int,),
    "prompt": (str,),
    "negative_prompt": (str,),
    "eta": (int, float),
    "strength": (int, float),
    # speed options (see README "Speed and memory")
    "sampler": (str,),
    "guidance_truncation": (int, float),
    "deep_cache_interval": (int,),
    "deep_cache_branch": (int,),
    "window_batch_size": (int,),
}
OTHER_KEYS = {
    "description": (str,),
    "model": (str,),
    "dtype": (str,),
    "seed": (int,),
}
DTYPES = ("float32", "float16", "bfloat16")


def list_presets() -> List[str]:
    """Names of the shipped presets (sorted)."""
    return sorted(p.stem for p in presets_dir().glob("*.yaml"))


def _validate(data: dict, source: str) -> dict:
    if not isinstance(data, dict):
        raise InputError(f"preset {source} must be a mapping of setting: value, got {type(data).__name__}")
    allowed = {**CALL_KEYS, **OTHER_KEYS}
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise InputError(f"preset {source} has unknown settings {unknown}; allowed: {sorted(allowed)}")
    for key, value in data.items():
        types = allowed[key]
        if isinstance(value, bool) or not isinstance(value, types):
            names = " or ".join("null" if t is type(None) else t.__name__ for t in types)
            raise InputError(f"preset {source}: {key} must be {names}, got {value!r}")
    if data.get("dtype") is not None and data["dtype"] not in DTYPES:
        raise InputError(f"preset {source}: dtype must be one of {DTYPES}, got {data['dtype']!r}")
    if data.get("window_schedule") not in (None, "blend", "official"):
        raise InputError(f"preset {source}: window_schedule must be 'blend' or 'official', got {data['window_schedule']!r}")
    for key in ("num_inference_steps", "window_size", "decode_chunk_size"):
        if key in data and data[key] < 1:
            raise InputError(f"preset {source}: {key} must be at least 1, got {data[key]}")
    return data


def load_preset(name_or_path: Union[str, Path]) -> Dict[str, object]:
    """Read a preset by name (a shipped `<name>.yaml`) or from a YAML path.
    Raises InputError naming the preset and the available ones when it is
    missing, and for unknown settings or wrong value types."""

    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml") or not path.exists():
        candidate = presets_dir() / f"{name_or_path}.yaml"
        if candidate.exists():
            path = candidate
        elif path.suffix in (".yaml", ".yml"):
            raise InputError(f"preset file {path} does not exist")
        else:
            raise InputError(f"unknown preset {str(name_or_path)!r}; available: {', '.join(list_presets())} (or give a .yaml path)")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise InputError(f"preset {path} is not valid YAML: {err}") from None
    return _validate(data or {}, str(path))


def call_kwargs(preset: Dict[str, object]) -> Dict[str, object]:
    """The part of a preset that are `XDynaPipeline.__call__` arguments."""
    return {k: v for k, v in preset.items() if k in CALL_KEYS}
