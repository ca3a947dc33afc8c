"""Tiny random-weight stand-ins for every official X-Dyna file, written offline.

Used by tests (and by anyone who needs an end-to-end run without the hub): the files have
exactly the formats of the official release, only the networks are small.

- :func:`make_tiny_tokenizer`: a byte-level CLIP tokenizer (no merges) built from a generated
  ``vocab.json``/``merges.txt``.
- :func:`write_tiny_official_files`: an official-layout tree (X-Dyna ``.ckpt`` files, the
  IP-Adapter ``.bin`` + CLIP image encoder folder, an SD1.5-style diffusers folder).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

SPECIAL_TOKENS = ("<|startoftext|>", "<|endoftext|>")

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


def make_tiny_tokenizer(directory: str | Path, model_max_length: int = 77):
    """Write and load a byte-level ``CLIPTokenizer`` (vocabulary 514: 256 bytes, 256 bytes +
    ``</w>``, ``<|startoftext|>`` = 512, ``<|endoftext|>`` = 513; no merges)."""
    from transformers import CLIPTokenizer

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    alphabet = _byte_level_alphabet()
    vocab = {c: i for i, c in enumerate(alphabet)}
    vocab.update({c + "</w>": 256 + i for i, c in enumerate(alphabet)})
    vocab.update({tok: 512 + i for i, tok in enumerate(SPECIAL_TOKENS)})
    (directory / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (directory / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(vocab=str(directory / "vocab.json"), merges=str(directory / "merges.txt"))
    tokenizer.model_max_length = model_max_length
    tokenizer.save_pretrained(directory)
    return tokenizer


def tiny_text_encoder(seed: int = 0):
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    config = CLIPTextConfig(
        vocab_size=514, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=77, projection_dim=32, bos_token_id=512, eos_token_id=513, pad_token_id=513,
    )
    return CLIPTextModel(config).eval()


def tiny_image_encoder(seed: int = 0):
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(seed)
    config = CLIPVisionConfig(
        hidden_size=40, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        image_size=224, patch_size=14, projection_dim=32,
    )
    return CLIPVisionModelWithProjection(config).eval()


def tiny_vae(seed: int = 0):
    """AutoencoderKL with the SD downsampling factor 8 (four levels of 8 channels)."""
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 8, 8, 8), layers_per_block=1, norm_num_groups=4, sample_size=64,
    ).eval()


def _randomize_zero_layers(model: torch.nn.Module, seed: int, scale: float = 0.05) -> None:
    """Random values for layers that start at zero (adapter out-proj, motion proj_out, zero convs),
    so that a loader that forgets them is caught."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if torch.count_nonzero(p) == 0 or "to_out_ff" in name:
                p.copy_(scale * torch.randn(p.shape, generator=g))


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
    from .controlnet import make_controlnet
    from .image_proj import XDynaImageProjection
    from .unet import XDynaUNet

    root = Path(root)
    xdyna_dir, sd_dir, ip_dir = root / "xdyna", root / "sd", root / "ip"
    for d in (xdyna_dir, sd_dir / "unet", ip_dir / "models"):
        d.mkdir(parents=True, exist_ok=True)

    torch.manual_seed(seed)
    unet = XDynaUNet.from_config(TINY_UNET_CONFIG)
    _randomize_zero_layers(unet, seed)
    pose = make_controlnet(TINY_UNET_CONFIG, 3)
    _randomize_zero_layers(pose, seed + 1)
    face = make_controlnet(TINY_UNET_CONFIG, 6)
    _randomize_zero_layers(face, seed + 2)
    image_encoder = tiny_image_encoder(seed)
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

    tiny_vae(seed).save_pretrained(sd_dir / "vae")
    tiny_text_encoder(seed).save_pretrained(sd_dir / "text_encoder")
    make_tiny_tokenizer(sd_dir / "tokenizer")
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
