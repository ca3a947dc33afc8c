"""The paper's TikTok evaluation (X-Dyna Table 2): sequences 335-340 of the TikTok dataset
(Jafarian & Park 2021), the test split DisCo proposed, self-driven reconstruction.

You provide the dataset as it is distributed (frames as images, person masks beside them):

    TIKTOK/00335/images/0001.png 0002.png ...
    TIKTOK/00335/masks/0001.png  0002.png ...     (optional; white = person)
    ...
    TIKTOK/00340/...

and the generated videos, one per sequence, named like the sequence folder (a video file or
a folder of frames):

    GENERATED/00335.mp4  (or GENERATED/00335/0001.png ...)

Evaluate:

    python benchmarks/eval_tiktok.py --tiktok TIKTOK --generated GENERATED --out OUT \
        [--sequences 335-340] [--eval-size 256x256] [--metrics ...] [--weights-dir W]

Generate with this project's pipeline first (reference photo = the first frame of each
sequence, motion = the sequence itself), then evaluate:

    python benchmarks/eval_tiktok.py --tiktok TIKTOK --generate --model official --out OUT

The person masks of the dataset give the Foreground / Background columns (the paper used
Segment Anything; without masks MediaPipe's selfie segmentation is used). `--eval-size
256x256` evaluates at DisCo's resolution, which the paper's L1 scale depends on.
OUT receives metrics.json, report.html (the paper's table layout) and, with --generate,
the generated videos in OUT/generated/.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.path.insert(0, str(Path(__file__).resolve().parent))

from xdyna_core.cli import run_command  # noqa: E402
from xdyna_core.errors import InputError  # noqa: E402

DEFAULT_SEQUENCES = "335-340"
TIKTOK_FPS = 30.0


def parse_sequences(text: str) -> list:
    """'335-340' or '335,337' -> ['00335', ...]."""
    out = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        if "-" in part:
            lo, hi = (int(x) for x in part.split("-", 1))
            out += list(range(lo, hi + 1))
        else:
            out.append(int(part))
    return [f"{n:05d}" for n in out]


def find_sequences(root, names: list) -> list:
    """[(name, images folder, masks folder or None)] with clear errors for a wrong layout."""
    from xdyna_core.eval.runner import IMAGE_SUFFIXES

    root = Path(root)
    if not root.is_dir():
        raise InputError(f"TikTok folder {root} does not exist")
    found, missing = [], []
    for name in names:
        seq = root / name
        images = seq / "images"
        if not images.is_dir() or not any(p.suffix.lower() in IMAGE_SUFFIXES for p in images.iterdir()):
            missing.append(name)
            continue
        masks = seq / "masks"
        found.append((name, images, masks if masks.is_dir() and any(masks.iterdir()) else None))
    if missing:
        raise InputError(
            f"TikTok sequences {missing} not found in {root}: expected {root}/<sequence>/images/0001.png ... "
            "(the dataset's own layout); choose others with --sequences"
        )
    return found


def generate_sequences(sequences, out_dir: Path, model, preset, size, max_frames, device, setting=None) -> Path:
    """Generate one video per sequence with XDynaPipeline: photo = first frame, motion = the sequence."""
    import numpy as np

    from compare_settings import generate, load_model  # noqa: E402 - sibling script
    from xdyna_core.eval.runner import load_frames
    from xdyna_core.io import Video, write_video
    from xdyna_core.preprocess.motion import extract_motion

    pipe, preset = load_model(model, preset, device)
    size = size or (preset.get("height") or 896, preset.get("width") or 512)
    for name, images, _ in sequences:
        frames, _ = load_frames(images, max_frames, "TikTok sequence")
        t = len(frames)
        clip = Video(frames=frames, fps=TIKTOK_FPS, timestamps=np.arange(t) / TIKTOK_FPS, source_fps=TIKTOK_FPS,
                     source_width=frames.shape[2], source_height=frames.shape[1], source_duration=t / TIKTOK_FPS,
                     source_frames=t, path=str(images))
        print(f"{name}: extracting motion ({t} frames)", flush=True)
        motion = extract_motion(clip, reference_image=frames[0], size=size, fps=None, max_frames=max_frames)
        print(f"{name}: generating", flush=True)
        write_video(out_dir / f"{name}.mp4", generate(pipe, motion, setting or {}, preset, device), motion.fps)
    return out_dir


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="Layout and recipe: see this file's docstring and xdyna_core/eval/protocol.md.")
    p.add_argument("--tiktok", required=True, help="TikTok dataset folder (00335/images/...)")
    p.add_argument("--generated", help="folder of generated videos named like the sequences")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--sequences", default=DEFAULT_SEQUENCES, help="sequence numbers, e.g. 335-340 (DisCo's test split) or 335,338")
    p.add_argument("--eval-size", help="evaluate at HxW, e.g. 256x256 (DisCo)")
    p.add_argument("--max-frames", type=int, help="frames per sequence")
    p.add_argument("--metrics", help="comma-separated metrics (default: all)")
    p.add_argument("--no-masks", action="store_true", help="full frames only (no Foreground/Background columns)")
    p.add_argument("--weights-dir", help="metric weights folder")
    p.add_argument("--strict", action="store_true", help="fail when a metric's weights are missing")
    p.add_argument("--label", default="X-Dyna Studio", help="row name in the table")
    p.add_argument("--tiny-metrics", action="store_true", help="tiny random metric networks (dry run without weights)")
    g = p.add_argument_group("generate first")
    g.add_argument("--generate", action="store_true", help="generate the videos with this project's pipeline")
    g.add_argument("--model", help="diffusers folder, 'official', or 'random-tiny' (dry run)")
    g.add_argument("--preset", help="preset (default: the model's)")
    g.add_argument("--size", help="generation canvas HxW (default: the preset's)")
    g.add_argument("--device", help="cpu or cuda")
    return p


def main(argv=None) -> int:
    return run_command(_main, build_parser().parse_args(argv))


def _main(args) -> int:
    from xdyna_core.commands.eval import _parse_size, text_table
    from xdyna_core.eval.info import DEFAULT_METRICS
    from xdyna_core.eval.report import render_report
    from xdyna_core.eval.runner import EvalConfig, VideoPair, evaluate_pairs, find_videos

    out = Path(args.out)
    sequences = find_sequences(args.tiktok, parse_sequences(args.sequences))
    if args.generate:
        import torch

        device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
        generated = generate_sequences(sequences, out / "generated", args.model, args.preset, _parse_size(args.size), args.max_frames, device)
    elif args.generated:
        generated = Path(args.generated)
    else:
        raise InputError("give --generated DIR (videos named like the sequences) or --generate")
    videos = find_videos(generated, "generated folder")
    missing = [name for name, _, _ in sequences if name not in videos]
    if missing:
        raise InputError(f"no generated video for sequence(s) {missing} in {generated} (expected e.g. {missing[0]}.mp4)")
    pairs = [VideoPair(name, videos[name], images, None if args.no_masks else masks) for name, images, masks in sequences]
    config = EvalConfig(
        metrics=tuple(args.metrics.split(",")) if args.metrics else DEFAULT_METRICS,
        regions=() if args.no_masks else ("fg", "bg"),
        weights_dir=args.weights_dir, strict=args.strict, eval_size=_parse_size(args.eval_size), max_frames=args.max_frames,
    )
    given = None
    if args.tiny_metrics:
        from xdyna_core.testing import tiny_backbones

        given = tiny_backbones()
    result = evaluate_pairs(pairs, config, backbones=given, label=args.label)
    result.config.update({"generated_dir": str(generated), "reference_dir": str(args.tiktok), "protocol": f"TikTok test split {args.sequences}"})
    out.mkdir(parents=True, exist_ok=True)
    result.save_json(out / "metrics.json")
    title = f"TikTok sequences {args.sequences} (X-Dyna Table 2 protocol)" + (" — TINY RANDOM metric networks" if args.tiny_metrics else "")
    render_report(result, out / "report.html", title=title)
    print(text_table(result))
    for m, reason in result.unavailable.items():
        print(f"unavailable: {m}: {reason}")
    print(f"report: {out / 'report.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
