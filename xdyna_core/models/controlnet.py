"""Pose ControlNet and S-Face ControlNet: stock diffusers ``ControlNetModel`` s.

Both are standard SD1.5 ControlNets (Zhang et al. 2023) run frame by frame on the noisy
latents; they differ only in their conditioning input: the pose ControlNet reads a
3-channel skeleton image, the S-Face ControlNet (X-Dyna paper, Sec. 3.3) a 6-channel stack
of [local eyes+mouth patch RGB, global face patch RGB]. Key names equal the official
``controlnet-checkpoint-epoch-5.ckpt`` / ``controlnet-face-checkpoint-epoch-2.ckpt``.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping

import torch
from diffusers import ControlNetModel
from torch import nn

from .unet import timesteps_for_batch

POSE_CONDITIONING_CHANNELS = 3
FACE_CONDITIONING_CHANNELS = 6
CONDITIONING_EMBEDDING_OUT_CHANNELS = (16, 32, 96, 256)

_BLOCK_2D = {
    "CrossAttnDownBlock3D": "CrossAttnDownBlock2D",
    "DownBlock3D": "DownBlock2D",
}


def make_controlnet(
    config_or_unet2d: Mapping | nn.Module,
    conditioning_channels: int = POSE_CONDITIONING_CHANNELS,
    *,
    load_weights_from_unet: bool = True,
    **overrides,
) -> ControlNetModel:
    """Build a ControlNet with ``conditioning_channels`` input channels (3 pose, 6 S-Face).

    ``config_or_unet2d`` is either a config dict (an SD UNet ``config.json``, a ControlNet
    config, or an :class:`XDynaUNet` config; 3-D block names are mapped to 2-D) or a diffusers
    ``UNet2DConditionModel``, whose weights are copied in (``ControlNetModel.from_unet``) unless
    ``load_weights_from_unet=False``. ``overrides`` are ControlNet config values (e.g.
    ``conditioning_embedding_out_channels`` for tiny models).
    """
    if isinstance(config_or_unet2d, nn.Module):
        kwargs = dict(
            conditioning_channels=conditioning_channels,
            conditioning_embedding_out_channels=tuple(
                overrides.pop("conditioning_embedding_out_channels", CONDITIONING_EMBEDDING_OUT_CHANNELS)
            ),
            load_weights_from_unet=load_weights_from_unet,
        )
        if "controlnet_conditioning_channel_order" in overrides:
            kwargs["controlnet_conditioning_channel_order"] = overrides.pop("controlnet_conditioning_channel_order")
        if overrides:
            raise TypeError(f"make_controlnet(unet2d, ...) got unsupported options {sorted(overrides)}")
        return ControlNetModel.from_unet(config_or_unet2d, **kwargs)

    accepted = set(inspect.signature(ControlNetModel.__init__).parameters) - {"self"}
    config = {k: v for k, v in dict(config_or_unet2d).items() if k in accepted}
    if "down_block_types" in config:
        config["down_block_types"] = [_BLOCK_2D.get(t, t) for t in config["down_block_types"]]
    config.setdefault("conditioning_embedding_out_channels", CONDITIONING_EMBEDDING_OUT_CHANNELS)
    config["conditioning_channels"] = conditioning_channels
    unknown = set(overrides) - accepted
    if unknown:
        raise TypeError(f"unknown ControlNet config options {sorted(unknown)}")
    config.update(overrides)
    return ControlNetModel.from_config(config)


def controlnet_shallow_residuals(
    controlnet: ControlNetModel,
    sample,
    timestep,
    encoder_hidden_states,
    controlnet_cond,
    conditioning_scale: float = 1.0,
    num_residuals: int = 3,
):
    """The first ``num_residuals`` down-block residuals of ``controlnet(...)``, computing only
    what they need: time embedding, ``conv_in`` + conditioning embedding, the first
    ``num_residuals - 1`` layers of the first down block and their zero convolutions
    (mid block and deeper blocks are skipped).

    For DeepCache partial steps (Ma et al., CVPR 2024), where the UNet recomputes only its
    shallow branch. Same operations in the same order as diffusers' ``ControlNetModel.forward``
    (plain ControlNets: no class/addition embeddings, no guess mode), so the residuals equal
    the first ones of a full call. Returns a list of tensors.
    """

    cfg = controlnet.config
    if controlnet.class_embedding is not None or cfg.addition_embed_type is not None or cfg.global_pool_conditions:
        raise ValueError("controlnet_shallow_residuals supports plain ControlNets only (no class/addition embeddings)")
    first = controlnet.down_blocks[0]
    available = 1 + len(first.resnets) + (first.downsamplers is not None)
    if not 1 <= num_residuals <= available:
        raise ValueError(f"the first down block gives at most {available} residuals, asked for {num_residuals}")
    if cfg.controlnet_conditioning_channel_order == "bgr":
        controlnet_cond = torch.flip(controlnet_cond, dims=[1])
    timesteps = timesteps_for_batch(timestep, sample.shape[0], sample.device)
    emb = controlnet.time_embedding(controlnet.time_proj(timesteps).to(dtype=sample.dtype), None)
    x = controlnet.conv_in(sample) + controlnet.controlnet_cond_embedding(controlnet_cond)
    residuals = (x,)
    layers = num_residuals - 1
    if layers >= len(first.resnets):
        if getattr(first, "has_cross_attention", False):
            _, block_res = first(hidden_states=x, temb=emb, encoder_hidden_states=encoder_hidden_states)
        else:
            _, block_res = first(hidden_states=x, temb=emb)
        residuals += tuple(block_res)
    else:
        # Only the first `layers` (resnet -> cross-attention transformer) pairs of the block,
        # in the order of diffusers' CrossAttnDownBlock2D / DownBlock2D forward.
        attentions = getattr(first, "attentions", None)
        for i in range(layers):
            x = first.resnets[i](x, emb)
            if attentions is not None:
                x = attentions[i](x, encoder_hidden_states=encoder_hidden_states, return_dict=False)[0]
            residuals += (x,)
    return [zero(r) * conditioning_scale for zero, r in zip(controlnet.controlnet_down_blocks, residuals[:num_residuals])]
