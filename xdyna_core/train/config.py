"""Training configuration: one YAML file per stage (``configs/train/*.yaml``).

A config is a flat-ish dataclass tree; unknown keys are an error (a typo in a
config should never silently train with a default).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any, Optional

import yaml

from xdyna_core.errors import InputError
from xdyna_core.synthetic.photo import STYLES

STAGES = ("0", "1", "2")


@dataclass
class DataSourceConfig:
    """One source of clips.

    kind: ``synthetic`` (procedural people / scenes rendered on the fly) or ``folder``
    (a folder of video files; human clips are preprocessed once with ``extract_motion``).
    """

    kind: str = "synthetic"
    path: Optional[str] = None  # folder of videos (kind=folder)
    num_clips: int = 4096  # synthetic: nominal clips per epoch
    clip_frames: int = 32  # synthetic: frames rendered per clip (window + reference drawn from them)
    cache_dir: Optional[str] = None  # folder: where extracted motion is cached
    fps: Optional[float] = None  # folder: resample clips to this fps (None = keep)
    # synthetic: "default" (flat-shaded people, graphic animated scenes) or "photo" (lit bodies,
    # photographic backdrops, varied framing, camera grain: synthetic.render_clip(style=...))
    style: str = "default"


@dataclass
class DataConfig:
    human: DataSourceConfig = field(default_factory=DataSourceConfig)
    scene: Optional[DataSourceConfig] = field(default_factory=lambda: DataSourceConfig(num_clips=1024))
    # Harmonic Data Fusion: share of natural-scene clips in every epoch (0 = human only).
    scene_ratio: float = 0.25
    height: int = 256
    width: int = 128
    num_frames: int = 16
    frame_stride: int = 1
    # Stage 2: "synthetic" = the generator renders the same expression on another identity;
    # "none" = the clip's own face patches; or "module:function" for your own callable
    # ``f(item, rng) -> face [F,6,H,W] float in [0,1]`` (e.g. a face-reenactment network).
    cross_identity_face_source: str = "synthetic"
    num_workers: int = 0
    # Synthetic data: items that share one rendered clip (a divisor of the batch size keeps
    # them in one batch, so the clip is rendered once). 1 = a new clip for every item.
    windows_per_clip: int = 1


@dataclass
class Stage0Config:
    """Tiny model only: train a VAE, then a 2-D image-diffusion backbone, then inflate."""

    vae_steps: int = 1000  # the first vae_steps steps train the VAE, the rest the backbone
    vae_minutes: Optional[float] = None  # or switch after this much wall time
    vae_learning_rate: float = 1e-3
    vae_kl_weight: float = 1e-6
    vae_batch_size: int = 32
    backbone_learning_rate: float = 3e-4
    backbone_batch_size: int = 64
    # >0: render this many frames once (with data.num_workers processes) and train both phases
    # on that fixed pool (the backbone on its pre-encoded latents); 0: render on the fly.
    image_pool: int = 0
    tiny: dict = field(default_factory=dict)  # model sizes, see trainer.TINY_DEFAULTS


@dataclass
class ValidationConfig:
    every_steps: int = 0  # write a validation sample every N steps (0 = never during training)
    at_end: bool = True  # and once when the stage ends
    num_frames: int = 16
    num_inference_steps: int = 10
    guidance_scale: float = 2.5
    seed: int = 1234
    num_clips: int = 1


@dataclass
class TrainConfig:
    stage: str = "1"
    # Where the starting weights come from: a diffusers folder saved by XDynaPipeline
    # (e.g. the previous stage's output, or `xdyna convert` of the official weights).
    # Stage 0 builds fresh tiny components instead and ignores it.
    pretrained_model: Optional[str] = None
    output_dir: str = "outputs/train"
    seed: int = 0
    max_steps: int = 1000
    max_minutes: Optional[float] = None  # stop early (and save) after this much wall time
    learning_rate: float = 1e-5  # the paper's AdamW learning rate
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_weight_decay: float = 1e-2
    adam_epsilon: float = 1e-8
    max_grad_norm: float = 1.0
    lr_warmup_steps: int = 0
    lr_scheduler: str = "constant"  # constant | cosine (to 10%), after the warm-up
    train_batch_size: int = 1
    gradient_accumulation_steps: int = 1
    mixed_precision: str = "no"  # no | fp16 | bf16
    gradient_checkpointing: bool = False
    # Classifier-free guidance: share of samples whose IP tokens are replaced by the
    # pipeline's unconditional ones (CLIP of the mean-colour image).
    image_dropout: float = 0.1
    # Stage 1 on the tiny model: also train IP-Adapter K/V + image projection (no
    # pretrained IP-Adapter exists at that size). Full size keeps IP-Adapter-Plus frozen.
    train_ip_adapter: bool = False
    checkpointing_steps: int = 500
    checkpoints_total_limit: int = 2
    log_every_steps: int = 10
    allow_tf32: bool = True
    device: Optional[str] = None  # None = what accelerate picks
    # Debug: every process writes trace/rank-<r>.jsonl, one line per step with the item keys it
    # read and a SHA-256 of the trained weights (costs a pass over the weights per step).
    trace: bool = False
    data: DataConfig = field(default_factory=DataConfig)
    stage0: Stage0Config = field(default_factory=Stage0Config)
    validation: ValidationConfig = field(default_factory=ValidationConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


_NESTED = {
    ("TrainConfig", "data"): DataConfig,
    ("TrainConfig", "stage0"): Stage0Config,
    ("TrainConfig", "validation"): ValidationConfig,
    ("DataConfig", "human"): DataSourceConfig,
    ("DataConfig", "scene"): DataSourceConfig,
}


def _build(cls, values: Any, where: str):
    if values is None:
        return None
    if not isinstance(values, dict):
        raise InputError(f"{where}: expected a mapping, got {type(values).__name__}")
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise InputError(f"{where}: unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(names)}")
    kwargs = {}
    for key, value in values.items():
        sub = _NESTED.get((cls.__name__, key))
        kwargs[key] = _build(sub, value, f"{where}.{key}") if sub is not None else value
    return cls(**kwargs)


def validate(cfg: TrainConfig) -> TrainConfig:
    cfg.stage = str(cfg.stage)
    if cfg.stage not in STAGES:
        raise InputError(f"stage must be one of {', '.join(STAGES)}, got {cfg.stage!r}")
    if cfg.mixed_precision not in ("no", "fp16", "bf16"):
        raise InputError(f"mixed_precision must be no, fp16 or bf16, got {cfg.mixed_precision!r}")
    d = cfg.data
    if d.height % 64 or d.width % 64:
        raise InputError(f"data.height and data.width must be multiples of 64, got {d.height}x{d.width}")
    if not 0.0 <= d.scene_ratio < 1.0:
        raise InputError(f"data.scene_ratio must be in [0, 1), got {d.scene_ratio}")
    if d.num_frames < 1 or d.num_frames > 24:
        raise InputError(f"data.num_frames must be in 1..24 (motion-module positions), got {d.num_frames}")
    if cfg.stage != "0" and not cfg.pretrained_model:
        raise InputError(f"stage {cfg.stage} needs pretrained_model: the folder of the previous stage "
                         "(or of `xdyna convert`)")
    if cfg.lr_scheduler not in ("constant", "cosine"):
        raise InputError(f"lr_scheduler must be constant or cosine, got {cfg.lr_scheduler!r}")
    if cfg.max_steps < 1:
        raise InputError("max_steps must be at least 1")
    for name, src in (("human", d.human), ("scene", d.scene)):
        if src is not None and src.style not in STYLES:
            raise InputError(f"data.{name}.style must be one of {', '.join(STYLES)}, got {src.style!r}")
    return cfg


def load_config(path: str, overrides: Optional[dict] = None) -> TrainConfig:
    """Read a YAML (or JSON) stage config. ``overrides`` maps dotted keys to values."""

    if not os.path.isfile(path):
        raise InputError(f"config file not found: {path}")
    with open(path, "r", encoding="utf-8") as fh:
        try:
            values = yaml.safe_load(fh) or {}
        except yaml.YAMLError as err:
            raise InputError(f"{path} is not valid YAML: {err}") from None
    for dotted, value in (overrides or {}).items():
        node = values
        *parents, leaf = dotted.split(".")
        for p in parents:
            if node.get(p) is None:  # an override below a section the file left out / set to null
                node[p] = {}
            node = node[p]
        node[leaf] = value
    cfg = _build(TrainConfig, values, os.path.basename(path))
    # Relative paths in a config are relative to the working directory (like every CLI path).
    return validate(cfg)


def config_from_dict(values: dict) -> TrainConfig:
    return validate(_build(TrainConfig, values, "config"))
