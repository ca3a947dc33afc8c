"""The protocol scripts: TikTok split evaluation and comparing two pipeline settings."""

import importlib.util
import json
import math
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from xdyna_core.io import write_video

ROOT = Path(__file__).resolve().parents[1]


def load_script(name):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def frames(n, seed, size=(64, 48)):
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(8, 6, 3)).astype(np.uint8)
    img = np.asarray(Image.fromarray(small).resize((size[1], size[0]), Image.BICUBIC))
    return np.stack([np.roll(img, t, axis=0) for t in range(n)])


def fake_tiktok(root, names=("00335", "00336")):
    for k, name in enumerate(names):
        (root / name / "images").mkdir(parents=True)
        (root / name / "masks").mkdir()
        for i, f in enumerate(frames(6, k)):
            Image.fromarray(f).save(root / name / "images" / f"{i + 1:04d}.png")
            m = np.zeros(f.shape[:2], np.uint8)
            m[:, :24] = 255
            Image.fromarray(m).save(root / name / "masks" / f"{i + 1:04d}.png")


def test_tiktok_split_with_dataset_masks(tmp_path, capsys):
    tiktok = load_script("eval_tiktok")
    assert tiktok.parse_sequences("335-337,340") == ["00335", "00336", "00337", "00340"]
    fake_tiktok(tmp_path / "tiktok")
    gen = tmp_path / "gen"
    gen.mkdir()
    shutil.copytree(tmp_path / "tiktok" / "00335" / "images", gen / "00335")  # perfect reconstruction
    g = frames(6, 1)
    g[:, :, 24:] = 255 - g[:, :, 24:]  # wrong only outside the person mask
    gen.joinpath("00336").mkdir()
    for i, f in enumerate(g):
        Image.fromarray(f).save(gen / "00336" / f"{i:03d}.png")
    rc = tiktok.main(["--tiktok", str(tmp_path / "tiktok"), "--generated", str(gen), "--out", str(tmp_path / "out"),
                      "--sequences", "335-336", "--metrics", "l1,psnr,ssim,lpips,fid", "--tiny-metrics"])
    assert rc == 0
    d = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert d["aggregate"]["fg"]["l1"] == 0 and d["aggregate"]["fg"]["psnr"] == "inf"  # masks from the dataset
    assert d["aggregate"]["bg"]["l1"] > 0.05 and d["videos"][1]["mask_source"].endswith("masks")
    assert "TikTok sequences 335-336" in (tmp_path / "out" / "report.html").read_text()
    assert tiktok.main(["--tiktok", str(tmp_path / "tiktok"), "--generated", str(gen), "--out", str(tmp_path / "o2")]) == 2
    assert "sequences ['00337', '00338', '00339', '00340'] not found" in capsys.readouterr().err


def test_compare_existing_outputs(tmp_path, capsys):
    cmp = load_script("compare_settings")
    ref, a, b = tmp_path / "ref", tmp_path / "a", tmp_path / "b"
    for k in range(2):
        clip = frames(8, k)
        write_video(ref / f"c{k}.mp4", clip, 8)
        write_video(b / f"c{k}.mp4", np.clip(clip.astype(int) + np.random.default_rng(k).normal(0, 20, clip.shape), 0, 255).astype(np.uint8), 8)
    shutil.copytree(ref, a, dirs_exist_ok=True)
    rc = cmp.main(["--generated-a", str(a), "--generated-b", str(b), "--reference", str(ref), "--out", str(tmp_path / "out"),
                   "--label-a", "exact", "--label-b", "noisy", "--metrics", "psnr,ssim,lpips,fid,fvd", "--tiny-metrics"])
    assert rc == 0
    s = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert s["better"]["full/psnr"] == "a"  # "a" / "b" name the settings in --label-a / --label-b order
    assert s["better"]["full/ssim"] == "a" and s["better"]["full/lpips"] == "a" and s["better"]["full/fid"] == "a"
    assert s["aggregate"]["exact"]["full"]["psnr"] == "inf" and s["delta"]["full/psnr"] is None
    assert s["delta"]["full/ssim"] < 0
    html = (tmp_path / "out" / "report.html").read_text()
    assert "class=\"bad\"" in html  # the noisy row is marked worse
    assert "exact" in capsys.readouterr().out
    assert cmp.parse_setting("guidance_scale=3.5, num_inference_steps=20") == {"guidance_scale": 3.5, "num_inference_steps": 20}
    from xdyna_core.errors import InputError

    with pytest.raises(InputError, match="unknown setting 'cfg'"):
        cmp.parse_setting("cfg=3")


def test_compare_two_settings_generates_with_the_pipeline(tmp_path):
    """End to end with the real pipeline classes (tiny random weights) on a shipped example clip."""
    cmp = load_script("compare_settings")
    clip = ROOT / "assets" / "examples" / "dance_1.mp4"  # a shipped example clip of a dancing person
    cases = tmp_path / "cases"
    cases.mkdir()
    shutil.copy(clip, cases / "dance.mp4")
    rc = cmp.main(["--cases", str(cases), "--out", str(tmp_path / "out"), "--model", "random-tiny", "--max-frames", "5",
                   "--a", "num_inference_steps=2,guidance_scale=2.5", "--b", "num_inference_steps=2,guidance_scale=1.0",
                   "--metrics", "psnr,ssim,l1", "--tiny-metrics"])
    assert rc == 0
    from xdyna_core.io import read_video

    a = read_video(tmp_path / "out" / "A" / "dance.mp4").frames
    b = read_video(tmp_path / "out" / "B" / "dance.mp4").frames
    gt = read_video(tmp_path / "out" / "reference" / "dance.mp4").frames
    assert a.shape == b.shape == gt.shape == (5, 64, 64, 3)
    assert np.abs(a.astype(int) - b.astype(int)).mean() > 0  # the setting changed the output
    s = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert set(s["better"]) == {"full/psnr", "full/ssim", "full/l1"}
    assert all(math.isfinite(float(s["aggregate"][k]["full"]["psnr"])) for k in ("A", "B"))
