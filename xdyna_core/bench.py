"""Speed and memory accounting for `xdyna bench`: FLOPs, model FLOPs utilisation (MFU),
timings per step / frame / clip, peak GPU memory, and the benchmark runner.

    from xdyna_core import bench
    flops = bench.window_flops(pipe, frames=16, height=896, width=512)   # counted on "meta"
    bench.mfu(flops["total"], seconds=0.45, peak_tflops=bench.peak_bf16_tflops("NVIDIA H100 80GB HBM3"))

Conventions (kept simple so the numbers can be checked by hand):
- FLOPs are counted with `torch.utils.flop_counter.FlopCounterMode` (matmuls,
  convolutions and attention; a multiply-add is 2 FLOPs; element-wise work is not
  counted) on copies of the models on the `meta` device, so counting costs no compute
  and gives the same number on every machine.
- MFU = model FLOPs / (seconds x dense bf16 tensor-core peak of the GPU), the PaLM
  definition (Chowdhery et al. 2022, App. B) with the vendor's dense (not sparse) peak.
  fp32 and fp16 runs are also divided by the bf16 peak, so MFU compares modes directly.
- One denoising step = every window of the clip through the ControlNets and the UNet
  (CFG batch 2 when guidance is on, one ControlNet pass shared by both halves).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import os
import platform
import sys
import time
import weakref
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL
from diffusers.utils import logging as diffusers_logging
from torch import _dynamo
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import FlopCounterMode
from torch.utils.weak import WeakIdKeyDictionary
from transformers import CLIPTextConfig, CLIPTextModel, CLIPVisionConfig, CLIPVisionModelWithProjection

from xdyna_core.errors import InputError
from xdyna_core.eval import metrics
from xdyna_core.models import XDynaImageProjection, XDynaUNet, make_controlnet
from xdyna_core.models.controlnet import controlnet_shallow_residuals
from xdyna_core.models.loading import default_feature_extractor, official_scheduler
from xdyna_core.pipeline import XDynaPipeline
from xdyna_core.presets import load_preset
from xdyna_core.resources import sd15_unet_config_path
from xdyna_core.speed import DeepCacheState, SpeedOptions
from xdyna_core.testing import make_tiny_components, make_tiny_tokenizer, randomize_zero_parameters
from xdyna_core.windows import blend_windows

SCHEMA = "xdyna-bench/1"

# Dense bf16 tensor-core peaks in TFLOP/s from the vendors' datasheets (without sparsity).
# Matched against torch.cuda.get_device_name() in order: first match wins.
PEAK_BF16_TFLOPS = (
    (("GH200",), 989.0),
    (("H200",), 989.0),
    (("H100", "PCIE"), 756.0),
    (("H100", "NVL"), 835.0),
    (("H100",), 989.0),  # SXM (e.g. "NVIDIA H100 80GB HBM3")
    (("H800", "PCIE"), 756.0),
    (("H800",), 989.0),
    (("B200",), 2250.0),
    (("A100",), 312.0),
    (("A800",), 312.0),
    (("L40S",), 362.0),
    (("L40",), 181.0),
    (("L4",), 121.0),
    (("A10G",), 70.0),
    (("A10",), 125.0),
    (("RTX 6000 ADA",), 364.0),
    (("RTX A6000",), 155.0),
    (("RTX 4090",), 165.0),
    (("RTX 4080",), 97.0),
    (("RTX 3090",), 71.0),
)

WINDOW_SIZE, WINDOW_OVERLAP = 16, 4


def peak_bf16_tflops(device_name: Optional[str]) -> Optional[float]:
    """Dense bf16 peak (TFLOP/s) of a GPU from its name, or None when unknown
    (also for GPUs without bf16 tensor cores such as T4/V100, and for CPUs)."""
    if not device_name:
        return None
    name = device_name.upper()
    for keys, tflops in PEAK_BF16_TFLOPS:
        if all(k in name for k in keys):
            return tflops
    return None


def mfu(flops: Optional[float], seconds: Optional[float], peak_tflops: Optional[float]) -> Optional[float]:
    """Model FLOPs utilisation: `flops` done in `seconds` as a fraction of the peak
    (0..1). None when any input is unknown or the time is not positive."""
    if flops is None or seconds is None or peak_tflops is None or seconds <= 0 or peak_tflops <= 0:
        return None
    return float(flops) / (float(seconds) * float(peak_tflops) * 1e12)


def count_flops(fn: Callable, *args, **kwargs) -> int:
    """FLOPs of `fn(*args, **kwargs)` as counted by `torch.utils.flop_counter.FlopCounterMode`."""

    with FlopCounterMode(display=False) as counter, torch.no_grad():
        fn(*args, **kwargs)
    return int(counter.get_total_flops())


def _meta_copy(model: torch.nn.Module) -> torch.nn.Module:
    """The same architecture with parameters on the `meta` device (no memory, no compute)."""
    with torch.device("meta"):
        return type(model).from_config(model.config)


def window_flops(pipe, frames: int = WINDOW_SIZE, height: int = 896, width: int = 512, cfg: bool = True,
                 shared_control: bool = True, deep_cache_partial: bool = False,
                 deep_cache_branch: Optional[int] = None) -> Dict[str, int]:
    """FLOPs of one window of `frames` noisy frames in one denoising step: the UNet on
    [ref, frames] with CFG batch 2 (1 without CFG) and each ControlNet on the `frames`
    noisy frames (once when `shared_control`, i.e. both CFG halves see the same text,
    as in normal use; twice otherwise). Counted on meta-device copies built from the
    pipeline's configs. `deep_cache_partial`: a DeepCache partial step instead (shallow
    UNet branch, shallow ControlNet residuals). Returns {"unet", "controlnet",
    "controlnet_face", "total"}."""
    scale = pipe.vae_scale_factor
    h, w = height // scale, width // scale
    halves = 2 if cfg else 1
    unet = _meta_copy(pipe.unet)
    cfg_u = unet.config
    text_dim = cfg_u.cross_attention_dim
    tokens = cfg_u.num_text_tokens + cfg_u.num_ip_tokens
    t = torch.tensor(500, device="meta")
    sample = torch.zeros(halves, cfg_u.in_channels, 1 + frames, h, w, device="meta")
    context = torch.zeros(halves, tokens, text_dim, device="meta")
    if deep_cache_partial:
        with torch.no_grad():
            features = unet(sample, t, encoder_hidden_states=context, return_deep_features=True,
                            deep_cache_branch=deep_cache_branch).deep_features
        out = {"unet": count_flops(unet, sample, t, encoder_hidden_states=context, deep_features=features,
                                   deep_cache_branch=deep_cache_branch)}
    else:
        out = {"unet": count_flops(unet, sample, t, encoder_hidden_states=context)}
    total = out["unet"]
    for name in ("controlnet", "controlnet_face"):
        model = getattr(pipe, name, None)
        if model is None:
            out[name] = 0
            continue
        meta = _meta_copy(model)
        r = 1 if (shared_control or not cfg) else 2
        n = r * frames
        args = (meta, torch.zeros(n, meta.config.in_channels, h, w, device="meta"), t)
        kwargs = dict(encoder_hidden_states=torch.zeros(n, cfg_u.num_text_tokens, text_dim, device="meta"),
                      controlnet_cond=torch.zeros(n, meta.config.conditioning_channels, height, width, device="meta"))
        if deep_cache_partial:
            shallow = DeepCacheState(interval=2, branch=deep_cache_branch).shallow_residual_count(unet)
            out[name] = count_flops(controlnet_shallow_residuals, *args, num_residuals=shallow, **kwargs)
        else:
            out[name] = count_flops(*args, return_dict=False, **kwargs)
        total += out[name]
    out["total"] = total
    return out


def num_windows(num_frames: int, window_size: int = WINDOW_SIZE, overlap: int = WINDOW_OVERLAP) -> int:
    """Windows per step of the default ("blend") schedule."""

    return len(blend_windows(num_frames, window_size, overlap))


class LiveTensorBytes:
    """Context manager that tracks the bytes of tensor storages created inside it and
    still alive, per device, and their peak: a CPU-checkable stand-in for
    `torch.cuda.max_memory_allocated` (weights and tensors created before entering are
    not counted). Built on a TorchDispatchMode; storages are freed when their last
    tensor goes away (weak references).

        with LiveTensorBytes() as live:
            pipe(...)
        live.peak["cpu"]  # bytes
    """

    def __init__(self, include_meta: bool = False):
        tracker = self

        class _Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                out = func(*args, **(kwargs or {}))
                tracker._record(out)
                return out

        self._mode = _Mode()
        self._include_meta = include_meta
        self._seen = WeakIdKeyDictionary()
        self.current: Dict[str, int] = {}
        self.peak: Dict[str, int] = {}

    def _free(self, device: str, nbytes: int) -> None:
        self.current[device] = self.current.get(device, 0) - nbytes

    def _record(self, out) -> None:
        for t in tree_flatten(out)[0]:
            if not isinstance(t, torch.Tensor) or (t.device.type == "meta" and not self._include_meta):
                continue
            storage = t.untyped_storage()
            if storage in self._seen:
                continue
            device, nbytes = t.device.type, storage.nbytes()
            self._seen[storage] = weakref.ref(storage, lambda _r, d=device, n=nbytes: self._free(d, n))
            self.current[device] = self.current.get(device, 0) + nbytes
            self.peak[device] = max(self.peak.get(device, 0), self.current[device])

    def __enter__(self):
        self._mode.__enter__()
        return self

    def __exit__(self, *exc):
        return self._mode.__exit__(*exc)


def estimate_unet_peak_bytes(unet, frames: int = WINDOW_SIZE, height: int = 896, width: int = 512,
                             dtype: torch.dtype = torch.bfloat16, cfg: bool = True, memory_chunks: int = 1) -> int:
    """Peak bytes of the activations of one UNet call (weights excluded), estimated on a
    `meta` copy (no memory, no compute) with `LiveTensorBytes`. Attention is modelled as
    a fused (flash) kernel, whose only large allocation is its output; cuDNN workspaces
    and allocator rounding are not included, so a GPU measures somewhat more."""

    meta = _meta_copy(unet).to(dtype)
    if memory_chunks > 1:
        meta.enable_memory_chunking(memory_chunks)
    cfg_u = meta.config
    scale = 8
    halves = 2 if cfg else 1
    sample = torch.zeros(halves, cfg_u.in_channels, 1 + frames, height // scale, width // scale, device="meta", dtype=dtype)
    context = torch.zeros(halves, cfg_u.num_text_tokens + cfg_u.num_ip_tokens, cfg_u.cross_attention_dim,
                          device="meta", dtype=dtype)
    sdpa = F.scaled_dot_product_attention

    def fused_attention(q, k, v, *args, **kwargs):
        torch.empty(q.shape[:-1], device=q.device, dtype=torch.float32)  # log-sum-exp rows
        return torch.empty_like(q)

    F.scaled_dot_product_attention = fused_attention
    try:
        with torch.no_grad(), LiveTensorBytes(include_meta=True) as live:
            meta(sample, torch.tensor(500, device="meta"), encoder_hidden_states=context)
    finally:
        F.scaled_dot_product_attention = sdpa
    return int(live.peak.get("meta", 0))


# ---------------------------------------------------------------------------- models


def full_size_components(device="cuda", seed: int = 0) -> dict:
    """Every component of the official X-Dyna architecture (SD1.5 video UNet with
    motion modules, both ControlNets, SD VAE, CLIP ViT-L text and ViT-H image
    encoders, IP-Adapter-Plus resampler) with random float32 weights, built directly
    on `device`. Deterministic for a seed on a given device. Numbers from these
    weights are about speed and numerical agreement, not about image quality."""

    cfg = json.loads(sd15_unet_config_path().read_text())
    torch.manual_seed(seed)
    with torch.device(device):
        components = dict(
            unet=XDynaUNet.from_config(cfg),
            controlnet=make_controlnet(cfg, 3),
            controlnet_face=make_controlnet(cfg, 6),
            vae=AutoencoderKL(down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
                              block_out_channels=[128, 256, 512, 512], layers_per_block=2, latent_channels=4,
                              sample_size=512),
            text_encoder=CLIPTextModel(CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                                                      num_attention_heads=12, max_position_embeddings=77)),
            image_encoder=CLIPVisionModelWithProjection(CLIPVisionConfig(
                hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=16,
                image_size=224, patch_size=14, projection_dim=1024)),
            image_proj=XDynaImageProjection(),
        )
    # Zero-initialised layers (ControlNet zero convs, adapter and motion-module outputs)
    # cost the same FLOPs but would make those paths no-ops; give them small values so
    # that every path changes the output (as `xdyna_core.testing` does).
    gen = torch.Generator(device=device).manual_seed(seed + 1)
    for name in ("unet", "controlnet", "controlnet_face"):
        randomize_zero_parameters(components[name], gen)
    for module in components.values():
        module.eval()
    components.update(tokenizer=make_tiny_tokenizer(), feature_extractor=default_feature_extractor(),
                      scheduler=official_scheduler())
    return components


def build_pipeline(tiny: bool, device, seed: int = 0):
    """Float32 XDynaPipeline with random weights: tiny (`xdyna_core.testing`) or full size."""

    if tiny:
        pipe = XDynaPipeline(**make_tiny_components(seed=seed)).to(device)
    else:
        pipe = XDynaPipeline(**full_size_components(device, seed))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def parameter_counts(pipe) -> Dict[str, int]:
    return {name: sum(p.numel() for p in getattr(pipe, name).parameters())
            for name in ("unet", "controlnet", "controlnet_face", "vae", "text_encoder", "image_encoder", "image_proj")
            if getattr(pipe, name, None) is not None}


# ---------------------------------------------------------------------------- modes

# Each mode: how the pipeline is set up and called. dtype applies on CUDA (CPU runs float32).
MODES: Dict[str, dict] = {
    "fp32": dict(dtype="float32", tf32=False, unet_call=True,
                 about="float32 (TF32 off), one window per call, no compile: the numerical reference"),
    "reference": dict(dtype="float16", unet_call=True,
                      about="plain float16 (the official precision), one window per call, no compile"),
    "default": dict(dtype="bfloat16", cudnn_benchmark=True, unet_call=True,
                    about="bfloat16 with the pipeline defaults (what `default_dtype` picks on a GPU)"),
    "batched": dict(dtype="bfloat16", cudnn_benchmark=True, call=dict(window_batch_size=2),
                    about="default + two windows per UNet/ControlNet call"),
    "channels-last": dict(dtype="bfloat16", cudnn_benchmark=True, channels_last=True, unet_call=True,
                          about="default + channels-last convolution weights"),
    "cudnn-attention": dict(dtype="bfloat16", cudnn_benchmark=True, unet_call=True,
                            sdpa=("CUDNN_ATTENTION", "FLASH_ATTENTION", "EFFICIENT_ATTENTION", "MATH"),
                            about="default + cuDNN attention preferred by SDPA (Hopper; head size 40 at level 0)"),
    "compiled": dict(dtype="bfloat16", cudnn_benchmark=True, compile=True, unet_call=True,
                     about="default + torch.compile of the repeated blocks (compile time reported separately)"),
    "lean": dict(dtype="bfloat16", cudnn_benchmark=True, memory_chunks=4, call=dict(decode_chunk_size=2),
                 about="default + UNet memory chunking (4) + VAE decode two frames at a time (lower peak)"),
    "offload": dict(dtype="bfloat16", cudnn_benchmark=True, offload="model",
                    about="default + enable_model_cpu_offload() (whole models move to the GPU when used)"),
    "sequential-offload": dict(dtype="bfloat16", cudnn_benchmark=True, offload="sequential",
                               about="default + enable_sequential_cpu_offload() (weights stream layer by layer)"),
    "fast-dpmpp": dict(dtype="bfloat16", cudnn_benchmark=True, preset="fast-dpmpp",
                       about="preset fast-dpmpp: DPM-Solver++(2M), fewer steps"),
    "fast-truncate": dict(dtype="bfloat16", cudnn_benchmark=True, preset="fast-truncate",
                          about="preset fast-truncate: CFG on the first 60% of the steps only"),
    "fast-deepcache": dict(dtype="bfloat16", cudnn_benchmark=True, preset="fast-deepcache",
                           about="preset fast-deepcache: deep UNet features reused (DeepCache)"),
    "fast-all": dict(dtype="bfloat16", cudnn_benchmark=True, preset="fast-all",
                     about="preset fast-all: DPM-Solver++, guidance truncation and DeepCache together"),
}
SPEED_KEYS = SpeedOptions.field_names() + ("num_inference_steps", "decode_chunk_size")


@dataclasses.dataclass
class RunSpec:
    """One entry of --modes: `mode[:frames[+frames...]][@steps]`."""

    mode: str
    frames: Optional[List[int]] = None
    steps: Optional[int] = None


def parse_modes(text: str) -> List[RunSpec]:
    """Parse "fp32:16,reference,default,sequential-offload:16@5" into RunSpecs.
    Raises InputError naming the known modes for an unknown one."""

    specs = []
    for item in [p.strip() for p in text.split(",") if p.strip()]:
        steps = None
        if "@" in item:
            item, s = item.split("@", 1)
            if not s.isdigit() or int(s) < 1:
                raise InputError(f"bad step count in --modes entry {item}@{s}: expected a positive integer")
            steps = int(s)
        frames = None
        if ":" in item:
            item, f = item.split(":", 1)
            try:
                frames = [int(x) for x in f.split("+")]
            except ValueError:
                raise InputError(f"bad frame counts {f!r} in --modes entry for {item}: expected e.g. 16 or 16+64") from None
            if any(x < 1 for x in frames):
                raise InputError(f"frame counts must be positive, got {frames}")
        if item not in MODES:
            raise InputError(f"unknown benchmark mode {item!r}; known: {', '.join(MODES)}")
        specs.append(RunSpec(item, frames, steps))
    if not specs:
        raise InputError("--modes is empty")
    return specs


def mode_steps(preset_steps: Optional[int], steps: int) -> int:
    """Steps of a fast-* preset run: the preset's count is meant against the official
    25, so it is scaled with the benchmark's --steps (12 of 25 -> 6 of 12)."""
    if preset_steps is None:
        return steps
    return max(1, round(preset_steps * steps / 25))


def mode_call_kwargs(mode: str) -> dict:
    """Pipeline call arguments of a mode (its preset's speed settings included)."""
    spec = MODES[mode]
    kwargs = dict(spec.get("call", {}))
    if "preset" in spec:
        preset = load_preset(spec["preset"])
        kwargs.update({k: v for k, v in preset.items() if k in SPEED_KEYS})
    return kwargs


# ---------------------------------------------------------------------------- inputs & timing


def make_inputs(num_frames: int, height: int, width: int, seed: int = 0):
    """Random photo (already H x W, so no resize is needed) and random pose / S-Face
    control frames; the same for every mode."""
    rng = np.random.default_rng(seed + num_frames)
    photo = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    pose = rng.integers(0, 256, (num_frames, height, width, 3), dtype=np.uint8)
    face = rng.integers(0, 256, (num_frames, height, width, 6), dtype=np.uint8)
    return photo, pose, face


def timed_call(pipe, num_frames: int, height: int, width: int, steps: int, seed: int = 0, **call_kwargs) -> dict:
    """Run the pipeline once on random inputs and time it. Returns the frames (uint8)
    and timings from the progress stamps (the GPU is synchronised at each stamp):
    setup (encoders, latent init: everything before the first step), steady-state
    seconds per step (steps after the first), decode, total; and the peak GPU memory."""
    cuda = pipe._execution_device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    photo, pose, face = make_inputs(num_frames, height, width, seed)
    stamps = []
    stage_peaks: Dict[str, int] = {}

    def progress(info):
        sync()
        stamps.append((info.stage, info.step, info.window, info.num_windows, time.perf_counter()))
        if cuda:  # peak per stage: reset after every stamp, keep the largest
            stage_peaks[info.stage] = max(stage_peaks.get(info.stage, 0), torch.cuda.max_memory_allocated())
            torch.cuda.reset_peak_memory_stats()

    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    sync()
    start = time.perf_counter()
    frames = pipe(photo, pose, face, height=height, width=width, num_inference_steps=steps,
                  generator=torch.Generator().manual_seed(seed), output_type="uint8", progress=progress,
                  **call_kwargs).frames
    sync()
    end = time.perf_counter()
    step_end = {}
    for stage, step, window, nw, t in stamps:
        if stage == "denoise" and window == nw:
            step_end[step] = t
    ends = [step_end[i] for i in sorted(step_end)]
    denoise_stamps = [t for s, *_, t in stamps if s == "denoise"]
    last_denoise = max(denoise_stamps)
    if len(ends) > 1:
        per_step = (ends[-1] - ends[0]) / (len(ends) - 1)
        setup = max(0.0, ends[0] - start - per_step)
    else:
        per_step = ends[0] - start  # one step: includes the setup
        setup = 0.0
    out = dict(
        frames=frames,
        seconds_total=end - start,
        seconds_setup=setup,
        seconds_per_step=per_step,
        seconds_denoise=last_denoise - start - setup,
        seconds_decode=end - last_denoise,
        steps_timed=len(ends),
    )
    if cuda:
        # "denoise" includes the encoders before the first window; "decode" the VAE chunks
        stage_peaks["after"] = int(torch.cuda.max_memory_allocated())
        out["peak_memory_bytes"] = int(max(stage_peaks.values()))
        out["peak_memory_by_stage_bytes"] = {k: int(v) for k, v in stage_peaks.items()}
        out["peak_reserved_bytes"] = int(torch.cuda.max_memory_reserved())
        out["resident_before_bytes"] = int(base)
    return out


def time_unet_call(pipe, frames: int, height: int, width: int, repeats: int = 5, warmup: int = 2) -> Optional[float]:
    """Median seconds of one UNet call alone (CFG batch 2, [ref, `frames`] frames,
    ControlNet-sized residuals) in the pipeline's current dtype/device. None if the UNet
    is offloaded (its time would be transfer time)."""
    unet = pipe.unet
    device = next(unet.parameters()).device
    if device.type == "meta" or hasattr(unet, "_hf_hook"):
        return None
    cfg = unet.config
    scale = pipe.vae_scale_factor
    h, w = height // scale, width // scale
    gen = torch.Generator().manual_seed(0)
    dtype = unet.dtype
    sample = torch.randn(2, cfg.in_channels, 1 + frames, h, w, generator=gen).to(device, dtype)
    context = torch.randn(2, cfg.num_text_tokens + cfg.num_ip_tokens, cfg.cross_attention_dim, generator=gen).to(device, dtype)
    t = torch.tensor(500, device=device)
    cuda = device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    times = []
    with torch.no_grad():
        for i in range(warmup + repeats):
            sync()
            t0 = time.perf_counter()
            unet(sample, t, encoder_hidden_states=context)
            sync()
            if i >= warmup:
                times.append(time.perf_counter() - t0)
    return float(np.median(times))


def quality(frames: np.ndarray, reference: np.ndarray) -> dict:
    """Mean PSNR (dB) and SSIM of `frames` against `reference` (uint8 clips) with
    `xdyna_core.eval.metrics`. Identical frames have infinite PSNR: they are counted and
    left out of the mean (psnr_db None when all are identical). SSIM is None where
    scikit-image is missing."""

    p = metrics.psnr(frames, reference)
    finite = p[np.isfinite(p)]
    out = {"psnr_db": float(finite.mean()) if len(finite) else None, "psnr_min_db": float(finite.min()) if len(finite) else None,
           "identical_frames": int((~np.isfinite(p)).sum()), "frames": int(len(p)),
           "max_abs_diff": int(np.abs(frames.astype(np.int16) - reference.astype(np.int16)).max())}
    try:
        out["ssim"] = float(metrics.ssim(frames, reference).mean()) if min(frames.shape[1:3]) >= 7 else None
    except ImportError:
        out["ssim"] = None
    return out


# ---------------------------------------------------------------------------- runner


def device_info(device: torch.device) -> dict:
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        name = torch.cuda.get_device_name(device)
        return dict(type="cuda", name=name, memory_total_bytes=int(props.total_memory),
                    peak_bf16_tflops=peak_bf16_tflops(name), cuda=torch.version.cuda)
    return dict(type=device.type, name=platform.processor() or platform.machine(), cpu_threads=torch.get_num_threads(),
                peak_bf16_tflops=None)


def software_info() -> dict:
    info = {"python": platform.python_version(), "torch": torch.__version__}
    for name in ("diffusers", "transformers", "accelerate"):
        try:
            info[name] = __import__(name).__version__
        except Exception:  # pragma: no cover - informative only
            info[name] = None
    return info


class SkipMode(Exception):
    """A mode that cannot run on this device."""


def _prepare(pipe, mode: str, device: torch.device, state: dict):
    """Put `pipe` into `mode`: dtype, backend flags, offload, compile, channels-last.
    `state` remembers what was done so the next mode can undo it (or rebuild)."""
    spec = MODES[mode]
    dtype = getattr(torch, spec["dtype"]) if device.type == "cuda" else torch.float32
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = spec.get("tf32", True) and spec["dtype"] != "float32"
        torch.backends.cudnn.allow_tf32 = spec.get("tf32", True) and spec["dtype"] != "float32"
        torch.backends.cudnn.benchmark = bool(spec.get("cudnn_benchmark", False))
    offload = spec.get("offload")
    if offload:
        pipe.to("cpu", dtype)
        if device.type != "cuda":
            raise SkipMode("needs a CUDA device (CPU offload moves weights between the CPU and a GPU)")
        if offload == "model":
            pipe.enable_model_cpu_offload(device=device)
        else:
            pipe.enable_sequential_cpu_offload(device=device)
    else:
        pipe.to(device, dtype)
    if spec.get("channels_last"):
        pipe.enable_channels_last()
    if spec.get("memory_chunks"):
        pipe.unet.enable_memory_chunking(spec["memory_chunks"])
    if spec.get("compile"):
        pipe.compile()
    return dtype


def mode_context(mode: str):
    """Context manager a mode runs in (SDPA backend priority), or a no-op."""

    names = MODES[mode].get("sdpa")
    if not names:
        return contextlib.nullcontext()

    backends = [getattr(SDPBackend, n) for n in names]
    try:
        return sdpa_kernel(backends, set_priority=True)
    except TypeError:  # older torch: no priority order, only the allowed set
        return sdpa_kernel(backends)


def run_benchmark(specs: Sequence[RunSpec], *, tiny: bool = False, device=None, height: int = 896, width: int = 512,
                  frames: Sequence[int] = (16, 64), steps: int = 25, seed: int = 0, unet_repeats: int = 5,
                  json_path: Optional[str] = None, command: Optional[str] = None,
                  log: Callable[[str], None] = print) -> dict:
    """Run every mode in `specs` on freshly built random-weight pipelines (the same
    float32 weights cast to each mode's dtype) and return the JSON-able report. The
    report is rewritten to `json_path` after every run, so a run that is stopped keeps
    what was measured."""

    diffusers_logging.set_verbosity_error()  # casting warnings for every mode
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dev = device_info(device)
    report = dict(
        schema=SCHEMA,
        created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        command=command,
        device=dev,
        software=software_info(),
        model="tiny random weights (xdyna_core.testing)" if tiny else "full-size X-Dyna architecture, random weights",
        settings=dict(height=height, width=width, steps=steps, frames=list(frames), guidance_scale=7.5,
                      window_size=WINDOW_SIZE, window_overlap=WINDOW_OVERLAP, window_schedule="blend", seed=seed),
        modes={spec.mode: MODES[spec.mode]["about"] for spec in specs},
        runs=[],
    )
    build_start = time.perf_counter()
    pipe = build_pipeline(tiny, device if not tiny else "cpu", seed)
    log(f"built {report['model']} in {time.perf_counter() - build_start:.1f} s")
    report["parameters"] = parameter_counts(pipe)
    flops = {"cfg": window_flops(pipe, WINDOW_SIZE, height, width, cfg=True),
             "no_cfg": window_flops(pipe, WINDOW_SIZE, height, width, cfg=False),
             "cfg_deep_cache_partial": window_flops(pipe, WINDOW_SIZE, height, width, cfg=True, deep_cache_partial=True),
             "no_cfg_deep_cache_partial": window_flops(pipe, WINDOW_SIZE, height, width, cfg=False, deep_cache_partial=True)}
    report["flops_per_window"] = flops
    fp32_state = {k: v.detach().to("cpu", copy=True) for k, v in _all_state(pipe).items()}
    outputs: Dict[tuple, np.ndarray] = {}

    def save():
        if json_path:
            write_json(report, json_path)

    for spec in specs:
        mode_frames = spec.frames or list(frames)
        for n in mode_frames:
            run = dict(mode=spec.mode, frames=n, windows=num_windows(n), status="ok")
            call = mode_call_kwargs(spec.mode)
            run_steps = spec.steps or mode_steps(call.pop("num_inference_steps", None), steps)
            run.update(steps=run_steps, call=call)
            report["runs"].append(run)
            try:
                _restore(pipe, fp32_state, device)
                dtype = _prepare(pipe, spec.mode, device, {})
                run["dtype"] = str(dtype).replace("torch.", "")
                warm_start = time.perf_counter()
                with mode_context(spec.mode):
                    timed_call(pipe, min(n, WINDOW_SIZE), height, width, 1, seed, **call)  # warm-up / compile
                warm = time.perf_counter() - warm_start
                with mode_context(spec.mode):
                    result = timed_call(pipe, n, height, width, run_steps, seed, **call)
                frames_out = result.pop("frames")
                run.update({k: (round(v, 6) if isinstance(v, float) else v) for k, v in result.items()})
                if MODES[spec.mode].get("compile"):
                    # warm-up call = compile + setup + one step of one window + decode of <= 16 frames
                    eager = (result["seconds_setup"] + result["seconds_per_step"] / run["windows"]
                             + result["seconds_decode"] * min(n, WINDOW_SIZE) / n)
                    run["compile_seconds"] = round(max(0.0, warm - eager), 3)
                run["seconds_warmup_call"] = round(warm, 3)
                run["seconds_per_frame"] = round(result["seconds_total"] / n, 6)
                run["seconds_per_window_step"] = round(result["seconds_per_step"] / run["windows"], 6)
                per_step_flops = _step_flops(flops, n, run_steps, call)
                run["flops_per_step"] = per_step_flops
                run["mfu_step"] = _round(mfu(per_step_flops, result["seconds_per_step"], dev["peak_bf16_tflops"]))
                if "peak_memory_bytes" in run:
                    run["peak_memory_gib"] = round(run["peak_memory_bytes"] / 2**30, 3)
                if n == mode_frames[0] and MODES[spec.mode].get("unet_call"):
                    with mode_context(spec.mode):
                        sec = time_unet_call(pipe, WINDOW_SIZE, height, width, repeats=unet_repeats)
                    run["unet_call"] = dict(seconds=_round(sec), flops=flops["cfg"]["unet"],
                                            mfu=_round(mfu(flops["cfg"]["unet"], sec, dev["peak_bf16_tflops"])))
                outputs[(spec.mode, n, run_steps)] = frames_out
            except SkipMode as err:
                run["status"] = "skipped"
                run["error"] = str(err)
            except Exception as err:  # one failing mode (e.g. out of memory) must not lose the others
                run["status"] = "error"
                run["error"] = f"{type(err).__name__}: {str(err)[:500]}"
                if device.type == "cuda":
                    torch.cuda.empty_cache()
            finally:
                _undo(pipe, spec.mode)
            _add_quality(report, outputs)
            log(format_run(run))
            save()
    del pipe
    report["table"] = format_table(report)
    save()
    return report


def _step_flops(flops: dict, num_frames: int, steps: int, call: dict) -> int:
    """Average model FLOPs per step of a run, following the pipeline's schedule: CFG on
    the first ceil(guidance_truncation * steps) steps, DeepCache full steps every
    deep_cache_interval-th step (and whenever CFG switches off) and partial ones between."""
    windows = num_windows(num_frames)
    speed = SpeedOptions(guidance_truncation=call.get("guidance_truncation"),
                         deep_cache_interval=call.get("deep_cache_interval", 1))
    cfg_steps = speed.cfg_steps(steps)
    deep_cache = speed.deep_cache()  # the pipeline's rule for which steps reuse features
    total = 0
    for i in range(steps):
        key = "cfg" if i < cfg_steps else "no_cfg"
        halves = 2 if i < cfg_steps else 1
        partial = False
        if deep_cache is not None:
            deep_cache.begin_step(i)
            partial = deep_cache.reusable(0, halves) is not None
            if not partial:
                deep_cache.store(0, halves, torch.empty(0))  # a full step: its features are cached
        total += flops.get(f"{key}_deep_cache_partial" if partial else key, flops[key])["total"]
    return int(windows * total / steps)


def _all_state(pipe) -> dict:
    state = {}
    for name in ("unet", "controlnet", "controlnet_face", "vae", "text_encoder", "image_encoder", "image_proj"):
        model = getattr(pipe, name, None)
        if model is not None:
            state.update({f"{name}.{k}": v for k, v in model.state_dict().items()})
    return state


def _restore(pipe, state: dict, device: torch.device) -> None:
    """Load the float32 master weights (on the CPU) back, so every mode starts from the
    same numbers; `_prepare` then moves and casts them."""
    for name in ("unet", "controlnet", "controlnet_face", "vae", "text_encoder", "image_encoder", "image_proj"):
        model = getattr(pipe, name, None)
        if model is None:
            continue
        prefix = f"{name}."
        # assign=True: after sequential offload the parameters are on "meta" and cannot be
        # copied into; the master tensors are never modified (every mode casts or moves).
        model.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}, assign=True)


def _undo(pipe, mode: str) -> None:
    spec = MODES[mode]
    if spec.get("offload"):
        pipe.remove_all_hooks()
        if hasattr(pipe, "_offload_device"):
            del pipe._offload_device  # noqa: SLF001 - let _execution_device follow the weights again
    if spec.get("compile"):
        for name in ("unet", "controlnet", "controlnet_face"):
            model = getattr(pipe, name, None)
            for module in (model.modules() if model is not None else ()):
                if getattr(module, "_compiled_call_impl", None) is not None:
                    module._compiled_call_impl = None
        _dynamo.reset()
    if spec.get("memory_chunks"):
        pipe.unet.disable_memory_chunking()
    if spec.get("channels_last"):
        for name in ("unet", "controlnet", "controlnet_face", "vae"):
            model = getattr(pipe, name, None)
            if model is not None:
                model.to(memory_format=torch.contiguous_format)


def _add_quality(report: dict, outputs: dict) -> None:
    """PSNR/SSIM of every finished run against the fp32 and the default run of the
    same clip length: fast-* presets against the baseline step count (--steps, what
    they replace), other modes against the same step count."""
    for run in report["runs"]:
        if run.get("status") != "ok":
            continue
        key = (run["mode"], run["frames"], run["steps"])
        if key not in outputs:
            continue
        target = report["settings"]["steps"] if "preset" in MODES[run["mode"]] else run["steps"]
        q = run.setdefault("quality", {})
        for base in ("fp32", "default"):
            ref = outputs.get((base, run["frames"], target))
            if base != run["mode"] and ref is not None and f"vs_{base}" not in q:
                q[f"vs_{base}"] = quality(outputs[key], ref)


def _round(x, digits: int = 6):
    return None if x is None else round(float(x), digits)


def write_json(report: dict, path) -> None:
    """Atomic write (temp file + os.replace)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(report, indent=2, allow_nan=False) + "\n")
    os.replace(tmp, path)


def format_run(run: dict) -> str:
    if run.get("status") != "ok":
        return f"{run['mode']:>18} {run['frames']:4d} frames: {run.get('status')} {run.get('error', '')}"
    peak = f"{run['peak_memory_gib']:.2f} GiB" if run.get("peak_memory_gib") is not None else "n/a"
    m = f"{100 * run['mfu_step']:.1f}%" if run.get("mfu_step") is not None else "n/a"
    return (f"{run['mode']:>18} {run['frames']:4d} frames {run['steps']:3d} steps: {run['seconds_per_step']:.3f} s/step, "
            f"{run['seconds_per_frame']:.3f} s/frame, {run['seconds_total']:.1f} s total, peak {peak}, MFU {m}")


def format_table(report: dict) -> str:
    """Markdown table of the runs."""
    head = ("| mode | frames | steps | s/step | s/frame | total s | decode s | peak GiB | MFU step | UNet call s (MFU) "
            "| PSNR vs fp32 | PSNR vs default |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for run in report["runs"]:
        if run.get("status") != "ok":
            lines.append(f"| {run['mode']} | {run['frames']} | {run.get('steps', '')} | {run.get('status')}: "
                         f"{run.get('error', '')[:60]} |" + " |" * 8)
            continue
        q = run.get("quality", {})

        def ps(key):
            v = q.get(key)
            if v is None:
                return ""
            if v["psnr_db"] is None:
                return "identical"
            return f"{v['psnr_db']:.1f}"

        unet = run.get("unet_call") or {}
        unet_txt = "" if unet.get("seconds") is None else (
            f"{unet['seconds']:.3f}" + (f" ({100 * unet['mfu']:.0f}%)" if unet.get("mfu") is not None else ""))
        fmt = lambda v, f: "" if v is None else format(v, f)  # noqa: E731
        lines.append(
            f"| {run['mode']} | {run['frames']} | {run['steps']} | {run['seconds_per_step']:.3f} | "
            f"{run['seconds_per_frame']:.3f} | {run['seconds_total']:.1f} | {run['seconds_decode']:.2f} | "
            f"{fmt(run.get('peak_memory_gib'), '.2f')} | "
            f"{'' if run.get('mfu_step') is None else format(100 * run['mfu_step'], '.1f') + '%'} | {unet_txt} | "
            f"{ps('vs_fp32')} | {ps('vs_default')} |")
    return "\n".join(lines)


def command_line() -> str:
    return " ".join(["xdyna"] + sys.argv[1:]) if sys.argv and sys.argv[0].endswith("xdyna") else " ".join(sys.argv)
