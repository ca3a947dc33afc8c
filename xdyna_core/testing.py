"""Tiny random components for tests and benchmarks: the real classes with small configs, built
offline in about a second and fast on CPU. They run every code path; their outputs mean nothing.

- `make_tiny_components`: every component of `XDynaPipeline` (frames of `TINY_RESOLUTION`
  pixels by default), deterministic for a seed. Training builds its larger tiny model from it
  (`xdyna_core.train.trainer.build_tiny_stage0`).
- `make_tiny_tokenizer`: the offline byte-level CLIP tokenizer (in memory; no hub).
- `randomize_zero_parameters`: small random values for the zero-initialised layers, so that every
  path (pose, face, adapter, motion) changes the output of a random model.
- `write_tiny_official_files`: tiny random weights in exactly the official release's file
  formats and folder layout (`.ckpt`, IP-Adapter `.bin`, SD1.5 folder), for the loaders and
  `xdyna convert`.
- `tiny_backbones`, `tiny_face_onnx`: tiny networks for the evaluation metrics (`xdyna_core.eval`).

    components = make_tiny_components(seed=0)
    pipe = XDynaPipeline(**components)
"""

from __future__ import annotations

import json
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Optional, Sequence

import torch
from diffusers import AutoencoderKL
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer, CLIPVisionConfig, CLIPVisionModelWithProjection

from xdyna_core.eval.backbones import LPIPS, InceptionI3d, InceptionV3FID, VideoMAEv2
from xdyna_core.models import XDynaImageProjection, XDynaUNet, make_controlnet
from xdyna_core.pipeline import official_scheduler

# Frame size of the tiny pipeline: 64x64 frames -> 8x8 latents.
TINY_RESOLUTION = 64

SPECIAL_TOKENS = ("<|startoftext|>", "<|endoftext|>")


# ---------------------------------------------------------------------------------- tokenizer


def _byte_level_alphabet() -> list[str]:
    """GPT-2/CLIP byte-to-unicode table: 256 printable characters, one per byte."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    codes = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            codes.append(256 + extra)
            extra += 1
    return [chr(c) for c in codes]


def _write_vocabulary(folder: Path) -> None:
    """The tokenizer files of an SD1.5 folder (``vocab.json``, ``merges.txt``) for the tiny
    vocabulary of `make_tiny_tokenizer`."""
    alphabet = _byte_level_alphabet()
    vocab = {c: i for i, c in enumerate(alphabet)}
    vocab.update({c + "</w>": 256 + i for i, c in enumerate(alphabet)})
    vocab.update({tok: 512 + i for i, tok in enumerate(SPECIAL_TOKENS)})
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (folder / "merges.txt").write_text("#version: 0.2\n")


def make_tiny_tokenizer(model_max_length: int = 77):
    """A byte-level `CLIPTokenizer` built offline, in memory (vocabulary 514: 256 bytes,
    256 bytes + ``</w>``, ``<|startoftext|>`` = 512, ``<|endoftext|>`` = 513; no merges; pads
    to 77 like SD1.5's)."""

    with tempfile.TemporaryDirectory() as folder:  # CLIPTokenizer reads its vocabulary from files
        _write_vocabulary(Path(folder))
        tokenizer = CLIPTokenizer(vocab=str(Path(folder) / "vocab.json"), merges=str(Path(folder) / "merges.txt"))
    tokenizer.model_max_length = model_max_length
    return tokenizer


# ---------------------------------------------------------------------------------- pipeline


def make_tiny_components(
    seed: int = 0,
    sample_size: int = TINY_RESOLUTION,
    block_out_channels: Sequence[int] = (32, 64),
    layers_per_block: int = 1,
    cross_attention_dim: int = 32,
    attention_heads: int = 2,
    norm_num_groups: int = 8,
    vae_channels: Sequence[int] = (8, 16, 16, 16),
    text_hidden_size: Optional[int] = None,
    text_layers: int = 2,
    vision_hidden_size: int = 32,
    vision_layers: int = 2,
    clip_image_size: int = 32,
    clip_patch_size: int = 8,
    image_proj_depth: int = 1,
    num_ip_tokens: int = 16,
    motion_max_len: int = 24,
    with_face: bool = True,
    zero_init: bool = False,
) -> Dict[str, object]:
    """Build every component of `XDynaPipeline` with random weights.

    `sample_size` is the frame size in pixels (the VAE has 4 blocks, so latents
    are sample_size/8; ControlNet conditioning embeddings downsample by 8 too).
    The UNet and ControlNets share `block_out_channels` (first block with
    cross-attention, the rest plain, like SD1.5's last block), so ControlNet
    residuals line up with the UNet's skips. `with_face=False` gives a pose-only
    model (`controlnet_face=None`). Deterministic for a given `seed`.

    `zero_init=True` keeps the layers the paper starts at zero (ControlNet zero
    convolutions, Dynamics-Adapter `to_out_ff`, motion-module `proj_out`) at
    zero, as training from scratch wants. The default fills every all-zero
    parameter with small random values instead, so that in a random model every
    path (pose, face, adapter, motion) changes the output and tests can see it.
    """

    n = len(block_out_channels)
    down = ("CrossAttnDownBlock3D",) + ("DownBlock3D",) * (n - 1) if n > 1 else ("CrossAttnDownBlock3D",)
    up = ("UpBlock3D",) * (n - 1) + ("CrossAttnUpBlock3D",) if n > 1 else ("CrossAttnUpBlock3D",)
    latent = sample_size // 8

    torch.manual_seed(seed)
    unet = XDynaUNet(
        sample_size=latent,
        block_out_channels=tuple(block_out_channels),
        down_block_types=down,
        up_block_types=up,
        layers_per_block=layers_per_block,
        norm_num_groups=norm_num_groups,
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=attention_heads,
        num_ip_tokens=num_ip_tokens,
        motion_module_num_attention_heads=attention_heads,
        motion_module_norm_num_groups=norm_num_groups,
        motion_module_max_len=motion_max_len,
    )

    def controlnet(channels: int):
        # the UNet's own config, so ControlNet residuals line up with its skips
        return make_controlnet(dict(unet.config), channels, conditioning_embedding_out_channels=(4, 8, 16, 16))

    pose_controlnet = controlnet(3)
    face_controlnet = controlnet(6) if with_face else None

    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * len(vae_channels),
        up_block_types=("UpDecoderBlock2D",) * len(vae_channels),
        block_out_channels=tuple(vae_channels),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=min(8, vae_channels[0]),
        sample_size=sample_size,
    )

    tokenizer = make_tiny_tokenizer()
    text_hidden_size = text_hidden_size or cross_attention_dim
    if text_hidden_size != cross_attention_dim:
        raise ValueError("text_hidden_size must equal cross_attention_dim (text tokens feed the UNet directly)")
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=text_hidden_size,
            intermediate_size=text_hidden_size * 2,
            num_hidden_layers=text_layers,
            num_attention_heads=2,
            max_position_embeddings=77,
            projection_dim=cross_attention_dim,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    image_encoder = CLIPVisionModelWithProjection(
        CLIPVisionConfig(
            hidden_size=vision_hidden_size,
            intermediate_size=vision_hidden_size * 2,
            num_hidden_layers=vision_layers,
            num_attention_heads=2,
            image_size=clip_image_size,
            patch_size=clip_patch_size,
            projection_dim=cross_attention_dim,
        )
    )
    try:  # the PIL backend is transformers' own default without torchvision; naming it avoids a warning
        from transformers import CLIPImageProcessorPil as CLIPImageProcessor  # not at the top: version fallback
    except ImportError:  # older transformers
        from transformers import CLIPImageProcessor
    feature_extractor = CLIPImageProcessor(
        size={"shortest_edge": clip_image_size},
        crop_size={"height": clip_image_size, "width": clip_image_size},
    )
    image_proj = XDynaImageProjection(
        dim=cross_attention_dim,
        depth=image_proj_depth,
        dim_head=cross_attention_dim // 2,
        heads=2,
        num_queries=num_ip_tokens,
        embedding_dim=vision_hidden_size,
        output_dim=cross_attention_dim,
        ff_mult=2,
    )

    components = dict(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        controlnet=pose_controlnet,
        controlnet_face=face_controlnet,
        image_encoder=image_encoder,
        feature_extractor=feature_extractor,
        image_proj=image_proj,
        scheduler=official_scheduler(),
    )
    if not zero_init:
        gen = torch.Generator().manual_seed(seed + 1)
        for module in (unet, pose_controlnet, face_controlnet):
            if module is not None:
                randomize_zero_parameters(module, gen)
    for module in components.values():
        if isinstance(module, torch.nn.Module):
            module.eval()
    return components


@torch.no_grad()
def randomize_zero_parameters(module: torch.nn.Module, generator: torch.Generator) -> None:
    """Give every all-zero parameter (the zero-initialised outputs the paper starts from, norm
    biases) small random values on its own device: weights ~ N(0, (0.5/sqrt(fan_in))^2),
    vectors ~ N(0, 0.02^2)."""
    for p in module.parameters():
        if p.numel() and not p.any():
            std = 0.5 / (p[0].numel() ** 0.5) if p.ndim > 1 else 0.02
            p.copy_(torch.randn(p.shape, generator=generator, device=p.device) * std)


# ------------------------------------------------------------------ official file layout

# A two-level SD-like UNet: same block kinds as SD1.5, 32/64 channels.
TINY_UNET_CONFIG = {
    "_class_name": "UNet2DConditionModel",
    "act_fn": "silu",
    "attention_head_dim": 4,
    "block_out_channels": [32, 64],
    "center_input_sample": False,
    "cross_attention_dim": 32,
    "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
    "downsample_padding": 1,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 4,
    "layers_per_block": 1,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "out_channels": 4,
    "sample_size": 8,
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
}
# Resampler shapes are read from the file; only the head split is not in the shapes.
TINY_IMAGE_PROJ_KWARGS = {"dim_head": 8}


def _official_text_encoder(seed: int = 0):
    torch.manual_seed(seed)
    config = CLIPTextConfig(
        vocab_size=514, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=77, projection_dim=32, bos_token_id=512, eos_token_id=513, pad_token_id=513,
    )
    return CLIPTextModel(config).eval()


def _official_image_encoder(seed: int = 0):
    torch.manual_seed(seed)
    config = CLIPVisionConfig(
        hidden_size=40, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        image_size=224, patch_size=14, projection_dim=32,
    )
    return CLIPVisionModelWithProjection(config).eval()


def _official_vae(seed: int = 0):
    """AutoencoderKL with the SD downsampling factor 8 (four levels of 8 channels)."""

    torch.manual_seed(seed)
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 8, 8, 8), layers_per_block=1, norm_num_groups=4, sample_size=64,
    ).eval()


@dataclass
class TinyOfficialFiles:
    """Paths of a tiny official-layout tree, plus what was written (for comparisons)."""

    root: Path
    xdyna_dir: Path          # unet-/controlnet-/controlnet-face- .ckpt files (HF Boese0601/X-Dyna layout)
    sd_dir: Path             # SD1.5-style diffusers folder
    ip_adapter_dir: Path     # h94/IP-Adapter layout: models/ip-adapter-plus_sd15.bin, models/image_encoder/
    state_dicts: dict = field(default_factory=dict)
    loader_kwargs: dict = field(default_factory=dict)  # extra arguments load_official_components needs


def write_tiny_official_files(root: str | Path, seed: int = 0, include_pe: bool = False) -> TinyOfficialFiles:
    """Write tiny random X-Dyna weights in exactly the official file formats.

    - ``xdyna/unet-checkpoint-epoch-5.ckpt``: ``{"state_dict": {"module.<key>": tensor}}``
      (DDP-style prefix; the ``pos_encoder.pe`` buffers are left out unless ``include_pe``);
    - ``xdyna/controlnet-checkpoint-epoch-5.ckpt``: ``{"state_dict": {"module.<key>": ...}}``;
    - ``xdyna/controlnet-face-checkpoint-epoch-2.ckpt``: a bare ``{"module.<key>": ...}`` dict;
    - ``ip/models/ip-adapter-plus_sd15.bin``: ``{"image_proj": ..., "ip_adapter": ...}``;
    - ``ip/models/image_encoder/``: a transformers CLIP vision folder;
    - ``sd/``: ``vae/``, ``text_encoder/``, ``tokenizer/``, ``unet/config.json``.
    """

    root = Path(root)
    xdyna_dir, sd_dir, ip_dir = root / "xdyna", root / "sd", root / "ip"
    for d in (xdyna_dir, sd_dir / "unet", ip_dir / "models"):
        d.mkdir(parents=True, exist_ok=True)

    torch.manual_seed(seed)
    unet = XDynaUNet.from_config(TINY_UNET_CONFIG)
    pose = make_controlnet(TINY_UNET_CONFIG, 3)
    face = make_controlnet(TINY_UNET_CONFIG, 6)
    # non-zero values in the zero-initialised layers, so that a loader that skips them is caught
    gen = torch.Generator().manual_seed(seed + 1)
    for module in (unet, pose, face):
        randomize_zero_parameters(module, gen)
    image_encoder = _official_image_encoder(seed)
    proj = XDynaImageProjection(
        dim=32, depth=2, heads=4, num_queries=16,
        embedding_dim=image_encoder.config.hidden_size, output_dim=TINY_UNET_CONFIG["cross_attention_dim"],
        **TINY_IMAGE_PROJ_KWARGS,
    )

    unet_state = {k: v for k, v in unet.state_dict().items() if include_pe or not k.endswith("pos_encoder.pe")}
    torch.save({"state_dict": {"module." + k: v for k, v in unet_state.items()}}, xdyna_dir / "unet-checkpoint-epoch-5.ckpt")
    torch.save({"state_dict": {"module." + k: v for k, v in pose.state_dict().items()}},
               xdyna_dir / "controlnet-checkpoint-epoch-5.ckpt")
    torch.save({"module." + k: v for k, v in face.state_dict().items()}, xdyna_dir / "controlnet-face-checkpoint-epoch-2.ckpt")
    ip_adapter_part = {"1.to_k_ip.weight": torch.randn(32, 32), "1.to_v_ip.weight": torch.randn(32, 32)}
    torch.save({"image_proj": proj.state_dict(), "ip_adapter": ip_adapter_part}, ip_dir / "models" / "ip-adapter-plus_sd15.bin")
    image_encoder.save_pretrained(ip_dir / "models" / "image_encoder")

    _official_vae(seed).save_pretrained(sd_dir / "vae")
    _official_text_encoder(seed).save_pretrained(sd_dir / "text_encoder")
    _write_vocabulary(sd_dir / "tokenizer")  # the files of SD1.5's tokenizer folder
    make_tiny_tokenizer().save_pretrained(sd_dir / "tokenizer")
    (sd_dir / "unet" / "config.json").write_text(json.dumps(TINY_UNET_CONFIG, indent=2))

    return TinyOfficialFiles(
        root=root,
        xdyna_dir=xdyna_dir,
        sd_dir=sd_dir,
        ip_adapter_dir=ip_dir,
        state_dicts={
            "unet": unet.state_dict(),
            "controlnet": pose.state_dict(),
            "controlnet_face": face.state_dict(),
            "image_proj": proj.state_dict(),
        },
        loader_kwargs={"image_proj_kwargs": dict(TINY_IMAGE_PROJ_KWARGS)},
    )


# ------------------------------------------------------------------------ eval backbones

TINY_BACKBONE_SIZES = {
    "fid": dict(width=1 / 16, input_size=75),
    "lpips": dict(width=1 / 16),
    "fvd": dict(width=1 / 16, input_size=32, num_frames=4),
    "dtfvd": dict(width=1 / 16, input_size=32, num_frames=4),
    "cdfvd": dict(input_size=28, num_frames=4, embed_dim=32, depth=2, num_heads=2),
}


def tiny_backbones(seed: int = 0) -> dict:
    """{metric: tiny random network} for the learned set/pair metrics of `xdyna_core.eval`:
    the real backbone classes at `TINY_BACKBONE_SIZES`, same preprocessing and feature
    extraction as the full networks."""

    torch.manual_seed(seed)
    return {
        "fid": InceptionV3FID(**TINY_BACKBONE_SIZES["fid"]),
        "lpips": LPIPS(**TINY_BACKBONE_SIZES["lpips"]),
        "fvd": InceptionI3d(num_classes=400, output="logits", **TINY_BACKBONE_SIZES["fvd"]),
        "dtfvd": InceptionI3d(num_classes=18, output="features", align_corners=True, **TINY_BACKBONE_SIZES["dtfvd"]),
        "cdfvd": VideoMAEv2(**TINY_BACKBONE_SIZES["cdfvd"]),
    }


class _TinyFaceNet(torch.nn.Module):
    """A small conv net with ArcFace's interface: [N,3,112,112] in [-1,1] -> [N,dim]."""

    def __init__(self, dim: int = 16):
        super().__init__()
        self.body = torch.nn.Sequential(
            torch.nn.Conv2d(3, 8, 5, stride=4), torch.nn.ReLU(), torch.nn.Conv2d(8, 16, 3, stride=2), torch.nn.ReLU(),
            torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(16, dim),
        )

    def forward(self, x):
        return self.body(x)


def tiny_face_onnx(path, dim: int = 16, seed: int = 0):
    """Write a tiny random face-embedding ONNX model (ArcFace I/O layout) to `path`.
    Needs the `onnx` package (a test dependency)."""

    torch.manual_seed(seed)
    net = _TinyFaceNet(dim).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net, (torch.zeros(1, 3, 112, 112),), str(path), dynamo=False,
            input_names=["input.1"], output_names=["embedding"], dynamic_axes={"input.1": {0: "batch"}, "embedding": {0: "batch"}},
        )
    return path
