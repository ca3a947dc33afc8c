"""Speed and memory of XDynaPipeline with the full-size X-Dyna architecture and
random weights (no download needed; the numbers are about speed only).

    python benchmarks/pipeline_speed.py                    # CUDA, fp16, 896x512
    python benchmarks/pipeline_speed.py --frames 24 48 96 --steps 2

Prints seconds per window (UNet + both ControlNets, CFG batch 2), total time and
peak GPU memory per clip length; the peak should not grow with the length
(frames leave the GPU as they are decoded, latents of the whole clip are small).
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # runnable from a checkout without installing
    sys.path.insert(0, str(ROOT))


def build(device, dtype):
    from diffusers import AutoencoderKL
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPVisionConfig, CLIPVisionModelWithProjection

    from xdyna_core.models import XDynaImageProjection, XDynaUNet, make_controlnet
    from xdyna_core.models.loading import default_feature_extractor, official_scheduler
    from xdyna_core.pipeline import XDynaPipeline
    from xdyna_core.tiny import make_tiny_tokenizer

    cfg = json.loads((ROOT / "tests" / "data" / "official_keys" / "sd15_unet_config.json").read_text())
    with torch.device(device):
        components = dict(
            unet=XDynaUNet.from_config(cfg),
            controlnet=make_controlnet(cfg, 3),
            controlnet_face=make_controlnet(cfg, 6),
            vae=AutoencoderKL(down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
                              block_out_channels=[128, 256, 512, 512], layers_per_block=2, latent_channels=4, sample_size=512),
            text_encoder=CLIPTextModel(CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                                                      num_attention_heads=12, max_position_embeddings=77)),
            image_encoder=CLIPVisionModelWithProjection(CLIPVisionConfig(
                hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=16,
                image_size=224, patch_size=14, projection_dim=1024)),
            image_proj=XDynaImageProjection(),
        )
    pipe = XDynaPipeline(tokenizer=make_tiny_tokenizer(), feature_extractor=default_feature_extractor(),
                         scheduler=official_scheduler(), **components)
    pipe.to(device, dtype)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtype", default="float16", choices=("float16", "bfloat16", "float32"))
    ap.add_argument("--height", type=int, default=896)
    ap.add_argument("--width", type=int, default=512)
    ap.add_argument("--frames", type=int, nargs="+", default=[24, 48, 96])
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--schedule", default="blend", choices=("blend", "official"))
    args = ap.parse_args()
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    cuda = device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    pipe = build(device, dtype)
    count = lambda m: sum(p.numel() for p in m.parameters()) / 1e6
    print(f"params (M): unet {count(pipe.unet):.0f}, controlnets {count(pipe.controlnet):.0f}+{count(pipe.controlnet_face):.0f}, "
          f"image encoder {count(pipe.image_encoder):.0f}; {args.dtype} on {torch.cuda.get_device_name() if cuda else device}")
    h, w = args.height, args.width
    for i, frames in enumerate([16] + args.frames):  # the first run warms up
        rng = np.random.default_rng(frames)
        photo = rng.integers(0, 256, (1024, 768, 3), dtype=np.uint8)
        pose = rng.integers(0, 256, (frames, h, w, 3), dtype=np.uint8)
        face = rng.integers(0, 256, (frames, h, w, 6), dtype=np.uint8)
        stamps = []
        sync()
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        pipe(photo, pose, face, height=h, width=w, num_inference_steps=args.steps, window_schedule=args.schedule,
             generator=torch.Generator().manual_seed(0), output_type="uint8",
             progress=lambda info: (sync(), stamps.append((info.stage, time.perf_counter()))))
        sync()
        total = time.perf_counter() - start
        if i == 0:
            continue
        gaps = [b - a for (s1, a), (s2, b) in zip(stamps, stamps[1:]) if s1 == s2 == "denoise"]
        decode = stamps[-1][1] - max(t for s, t in stamps if s == "denoise")
        peak = f"{torch.cuda.max_memory_allocated() / 2**30:.1f} GiB" if cuda else "n/a"
        print(f"{frames:4d} frames, {args.steps} steps, {1 + len(gaps)} windows: {total:6.1f} s total, "
              f"{np.median(gaps):.2f} s/window, decode {decode:.1f} s, peak GPU memory {peak}")


if __name__ == "__main__":
    main()
