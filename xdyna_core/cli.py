"""The `xdyna` command. Each sub-command lives in `xdyna_core/commands/<name>.py`
and exposes `add_parser(subparsers)`, which registers its arguments and sets
`func=run`."""

import argparse
import importlib
import os
import sys

if "torch" not in sys.modules:
    # Before anything imports torch: idle OpenMP threads sleep instead of spinning, which made
    # CPU generation about 10x slower on shared cores. Set here, as the command modules import torch.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from xdyna_core.errors import XDynaError  # noqa: E402 - after the OpenMP setting above

COMMANDS = ("animate", "extract", "convert", "train", "eval", "bench")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="xdyna", description="X-Dyna Studio: animate a photo with a driving video.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"xdyna_core.commands.{name}")
        except ModuleNotFoundError as err:
            if err.name != f"xdyna_core.commands.{name}":
                raise
            continue  # command not built yet
        module.add_parser(sub)
    return parser


def run_command(func, args) -> int:
    """Run ``func(args)`` as a command line program: an `XDynaError` (bad input, missing weights)
    prints one ``error: ...`` line and exits 2, Ctrl-C exits 130; no traceback for either.
    Also used by the scripts in `benchmarks/`."""
    try:
        return int(func(args) or 0)
    except XDynaError as err:
        # One write with its newline: several processes (torchrun) share stderr, and print's two
        # writes (text, then newline) of two ranks interleaved into one line.
        sys.stderr.write(f"error: {err}\n")
        sys.stderr.flush()
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return run_command(args.func, args)


if __name__ == "__main__":
    sys.exit(main())
