"""`pip install .` (not editable) carries everything the engine needs: the presets, the embedded
tiny model and the example inputs are package data under `xdyna_core/_data/`, and the installed
package animates a photo from another folder, without the clone.

The package is built and installed once per session (offline: `--no-build-isolation` uses the
environment's setuptools) from a copy of the clone's files into a temporary target; every check
runs in a subprocess whose cwd is a temporary folder and whose PYTHONPATH is that target only, so
the clone's `xdyna_core` cannot be imported (each run checks `xdyna_core.__file__`).
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest


ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow  # 25-60 s on 2 CPU cores: a build, then a tiny animation

# What `pip install .` reads from the clone (pyproject.toml's metadata, packages and package-dir);
# the build runs on a copy so that it writes no build/ or *.egg-info into the clone.
BUILD_INPUTS = ["pyproject.toml", "README.md", "requirements.txt", "xdyna_core", "presets", "assets",
                "tests/data/official_keys"]
# installed folder below xdyna_core/_data -> the clone's folder (xdyna_core/resources.py's table)
SHIPPED = {"presets": "presets", "tiny_xdyna": "assets/tiny-xdyna", "examples": "assets/examples"}

# The animation run from the installed package, with its default model (the installed tiny
# model): {photo} and {clip} are the installed copies of assets/examples/photo_1.png and dance_1.mp4.
ANIMATE = ["-m", "xdyna_core.cli", "animate", "--image", "{photo}", "--video", "{clip}", "--size", "64x128",
           "--fps", "8", "--steps", "2", "--max-frames", "4", "--no-cache", "-o", "{out}", "--quiet"]
ANIMATE_FRAMES = 4  # = --max-frames (the clip has more)

_IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc")


def _files(folder: Path) -> dict:
    """relative path -> size of every file below `folder`."""
    return {p.relative_to(folder).as_posix(): p.stat().st_size for p in folder.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"}


@pytest.fixture(scope="session")
def installed(tmp_path_factory) -> Path:
    """Folder holding the non-editable install of the clone (`pip install --target`)."""
    src = tmp_path_factory.mktemp("src")
    for name in BUILD_INPUTS:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=_IGNORED)
        else:
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, src / name)
    target = tmp_path_factory.mktemp("site")
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index", "-q",
         "--disable-pip-version-check", "--target", str(target), str(src)],
        capture_output=True, text=True, timeout=600, cwd=tmp_path_factory.mktemp("pip_cwd"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return target


def run_installed(target: Path, args, cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    """`python ARGS` seeing xdyna_core only from `target` (the dependencies from this environment)."""
    env = dict(os.environ, PYTHONPATH=str(target), HF_HUB_OFFLINE="1", OMP_WAIT_POLICY="PASSIVE")
    proc = subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"python {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


def probe(target: Path, cwd: Path, code: str):
    """Run `code` (which sets `result`) against the installed package; its JSON-able result."""
    script = ("import json, xdyna_core\n" + code +
              "\nprint('RESULT=' + json.dumps({'file': xdyna_core.__file__, 'result': result}))")
    out = run_installed(target, ["-c", script], cwd).stdout
    data = json.loads(out.split("RESULT=")[-1])
    assert Path(data["file"]).resolve().is_relative_to(target.resolve()), f"imported {data['file']}, not the install"
    return data["result"]


def test_install_carries_the_shipped_files_and_every_module(installed):
    for name, folder in SHIPPED.items():
        ours, theirs = _files(ROOT / folder), _files(installed / "xdyna_core" / "_data" / name)
        assert ours and theirs == ours, f"{name}: missing {sorted(set(ours) - set(theirs))}"
    assert (installed / "xdyna_core" / "_data" / "official_keys" / "sd15_unet_config.json").is_file()
    # every module of the engine, so a sub-package left out of pyproject.toml's list fails here
    modules = {k for k in _files(ROOT / "xdyna_core") if k.endswith(".py")}
    assert modules and modules <= set(_files(installed / "xdyna_core"))


def test_installed_resources_point_inside_the_install(installed, tmp_path):
    dirs = probe(installed, tmp_path, "from xdyna_core import resources\n"
                 "result = [str(resources.presets_dir()), str(resources.tiny_model_dir()),"
                 " str(resources.examples_dir()), str(resources.sd15_unet_config_path())]")
    data = installed.resolve() / "xdyna_core" / "_data"
    assert [Path(d).resolve() for d in dirs] == [data / "presets", data / "tiny_xdyna", data / "examples",
                                                data / "official_keys" / "sd15_unet_config.json"]


def test_installed_cli_help(installed, tmp_path):
    out = run_installed(installed, ["-m", "xdyna_core.cli", "--help"], tmp_path).stdout
    assert "animate" in out and "extract" in out


def test_installed_presets(installed, tmp_path):
    from xdyna_core.presets import list_presets, load_preset

    names, tiny = probe(installed, tmp_path, "from xdyna_core.presets import list_presets, load_preset\n"
                        "result = [list_presets(), load_preset('tiny-offline')]")
    assert names == list_presets() and "tiny-offline" in names
    assert tiny == load_preset("tiny-offline") and tiny["num_inference_steps"] >= 1


def test_installed_package_animates_with_the_shipped_tiny_model(installed, tmp_path):
    from xdyna_core import io

    work = tmp_path / "work"
    work.mkdir()
    photo = installed / "xdyna_core" / "_data" / "examples" / "photo_1.png"
    out = work / "out.mp4"
    fill = {"photo": str(photo), "clip": str(installed / "xdyna_core" / "_data" / "examples" / "dance_1.mp4"),
            "out": str(out)}
    run_installed(installed, [a.format(**fill) for a in ANIMATE], work)
    video = io.read_video(out)
    assert len(video.frames) == ANIMATE_FRAMES
    assert video.frames.std() > 5  # a picture, not a blank frame
    assert sorted(p.name for p in work.iterdir()) == ["out.mp4"]
