"""Files shipped with the engine: the presets, the embedded tiny model and the example inputs.

In a clone they are the top-level folders `presets/`, `assets/tiny-xdyna/` and `assets/examples/`.
An installed package (`pip install .`, not editable) carries the same files as package data
under `xdyna_core/_data/` (pyproject.toml maps them there), found with `importlib.resources`.
Every other module asks here instead of building paths from `__file__`.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

SOURCE_ROOT = Path(__file__).resolve().parent.parent  # the clone's top level (app.py, presets/, assets/)

# name -> path below the clone's top level; the installed copy is xdyna_core/_data/<name>
_SHIPPED = {"presets": "presets", "tiny-xdyna": "assets/tiny-xdyna", "examples": "assets/examples"}


def shipped_path(name: str) -> Path:
    """Folder of the shipped files called `name` ("presets", "tiny-xdyna", "examples"): the
    installed package data when present, else the clone's folder (which may be missing)."""
    installed = Path(str(files("xdyna_core") / "_data" / name))
    return installed if installed.is_dir() else SOURCE_ROOT / _SHIPPED[name]


def presets_dir() -> Path:
    return shipped_path("presets")


def tiny_model_dir() -> Path:
    """The embedded tiny X-Dyna (a diffusers folder), as shipped; `XDYNA_TINY_MODEL` is read by
    the model registry, not here."""
    return shipped_path("tiny-xdyna")


def examples_dir() -> Path:
    return shipped_path("examples")
