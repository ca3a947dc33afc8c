"""`xdyna convert`: the official X-Dyna release files -> one diffusers folder
with safetensors that `XDynaPipeline.from_pretrained(folder)` loads fast.

    # files you downloaded yourself (the official pretrained_weights/ layout works too)
    xdyna convert --unet unet-checkpoint-epoch-5.ckpt --controlnet controlnet-checkpoint-epoch-5.ckpt \\
        --controlnet-face controlnet-face-checkpoint-epoch-2.ckpt --ip-adapter ip-adapter-plus_sd15.bin \\
        --image-encoder IP-Adapter/models/image_encoder --sd stable-diffusion-v1-5 -o models/x-dyna
    # or fetch everything with huggingface_hub (cached; HF_HUB_OFFLINE=1 uses the cache only)
    xdyna convert --official -o models/x-dyna

Every file is loaded strictly (a missing or unexpected key is an error that
names the file). The folder is written next to its destination under a
temporary name and renamed into place when complete.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path

import torch
from xdyna_core.errors import InputError
from xdyna_core.models import loading
from xdyna_core.pipeline import XDynaPipeline


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "convert",
        help="official checkpoints -> diffusers folder (safetensors)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("-o", "--output", required=True, help="folder to write (must not exist, or use --overwrite)")
    p.add_argument("--official", action="store_true", help="fetch the official files with huggingface_hub")
    p.add_argument("--unet", help="unet-checkpoint-epoch-5.ckpt")
    p.add_argument("--controlnet", help="controlnet-checkpoint-epoch-5.ckpt (pose)")
    p.add_argument("--controlnet-face", dest="controlnet_face", help="controlnet-face-checkpoint-epoch-2.ckpt (S-Face); omit for a pose-only model")
    p.add_argument("--ip-adapter", dest="ip_adapter", help="ip-adapter-plus_sd15.bin")
    p.add_argument("--image-encoder", dest="image_encoder", help="CLIP image encoder folder (IP-Adapter models/image_encoder)")
    p.add_argument("--sd", help="Stable Diffusion 1.5 diffusers folder (vae, text_encoder, tokenizer, unet/config.json)")
    p.add_argument("--xdyna-repo", default=None, help="--official: hub repo or folder of the X-Dyna checkpoints")
    p.add_argument("--sd-repo", default=None, help="--official: hub repo or folder of SD1.5")
    p.add_argument("--ip-adapter-repo", default=None, help="--official: hub repo or folder of IP-Adapter")
    p.add_argument("--no-face", action="store_true", help="--official: leave out the S-Face ControlNet")
    p.add_argument("--dtype", choices=("float32", "float16", "bfloat16"), default="float32",
                   help="dtype of the saved weights (float16 halves the size)")
    p.add_argument("--image-proj-dim-head", type=int, dest="image_proj_dim_head",
                   help="head width of a non-official resampler (official: 64; not visible in the weights)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    out = Path(args.output)
    if out.exists() and not args.overwrite:
        raise InputError(f"{out} already exists; choose another -o or pass --overwrite")
    dtype = getattr(torch, args.dtype)
    proj_kwargs = {"dim_head": args.image_proj_dim_head} if args.image_proj_dim_head else None
    files = dict(unet=args.unet, controlnet=args.controlnet, ip_adapter=args.ip_adapter,
                 image_encoder=args.image_encoder, sd=args.sd)

    if args.official:
        given = [f"--{k.replace('_', '-')}" for k, v in {**files, "controlnet_face": args.controlnet_face}.items() if v]
        if given:
            raise InputError(f"--official fetches every file itself; drop {', '.join(given)} (or use --xdyna-repo/--sd-repo/--ip-adapter-repo folders)")
        repos = {k: v for k, v in dict(xdyna_repo=args.xdyna_repo, sd_repo=args.sd_repo,
                                        ip_adapter_repo=args.ip_adapter_repo).items() if v}
        components = loading.load_official_components(face=not args.no_face, torch_dtype=dtype,
                                                      image_proj_kwargs=proj_kwargs, **repos)
    else:
        missing = [f"--{k.replace('_', '-')}" for k, v in files.items() if not v]
        if missing:
            raise InputError(f"missing {', '.join(missing)} (give every file, or use --official to download them)")
        paths = loading.OfficialPaths(
            unet=Path(args.unet), controlnet=Path(args.controlnet),
            controlnet_face=Path(args.controlnet_face) if args.controlnet_face else None,
            ip_adapter=Path(args.ip_adapter), image_encoder=Path(args.image_encoder), sd=Path(args.sd),
        )
        for name in ("unet", "controlnet", "controlnet_face", "ip_adapter"):
            path = getattr(paths, name)
            if path is not None and not path.is_file():
                raise InputError(f"--{name.replace('_', '-')}: {path} is not a file")
        components = loading.load_components_from_paths(paths, torch_dtype=dtype, image_proj_kwargs=proj_kwargs)

    pipe = XDynaPipeline(**components)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        pipe.save_pretrained(tmp, safe_serialization=True)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"wrote {out} ({size / 1e6:.1f} MB, {args.dtype}, {'pose + S-Face' if pipe.controlnet_face is not None else 'pose only'})")
    return 0
