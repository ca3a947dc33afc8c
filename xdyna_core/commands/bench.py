"""`xdyna bench`: speed, memory and FLOP utilisation of the pipeline with random weights."""

from __future__ import annotations

import argparse

import torch

from xdyna_core import bench
from xdyna_core.errors import InputError
from xdyna_core.sizes import parse_size

EPILOG = """\
Modes (comma-separated; each may name its own clip lengths and step count as
mode:16+64@5): fp32, reference, default, batched, channels-last, lean,
cudnn-attention, compiled, offload, sequential-offload, fast-dpmpp, fast-truncate,
fast-deepcache, fast-all.
Random weights, no downloads. The full-size architecture needs a CUDA GPU; --tiny runs
the tiny model (on a CPU in seconds). Every mode starts from the same float32 weights
and the same inputs, so PSNR/SSIM against the fp32 and default runs measure what the
mode changes (fast-* presets against the --steps baseline; their own step counts are
meant against 25 and scaled with --steps). MFU = FLOPs counted with torch.utils.flop_counter / (time x the GPU's
dense bf16 peak).

examples:
  xdyna bench --modes reference,default --frames 16,64 --json bench.json
  xdyna bench --tiny --frames 16,40 --steps 4 --modes fp32,default,batched,fast-dpmpp
"""


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "bench",
        help="benchmark speed, peak GPU memory and MFU (random weights, no downloads)",
        description="Benchmark XDynaPipeline: seconds per step / frame / clip, peak GPU memory, FLOPs and MFU.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--size", default=None, metavar="WxH", help="output WIDTHxHEIGHT, multiples of 64 (default 512x896; 64x64 with --tiny)")
    p.add_argument("--frames", default="16,64", help="comma-separated clip lengths (default 16,64)")
    p.add_argument("--steps", type=int, default=25, help="denoising steps (default 25; presets of fast-* modes set their own)")
    p.add_argument("--modes", default="reference,default", help="comma-separated modes, see below (default reference,default)")
    p.add_argument("--json", metavar="PATH", help="write the report as JSON (rewritten after every run)")
    p.add_argument("--tiny", action="store_true", help="tiny random model instead of the full-size architecture")
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--unet-repeats", type=int, default=5, help="timed repeats of the isolated UNet call (default 5)")
    p.set_defaults(func=run)


def _size(text: str | None, tiny: bool):
    """--size WIDTHxHEIGHT -> (height, width), the one rule of `xdyna_core.sizes`."""
    if text is None:
        return (64, 64) if tiny else (896, 512)
    return parse_size(text, "--size")


def run(args) -> int:
    height, width = _size(args.size, args.tiny)
    try:
        frames = [int(v) for v in args.frames.split(",") if v.strip()]
    except ValueError:
        raise InputError(f"--frames must be comma-separated integers, got {args.frames!r}") from None
    if not frames or any(f < 1 for f in frames):
        raise InputError(f"--frames needs positive clip lengths, got {args.frames!r}")
    if args.steps < 1:
        raise InputError(f"--steps must be at least 1, got {args.steps}")
    specs = bench.parse_modes(args.modes)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError("--device cuda but no CUDA GPU is visible; use --device cpu (with --tiny)")
    if not args.tiny and not device.startswith("cuda"):
        raise InputError("the full-size benchmark needs a CUDA GPU (about 14 GB); on a CPU add --tiny")
    report = bench.run_benchmark(
        specs, tiny=args.tiny, device=device, height=height, width=width, frames=frames, steps=args.steps,
        seed=args.seed, unet_repeats=args.unet_repeats, json_path=args.json, command=bench.command_line(),
    )
    print()
    print(f"{report['device']['name']} ({report['device']['type']}), {report['model']}, {height}x{width}")
    print(report["table"])
    if args.json:
        print(f"wrote {args.json}")
    failed = [r for r in report["runs"] if r["status"] == "error"]
    return 1 if failed else 0
