"""A complete, randomly initialised, tiny X-Dyna: the same classes as the full
model with small configs, built offline in a second, fast on CPU.

Used by the tests (every pipeline path runs end to end on it), by training
(`xdyna_core.train` builds larger variants through the size arguments) and as
the starting point of the shipped `assets/tiny-xdyna` model.

    components = make_tiny_components(seed=0)
    pipe = XDynaPipeline(**components)
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence

import torch

# Sizes the tests use: 64x64 frames -> 8x8 latents.
TINY_RESOLUTION = 64


def make_tiny_tokenizer(model_max_length: int = 77):
    """The offline byte-level CLIP tokenizer of `xdyna_core.models.tiny` (514
    tokens, no merges; pads to 77 like SD1.5's), built in a temporary folder
    and kept in memory."""
    import tempfile

    from xdyna_core.models.tiny import make_tiny_tokenizer as write_tokenizer

    with tempfile.TemporaryDirectory() as folder:
        return write_tokenizer(folder, model_max_length=model_max_length)


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
    from diffusers import AutoencoderKL
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPVisionConfig, CLIPVisionModelWithProjection

    from xdyna_core.models import XDynaImageProjection, XDynaUNet, make_controlnet
    from xdyna_core.pipeline import official_scheduler

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
        from transformers import CLIPImageProcessorPil as CLIPImageProcessor
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
                _randomize_zero_parameters(module, gen)
    for module in components.values():
        if isinstance(module, torch.nn.Module):
            module.eval()
    return components


@torch.no_grad()
def _randomize_zero_parameters(module: torch.nn.Module, generator: torch.Generator) -> None:
    """Give every all-zero parameter (zero-initialised outputs, norm biases)
    small random values: weights ~ N(0, (0.5/sqrt(fan_in))^2), vectors ~ N(0, 0.02^2)."""
    for p in module.parameters():
        if p.numel() and not p.any():
            std = 0.5 / (p[0].numel() ** 0.5) if p.ndim > 1 else 0.02
            p.copy_(torch.randn(p.shape, generator=generator) * std)
