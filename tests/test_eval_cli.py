"""`xdyna eval` on small folders: outputs, messages, exit codes."""

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from xdyna_core.cli import main
from xdyna_core.io import write_video


def clip(n=6, size=64, seed=0):
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, size=(size // 8, size // 8, 3)).astype(np.uint8)
    img = np.asarray(Image.fromarray(base).resize((size, size), Image.BICUBIC))
    return np.stack([np.roll(img, 2 * t, axis=1) for t in range(n)])


@pytest.fixture
def folders(tmp_path):
    ref, gen = tmp_path / "ref", tmp_path / "gen"
    write_video(ref / "one.mp4", clip(), 8)
    write_video(ref / "two.mp4", clip(seed=1), 8)
    shutil.copytree(ref, gen)
    write_video(gen / "two.mp4", clip(seed=1)[:, ::-1], 8)  # differs from its reference
    return gen, ref


def test_eval_writes_json_and_report_and_prints_the_paper_table(folders, tmp_path, capsys):
    gen, ref = folders
    rc = main(["eval", "--generated", str(gen), "--reference", str(ref), "--metrics", "psnr,ssim,l1,fid",
               "--json", str(tmp_path / "m.json"), "--report", str(tmp_path / "r.html"), "--plots", str(tmp_path / "plots"),
               "--weights-dir", str(tmp_path / "no-weights"), "--no-progress"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "2 videos, 12 frames" in out and "FG PSNR↑" in out and "BG FID↓" in out and "unavailable: fid" in out
    d = json.loads((tmp_path / "m.json").read_text())
    one, two = (v for v in d["videos"])
    assert one["metrics"]["full"]["psnr"] == "inf" and one["metrics"]["full"]["l1"] == 0
    assert isinstance(two["metrics"]["full"]["psnr"], float) and two["metrics"]["full"]["psnr"] < 40
    assert d["aggregate"]["full"]["fid"] is None and "pt_inception" in d["unavailable"]["fid"]
    html = (tmp_path / "r.html").read_text()
    assert "Results in the paper" in html and "FID unavailable" in html
    assert (tmp_path / "plots" / "one.png").stat().st_size > 1000 and (tmp_path / "plots" / "overview.png").exists()


def test_eval_errors_are_one_clear_line(folders, tmp_path, capsys):
    gen, ref = folders
    (tmp_path / "empty").mkdir()
    assert main(["eval", "--generated", str(tmp_path / "empty"), "--reference", str(ref), "--no-progress"]) == 2
    assert "generated folder" in capsys.readouterr().err
    assert main(["eval", "--generated", str(gen), "--reference", str(ref), "--metrics", "fid", "--strict",
                 "--weights-dir", str(tmp_path / "none"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: missing pt_inception-2015-12-05-6726825d.pth") and "\n" == err[-1] and err.count("\n") == 1
    assert main(["eval", "--generated", str(gen)]) == 2
    assert "--reference" in capsys.readouterr().err
    assert main(["eval", "--generated", str(gen), "--reference", str(ref), "--eval-size", "big"]) == 2
    assert "--eval-size" in capsys.readouterr().err


def test_list_weights_says_where_to_get_each_file(tmp_path, capsys):
    assert main(["eval", "--list-weights", "--weights-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for name in ("pt_inception-2015-12-05-6726825d.pth", "i3d_pretrained_400.pt", "vit_g_hybrid_pt_1200e_ssv2_ft.pth", "I3D_16.pth.tar", "w600k_r50.onnx"):
        assert name in out
    assert "MISSING" in out and "lpips_models/vgg.pth" in out  # LPIPS heads come with torchmetrics
