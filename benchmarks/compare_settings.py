"""Compare two settings of the X-Dyna pipeline on the same inputs, with the paper's metrics.

Generate and evaluate (the same motion, photo and seed for both settings):

    python benchmarks/compare_settings.py --cases CASES --out OUT \
        --a "guidance_scale=7.5" --b "guidance_scale=3.5" [--model DIR|official] [--preset NAME] \
        [--size 896x512] [--max-frames 48] [--seed 0] [--metrics ...] [--masks fg,bg]

Evaluate outputs you already have:

    python benchmarks/compare_settings.py --generated-a DIR_A --generated-b DIR_B --reference GT_DIR --out OUT

CASES holds one entry per test case:
    CASES/<name>.mp4                      self-reconstruction: the photo is the clip's first
                                          frame, the ground truth is the clip itself
    CASES/<name>/reference.png|.jpg       the photo to animate
    CASES/<name>/driving.mp4              the driving clip
    CASES/<name>/target.mp4 (optional)    ground truth; without it the driving clip (framed
                                          to the canvas) is the ground truth

OUT receives <label_a>/ and <label_b>/ (generated videos and metrics.json), reference/ (the
ground truth as evaluated), report.html (both settings as rows, better/worse coloured) and
summary.json (aggregates, deltas b - a, and which setting is better per metric).
Settings are `key=value` pairs, comma separated, of `XDynaPipeline.__call__` arguments
(num_inference_steps, guidance_scale, adapter_scale, pose_conditioning_scale,
face_conditioning_scale, window_*, eta, prompt, negative_prompt) and `seed`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script from anywhere in the repository
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from xdyna_core.cli import run_command  # noqa: E402
from xdyna_core.errors import InputError  # noqa: E402

SETTING_KEYS = (
    "num_inference_steps", "guidance_scale", "adapter_scale", "pose_conditioning_scale", "face_conditioning_scale",
    "window_size", "window_overlap", "window_schedule", "window_weighting", "eta", "prompt", "negative_prompt", "seed",
)
PRESET_KEYS = ("num_inference_steps", "guidance_scale", "adapter_scale", "pose_conditioning_scale", "face_conditioning_scale",
               "window_size", "window_overlap", "window_schedule", "seed")


def parse_setting(text: str) -> dict:
    """'guidance_scale=3.5,num_inference_steps=20' -> {'guidance_scale': 3.5, 'num_inference_steps': 20}."""
    import yaml

    out = {}
    for part in filter(None, (p.strip() for p in (text or "").split(","))):
        if "=" not in part:
            raise InputError(f"setting {part!r} must look like key=value")
        key, value = (s.strip() for s in part.split("=", 1))
        if key not in SETTING_KEYS:
            raise InputError(f"unknown setting {key!r}; use one of {', '.join(SETTING_KEYS)}")
        out[key] = yaml.safe_load(value)
    return out


def find_cases(folder) -> list:
    """[(name, photo or None, driving clip, target or None)]."""
    from xdyna_core.eval.runner import VIDEO_SUFFIXES

    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"cases folder {folder} does not exist")
    cases = []
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES:
            cases.append((p.stem, None, p, None))
        elif p.is_dir():
            photo = next((p / f"reference{s}" for s in (".png", ".jpg", ".jpeg", ".webp") if (p / f"reference{s}").exists()), None)
            driving = next((x for x in sorted(p.iterdir()) if x.stem == "driving" and x.suffix.lower() in VIDEO_SUFFIXES), None)
            target = next((x for x in sorted(p.iterdir()) if x.stem == "target" and x.suffix.lower() in VIDEO_SUFFIXES), None)
            if driving is None:
                raise InputError(f"case {p.name} has no driving.mp4 (or another video named driving.*)")
            cases.append((p.name, photo, driving, target))
    if not cases:
        raise InputError(f"{folder} has no cases: put clips (<name>.mp4) or folders with reference.png + driving.mp4 in it")
    return cases


def load_model(model, preset_name, device):
    """(pipeline, preset dict, label). model: a diffusers folder, 'official', or 'random-tiny'
    (the pipeline classes with tiny random weights: a dry run whose videos mean nothing)."""
    import torch

    from xdyna_core.presets import load_preset

    if model == "random-tiny":
        from xdyna_core.pipeline import XDynaPipeline
        from xdyna_core.testing import TINY_RESOLUTION, make_tiny_components

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            pipe = XDynaPipeline(**make_tiny_components())
        preset = load_preset(preset_name or "tiny-offline")
        preset = {**preset, "height": preset.get("height") or TINY_RESOLUTION, "width": preset.get("width") or TINY_RESOLUTION}
    else:
        from xdyna_core.commands.animate import load_pipeline, resolve_model_and_preset

        model, preset = resolve_model_and_preset(model, preset_name)
        dtype = getattr(torch, preset.get("dtype") or "float32") if str(device).startswith("cuda") else torch.float32
        pipe = load_pipeline(model, device, dtype)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device), preset


def extract_case(case, size, fps, max_frames):
    """(motion, ground-truth frames) of one case; the motion is shared by both settings."""
    from xdyna_core.io import read_video
    from xdyna_core.preprocess.motion import extract_motion

    name, photo, driving, target = case
    if photo is None:
        photo = read_video(driving, max_frames=1).frames[0]
    motion = extract_motion(driving, reference_image=photo, size=size, fps=fps, max_frames=max_frames, keep_frames=target is None)
    if target is not None:
        gt = read_video(target, fps=motion.fps, max_frames=motion.num_frames).frames
    else:
        gt = motion.driving_frames
    return motion, gt


def generate(pipe, motion, setting: dict, preset: dict, device) -> "object":
    """uint8 [T,H,W,3] for one motion and one setting (preset values as defaults)."""
    import torch

    kwargs = {k: preset[k] for k in PRESET_KEYS if preset.get(k) is not None}
    kwargs.update(setting)
    seed = int(kwargs.pop("seed", 0))
    generator = torch.Generator(device="cpu").manual_seed(seed)
    out = pipe(
        image=motion.reference_image, pose_images=motion.pose_images, face_images=motion.face_images,
        height=motion.height, width=motion.width, generator=generator, output_type="uint8", **kwargs,
    )
    return out.frames


def compare(result_a, result_b) -> dict:
    """Deltas (b - a) and the better setting per metric and region."""
    from xdyna_core.eval.info import METRICS

    delta, better = {}, {}
    for region, values in result_a.aggregate.items():
        for m, a in values.items():
            b = result_b.aggregate.get(region, {}).get(m)
            if m not in METRICS or a is None or b is None:
                continue
            a, b = float(a), float(b)
            key = f"{region}/{m}"
            delta[key] = b - a if (abs(a) != float("inf") and abs(b) != float("inf")) else None
            if a == b:
                better[key] = "tie"
            else:
                b_wins = (b > a) if METRICS[m].direction == "higher" else (b < a)
                better[key] = "b" if b_wins else "a"
    return {"delta": delta, "better": better}


def evaluate_two(dir_a, dir_b, reference, label_a, label_b, config, out, tiny_metrics=False, title="Setting comparison"):
    from xdyna_core.eval.report import render_report
    from xdyna_core.eval.runner import build_backbones, evaluate

    given = None
    if tiny_metrics:
        from xdyna_core.testing import tiny_backbones

        given = tiny_backbones()
        title += " (TINY RANDOM metric networks: numbers are meaningless)"
    nets, _ = build_backbones(config.checked(), given)  # load the networks once for both runs
    results = []
    for label, folder in ((label_a, dir_a), (label_b, dir_b)):
        res = evaluate(folder, reference, config, backbones=nets, label=label)
        res.save_json(Path(out) / f"{label}_metrics.json")
        results.append(res)
    render_report(results, Path(out) / "report.html", title=title)
    summary = {
        "labels": [label_a, label_b],
        "aggregate": {label_a: results[0].to_dict()["aggregate"], label_b: results[1].to_dict()["aggregate"]},
        "unavailable": {**results[0].unavailable, **results[1].unavailable},
        **compare(results[0], results[1]),
    }
    (Path(out) / "summary.json").write_text(json.dumps(summary, indent=1))
    return results, summary


def print_summary(summary, out=sys.stdout):
    from xdyna_core.eval.info import METRICS, arrow
    from xdyna_core.eval.report import format_value

    a_lbl, b_lbl = summary["labels"]
    print(f"{'metric':18s}{a_lbl:>14s}{b_lbl:>14s}  better", file=out)
    for key, who in summary["better"].items():
        region, m = key.split("/", 1)
        a = summary["aggregate"][a_lbl][region][m]
        b = summary["aggregate"][b_lbl][region][m]
        a = float(a) if isinstance(a, str) else a
        b = float(b) if isinstance(b, str) else b
        name = f"{region} {METRICS[m].label}{arrow(m)}"
        print(f"{name:18s}{format_value(m, a):>14s}{format_value(m, b):>14s}  {dict(a=a_lbl, b=b_lbl).get(who, 'tie')}", file=out)


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog="See xdyna_core/eval/protocol.md.", formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="output folder")
    g = p.add_argument_group("generate")
    g.add_argument("--cases", help="folder of test cases (see the module docstring)")
    g.add_argument("--a", default="", help="setting A, e.g. 'guidance_scale=7.5'")
    g.add_argument("--b", default="", help="setting B, e.g. 'guidance_scale=3.5'")
    g.add_argument("--label-a", default="A")
    g.add_argument("--label-b", default="B")
    g.add_argument("--model", help="diffusers folder, 'official', or 'random-tiny' (dry run); default: the preset's / shipped tiny model")
    g.add_argument("--preset", help="preset for the defaults of both settings (official, fast-preview, tiny-offline)")
    g.add_argument("--size", help="canvas HxW (multiples of 64); default: the preset's / model's")
    g.add_argument("--fps", type=float, default=15.0, help="frame rate the driving clips are sampled at")
    g.add_argument("--max-frames", type=int, default=48, help="frames per case")
    g.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    e = p.add_argument_group("evaluate existing outputs")
    e.add_argument("--generated-a", help="folder of videos of setting A")
    e.add_argument("--generated-b", help="folder of videos of setting B")
    e.add_argument("--reference", help="folder of ground-truth videos")
    m = p.add_argument_group("metrics")
    m.add_argument("--metrics", help="comma-separated metrics (default: all)")
    m.add_argument("--masks", default="", help="fg,bg for the paper's foreground/background columns")
    m.add_argument("--weights-dir", help="metric weights folder")
    m.add_argument("--eval-size", help="evaluate at HxW")
    m.add_argument("--tiny-metrics", action="store_true", help="tiny random metric networks (dry run without weights)")
    return p


def main(argv=None) -> int:
    return run_command(_main, build_parser().parse_args(argv))


def _main(args) -> int:
    from xdyna_core.commands.eval import _parse_size
    from xdyna_core.eval.info import DEFAULT_METRICS
    from xdyna_core.eval.runner import EvalConfig

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    config = EvalConfig(
        metrics=tuple(args.metrics.split(",")) if args.metrics else DEFAULT_METRICS,
        regions=tuple(r for r in args.masks.split(",") if r), weights_dir=args.weights_dir, eval_size=_parse_size(args.eval_size),
    )
    if args.generated_a or args.generated_b:
        if not (args.generated_a and args.generated_b and args.reference):
            raise InputError("give --generated-a, --generated-b and --reference together")
        _, summary = evaluate_two(args.generated_a, args.generated_b, args.reference, args.label_a, args.label_b, config, out, args.tiny_metrics)
        print_summary(summary)
        print(f"report: {out / 'report.html'}")
        return 0
    if not args.cases:
        raise InputError("give --cases (generate and evaluate) or --generated-a/--generated-b/--reference (evaluate)")
    import torch

    from xdyna_core.io import write_video

    setting_a, setting_b = parse_setting(args.a), parse_setting(args.b)
    if args.label_a == args.label_b:
        raise InputError("--label-a and --label-b must differ")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    pipe, preset = load_model(args.model or None, args.preset, device)
    size = _parse_size(args.size) if args.size else (preset.get("height") or 896, preset.get("width") or 512)
    cases = find_cases(args.cases)
    for case in cases:
        print(f"case {case[0]}: extracting motion", flush=True)
        motion, gt = extract_case(case, size, args.fps, args.max_frames)
        write_video(out / "reference" / f"{case[0]}.mp4", gt, motion.fps)
        for label, setting in ((args.label_a, setting_a), (args.label_b, setting_b)):
            print(f"case {case[0]}: generating {label} {setting}", flush=True)
            frames = generate(pipe, motion, setting, preset, device)
            write_video(out / label / f"{case[0]}.mp4", frames, motion.fps)
    (out / "settings.json").write_text(json.dumps({args.label_a: setting_a, args.label_b: setting_b, "preset": preset, "model": args.model}, indent=1, default=str))
    del pipe
    _, summary = evaluate_two(out / args.label_a, out / args.label_b, out / "reference", args.label_a, args.label_b, config, out, args.tiny_metrics,
                              title=f"{args.label_a} ({args.a or 'preset'}) vs {args.label_b} ({args.b or 'preset'})")
    print_summary(summary)
    print(f"report: {out / 'report.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
