"""The `xdyna` command. Each sub-command lives in `xdyna_core/commands/<name>.py`
and exposes `add_parser(subparsers)`, which registers its arguments and sets
`func=run`. Command modules import heavy libraries inside `run` so `xdyna --help`
stays instant."""

import argparse
import importlib
import sys

from xdyna_core.errors import XDynaError

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


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except XDynaError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
