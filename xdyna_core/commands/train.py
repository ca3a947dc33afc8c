"""`xdyna train`: run one training stage from a YAML config (X-Dyna paper, Sec. 3.4 / 4.1).

    xdyna train --config configs/train/tiny_stage1.yaml [--resume DIR|latest] [--max-steps N]
                [--output DIR] [--set key=value ...]

Several GPUs or nodes: ``accelerate launch --multi_gpu --num_processes N -m xdyna_core.cli train --config ...``
(one process per GPU; the same global batch trains on the same items and noise as one process,
tests/test_train_distributed.py).
Stage 0 builds and trains the tiny VAE + backbone; stage 1 the Dynamics-Adapter, pose ControlNet
and motion modules on Harmonic-Data-Fusion data; stage 2 the S-Face ControlNet. Each stage
writes ``<output>/model`` (the next stage's ``pretrained_model``), checkpoints, loss curve and
validation samples.
"""

import argparse

import yaml
from xdyna_core.errors import InputError
from xdyna_core.train.config import load_config
from xdyna_core.train.trainer import Trainer


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "train",
        help="train or fine-tune X-Dyna (one stage per run, YAML config)",
        description="Train one X-Dyna stage from a YAML config (see configs/train/). Checkpoints are "
        "safetensors + optimiser state; --resume continues the same run exactly.",
    )
    p.add_argument("--config", required=True, help="stage config, e.g. configs/train/tiny_stage1.yaml")
    p.add_argument("--resume", help="checkpoint folder, an output folder (its latest checkpoint), or 'latest'")
    p.add_argument("--max-steps", type=int, help="override max_steps (total steps of the stage)")
    p.add_argument("--max-minutes", type=float, help="override max_minutes (wall-time budget of the stage)")
    p.add_argument("--output", help="override output_dir")
    p.add_argument("--pretrained", help="override pretrained_model (the previous stage's <output>/model)")
    p.add_argument("--device", choices=("cpu", "cuda"), help="force a device (default: what accelerate picks)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config value, dotted keys, YAML values (e.g. --set data.num_workers=4)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar (log lines instead)")
    p.set_defaults(func=run)
    return p


def parse_overrides(items) -> dict:
    out = {}
    for item in items:
        if "=" not in item:
            raise InputError(f"--set needs KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        out[key.strip()] = yaml.safe_load(value)
    return out


def run(args) -> int:
    overrides = parse_overrides(args.set)
    for key, value in (("max_steps", args.max_steps), ("max_minutes", args.max_minutes), ("output_dir", args.output),
                       ("pretrained_model", args.pretrained), ("device", args.device)):
        if value is not None:
            overrides[key] = value
    cfg = load_config(args.config, overrides)
    trainer = Trainer(cfg, resume=args.resume, progress_bar=not args.quiet)
    model_dir = trainer.train()
    if trainer.accelerator.is_main_process:
        print(f"stage {cfg.stage} done: {model_dir}")
    return 0
