"""Speed and memory of the *official* X-Dyna implementation, for the side-by-side in the
README ("Speed and memory"): same architecture with random weights, same resolution,
frames, steps and CFG as `xdyna bench`, on the same GPU.

The official code (GitHub bytedance/X-Dyna, commit 9a54f8e) is never part of this
repository: fetch it beside the project (e.g. /tmp/X-Dyna) and point --official-root at
it. It needs diffusers 0.24 (its imports do not exist in current diffusers), so it runs
in its own package folder (see benchmarks/gpu_bench.sh `official`), not in our
environment; this script imports nothing from xdyna_core.

What is changed in the official run, in this process only (no file is edited):
- xformers: the official attention layers call `xformers.ops.memory_efficient_attention`
  whenever `is_xformers_available()` and have no working fallback with diffusers 0.24
  (the `_attention` method they call was removed). Current xformers builds do not match
  current torch, so the two module-level names are rebound to a shim that computes the
  same softmax(QK^T/sqrt(d))V with torch's `scaled_dot_product_attention` (flash /
  memory-efficient kernels on the GPU; 4-D inputs so the fused kernels apply).
- torchvision (only `GaussianBlur`, once per clip on the initial latents): used when
  installed; otherwise a stand-in with the same arithmetic.
Everything else (fp16 weights, autocast, ControlNets on both CFG halves, frame-by-frame
VAE decode, closed-loop windows) is the official code path of inference_xdyna.py.

    PYTHONPATH=/tmp/offsite python benchmarks/official_speed.py --official-root /tmp/X-Dyna \
        --frames 16,64 --steps 25 --json official.json
    python benchmarks/official_speed.py --official-root /tmp/X-Dyna --tiny --device cpu   # smoke test
"""

from __future__ import annotations

import argparse
import datetime
import importlib.machinery
import json
import os
import random
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
SD15_UNET_CONFIG = ROOT / "tests" / "data" / "official_keys" / "sd15_unet_config.json"


# ---------------------------------------------------------------------------- shims


def memory_efficient_attention(query, key, value, attn_bias=None, p=0.0, scale=None):
    """Drop-in for `xformers.ops.memory_efficient_attention` on the official 3-D inputs
    [batch*heads, tokens, head_dim]: the same unmasked softmax attention (default scale
    1/sqrt(head_dim)) through SDPA, with a leading axis so the fused kernels are used."""
    out = F.scaled_dot_product_attention(query[None], key[None], value[None],
                                         attn_mask=None if attn_bias is None else attn_bias[None], scale=scale)
    return out[0]


def install_torchvision_stand_in() -> bool:
    """Register a minimal `torchvision.transforms.GaussianBlur` when torchvision is missing
    (it must never be installed on the CPU development machines). Returns True if used."""
    try:
        import torchvision  # noqa: F401

        return False
    except ImportError:
        pass

    class GaussianBlur:
        """torchvision's GaussianBlur arithmetic for fixed kernel size and sigma: 1-D
        kernels from linspace, outer product, reflect padding, depthwise conv2d."""

        def __init__(self, kernel_size, sigma):
            self.k = kernel_size[0] if isinstance(kernel_size, (tuple, list)) else kernel_size
            self.s = sigma[0] if isinstance(sigma, (tuple, list)) else sigma

        def __call__(self, x):
            half = (self.k - 1) * 0.5
            grid = torch.linspace(-half, half, steps=self.k, device=x.device)
            pdf = torch.exp(-0.5 * (grid / self.s).pow(2))
            k1 = pdf / pdf.sum()
            kernel = (k1[:, None] * k1[None, :]).to(x.dtype).expand(x.shape[1], 1, self.k, self.k)
            pad = self.k // 2
            mode = "reflect" if min(x.shape[-2:]) > pad else "replicate"
            return F.conv2d(F.pad(x, [pad, pad, pad, pad], mode=mode), kernel, groups=x.shape[1])

    tv = types.ModuleType("torchvision")
    transforms = types.ModuleType("torchvision.transforms")
    transforms.GaussianBlur = GaussianBlur
    tv.transforms = transforms
    tv.__spec__ = importlib.machinery.ModuleSpec("torchvision", None)
    transforms.__spec__ = importlib.machinery.ModuleSpec("torchvision.transforms", None)
    sys.modules["torchvision"] = tv
    sys.modules["torchvision.transforms"] = transforms
    return True


def import_official(root: Path):
    """Import the official classes from a checkout and route their xformers calls to SDPA."""
    if not (root / "animatediff" / "pipelines" / "pipeline_xdyna.py").exists():
        raise SystemExit(f"{root} is not a checkout of bytedance/X-Dyna (animatediff/pipelines/pipeline_xdyna.py missing)")
    sys.path.insert(0, str(root))
    stand_in = install_torchvision_stand_in()
    import animatediff.models.attention as attention
    import animatediff.models.motion_module as motion_module
    from animatediff.models.controlnet import ControlNetModel
    from animatediff.models.ip_adapter import Resampler
    from animatediff.models.unet import UNet3DConditionModel
    from animatediff.pipelines.pipeline_xdyna import XDynaPipeline

    shim = types.SimpleNamespace(ops=types.SimpleNamespace(memory_efficient_attention=memory_efficient_attention))
    for module in (attention, motion_module):
        module.xformers = shim
        module.is_xformers_available = lambda: True
    return dict(UNet3DConditionModel=UNet3DConditionModel, ControlNetModel=ControlNetModel, Resampler=Resampler,
                XDynaPipeline=XDynaPipeline, torchvision_stand_in=stand_in)


# ---------------------------------------------------------------------------- models


def byte_tokenizer(folder: Path):
    """A CLIPTokenizer without downloads: byte-level vocabulary (514 tokens), no merges."""
    from transformers import CLIPTokenizer
    from transformers.models.clip.tokenization_clip import bytes_to_unicode

    alphabet = list(bytes_to_unicode().values())
    vocab = {c: i for i, c in enumerate(alphabet)}
    vocab.update({c + "</w>": 256 + i for i, c in enumerate(alphabet)})
    vocab.update({"<|startoftext|>": 512, "<|endoftext|>": 513})
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tok = CLIPTokenizer(vocab_file=str(folder / "vocab.json"), merges_file=str(folder / "merges.txt"))
    tok.model_max_length = 77
    return tok


def build(official: dict, root: Path, device: str, tiny: bool, seed: int):
    """The official pipeline as inference_xdyna.py builds it, with random weights."""
    import yaml
    from diffusers import AutoencoderKL, DDIMScheduler
    from transformers import CLIPImageProcessor, CLIPTextConfig, CLIPTextModel, CLIPVisionConfig, CLIPVisionModelWithProjection

    infer = yaml.safe_load((root / "configs" / "x_dyna.yaml").read_text())
    unet_cfg = json.loads(SD15_UNET_CONFIG.read_text())
    if tiny:
        unet_cfg.update(block_out_channels=[32, 64], layers_per_block=1, norm_num_groups=8, cross_attention_dim=32,
                        attention_head_dim=[2, 4], down_block_types=["CrossAttnDownBlock2D", "DownBlock2D"],
                        up_block_types=["UpBlock2D", "CrossAttnUpBlock2D"])
    unet_cfg["down_block_types"] = [t.replace("2D", "3D") for t in unet_cfg["down_block_types"]]
    unet_cfg["up_block_types"] = [t.replace("2D", "3D") for t in unet_cfg["up_block_types"]]
    unet_cfg = {k: v for k, v in unet_cfg.items() if not k.startswith("_")}
    torch.manual_seed(seed)
    unet = official["UNet3DConditionModel"].from_config(unet_cfg, **infer["unet_additional_kwargs"])
    cn_cfg = dict(block_out_channels=unet_cfg["block_out_channels"], layers_per_block=unet_cfg["layers_per_block"],
                  norm_num_groups=unet_cfg["norm_num_groups"], cross_attention_dim=unet_cfg["cross_attention_dim"],
                  attention_head_dim=unet_cfg["attention_head_dim"],
                  down_block_types=[t.replace("3D", "2D") for t in unet_cfg["down_block_types"]],
                  conditioning_embedding_out_channels=(4, 8, 16, 16) if tiny else (16, 32, 96, 256))
    controlnet = official["ControlNetModel"].from_config({**cn_cfg, "conditioning_channels": 3})
    controlnet_face = official["ControlNetModel"].from_config({**cn_cfg, "conditioning_channels": 6})
    vae_ch = [8, 16, 16, 16] if tiny else [128, 256, 512, 512]
    vae = AutoencoderKL(down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
                        block_out_channels=vae_ch, layers_per_block=1 if tiny else 2, latent_channels=4,
                        norm_num_groups=8 if tiny else 32)
    dim = unet_cfg["cross_attention_dim"]
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=514 if tiny else 49408, hidden_size=dim, intermediate_size=4 * dim, num_hidden_layers=2 if tiny else 12,
        num_attention_heads=2 if tiny else 12, max_position_embeddings=77, bos_token_id=512, eos_token_id=513, pad_token_id=513))
    vis = dict(hidden_size=40, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4) if tiny else \
        dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=16)
    image_encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(image_size=224, patch_size=14,
                                                                   projection_dim=32 if tiny else 1024, **vis))
    image_proj = official["Resampler"](dim=dim if tiny else 768, depth=1 if tiny else 4, dim_head=8 if tiny else 64,
                                       heads=4 if tiny else 12, num_queries=16, embedding_dim=vis["hidden_size"],
                                       output_dim=dim, ff_mult=4)
    # zero-initialised layers (ControlNet zero convs, motion-module outputs) get small values
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for model in (unet, controlnet, controlnet_face):
            for p in model.parameters():
                if p.numel() and not p.any():
                    std = 0.5 / (p[0].numel() ** 0.5) if p.ndim > 1 else 0.02
                    p.copy_(torch.randn(p.shape, generator=gen) * std)
    folder = Path(tempfile.mkdtemp(prefix="xdyna-official-tok-"))
    tokenizer = byte_tokenizer(folder)
    dtype = torch.float16 if device == "cuda" else torch.float32
    pipe = official["XDynaPipeline"](unet=unet, controlnet=controlnet, vae=vae, tokenizer=tokenizer,
                                     text_encoder=text_encoder, scheduler=DDIMScheduler(**infer["noise_scheduler_kwargs"]),
                                     controlnet_face=controlnet_face)
    for m in (unet, vae, text_encoder, controlnet, controlnet_face, image_encoder, image_proj):
        m.requires_grad_(False)
        m.eval()
    pipe.to(dtype).to(device)  # as inference_xdyna.py: everything fp16 on the GPU
    image_encoder.to(device, dtype)
    image_proj.to(device, dtype)
    pipe.enable_vae_slicing()
    pipe.set_progress_bar_config(disable=True)
    return pipe, image_encoder, image_proj, CLIPImageProcessor(), dtype


# ---------------------------------------------------------------------------- one timed call


def official_windows(num_frames: int, size: int = 16, overlap: int = 4) -> int:
    return 1 if num_frames <= size else len(range(0, num_frames, size - overlap))


def timed_call(pipe, image_encoder, image_proj, processor, dtype, device, frames, height, width, steps, seed):
    """inference_xdyna.py's per-clip work (CLIP image tokens, reference latent, pipeline
    call with the same arguments) on random inputs, timed: GPU synchronised at every
    scheduler step and around the VAE decode (instrumentation wraps, no code changes)."""
    from PIL import Image

    rng = np.random.default_rng(seed + frames)
    photo = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    pose = [Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)) for _ in range(frames)]
    glob = [Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)) for _ in range(frames)]
    local = [Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)) for _ in range(frames)]
    cuda = device == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    stamps, decode = [], {}
    step, decode_latents = pipe.scheduler.step, pipe.decode_latents

    def timed_step(*a, **k):
        out = step(*a, **k)
        sync()
        stamps.append(time.perf_counter())
        return out

    def timed_decode(latents):
        sync()
        decode["start"] = time.perf_counter()
        out = decode_latents(latents)
        decode["end"] = time.perf_counter()
        return out

    pipe.scheduler.step, pipe.decode_latents = timed_step, timed_decode
    random.seed(seed)  # the official window offsets come from Python's random
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    sync()
    start = time.perf_counter()
    try:
        with torch.cuda.amp.autocast(enabled=cuda), torch.no_grad():
            pixels = processor(images=Image.fromarray(photo), return_tensors="pt").pixel_values.to(device, dtype)
            cond = image_proj(image_encoder(pixels, output_hidden_states=True).hidden_states[-2]).to(device, dtype)
            uncond = image_proj(image_encoder(torch.zeros_like(pixels), output_hidden_states=True).hidden_states[-2]).to(device, dtype)
            generator = torch.Generator(device=device).manual_seed(seed)
            first = torch.Tensor(photo.copy()).to(device).type(dtype).permute(2, 0, 1)[None] / 127.5 - 1.0
            first = pipe.vae.encode(first).latent_dist.sample(generator) * 0.18215
            first = first.repeat(1, 1, 1, 1, 1).permute(1, 2, 0, 3, 4).type(dtype)
            video = pipe(prompt="", generator=generator, pose_embedding=None, latents=first, video_length=frames,
                         height=height, width=width, num_inference_steps=steps, guidance_scale=7.5, noise_mode="iid",
                         negative_prompt="", repeat_latents=True, gaussian_blur=True, strength=1.0,
                         cond_image_embeds=cond, un_cond_image_embeds=uncond, controlnet_condition=pose,
                         sface_global_condition=glob, sface_local_condition=local, use_controlnet=True,
                         cross_id=True).videos
        sync()
    finally:
        pipe.scheduler.step, pipe.decode_latents = step, decode_latents
    end = time.perf_counter()
    per_step = (stamps[-1] - stamps[0]) / (len(stamps) - 1) if len(stamps) > 1 else stamps[0] - start
    out = dict(mode="official", frames=frames, steps=steps, windows=official_windows(frames), status="ok",
               dtype=str(dtype).replace("torch.", ""), seconds_total=end - start, seconds_per_step=per_step,
               seconds_per_window_step=per_step / official_windows(frames), seconds_per_frame=(end - start) / frames,
               seconds_decode=decode["end"] - decode["start"], output_shape=list(video.shape))
    if cuda:
        out["peak_memory_bytes"] = int(torch.cuda.max_memory_allocated())
        out["peak_memory_gib"] = round(out["peak_memory_bytes"] / 2**30, 3)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--official-root", required=True, help="checkout of bytedance/X-Dyna (never inside this repo)")
    ap.add_argument("--frames", default="16,64")
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--size", default=None, help="HxW (default 896x512; 64x64 with --tiny)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--tiny", action="store_true", help="tiny configs (CPU smoke test of this script)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args(argv)
    root = Path(args.official_root).resolve()
    if ROOT in root.parents or root == ROOT:
        raise SystemExit("put the official checkout outside this repository (e.g. /tmp/X-Dyna): it is never committed")
    h, w = (int(v) for v in (args.size or ("64x64" if args.tiny else "896x512")).split("x"))
    official = import_official(root)
    import diffusers

    t0 = time.perf_counter()
    pipe, image_encoder, image_proj, processor, dtype = build(official, root, args.device, args.tiny, args.seed)
    built = time.perf_counter() - t0
    name = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    report = dict(schema="xdyna-bench/1", created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                  command=" ".join([Path(sys.argv[0]).name] + sys.argv[1:]),
                  device=dict(type=args.device, name=name), model="official X-Dyna code (9a54f8e), random weights"
                  + (", tiny configs" if args.tiny else ""),
                  software=dict(torch=torch.__version__, diffusers=diffusers.__version__,
                                torchvision="stand-in" if official["torchvision_stand_in"] else "installed",
                                attention="xformers calls routed to torch SDPA"),
                  settings=dict(height=h, width=w, steps=args.steps, guidance_scale=7.5, window_size=16, window_overlap=4,
                                window_schedule="official", seed=args.seed),
                  build_seconds=round(built, 1), runs=[])
    print(f"official pipeline built in {built:.1f} s on {name}", flush=True)
    timed_call(pipe, image_encoder, image_proj, processor, dtype, args.device, 16, h, w, 1, args.seed)  # warm-up
    for frames in [int(f) for f in args.frames.split(",")]:
        try:
            run = timed_call(pipe, image_encoder, image_proj, processor, dtype, args.device, frames, h, w, args.steps, args.seed)
        except Exception as err:  # e.g. out of memory: keep the other lengths
            run = dict(mode="official", frames=frames, steps=args.steps, status="error", error=f"{type(err).__name__}: {str(err)[:400]}")
            if args.device == "cuda":
                torch.cuda.empty_cache()
        report["runs"].append({k: (round(v, 6) if isinstance(v, float) else v) for k, v in run.items()})
        print(json.dumps(report["runs"][-1]), flush=True)
        if args.json:
            tmp = args.json + ".tmp"
            Path(tmp).write_text(json.dumps(report, indent=2) + "\n")
            os.replace(tmp, args.json)
    return 0 if all(r["status"] == "ok" for r in report["runs"]) else 1


if __name__ == "__main__":
    sys.exit(main())
