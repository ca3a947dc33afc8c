"""Benchmark accounting (FLOPs, MFU, peak table, mode parsing, live-memory tracker) and
`xdyna bench --tiny` end to end with its JSON schema, on the CPU."""

import json
import math
from types import SimpleNamespace

import pytest
import torch

from xdyna_core import bench
from xdyna_core.errors import InputError


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def test_count_flops_convention_two_per_multiply_add():
    lin = torch.nn.Linear(24, 10, bias=False)
    assert bench.count_flops(lin, torch.zeros(7, 24)) == 2 * 7 * 24 * 10
    conv = torch.nn.Conv2d(3, 5, 3, padding=1, bias=False)
    assert bench.count_flops(conv, torch.zeros(2, 3, 8, 8)) == 2 * (2 * 8 * 8) * 5 * (3 * 3 * 3)


def test_window_flops_scale_with_frames_and_cfg(pipe):
    f = {n: bench.window_flops(pipe, n, 64, 64, cfg=True) for n in (4, 8, 16)}
    no_cfg = bench.window_flops(pipe, 8, 64, 64, cfg=False)
    for n in f:
        assert all(v > 0 for v in f[n].values())
        assert f[n]["total"] == f[n]["unet"] + f[n]["controlnet"] + f[n]["controlnet_face"]
    # the UNet sees [ref, frames]: about linear in frames (attention over frames adds a little)
    for a, b in ((4, 8), (8, 16)):
        ratio = f[b]["unet"] / f[a]["unet"]
        assert 1.6 < ratio < 2.2, ratio
    # ControlNets run per frame: exactly linear
    assert f[16]["controlnet"] == 2 * f[8]["controlnet"] == 4 * f[4]["controlnet"]
    # CFG doubles the UNet batch exactly; the shared ControlNet pass does not change
    assert f[8]["unet"] == 2 * no_cfg["unet"]
    assert f[8]["controlnet"] == no_cfg["controlnet"]
    unshared = bench.window_flops(pipe, 8, 64, 64, cfg=True, shared_control=False)
    assert unshared["controlnet"] == 2 * f[8]["controlnet"]


def test_full_size_flops_counted_on_meta_without_memory():
    """The full-size architecture is counted on the meta device in about a second."""
    import json as _json
    from pathlib import Path

    from xdyna_core.models import XDynaUNet, make_controlnet

    cfg = _json.loads((Path(__file__).parent / "data" / "official_keys" / "sd15_unet_config.json").read_text())
    with torch.device("meta"):
        holder = SimpleNamespace(unet=XDynaUNet.from_config(cfg), controlnet=make_controlnet(cfg, 3),
                                 controlnet_face=make_controlnet(cfg, 6), vae_scale_factor=8)
    cfg_on = bench.window_flops(holder, 16, 896, 512, cfg=True)
    cfg_off = bench.window_flops(holder, 16, 896, 512, cfg=False)
    assert cfg_on["unet"] == 2 * cfg_off["unet"]
    assert cfg_on["controlnet"] == cfg_off["controlnet"] > 0
    # 6-channel conditioning costs slightly more than 3-channel in the first conv only
    assert 0 < cfg_on["controlnet_face"] - cfg_on["controlnet"] < 0.01 * cfg_on["controlnet"]
    # a 2-D SD1.5 UNet alone is well above 1 TFLOP per frame at 896x512; with motion
    # modules and 2 x 17 frames the window is tens of TFLOPs
    assert 2 * 17 * 1e12 < cfg_on["unet"] < 2 * 17 * 5e12
    print(f"\nfull-size window FLOPs (CFG): unet {cfg_on['unet'] / 1e12:.1f} T, "
          f"controlnets {2 * cfg_on['controlnet'] / 1e12:.1f} T")


def test_mfu_formula_and_unknowns():
    assert bench.mfu(1e15, 2.0, 1000.0) == pytest.approx(0.5)
    assert bench.mfu(84e12, 0.349, 989.0) == pytest.approx(84e12 / (0.349 * 989e12))
    assert bench.mfu(1e15, 2.0, None) is None
    assert bench.mfu(None, 2.0, 989.0) is None
    assert bench.mfu(1e15, 0.0, 989.0) is None


@pytest.mark.parametrize("name, peak", [
    ("NVIDIA H100 80GB HBM3", 989.0),
    ("NVIDIA H100 PCIe", 756.0),
    ("NVIDIA H100 NVL", 835.0),
    ("NVIDIA H200", 989.0),
    ("NVIDIA A100-SXM4-80GB", 312.0),
    ("NVIDIA L4", 121.0),
    ("NVIDIA L40S", 362.0),
    ("NVIDIA GeForce RTX 4090", 165.0),
    ("Tesla T4", None),
    ("Tesla V100-SXM2-16GB", None),
    (None, None),
])
def test_peak_table(name, peak):
    assert bench.peak_bf16_tflops(name) == peak


def test_parse_modes():
    specs = bench.parse_modes("fp32:16,reference,default:16+64,sequential-offload:16@5")
    assert [(s.mode, s.frames, s.steps) for s in specs] == [
        ("fp32", [16], None), ("reference", None, None), ("default", [16, 64], None), ("sequential-offload", [16], 5)]
    with pytest.raises(InputError, match="unknown benchmark mode 'turbo'.*fp32"):
        bench.parse_modes("turbo")
    with pytest.raises(InputError, match="step count"):
        bench.parse_modes("default@0")
    with pytest.raises(InputError, match="frame counts"):
        bench.parse_modes("default:x")


def test_step_flops_and_preset_steps():
    flops = {"cfg": {"total": 10}, "no_cfg": {"total": 6}, "cfg_deep_cache_partial": {"total": 3},
             "no_cfg_deep_cache_partial": {"total": 2}}
    assert bench._step_flops(flops, 16, 25, {}) == 10  # one window
    assert bench._step_flops(flops, 64, 25, {}) == 50  # five windows
    # 15 of 25 steps with CFG: (15 * 10 + 10 * 6) / 25 per window
    assert bench._step_flops(flops, 16, 25, {"guidance_truncation": 0.6}) == int((15 * 10 + 10 * 6) / 25)
    # DeepCache 1:3 over 6 steps: full at 0 and 3
    assert bench._step_flops(flops, 16, 6, {"deep_cache_interval": 3}) == int((2 * 10 + 4 * 3) / 6)
    # with truncation after 3 of 6 steps: full 0, partial 1 2, full 3 (CFG switched off), partial 4 5
    assert bench._step_flops(flops, 16, 6, {"deep_cache_interval": 3, "guidance_truncation": 0.5}) == int((10 + 2 * 3 + 6 + 2 * 2) / 6)
    assert bench.mode_steps(12, 25) == 12 and bench.mode_steps(12, 6) == 3 and bench.mode_steps(None, 7) == 7
    assert bench.num_windows(16) == 1 and bench.num_windows(64) == 5 and bench.num_windows(40) == 3


def test_live_tensor_bytes_peak_and_free():
    with bench.LiveTensorBytes() as live:
        a = torch.ones(1000)  # 4000 bytes
        b = a * 2  # 4000 more
        del a
        c = b + 1
        del b, c
    assert live.peak["cpu"] == 8000
    assert live.current["cpu"] == 0
    weights = torch.ones(10_000)
    with bench.LiveTensorBytes() as live:
        (weights * 0).sum()  # the product is temporary: 40000 bytes peak
    assert live.peak["cpu"] == 40000 + 4 and live.current["cpu"] == 0


def test_quality_summary():
    import numpy as np

    a = np.zeros((3, 16, 16, 3), np.uint8)
    b = a.copy()
    b[1] += 4  # PSNR = 20 log10(255 / 4)
    q = bench.quality(b, a)
    assert q["identical_frames"] == 2 and q["frames"] == 3 and q["max_abs_diff"] == 4
    assert q["psnr_db"] == pytest.approx(20 * math.log10(255 / 4))
    assert q["ssim"] == pytest.approx(1.0, abs=1e-6) or q["ssim"] < 1.0
    assert bench.quality(a, a)["psnr_db"] is None


def test_bench_cli_tiny_writes_json_report(tmp_path, capsys):
    from xdyna_core.cli import main

    out = tmp_path / "bench.json"
    rc = main(["bench", "--tiny", "--frames", "8,20", "--steps", "4",
               "--modes", "fp32:8,default,batched:20,fast-truncate:8,offload:8", "--json", str(out)])
    assert rc == 0
    report = json.loads(out.read_text())
    assert report["schema"] == bench.SCHEMA
    assert report["device"]["type"] == "cpu" and report["device"]["peak_bf16_tflops"] is None
    assert report["settings"]["height"] == report["settings"]["width"] == 64
    assert set(report["flops_per_window"]) == {"cfg", "no_cfg", "cfg_deep_cache_partial", "no_cfg_deep_cache_partial"}
    partial = report["flops_per_window"]["cfg_deep_cache_partial"]["total"]
    assert 0 < partial < report["flops_per_window"]["cfg"]["total"]
    runs = {(r["mode"], r["frames"]): r for r in report["runs"]}
    assert set(runs) == {("fp32", 8), ("default", 8), ("default", 20), ("batched", 20), ("fast-truncate", 8), ("offload", 8)}
    assert runs[("offload", 8)]["status"] == "skipped"
    for key, r in runs.items():
        if key[0] == "offload":
            continue
        assert r["status"] == "ok", r
        assert r["seconds_total"] > 0 and r["seconds_per_step"] > 0 and r["seconds_decode"] >= 0
        assert r["seconds_per_frame"] == pytest.approx(r["seconds_total"] / r["frames"], rel=1e-3)
        assert r["dtype"] == "float32"  # CPU runs float32 whatever the mode
        assert r["mfu_step"] is None  # unknown peak on a CPU
    assert runs[("default", 20)]["windows"] == 2
    w = report["flops_per_window"]["cfg"]["total"]
    assert runs[("default", 20)]["flops_per_step"] == 2 * w
    assert runs[("batched", 20)]["call"] == {"window_batch_size": 2}
    assert runs[("fast-truncate", 8)]["call"] == {"guidance_truncation": 0.6}
    assert runs[("fast-truncate", 8)]["flops_per_step"] < runs[("default", 8)]["flops_per_step"]
    # same weights and inputs: default == fp32 on a CPU; batched windows give the same video
    assert runs[("default", 8)]["quality"]["vs_fp32"]["psnr_db"] is None  # identical
    batched = runs[("batched", 20)]["quality"]["vs_default"]
    assert batched["psnr_db"] is None or batched["psnr_db"] > 60
    trunc = runs[("fast-truncate", 8)]["quality"]["vs_default"]
    assert trunc["psnr_db"] is not None and trunc["frames"] == 8  # it changes the output
    assert runs[("default", 8)]["unet_call"]["seconds"] > 0
    printed = capsys.readouterr().out
    assert "| mode | frames |" in printed and "wrote" in printed


def test_bench_cli_refuses_full_size_on_cpu():
    from xdyna_core.cli import main

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU, so full size is allowed: the refusal being tested happens only without one")
    assert main(["bench", "--modes", "default"]) == 2
    assert main(["bench", "--tiny", "--size", "65x64"]) == 2
