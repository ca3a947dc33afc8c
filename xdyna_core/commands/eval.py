"""`xdyna eval`: the X-Dyna paper's metrics on a folder of generated videos."""

from __future__ import annotations

import argparse

from xdyna_core.errors import InputError
from xdyna_core.eval.info import DEFAULT_METRICS, PAPER_TABLE1, PAPER_TABLE2, arrow
from xdyna_core.eval.report import format_value, paper_table_rows, render_report
from xdyna_core.eval.runner import EvalConfig, evaluate
from xdyna_core.eval.weights import resolve_weights, weights_status
from xdyna_core.sizes import parse_size

METRIC_WEIGHTS = {
    "lpips": ("vgg16", "lpips-vgg"),
    "fid": ("inception-fid",),
    "fvd": ("i3d-kinetics400",),
    "cdfvd": ("videomae-v2-g",),
    "dtfvd": ("i3d-dtdb",),
    "face-cos": ("arcface-r50",),
}

EPILOG = """\
Videos are paired by file name without extension (a video is a file or a folder of frame
images). Different lengths: both are truncated to the shorter. Different sizes: the
generated video is resized to the reference size (or both to --eval-size WxH).
Metrics whose weights are missing are reported as unavailable (use --strict to fail,
--list-weights to see what is where, --download-weights to fetch what can be fetched).
PSNR of identical frames is infinite: shown as inf, left out of means and counted.
"""


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "eval",
        help="compute the paper's metrics (PSNR, SSIM, LPIPS, FID, FVD, cd-FVD, Face-Cos, Face-Det, DTFVD)",
        description="Compare a folder of generated videos with a folder of reference (ground-truth) videos.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--generated", metavar="DIR", help="folder of generated videos")
    p.add_argument("--reference", metavar="DIR", help="folder of reference videos with the same names")
    p.add_argument("--metrics", default=None, help="comma-separated subset of: l1,psnr,ssim,lpips,fid,fvd,cdfvd,face-cos,face-det,dtfvd (and l1-disco); default: all ten")
    p.add_argument("--masks", default="", help="also compute on person regions: fg, bg or fg,bg (the paper's Foreground/Background columns)")
    p.add_argument("--mask-dir", metavar="DIR", help="precomputed person masks named like the videos (white = person); default: MediaPipe selfie segmentation")
    p.add_argument("--json", metavar="PATH", help="write every number (per frame, per video, aggregate) as JSON")
    p.add_argument("--report", metavar="PATH", help="write an HTML report with tables and per-frame plots")
    p.add_argument("--plots", metavar="DIR", help="also write the report's plots as PNG files here")
    p.add_argument("--label", default="", help="name of this run in tables (e.g. the setting)")
    p.add_argument("--eval-size", metavar="WxH", help="resize generated and reference frames to WIDTHxHEIGHT, e.g. 256x256 (DisCo) or 512x896")
    p.add_argument("--max-frames", type=int, help="use at most this many frames per video")
    p.add_argument("--allow-unmatched", action="store_true", help="skip generated videos without a reference instead of failing")
    p.add_argument("--weights-dir", metavar="DIR", help="folder with the metric networks' weights (default $XDYNA_EVAL_WEIGHTS or ~/.cache/xdyna/eval)")
    p.add_argument("--download-weights", action="store_true", help="download missing weights that have a public URL or hub copy")
    p.add_argument("--list-weights", action="store_true", help="list the weights each metric needs, where they were found and where to get them")
    p.add_argument("--strict", action="store_true", help="fail when a requested metric cannot be computed (missing weights)")
    p.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _parse_size(text):
    """--eval-size WIDTHxHEIGHT -> (height, width), the one rule of `xdyna_core.sizes`."""
    return parse_size(text, "--eval-size") if text else None


def _print_weights(weights_dir) -> None:
    for row in weights_status(weights_dir):
        state = f"found: {row['path']}" if row["path"] else "MISSING"
        print(f"{row['key']:17s} {row['file']:40s} {state}")
        if not row["path"]:
            print(f"{'':17s} get it from {row['source']}")
    print("face-det and masks use MediaPipe models that ship with the mediapipe package.")


def text_table(result) -> str:
    """The paper's Table 2 and Table 1 layouts as plain text."""

    lines = []
    for layout, name in ((PAPER_TABLE2, "Human animation (paper Table 2 layout)"), (PAPER_TABLE1, "Dynamics (paper Table 1 layout)")):
        rows = paper_table_rows(result, layout)
        if all(r[4] is None for r in rows) and layout is PAPER_TABLE1:
            continue
        heads = [f"{({'Foreground': 'FG ', 'Background': 'BG '}).get(r[0], '')}{r[1]}{arrow(r[2])}" for r in rows]
        vals = [format_value(r[2], r[4]) for r in rows]
        widths = [max(len(h), len(v)) + 2 for h, v in zip(heads, vals)]
        lines.append(name + ("" if "fg" in result.regions else "  [no mask: FG columns are full frames]"))
        lines.append("".join(h.rjust(w) for h, w in zip(heads, widths)))
        lines.append("".join(v.rjust(w) for v, w in zip(vals, widths)))
        lines.append("")
    return "\n".join(lines)


def run(args) -> int:
    if args.list_weights:
        _print_weights(args.weights_dir)
        if not args.generated:
            return 0

    metrics = tuple(m.strip() for m in args.metrics.split(",")) if args.metrics else DEFAULT_METRICS
    if args.download_weights:
        for m in metrics:
            for key in METRIC_WEIGHTS.get(m, ()):
                try:
                    print(f"{key}: {resolve_weights(key, args.weights_dir, download=True)}")
                except Exception as err:  # report each and go on: one manual file must not block the rest
                    print(f"{key}: not downloaded: {err}")
        if not args.generated:
            return 0
    if not args.generated or not args.reference:
        raise InputError("give both --generated DIR and --reference DIR (videos are paired by file name)")

    config = EvalConfig(
        metrics=metrics,
        regions=tuple(r for r in args.masks.split(",") if r.strip()),
        weights_dir=args.weights_dir,
        device=args.device,
        strict=args.strict,
        eval_size=_parse_size(args.eval_size),
        max_frames=args.max_frames,
        mask_dir=args.mask_dir,
        allow_unmatched=args.allow_unmatched,
    )
    result = evaluate(args.generated, args.reference, config, progress=not args.no_progress, label=args.label)
    print(f"\n{result.counts['videos']} videos, {result.counts['frames']} frames compared\n")
    print(text_table(result))
    for m, reason in result.unavailable.items():
        print(f"unavailable: {m}: {reason}")
    for note in result.notes:
        print(f"note: {note}")
    if args.json:
        print(f"JSON: {result.save_json(args.json)}")
    if args.report:
        print(f"report: {render_report(result, args.report, plots_dir=args.plots)}")
    return 0
