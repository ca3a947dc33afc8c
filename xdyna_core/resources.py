"""Files shipped with the engine: the presets, the embedded tiny model and the example inputs.

In a clone they are the top-level folders `presets/`, `assets/tiny-xdyna/` and `assets/examples/`.
An installed package (`pip install .`, not editable) carries the same files as package data
under `xdyna_core/_data/` (`_data/presets/`, `_data/tiny_xdyna/`, `_data/examples/`: pyproject.toml's
package-dir maps them there), found with `importlib.resources`. Every other module asks here instead of building paths from `__file__`.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

SOURCE_ROOT = Path(__file__).resolve().parent.parent  # the clone's top level (app.py, presets/, assets/)

# name -> folder below the clone's top level. The installed copy is xdyna_core/_data/<name> with
# "-" written "_" (each is a package for setuptools, and package names cannot hold "-");
# pyproject.toml's [tool.setuptools.package-dir] must list the same pairs.
_SHIPPED = {
    "presets": "presets",
    "tiny-xdyna": "assets/tiny-xdyna",
    "examples": "assets/examples",
    "official-keys": "tests/data/official_keys",  # only sd15_unet_config.json is installed
}


def shipped_path(name: str) -> Path:
    """Folder of the shipped files called `name` ("presets", "tiny-xdyna", "examples",
    "official-keys"): the installed package data when present, else the clone's folder (which
    may be missing)."""
    if name not in _SHIPPED:
        raise KeyError(f"no shipped folder {name!r}; known: {sorted(_SHIPPED)}")
    installed = Path(str(files("xdyna_core") / "_data" / name.replace("-", "_")))
    return installed if installed.is_dir() else SOURCE_ROOT / _SHIPPED[name]


def presets_dir() -> Path:
    return shipped_path("presets")


def tiny_model_dir() -> Path:
    """The embedded tiny X-Dyna (a diffusers folder), as shipped; `XDYNA_TINY_MODEL` is read by
    the model registry, not here."""
    return shipped_path("tiny-xdyna")


def examples_dir() -> Path:
    return shipped_path("examples")


def sd15_unet_config_path() -> Path:
    """The SD1.5 UNet config (diffusers JSON) that the official X-Dyna UNet is built from."""
    return shipped_path("official-keys") / "sd15_unet_config.json"
