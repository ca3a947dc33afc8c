"""Superseded by `xdyna bench` (xdyna_core/bench.py): kept so the old command keeps
working. Seconds per step and window, peak GPU memory per clip length, full-size
architecture with random weights.

    python benchmarks/pipeline_speed.py --frames 24 48 96 --steps 2 --dtype float16
is the same as
    xdyna bench --modes reference --frames 24,48,96 --steps 2
"""

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # runnable from a checkout without installing
    sys.path.insert(0, str(ROOT))

MODE_FOR_DTYPE = {"float16": "reference", "bfloat16": "default", "float32": "fp32"}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dtype", default="float16", choices=tuple(MODE_FOR_DTYPE))
    ap.add_argument("--height", type=int, default=896)
    ap.add_argument("--width", type=int, default=512)
    ap.add_argument("--frames", type=int, nargs="+", default=[24, 48, 96])
    ap.add_argument("--steps", type=int, default=2)
    args = ap.parse_args()
    from xdyna_core.cli import main as xdyna

    return xdyna(["bench", "--modes", MODE_FOR_DTYPE[args.dtype], "--size", f"{args.height}x{args.width}",
                  "--frames", ",".join(map(str, args.frames)), "--steps", str(args.steps)])


if __name__ == "__main__":
    sys.exit(main())
