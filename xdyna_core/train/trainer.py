"""Staged X-Dyna training with accelerate (X-Dyna paper, Sec. 3.4 and 4.1).

``Trainer(cfg).train()`` runs one stage (see ``stages.py``) and writes, under ``output_dir``:

- ``model/``            the pipeline folder (``XDynaPipeline.from_pretrained`` loads it; the next
                        stage's ``pretrained_model``)
- ``checkpoints/checkpoint-<step>/``  accelerate state (model weights as safetensors, optimiser,
                        LR schedule, RNG) + ``trainer_state.json``; ``--resume`` continues from it
- ``loss.png``, ``losses.json``      the loss curve
- ``validation/``       sample videos (stages 1-2) or image grids (stage 0) at intervals
- ``summary.json``      steps, time, final loss, trained parameter counts

Determinism: the items of step ``s`` are the ``s``-th global batch of the run's item stream
(``StepSampler``), and all noise of an item (timestep, Gaussian noise, VAE posterior sample,
image-condition dropout) is a pure function of ``(seed, phase, item key)`` (``losses.ItemNoise``).
So a resumed run continues exactly as the uninterrupted one, and the same global batch
(``train_batch_size x gradient_accumulation_steps x processes``) trains on the same items with
the same noise whatever the number of processes.

Works with ``accelerate launch`` (several GPUs / nodes): each process reads its own items
(``StepSampler``), the objective module is wrapped for data parallelism by ``accelerator.prepare``,
only the main process writes the shared files (model, checkpoint weights, losses, validation,
summary). ``trace: true`` writes ``trace/rank-<r>.jsonl`` per process: the item keys it read and
a SHA-256 of the trained weights after every step (tests/test_train_distributed.py).
"""

from __future__ import annotations

import collections
import hashlib
import importlib
import json
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import ProjectConfiguration, broadcast, set_seed
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from safetensors.torch import load_file
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from xdyna_core import synthetic
from xdyna_core.errors import InputError, MissingWeightsError
from xdyna_core.io import frame_strip, save_image, side_by_side, write_video
from xdyna_core.models import XDynaUNet, make_controlnet
from xdyna_core.pipeline import XDynaPipeline
from xdyna_core.testing import make_tiny_components

from . import losses as L
from .config import TrainConfig
from .data import (HarmonicDataFusion, HumanVideoDataset, KeyedDataset, PooledImages, SceneVideoDataset, StepSampler,
                   SyntheticHumanDataset, SyntheticImageDataset, SyntheticSceneDataset, WithKeys,
                   harmonic_data_fusion, render_image_pool)
from .stages import count_parameters, set_trainable, stage1_parameter_groups, stage2_parameter_groups

STATE_FILE = "trainer_state.json"


# ----------------------------------------------------------------------------------------
# objectives: one nn.Module per phase, so DDP wraps exactly what is trained
# ----------------------------------------------------------------------------------------


class VAEObjective(nn.Module):
    def __init__(self, vae, kl_weight: float):
        super().__init__()
        self.vae, self.kl_weight = vae, kl_weight

    def forward(self, batch: dict, noise: L.ItemNoise):
        loss, parts = L.vae_loss(self.vae, batch["image"], self.kl_weight, noise)
        return loss


class BackboneObjective(nn.Module):
    """2-D image diffusion on VAE latents (stage 0 of the tiny model)."""

    def __init__(self, unet2d, vae, text: torch.Tensor, alphas_cumprod: torch.Tensor):
        super().__init__()
        self.unet2d = unet2d
        # The VAE in a pipeline of frozen encoders (encodes as inference does); not a
        # submodule: not saved in checkpoints, not wrapped.
        self._frozen = {"encoders": make_pipeline({"vae": vae})}
        self.register_buffer("text", text, persistent=False)
        self.register_buffer("alphas_cumprod", alphas_cumprod, persistent=False)

    def forward(self, batch: dict, noise: L.ItemNoise):
        with torch.no_grad():
            vae = self._frozen["encoders"].vae
            if "latent_mean" in batch:  # a pre-encoded image pool: sample the posterior here
                mean, std = batch["latent_mean"], batch["latent_std"]
                eps = noise.randn(mean.shape[1:], device=mean.device)
                latents = (mean + std * eps) * vae.config.scaling_factor
            else:
                latents = L.encode_latents(vae, batch["image"][:, None], noise)[:, 0]
        return L.image_diffusion_loss(self.unet2d, latents, self.text, self.alphas_cumprod, noise)


class VideoObjective(nn.Module):
    """Stages 1-2: the X-Dyna UNet + ControlNets (+ image projection) on clips, exactly in the
    pipeline's input layout, encoded with the pipeline's own methods. Frozen encoders (VAE,
    CLIP image encoder) are held outside the module tree."""

    def __init__(self, unet, controlnet, image_proj, vae, image_encoder, feature_extractor, text: torch.Tensor,
                 alphas_cumprod: torch.Tensor, controlnet_face=None, use_face: bool = False,
                 image_dropout: float = 0.1):
        super().__init__()
        self.unet, self.controlnet, self.image_proj = unet, controlnet, image_proj
        self.controlnet_face = controlnet_face if use_face else None
        self.use_face, self.image_dropout = use_face, float(image_dropout)
        self._frozen = {"encoders": make_pipeline(dict(vae=vae, image_encoder=image_encoder,
                                                       feature_extractor=feature_extractor))}
        self.register_buffer("text", text, persistent=False)
        self.register_buffer("alphas_cumprod", alphas_cumprod, persistent=False)
        self._uncond_hidden = None

    @torch.no_grad()
    def clip_hidden_states(self, reference: torch.Tensor):
        """Penultimate CLIP hidden states of each reference image [-1, 1] (the pipeline's
        `encode_image`, docs/official-behaviour.md §22), and of the all-zero normalised pixel
        tensor (the pipeline's unconditional image, §23; computed once)."""
        u8 = ((reference.float() + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        again = self._uncond_hidden is None or self._uncond_hidden.device != reference.device
        hidden, uncond = self._frozen["encoders"].encode_image(list(u8), reference.device, unconditional=again)
        if again:
            self._uncond_hidden = uncond
        return hidden, self._uncond_hidden

    def forward(self, batch: dict, noise: L.ItemNoise):
        vae = self._frozen["encoders"].vae
        frames, reference = batch["frames"], batch["reference"]
        b = frames.shape[0]
        with torch.no_grad():
            latents = L.encode_latents(vae, frames, noise).permute(0, 2, 1, 3, 4)  # [B, 4, F, h, w]
            ref_latents = L.encode_latents(vae, reference[:, None], noise)[:, 0]
            hidden, uncond = self.clip_hidden_states(reference)
            pose_cond, face_cond = L.normalize_controls(batch["pose"], batch["face"] if self.use_face else None)
        # Classifier-free guidance: the pipeline's unconditional branch differs only in its IP
        # tokens (those of the mean-colour image), so that is what is dropped.
        drop = noise.rand(hidden.device) < self.image_dropout
        hidden = torch.where(drop[:, None, None], uncond.expand_as(hidden), hidden)
        ip_tokens = self.image_proj(hidden.to(L._dtype(self.image_proj)))
        text = self.text.expand(b, -1, -1)
        context = torch.cat([text, ip_tokens.to(text.dtype)], dim=1)
        controlnets = [(self.controlnet, pose_cond)]
        if self.use_face:
            controlnets.append((self.controlnet_face, face_cond))
        return L.video_diffusion_loss(self.unet, ref_latents, latents, context, self.alphas_cumprod, controlnets,
                                      text, noise)


# ----------------------------------------------------------------------------------------
# building components
# ----------------------------------------------------------------------------------------

TINY_DEFAULTS = dict(
    block_out_channels=[32, 64, 128],
    down_block_types=["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    layers_per_block=1,
    attention_head_dim=4,
    cross_attention_dim=64,
    norm_num_groups=16,
    # A factor-4 VAE (3 levels): on this CPU budget a factor-8 VAE stalled near 18 dB PSNR on
    # held-out synthetic frames, below the repeat-the-reference baseline, while factor 4 passed
    # 20 dB within 150 steps (frames are 128x64, latents 32x16).
    vae_channels=[32, 64, 64],
    vae_layers_per_block=1,
    vae_norm_num_groups=16,
    controlnet_conditioning_channels=[16, 32, 64],  # downsamples by the VAE factor
    vision_hidden_size=64,
    vision_layers=2,
    clip_image_size=64,
    clip_patch_size=8,
    image_proj_depth=2,
    num_ip_tokens=16,
    motion_module_heads=4,
)


def tiny_config(overrides: dict) -> dict:
    unknown = set(overrides) - set(TINY_DEFAULTS)
    if unknown:
        raise InputError(f"stage0.tiny: unknown key(s) {sorted(unknown)}; valid: {sorted(TINY_DEFAULTS)}")
    return {**TINY_DEFAULTS, **overrides}


def build_tiny_stage0(height: int, width: int, seed: int, tiny: dict) -> dict:
    """Fresh tiny components: the pipeline's small parts from ``make_tiny_components`` and a VAE
    and 2-D backbone UNet of the sizes in ``tiny`` (see ``TINY_DEFAULTS``)."""

    t = tiny_config(tiny)
    d = int(t["cross_attention_dim"])
    comps = make_tiny_components(
        seed=seed, sample_size=64, block_out_channels=(32,), layers_per_block=1, cross_attention_dim=d,
        attention_heads=2, norm_num_groups=8, text_hidden_size=d, vision_hidden_size=t["vision_hidden_size"],
        vision_layers=t["vision_layers"], clip_image_size=t["clip_image_size"], clip_patch_size=t["clip_patch_size"],
        image_proj_depth=t["image_proj_depth"], num_ip_tokens=t["num_ip_tokens"], with_face=False,
    )
    torch.manual_seed(seed + 1)
    n = len(t["vae_channels"])
    comps["vae"] = AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n, block_out_channels=tuple(t["vae_channels"]),
        layers_per_block=t["vae_layers_per_block"], latent_channels=4, norm_num_groups=t["vae_norm_num_groups"],
        sample_size=max(height, width),
    )
    down = tuple(t["down_block_types"])
    up_map = {"CrossAttnDownBlock2D": "CrossAttnUpBlock2D", "DownBlock2D": "UpBlock2D"}
    scale = 2 ** (n - 1)
    comps["unet2d"] = UNet2DConditionModel(
        sample_size=(height // scale, width // scale), in_channels=4, out_channels=4,
        block_out_channels=tuple(t["block_out_channels"]), down_block_types=down,
        up_block_types=tuple(up_map[x] for x in reversed(down)), layers_per_block=t["layers_per_block"],
        cross_attention_dim=d, attention_head_dim=t["attention_head_dim"], norm_num_groups=t["norm_num_groups"],
    )
    for k in ("unet", "controlnet", "controlnet_face"):
        comps.pop(k, None)
    return comps


def inflate_stage0(comps: dict, tiny: dict) -> dict:
    """Backbone -> X-Dyna UNet (adapter = copy of to_q / zero out, motion modules fresh with a
    zero output, IP K/V = copies of the text K/V) and both ControlNets initialised from the
    backbone (``ControlNetModel.from_unet``), as the paper initialises them from SD1.5."""

    t = tiny_config(tiny)
    unet2d = comps["unet2d"]
    unet = XDynaUNet.from_unet2d(unet2d, num_ip_tokens=t["num_ip_tokens"],
                                 motion_module_num_attention_heads=t["motion_module_heads"],
                                 motion_module_norm_num_groups=t["norm_num_groups"])
    cond = tuple(t["controlnet_conditioning_channels"])
    out = {k: v for k, v in comps.items() if k != "unet2d"}
    out["unet"] = unet
    out["controlnet"] = make_controlnet(unet2d, 3, conditioning_embedding_out_channels=cond)
    out["controlnet_face"] = make_controlnet(unet2d, 6, conditioning_embedding_out_channels=cond)
    return out


def make_pipeline(components: dict):
    keys = ("vae", "text_encoder", "tokenizer", "unet", "controlnet", "scheduler", "image_encoder",
            "feature_extractor", "image_proj", "controlnet_face")
    return XDynaPipeline(**{k: components.get(k) for k in keys})


def load_components(folder: str) -> dict:
    if not os.path.isdir(folder) or not os.path.isfile(os.path.join(folder, "model_index.json")):
        raise MissingWeightsError(
            f"pretrained_model {folder!r} is not a pipeline folder (no model_index.json); point it at the previous "
            "stage's <output_dir>/model or at a folder written by `xdyna convert`")
    pipe = XDynaPipeline.from_pretrained(folder, torch_dtype=torch.float32)
    components = dict(pipe.components)
    for m in components.values():
        if isinstance(m, nn.Module):
            # Each weight in its own fresh (64-byte aligned) memory: safetensors leaves them at
            # any 8-byte offset of the file buffer, and CPU matrix kernels round differently there.
            # Without this, a process that copies its weights (accelerate's multi-CPU device is
            # `cpu:0`) computed other numbers than one that keeps them where the loader put them.
            m._apply(torch.clone)
    return components


# ----------------------------------------------------------------------------------------
# datasets from the config
# ----------------------------------------------------------------------------------------


def _face_source(spec: str):
    if spec in ("synthetic", "none", "", None):
        return None

    if ":" not in spec:
        raise InputError(f"data.cross_identity_face_source must be 'synthetic', 'none' or 'module:function', got {spec!r}")
    mod, fn = spec.split(":", 1)
    return getattr(importlib.import_module(mod), fn)


def build_video_dataset(cfg: TrainConfig, human_only: bool = False, identity_swap: bool = False,
                        windows_per_clip: int = 1) -> HarmonicDataFusion:
    d = cfg.data
    common = dict(height=d.height, width=d.width, num_frames=d.num_frames, frame_stride=d.frame_stride)

    def source(src, person: bool) -> KeyedDataset:
        if src.kind == "synthetic":
            cls = SyntheticHumanDataset if person else SyntheticSceneDataset
            kw = dict(identity_swap=identity_swap) if person else {}
            return cls(num_clips=src.num_clips, seed=cfg.seed + (0 if person else 7919), clip_frames=src.clip_frames,
                       fps=src.fps or 8.0, windows_per_clip=windows_per_clip, style=src.style, **common, **kw)
        if src.kind == "folder":
            if not src.path:
                raise InputError("data source kind 'folder' needs a path")
            if person:
                return HumanVideoDataset(src.path, fps=src.fps, cache_dir=src.cache_dir, seed=cfg.seed,
                                         cross_identity_face_source=_face_source(d.cross_identity_face_source)
                                         if identity_swap else None, **common)
            return SceneVideoDataset(src.path, fps=src.fps, cache_dir=src.cache_dir, seed=cfg.seed + 7919, **common)
        raise InputError(f"data source kind must be 'synthetic' or 'folder', got {src.kind!r}")

    human = source(d.human, True)
    scene = None if (human_only or d.scene is None or d.scene_ratio == 0) else source(d.scene, False)
    block = windows_per_clip if d.human.kind == "synthetic" and (scene is None or d.scene.kind == "synthetic") else 1
    return harmonic_data_fusion(human, scene, 0.0 if scene is None else d.scene_ratio, seed=cfg.seed, block_size=block)


# ----------------------------------------------------------------------------------------
# the trainer
# ----------------------------------------------------------------------------------------


@dataclass
class Phase:
    name: str
    objective: nn.Module
    params: List[nn.Parameter]
    dataset: KeyedDataset
    batch_size: int
    learning_rate: float
    start: int  # first global step of the phase
    end: int  # one past its last step (may be lowered by a time budget)
    minutes: Optional[float] = None  # wall-time budget of the phase
    on_end: Optional[Callable[[bool], None]] = None  # called with skipped=True when resumed past it
    validate: Optional[Callable[[int], None]] = None
    groups: Dict[str, int] = field(default_factory=dict)


def global_batches(config: dict, num_processes: int) -> dict:
    """Items per optimiser step of each phase of the stage: batch size x gradient accumulation x
    processes."""
    n = config["gradient_accumulation_steps"] * num_processes
    if str(config["stage"]) == "0":
        return {"vae": config["stage0"]["vae_batch_size"] * n, "backbone": config["stage0"]["backbone_batch_size"] * n}
    return {"video": config["train_batch_size"] * n}


def lr_factor(step: int, warmup: int, total: int, schedule: str) -> float:
    """Linear warm-up, then constant or cosine decay to 10% (the LR multiplier at ``step``)."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    if schedule == "cosine" and total > warmup:
        p = min(1.0, (step - warmup) / max(1, total - warmup))
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * p))
    return 1.0


class Trainer:
    """Runs one training stage from a `TrainConfig` (see module docstring)."""

    def __init__(self, cfg: TrainConfig, resume: Optional[str] = None, log: Callable[[str], None] = print,
                 progress_bar: bool = True):
        self.cfg, self.log, self.progress_bar = cfg, log, progress_bar
        self.out = Path(cfg.output_dir)
        cpu = cfg.device == "cpu" or not torch.cuda.is_available()
        # Started as several processes (accelerate launch --multi_gpu, torchrun) on a machine
        # without CUDA: accelerate only sets up CPU data parallelism (gloo) when told the device
        # is the CPU; otherwise every process would train alone on the same items.
        world = max(int(os.environ.get(k, "1")) for k in ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE",
                                                          "MV2_COMM_WORLD_SIZE"))  # torchrun, mpirun
        self.accelerator = Accelerator(
            mixed_precision=cfg.mixed_precision if not cpu else "no",
            gradient_accumulation_steps=cfg.gradient_accumulation_steps,
            cpu=cfg.device == "cpu" or (world > 1 and not torch.cuda.is_available()),
            # The LR schedule counts optimiser steps: stepped once per step below (accelerate would
            # step it once per process, running it N times too fast on N processes).
            step_scheduler_with_optimizer=False,
            project_config=ProjectConfiguration(project_dir=str(self.out)),
        )
        if self.accelerator.num_processes != world:
            raise InputError(f"started as {world} processes but accelerate runs "
                             f"{self.accelerator.num_processes}: launch with `accelerate launch --multi_gpu "
                             "--num_processes N` (add `--device cpu` on a machine without CUDA)")
        set_seed(cfg.seed)
        if cfg.allow_tf32 and torch.cuda.is_available():
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        self.device = self.accelerator.device
        self.weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(self.accelerator.mixed_precision,
                                                                               torch.float32)
        self.resume_dir = self._find_checkpoint(resume) if resume else None
        self.state = {"step": 0, "losses": [], "elapsed": 0.0, "phase_end": {}}
        if self.resume_dir is not None:
            with open(self.resume_dir / STATE_FILE) as fh:
                self.state = json.load(fh)
            saved = self.state.get("config", {})
            mine = cfg.to_dict()
            differ = [k for k in ("stage", "seed", "data") if k in saved and saved[k] != mine[k]]
            # The items and noise of a step depend on the global batch only, so a run may resume
            # on another number of processes with the batch split differently.
            n = self.accelerator.num_processes
            if saved and global_batches(saved, self.state.get("num_processes", 1)) != global_batches(mine, n):
                differ.append("global batch (batch size x gradient accumulation x processes)")
            if differ:
                raise InputError(f"cannot resume {self.resume_dir}: its config differs in {', '.join(differ)}")
        self.components: dict = {}

    # -- checkpoints ----------------------------------------------------------------------

    def _find_checkpoint(self, resume: str) -> Path:
        p = Path(resume) if resume != "latest" else self.out
        if (p / STATE_FILE).is_file():
            return p
        root = p / "checkpoints" if (p / "checkpoints").is_dir() else p
        found = sorted((c for c in root.glob("checkpoint-*") if (c / STATE_FILE).is_file()),
                       key=lambda c: int(c.name.split("-")[-1]))
        if not found:
            raise MissingWeightsError(f"no checkpoint to resume from in {p} (expected checkpoint-<step>/{STATE_FILE})")
        return found[-1]

    def save_checkpoint(self, step: int) -> Path:
        acc = self.accelerator
        root = self.out / "checkpoints"
        final = root / f"checkpoint-{step:07d}"
        tmp = root / f".tmp-checkpoint-{step:07d}"
        acc.wait_for_everyone()
        if acc.is_main_process and tmp.exists():
            shutil.rmtree(tmp)
        acc.wait_for_everyone()
        acc.save_state(str(tmp), safe_serialization=True)
        # save_state returns as soon as this process wrote its own files (each process writes its
        # RNG state): the folder is renamed only when all have.
        acc.wait_for_everyone()
        if acc.is_main_process:
            state = dict(self.state, step=step, config=self.cfg.to_dict(), num_processes=acc.num_processes)
            with open(tmp / STATE_FILE, "w") as fh:
                json.dump(state, fh)
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
            keep = max(1, self.cfg.checkpoints_total_limit)
            old = sorted((c for c in root.glob("checkpoint-*")), key=lambda c: int(c.name.split("-")[-1]))
            for c in old[:-keep]:
                shutil.rmtree(c, ignore_errors=True)
            self.plot_losses()
        acc.wait_for_everyone()
        return final

    # -- logging ----------------------------------------------------------------------------

    def plot_losses(self) -> Optional[Path]:
        losses = self.state["losses"]
        if not losses:
            return None
        with open(self.out / "losses.json", "w") as fh:
            json.dump(losses, fh)
        return plot_loss_curve(losses, self.out / "loss.png", title=f"X-Dyna stage {self.cfg.stage}")

    # -- the loop ---------------------------------------------------------------------------

    def say(self, message: str) -> None:
        """A log line from this process; tagged with the process when there are several."""
        acc = self.accelerator
        tag = f"[process {acc.process_index}/{acc.num_processes}] " if acc.num_processes > 1 else ""
        self.log(tag + message)

    def _agree(self, value: int) -> int:
        """The main process's ``value`` on every process (a decision from a wall clock, which
        each process reads differently; disagreeing processes would wait for each other forever)."""
        if self.accelerator.num_processes == 1:
            return int(value)
        t = torch.tensor([int(value)], dtype=torch.int64, device=self.device)
        return int(broadcast(t, from_process=0).item())

    def _loader(self, dataset, batch_size: int, start_step: int):
        acc = self.accelerator
        sampler = StepSampler(batch_size, start_batch=start_step * self.cfg.gradient_accumulation_steps,
                              num_processes=acc.num_processes, process_index=acc.process_index)
        # An in-memory pool is indexed in this process (workers would only copy it around).
        workers = 0 if isinstance(dataset, PooledImages) else self.cfg.data.num_workers
        return DataLoader(WithKeys(dataset), batch_size=batch_size, sampler=sampler, num_workers=workers,
                          persistent_workers=False, pin_memory=self.device.type == "cuda",
                          prefetch_factor=4 if workers else None)

    def _trace(self, step: int, phase: Phase, keys: List[List[int]], loss: float) -> None:
        """One line per optimiser step in ``trace/rank-<r>.jsonl`` (this process's own file):
        the item keys of each micro-batch, this process's loss and a SHA-256 of the trained
        weights after the step."""
        digest = hashlib.sha256()
        for p in phase.params:
            digest.update(p.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
        acc = self.accelerator
        folder = self.out / "trace"
        folder.mkdir(parents=True, exist_ok=True)
        line = {"step": step, "phase": phase.name, "rank": acc.process_index, "num_processes": acc.num_processes,
                "keys": keys, "loss": loss, "weights_sha256": digest.hexdigest()}
        with open(folder / f"rank-{acc.process_index}.jsonl", "a") as fh:
            fh.write(json.dumps(line) + "\n")

    def run_phase(self, phase: Phase) -> None:
        acc, cfg = self.accelerator, self.cfg
        step = max(self.state["step"], phase.start)
        end = int(self.state["phase_end"].get(phase.name, phase.end))
        if step >= end:
            if phase.on_end is not None:
                phase.on_end(True)
            return
        optimizer = torch.optim.AdamW(phase.params, lr=phase.learning_rate, betas=(cfg.adam_beta1, cfg.adam_beta2),
                                      weight_decay=cfg.adam_weight_decay, eps=cfg.adam_epsilon)
        span = {"end": end}
        schedule = cfg.lr_scheduler
        lr_sched = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: lr_factor(s, cfg.lr_warmup_steps, span["end"] - phase.start, schedule))
        objective, optimizer, lr_sched = acc.prepare(phase.objective, optimizer, lr_sched)
        if self.resume_dir is not None and self.state.get("phase") == phase.name:
            acc.load_state(str(self.resume_dir))
            self.say(f"resumed from {self.resume_dir} at step {step}")
        self.state["phase"] = phase.name
        objective.train()
        ga, r, n = cfg.gradient_accumulation_steps, acc.process_index, acc.num_processes
        plan = (f"{phase.name}: steps {step}..{end - 1}, {ga} micro-batch(es) of {phase.batch_size} item(s) per step "
                f"and process, global batch {phase.batch_size * ga * n}")
        if n > 1:
            plan += (f"; this process reads micro-batches {r}, {r + n}, {r + 2 * n}, ... of the item stream "
                     f"(from micro-batch {(step - phase.start) * ga * n + r})")
        self.say(plan)
        noise_device = self.device if self.device.type == "cuda" else "cpu"

        loader = iter(self._loader(phase.dataset, phase.batch_size, step - phase.start))
        bar = None
        if self.progress_bar and acc.is_local_main_process:
            bar = tqdm(total=end - phase.start, initial=step - phase.start, desc=f"stage {cfg.stage} {phase.name}",
                       unit="step", dynamic_ncols=True)
        t_start = time.time()
        elapsed0 = float(self.state.get("elapsed", 0.0))
        phase_t0 = float(self.state.get("phase_elapsed", {}).get(phase.name, 0.0))
        budget = phase.minutes * 60 if phase.minutes else None
        total_budget = cfg.max_minutes * 60 if cfg.max_minutes else None
        limit = phase.end  # the step count the config allows; a time budget can only lower it
        mark_step, mark_t, next_check = step + 2, None, 8  # skip 2 warm-up steps, then re-estimate
        # what this process read, for its closing log line (the first and the last keys)
        first_step, num_read, first_keys, last_keys = step, 0, [], collections.deque(maxlen=16)

        while step < end:
            micro_losses, micro_keys = [], []
            for micro in range(ga):
                batch = next(loader)
                keys = [int(k) for k in batch.pop("key")]
                micro_keys.append(keys)
                noise = L.ItemNoise(cfg.seed, keys, phase.name, device=noise_device)
                batch = {k: v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}
                with acc.accumulate(objective):
                    with acc.autocast():
                        loss = objective(batch, noise)
                    acc.backward(loss)
                    if acc.sync_gradients and cfg.max_grad_norm:
                        acc.clip_grad_norm_(phase.params, cfg.max_grad_norm)
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                micro_losses.append(loss.detach())
            lr_sched.step()
            local_loss = torch.stack(micro_losses).mean()
            step_loss = acc.reduce(local_loss.clone(), reduction="mean").item()
            if not math.isfinite(step_loss):
                raise RuntimeError(f"loss became {step_loss} at step {step} ({phase.name}); lower the learning rate")
            if cfg.trace:
                self._trace(step, phase, micro_keys, float(local_loss))
            for k in (k for keys in micro_keys for k in keys):
                num_read += 1
                (first_keys if len(first_keys) < 16 else last_keys).append(k)
            self.state["losses"].append([step, phase.name, step_loss])
            step += 1
            self.state["step"] = step
            now = time.time() - t_start
            self.state["elapsed"] = elapsed0 + now
            self.state.setdefault("phase_elapsed", {})[phase.name] = phase_t0 + now
            if budget or total_budget:
                # A wall-time budget becomes the phase's last step, estimated from the recent speed
                # after 8, 16, 32, ... steps, so the LR schedule ends where the time does.
                new_end = end
                if step == mark_step:
                    mark_t = now
                if mark_t is not None and step - mark_step >= next_check:
                    per_step = (now - mark_t) / (step - mark_step)
                    left = []
                    if budget:
                        left.append(budget - (phase_t0 + now))
                    if total_budget:
                        left.append(total_budget - (elapsed0 + now))
                    new_end = min(limit, max(step, step + int(min(left) / max(per_step, 1e-6))))
                    mark_step, mark_t, next_check = step, now, next_check * 2
                over = (budget and phase_t0 + now > budget) or (total_budget and elapsed0 + now > total_budget)
                if over and step < new_end:  # slower than measured: stop at the budget anyway
                    new_end = step
                # every process measures its own clock: all follow the main process
                new_end = self._agree(new_end)
                if new_end != end:
                    end = span["end"] = new_end
                    self.state["phase_end"][phase.name] = end
                    if bar is not None:
                        bar.total = end - phase.start
                        bar.refresh()
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{step_loss:.4f}", lr=f"{lr_sched.get_last_lr()[0]:.2e}")
            elif step % max(1, cfg.log_every_steps) == 0 and acc.is_main_process:
                self.log(f"stage {cfg.stage} {phase.name} step {step}/{end} loss {step_loss:.4f}")
            if cfg.checkpointing_steps and step % cfg.checkpointing_steps == 0 and step < end:
                self.save_checkpoint(step)
            if phase.validate is not None and cfg.validation.every_steps and step % cfg.validation.every_steps == 0 \
                    and step < end and acc.is_main_process:
                phase.validate(step)
        if bar is not None:
            bar.close()
        keys = _ranges(first_keys) + (f", ..., {_ranges(last_keys)}" if last_keys else "")
        self.say(f"{phase.name}: trained steps {first_step}..{step - 1} on {num_read} items of its own (keys {keys}), "
                 "weights synchronised with the other processes every step" if n > 1 else
                 f"{phase.name}: trained steps {first_step}..{step - 1} on {num_read} items (keys {keys})")
        self.state["phase_end"][phase.name] = step
        self.save_checkpoint(step)
        acc.free_memory()
        if phase.on_end is not None:
            phase.on_end(False)
        if phase.validate is not None and cfg.validation.at_end and acc.is_main_process:
            phase.validate(step)

    # -- stages -----------------------------------------------------------------------------

    def train(self) -> Path:
        """Run the stage; returns the pipeline folder it wrote (``<output_dir>/model``)."""
        self.out.mkdir(parents=True, exist_ok=True)
        t0 = time.time()
        phases = []
        for phase in (self.stage0_phases() if self.cfg.stage == "0" else self.video_phases()):
            phase = phase.make() if isinstance(phase, _LazyPhase) else phase
            phases.append(phase)
            self.run_phase(phase)
        if self.cfg.stage == "0":
            self.components = inflate_stage0(self.components, self.cfg.stage0.tiny)
        model_dir = self.save_model()
        if self.accelerator.is_main_process:
            self.plot_losses()
            summary = {
                "stage": self.cfg.stage,
                "steps": self.state["step"],
                "wall_seconds_this_run": round(time.time() - t0, 1),
                "train_seconds_total": round(self.state.get("elapsed", 0.0), 1),
                "final_loss": _tail_mean([l[2] for l in self.state["losses"]], 50),
                "phases": {p.name: {"steps": int(self.state["phase_end"].get(p.name, p.end)) - p.start,
                                    "batch_size": p.batch_size, "learning_rate": p.learning_rate,
                                    "trained_parameters": p.groups} for p in phases},
                "device": str(self.device),
                "mixed_precision": self.accelerator.mixed_precision,
                "config": self.cfg.to_dict(),
            }
            with open(self.out / "summary.json", "w") as fh:
                json.dump(summary, fh, indent=2)
        return model_dir

    def save_model(self) -> Path:
        target = self.out / "model"
        if self.accelerator.is_main_process:
            pipe = make_pipeline(self.components)
            tmp = self.out / ".tmp-model"
            if tmp.exists():
                shutil.rmtree(tmp)
            pipe.save_pretrained(str(tmp), safe_serialization=True)
            if target.exists():
                shutil.rmtree(target)
            os.replace(tmp, target)
        self.accelerator.wait_for_everyone()
        return target

    def _text(self, comps) -> torch.Tensor:
        pipe = make_pipeline(comps)
        with torch.no_grad():
            return pipe.encode_prompt("", next(comps["text_encoder"].parameters()).device).to(self.device)

    def _alphas(self, comps) -> torch.Tensor:
        return L.ddpm_scheduler_from(comps["scheduler"].config).alphas_cumprod.to(self.device)

    def stage0_phases(self) -> List[Phase]:
        cfg, s0 = self.cfg, self.cfg.stage0
        d = cfg.data
        comps = build_tiny_stage0(d.height, d.width, cfg.seed, s0.tiny)
        self.components = comps
        vae, unet2d = comps["vae"], comps["unet2d"]
        for name in ("text_encoder", "image_encoder", "image_proj"):
            comps[name].requires_grad_(False)
        for m in (vae, unet2d, comps["text_encoder"]):
            m.to(self.device)
        images = SyntheticImageDataset(num_images=s0.image_pool or 65536, seed=cfg.seed, height=d.height,
                                       width=d.width, scene_ratio=d.scene_ratio, style=d.human.style)
        train_images = images
        pool = None
        if s0.image_pool:
            # A fixed pool rendered once by many processes; its time counts in the stage budget.
            t = time.time()
            pool = render_image_pool(images, workers=max(1, d.num_workers))
            train_images = PooledImages(pool, seed=cfg.seed)
            if "pool_seconds" not in self.state:
                self.state["pool_seconds"] = time.time() - t
                self.state["elapsed"] = self.state.get("elapsed", 0.0) + self.state["pool_seconds"]
            self.say(f"rendered {len(pool)} images in {time.time() - t:.0f} s")
        backbone_data = {"dataset": train_images}
        vae_end = min(s0.vae_steps, cfg.max_steps)
        text = self._text(comps)
        alphas = self._alphas(comps)

        vae_dir = self.out / "stage0_vae"

        def vae_done(skipped: bool):
            # The backbone phase's checkpoints hold only the backbone: the finished VAE is kept
            # in its own folder, and a run resumed past the VAE phase reloads it from there.
            vae.requires_grad_(False)
            vae.eval()
            if skipped:
                f = vae_dir / "diffusion_pytorch_model.safetensors"
                if not f.is_file():
                    raise MissingWeightsError(f"cannot resume stage 0 after its VAE phase: {f} is missing")
                vae.load_state_dict(load_file(str(f)))
            if "vae_scaling_factor" not in self.state:
                self.state["vae_scaling_factor"] = self._latent_scale(vae, images, pool)
            vae.register_to_config(scaling_factor=float(self.state["vae_scaling_factor"]))
            if not skipped and self.accelerator.is_main_process:
                vae.save_pretrained(str(vae_dir), safe_serialization=True)
            self.say(f"VAE latent scaling factor {self.state['vae_scaling_factor']:.5f}")
            if pool is not None:  # encode the pool once: the backbone phase then never runs the VAE
                backbone_data["dataset"] = self._encode_pool(vae, pool)

        def vae_validate(step):
            self._validate_vae(vae, images, step)

        def backbone_validate(step):
            self._validate_backbone(unet2d, vae, text, step)

        vae.requires_grad_(True)
        unet2d.requires_grad_(False)
        vae_phase = Phase("vae", VAEObjective(vae, s0.vae_kl_weight), list(vae.parameters()), train_images,
                          s0.vae_batch_size, s0.vae_learning_rate, 0, vae_end, s0.vae_minutes, vae_done, vae_validate,
                          {"vae": count_parameters(vae.parameters())})

        def make_backbone_phase():
            unet2d.requires_grad_(True)
            start = int(self.state["phase_end"].get("vae", vae_end))  # a time budget may end the VAE early
            return Phase("backbone", BackboneObjective(unet2d, vae, text, alphas), list(unet2d.parameters()),
                         backbone_data["dataset"],
                         s0.backbone_batch_size, s0.backbone_learning_rate, start, max(cfg.max_steps, start + 1), None,
                         None, backbone_validate, {"backbone": count_parameters(unet2d.parameters())})

        # the backbone phase is built when it starts (after the VAE phase froze the VAE)
        return [vae_phase, _LazyPhase(make_backbone_phase)]

    @torch.no_grad()
    def _encode_pool(self, vae, pool: np.ndarray) -> PooledImages:
        means, stds = [], []
        for i in range(0, len(pool), 128):
            x = torch.from_numpy(pool[i:i + 128]).to(self.device).permute(0, 3, 1, 2).float() / 127.5 - 1.0
            dist = vae.encode(x.to(next(vae.parameters()).dtype)).latent_dist
            means.append(dist.mean.float().cpu())
            stds.append(dist.std.float().cpu())
        return PooledImages(mean=torch.cat(means), std=torch.cat(stds), seed=self.cfg.seed + 1)

    def _latent_scale(self, vae, images, pool=None, n: int = 128) -> float:
        """1 / std of the VAE latents of training images (how SD's 0.18215 was chosen), so
        latents enter diffusion with unit variance."""
        if pool is not None:
            xs = torch.from_numpy(pool[:n]).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        else:
            xs = torch.stack([images.get(i, 10_000)["image"] for i in range(n)])
        xs = xs.to(self.device, next(vae.parameters()).dtype)
        with torch.no_grad():
            z = torch.cat([vae.encode(xs[i:i + 32]).latent_dist.mode() for i in range(0, len(xs), 32)])
        return float(1.0 / z.float().std())

    def video_phases(self) -> List[Phase]:
        cfg = self.cfg
        comps = load_components(cfg.pretrained_model)
        self.components = comps
        unet, cn, cn_face, proj = comps["unet"], comps["controlnet"], comps.get("controlnet_face"), comps["image_proj"]
        frozen = [comps["vae"], comps["text_encoder"], comps["image_encoder"], unet, cn, cn_face, proj]
        if cfg.stage == "1":
            groups = stage1_parameter_groups(unet, cn, proj, cfg.train_ip_adapter)
        else:
            if cn_face is None:
                raise MissingWeightsError(f"{cfg.pretrained_model} has no controlnet_face to train in stage 2")
            groups = stage2_parameter_groups(cn_face)
        params = set_trainable(frozen, groups)
        for m in frozen:
            if m is not None:
                m.to(self.device)
                if not any(p.requires_grad for p in m.parameters()):
                    m.to(dtype=self.weight_dtype)
                    m.eval()
        if cfg.gradient_checkpointing:
            unet.enable_gradient_checkpointing()
            cn.enable_gradient_checkpointing()
            if cn_face is not None:
                cn_face.enable_gradient_checkpointing()
        use_face = cfg.stage == "2"
        # Video folders are preprocessed once into a cache: the main process fills it, then the
        # others find their clips there (instead of every process extracting every clip).
        with self.accelerator.main_process_first():
            dataset = build_video_dataset(cfg, human_only=use_face, identity_swap=use_face,
                                          windows_per_clip=cfg.data.windows_per_clip)
        text = self._text(comps)
        objective = VideoObjective(unet, cn, proj, comps["vae"], comps["image_encoder"], comps["feature_extractor"],
                                   text, self._alphas(comps), controlnet_face=cn_face, use_face=use_face,
                                   image_dropout=cfg.image_dropout)
        name = "stage1" if cfg.stage == "1" else "stage2"
        return [Phase(name, objective, params, dataset, cfg.train_batch_size, cfg.learning_rate, 0, cfg.max_steps,
                      None, None, self._validate_video, {k: count_parameters(v) for k, v in groups.items()})]

    # -- validation -------------------------------------------------------------------------

    def _validation_dir(self) -> Path:
        p = self.out / "validation"
        p.mkdir(parents=True, exist_ok=True)
        return p

    @torch.no_grad()
    def _validate_vae(self, vae, images, step):
        xs = torch.stack([images.get(i * images.frames_per_clip, 99_999)["image"] for i in range(6)]).to(self.device)
        was = vae.training
        vae.eval()
        rec = vae.decode(vae.encode(xs).latent_dist.mode()).sample
        vae.train(was)
        grid = torch.cat([torch.cat(list(xs), 2), torch.cat(list(rec), 2)], 1)
        save_image(self._validation_dir() / f"vae-{step:07d}.png", _to_u8(grid))

    @torch.no_grad()
    def _validate_backbone(self, unet2d, vae, text, step):
        sched = DDIMScheduler.from_config(self.components["scheduler"].config)
        sched.set_timesteps(25)
        d = self.cfg.data
        f = 2 ** (len(vae.config.block_out_channels) - 1)
        g = torch.Generator().manual_seed(self.cfg.validation.seed)
        x = torch.randn((4, 4, d.height // f, d.width // f), generator=g).to(self.device)
        was = unet2d.training
        unet2d.eval()
        for t in sched.timesteps:
            eps = unet2d(x, t, encoder_hidden_states=text.expand(4, -1, -1)).sample
            x = sched.step(eps, t, x).prev_sample
        unet2d.train(was)
        img = vae.decode(x / vae.config.scaling_factor).sample
        save_image(self._validation_dir() / f"backbone-{step:07d}.png", _to_u8(torch.cat(list(img), 2)))

    @torch.no_grad()
    def _validate_video(self, step):
        v = self.cfg.validation
        d = self.cfg.data
        clip = validation_clip(self.cfg)
        comps = self.components
        pipe = make_pipeline(comps)
        modules = [m for m in comps.values() if isinstance(m, nn.Module)]
        modes = [m.training for m in modules]
        dtypes = {}
        for m in modules:
            m.eval()
        try:
            pipe.to(self.device)
            # run in float32 for the preview even when frozen parts are stored in half precision
            for name, m in comps.items():
                if isinstance(m, nn.Module) and next(m.parameters(), torch.zeros(())).dtype != torch.float32:
                    dtypes[name] = next(m.parameters()).dtype
                    m.to(torch.float32)
            out = pipe(clip["reference"], clip["pose"], clip["face"] if self.cfg.stage == "2" else None,
                       height=d.height, width=d.width, num_inference_steps=v.num_inference_steps,
                       guidance_scale=v.guidance_scale, generator=torch.Generator().manual_seed(v.seed),
                       output_type="uint8").frames
        finally:
            for name, dt in dtypes.items():
                comps[name].to(dt)
            for m, mode in zip(modules, modes):
                m.train(mode)
        video = side_by_side(clip["frames"], clip["pose"], out, labels=["ground truth", "pose", "generated"])
        try:
            write_video(self._validation_dir() / f"sample-{step:07d}.mp4", video, fps=8)
        except ImportError:  # no PyAV on this machine: a frame strip instead

            save_image(self._validation_dir() / f"sample-{step:07d}.png", frame_strip(video, num=4))


class _LazyPhase:
    """A phase whose objective is built when it starts (after the previous phase)."""

    def __init__(self, make: Callable[[], Phase]):
        self.make = make


def _to_u8(x: torch.Tensor) -> np.ndarray:
    return ((x.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()


def _ranges(keys: List[int]) -> str:
    """Sorted integers as compact ranges: [0, 1, 2, 5] -> '0-2, 5'."""
    out, keys = [], sorted(keys)
    i = 0
    while i < len(keys):
        j = i
        while j + 1 < len(keys) and keys[j + 1] == keys[j] + 1:
            j += 1
        out.append(str(keys[i]) if i == j else f"{keys[i]}-{keys[j]}")
        i = j + 1
    return ", ".join(out)


def _tail_mean(values, n):
    values = [v for v in values if v is not None]
    return float(np.mean(values[-n:])) if values else None


def validation_clip(cfg: TrainConfig, index: int = 0) -> dict:
    """A held-out clip for validation samples: uint8 arrays (reference, frames, pose, face)."""
    d = cfg.data
    if d.human.kind == "synthetic":
        clip = synthetic.render_clip(index, num_frames=cfg.validation.num_frames, height=d.height, width=d.width,
                                     split="heldout")
        ref = synthetic.render_reference(clip, seed=index, with_controls=False)
        return {"reference": ref.frames[0], "frames": clip.frames, "pose": clip.pose_images, "face": clip.face_images}
    ds = HumanVideoDataset(d.human.path, height=d.height, width=d.width, num_frames=cfg.validation.num_frames,
                           fps=d.human.fps, cache_dir=d.human.cache_dir, seed=cfg.seed, progress=False)
    item = ds.get(index % len(ds), 0)
    u8 = lambda x: ((x + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
    return {"reference": u8(item["reference"]).permute(1, 2, 0).numpy(),
            "frames": u8(item["frames"]).permute(0, 2, 3, 1).numpy(),
            "pose": item["pose"].numpy(), "face": item["face"].numpy()}


def plot_loss_curve(losses, path, title: str = "training loss") -> Path:
    """Loss per step (light) and its moving average (dark), one colour per phase, as a PNG."""

    matplotlib.use("Agg")

    fig, ax = plt.subplots(figsize=(7, 3.6), dpi=110)
    phases = []
    for _, name, _ in losses:
        if name not in phases:
            phases.append(name)
    for i, name in enumerate(phases):
        pts = [(s, v) for s, n, v in losses if n == name]
        steps = np.array([p[0] for p in pts])
        vals = np.array([p[1] for p in pts])
        color = f"C{i}"
        ax.plot(steps, vals, color=color, alpha=0.25, lw=0.8)
        k = max(1, min(50, len(vals) // 10))
        if len(vals) >= k:
            smooth = np.convolve(vals, np.ones(k) / k, mode="valid")
            ax.plot(steps[k - 1:], smooth, color=color, lw=1.8, label=f"{name} (avg {k})")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)
    return path
