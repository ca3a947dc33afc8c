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

from diffusers import ControlNetModel
from torch import nn

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
