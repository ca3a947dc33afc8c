import inspect

import pytest

from xdyna_core.errors import InputError
from xdyna_core.presets import CALL_KEYS, call_kwargs, list_presets, load_preset


def test_shipped_presets_exist_and_load():
    assert {"official", "fast-preview", "tiny-offline"} <= set(list_presets())
    for name in list_presets():
        preset = load_preset(name)
        assert preset["description"]
        assert preset["model"]


def test_official_preset_matches_official_launchers():
    p = load_preset("official")
    assert (p["height"], p["width"]) == (896, 512)
    assert p["num_inference_steps"] == 25
    assert p["guidance_scale"] == 7.5
    assert p["window_size"] == 16 and p["window_overlap"] == 4
    assert p["window_schedule"] == "official"
    assert p["model"] == "official"


def test_call_kwargs_are_pipeline_arguments():
    from xdyna_core.pipeline import XDynaPipeline

    params = inspect.signature(XDynaPipeline.__call__).parameters
    assert set(CALL_KEYS) <= set(params)
    for name in list_presets():
        kwargs = call_kwargs(load_preset(name))
        assert "model" not in kwargs and "seed" not in kwargs
        assert set(kwargs) <= set(params)


def test_load_from_path_and_errors(tmp_path):
    good = tmp_path / "mine.yaml"
    good.write_text("num_inference_steps: 3\nguidance_scale: 1.5\nheight: null\n")
    assert load_preset(good) == {"num_inference_steps": 3, "guidance_scale": 1.5, "height": None}
    assert load_preset(str(good))["num_inference_steps"] == 3

    with pytest.raises(InputError, match="unknown preset 'nope'.*official"):
        load_preset("nope")
    with pytest.raises(InputError, match="does not exist"):
        load_preset(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("num_inference_step: 3\n")
    with pytest.raises(InputError, match="unknown settings"):
        load_preset(bad)
    bad.write_text("num_inference_steps: many\n")
    with pytest.raises(InputError, match="num_inference_steps must be int"):
        load_preset(bad)
    bad.write_text("window_schedule: loop\n")
    with pytest.raises(InputError, match="window_schedule"):
        load_preset(bad)
    bad.write_text("steps: [\n")
    with pytest.raises(InputError, match="not valid YAML"):
        load_preset(bad)


def test_presets_and_shipped_files_come_from_the_clone_folders():
    """In a clone, resources.py finds the top-level folders (an installed package: test_packaging)."""
    from pathlib import Path

    from xdyna_core import resources

    root = Path(__file__).resolve().parents[1]
    assert resources.presets_dir() == root / "presets"
    assert list_presets() == sorted(p.stem for p in (root / "presets").glob("*.yaml"))
    assert resources.tiny_model_dir() == root / "assets" / "tiny-xdyna"
    assert resources.examples_dir() == root / "assets" / "examples"
    assert resources.sd15_unet_config_path().is_file()
    assert load_preset("tiny-offline")["model"] == "tiny"  # a model choice, not a path into the clone
    with pytest.raises(KeyError, match="no shipped folder"):
        resources.shipped_path("weights")
