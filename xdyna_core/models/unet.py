"""X-Dyna denoising UNet: SD1.5 inflated to video, with the Dynamics-Adapter, IP-Adapter-Plus
cross-attention and AnimateDiff v1 motion modules (X-Dyna paper, Sec. 3, Fig. 2).

Layout. ``forward`` takes ``sample`` ``[B, C, N, h, w]`` with ``N = 1 + F`` frames, frame 0
being the clean reference latent (the official layout). Inside, frames are folded into the
batch, ``[(B N), C, h, w]``, so 2-D layers run as they are; the few places where frames
interact are explicit:

- ResNet GroupNorms (``norm1``, ``norm2``) and ``conv_norm_out`` pool their statistics over
  all N frames of a sample (the official model applies a plain ``nn.GroupNorm`` to the 5-D
  tensor), see :func:`frame_pooled_group_norm`;
- ``attn1`` lets every frame attend to frame 0 (Dynamics-Adapter);
- motion modules attend along frames 1..F.

Parameter names and shapes equal the official ``unet-checkpoint-epoch-5.ckpt``.
"""

from __future__ import annotations

import inspect

from dataclasses import dataclass
from typing import Iterable, Sequence

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.attention import FeedForward
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils import BaseOutput
from torch import nn

from .attention import DynamicsAdapterAttention, IPAdapterCrossAttention, chunked_feed_forward
from .motion_module import PositionalEncoding, VanillaTemporalModule

CROSS_ATTN_DOWN = ("CrossAttnDownBlock2D", "CrossAttnDownBlock3D")
PLAIN_DOWN = ("DownBlock2D", "DownBlock3D")
CROSS_ATTN_UP = ("CrossAttnUpBlock2D", "CrossAttnUpBlock3D")
PLAIN_UP = ("UpBlock2D", "UpBlock3D")

PARAMETER_GROUPS = ("dynamics_adapter", "motion_module", "ip_adapter", "backbone")


def parameter_group(name: str) -> str:
    """Which trainable part a UNet parameter/buffer name belongs to (see ``PARAMETER_GROUPS``)."""
    if ".attn1.to_q_ff." in name or ".attn1.to_out_ff." in name:
        return "dynamics_adapter"
    if "motion_modules." in name:
        return "motion_module"
    if ".attn2.to_k_ip." in name or ".attn2.to_v_ip." in name:
        return "ip_adapter"
    return "backbone"


def frame_pooled_group_norm(x: torch.Tensor, norm: nn.GroupNorm, num_frames: int) -> torch.Tensor:
    """GroupNorm of ``[(B N), C, h, w]`` whose statistics pool all N frames of each sample.

    Equal to ``nn.GroupNorm`` applied to the un-folded ``[B, C, N, h, w]`` tensor (official
    docs/official-behaviour.md §10): mean and variance per (sample, group) over C/G channels x N x h x w.
    Statistics are computed in float32, or in float64 for float64 inputs (never downcast).
    """
    bn, c, h, w = x.shape
    groups = norm.num_groups
    stats = torch.promote_types(x.dtype, torch.float32)
    xs = x.view(bn // num_frames, num_frames, groups, c // groups, h, w).to(stats)
    var, mean = torch.var_mean(xs, dim=(1, 3, 4, 5), keepdim=True, correction=0)
    scale = torch.rsqrt(var + norm.eps)
    shift = -mean * scale
    if norm.affine:
        weight = norm.weight.to(stats).view(1, 1, groups, c // groups, 1, 1)
        scale = scale * weight
        shift = shift * weight + norm.bias.to(stats).view(1, 1, groups, c // groups, 1, 1)
    return torch.addcmul(shift, xs, scale).to(x.dtype).view(bn, c, h, w)


def frame_pooled_group_norm_chunked(x: torch.Tensor, norm: nn.GroupNorm, num_frames: int, chunks: int) -> torch.Tensor:
    """:func:`frame_pooled_group_norm` computed for ``chunks`` slices of the groups at a time.
    Statistics are per group, so this is the same arithmetic on fewer elements at once: the
    float32 temporaries (2x the activation in float32) shrink ``chunks``-fold."""
    bn, c, h, w = x.shape
    groups = norm.num_groups
    xv = x.view(bn // num_frames, num_frames, groups, c // groups, h, w)
    out = torch.empty_like(xv)
    weight = norm.weight.view(groups, c // groups) if norm.affine else None
    bias = norm.bias.view(groups, c // groups) if norm.affine else None
    stats = torch.promote_types(x.dtype, torch.float32)
    for idx in torch.arange(groups).chunk(chunks):
        g0, g1 = int(idx[0]), int(idx[-1]) + 1
        xs = xv[:, :, g0:g1].to(stats)
        var, mean = torch.var_mean(xs, dim=(1, 3, 4, 5), keepdim=True, correction=0)
        scale = torch.rsqrt(var + norm.eps)
        shift = -mean * scale
        if norm.affine:
            wg = weight[g0:g1].to(stats).view(1, 1, g1 - g0, c // groups, 1, 1)
            scale = scale * wg
            shift = shift * wg + bias[g0:g1].to(stats).view(1, 1, g1 - g0, c // groups, 1, 1)
        out[:, :, g0:g1] = torch.addcmul(shift, xs, scale).to(x.dtype)
        del xs
    return out.view(bn, c, h, w)


class FramePooledGroupNorm(nn.GroupNorm):
    """``nn.GroupNorm`` (same parameters and state-dict keys) whose forward pools the
    statistics over the ``num_frames`` frames of each sample, see :func:`frame_pooled_group_norm`.

    A module rather than a function call on ``norm.weight`` so that hooks that move weights
    in a module's forward (accelerate's sequential CPU offload) see it being used.
    """

    chunks = 1  # > 1: see XDynaUNet.enable_memory_chunking

    def forward(self, x: torch.Tensor, num_frames: int) -> torch.Tensor:
        if self.chunks > 1:
            return frame_pooled_group_norm_chunked(x, self, num_frames, self.chunks)
        return frame_pooled_group_norm(x, self, num_frames)


class ResnetBlock(nn.Module):
    """SD ResNet block (``ResnetBlock3D`` in the official code) with frame-pooled GroupNorms."""

    def __init__(self, in_channels: int, out_channels: int, temb_channels: int, groups: int, eps: float, output_scale_factor: float = 1.0):
        super().__init__()
        self.output_scale_factor = output_scale_factor
        self.norm1 = FramePooledGroupNorm(groups, in_channels, eps=eps, affine=True)
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)
        self.time_emb_proj = nn.Linear(temb_channels, out_channels)
        self.norm2 = FramePooledGroupNorm(groups, out_channels, eps=eps, affine=True)
        self.dropout = nn.Dropout(0.0)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1)
        self.conv_shortcut = nn.Conv2d(in_channels, out_channels, kernel_size=1) if in_channels != out_channels else None

    def forward(self, x: torch.Tensor, temb: torch.Tensor, num_frames: int) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x, num_frames)))
        # One time embedding per sample, added to all its frames (reference frame included).
        t = self.time_emb_proj(F.silu(temb))
        bn, c, hh, ww = h.shape
        h = (h.view(-1, num_frames, c, hh, ww) + t[:, None, :, None, None]).view(bn, c, hh, ww)
        h = self.conv2(self.dropout(F.silu(self.norm2(h, num_frames))))
        if self.conv_shortcut is not None:
            x = self.conv_shortcut(x)
        return (x + h) / self.output_scale_factor


class BasicTransformerBlock(nn.Module):
    """LN -> attn1 (Dynamics-Adapter) -> LN -> attn2 (text + IP) -> LN -> GEGLU FF, each residual."""

    def __init__(self, dim: int, heads: int, cross_attention_dim: int, num_text_tokens: int, num_ip_tokens: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn1 = DynamicsAdapterAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.attn2 = IPAdapterCrossAttention(dim, cross_attention_dim, heads, num_text_tokens, num_ip_tokens)
        self.norm3 = nn.LayerNorm(dim)
        self.ff = FeedForward(dim, dropout=0.0, activation_fn="geglu")
        self.ff_chunks = None  # see XDynaUNet.enable_feed_forward_chunking

    def forward(self, x: torch.Tensor, encoder_hidden_states: torch.Tensor, num_frames: int) -> torch.Tensor:
        x = self.attn1(self.norm1(x), num_frames) + x
        x = self.attn2(self.norm2(x), encoder_hidden_states, num_frames) + x
        return chunked_feed_forward(self.ff, self.norm3(x), self.ff_chunks) + x


class SpatialTransformer(nn.Module):
    """Per-frame spatial transformer (``Transformer3DModel`` in the official code).

    Its input GroupNorm runs on the folded batch, i.e. with per-frame statistics (§10).
    """

    def __init__(self, channels: int, heads: int, cross_attention_dim: int, norm_num_groups: int,
                 use_linear_projection: bool, num_text_tokens: int, num_ip_tokens: int):
        super().__init__()
        self.use_linear_projection = use_linear_projection
        self.norm = nn.GroupNorm(norm_num_groups, channels, eps=1e-6, affine=True)
        if use_linear_projection:
            self.proj_in = nn.Linear(channels, channels)
        else:
            self.proj_in = nn.Conv2d(channels, channels, kernel_size=1)
        self.transformer_blocks = nn.ModuleList(
            [BasicTransformerBlock(channels, heads, cross_attention_dim, num_text_tokens, num_ip_tokens)]
        )
        if use_linear_projection:
            self.proj_out = nn.Linear(channels, channels)
        else:
            self.proj_out = nn.Conv2d(channels, channels, kernel_size=1)

    def forward(self, x: torch.Tensor, encoder_hidden_states: torch.Tensor, num_frames: int) -> torch.Tensor:
        bn, c, h, w = x.shape
        residual = x
        x = self.norm(x)
        if not self.use_linear_projection:
            x = self.proj_in(x)
        x = x.permute(0, 2, 3, 1).reshape(bn, h * w, c)
        if self.use_linear_projection:
            x = self.proj_in(x)
        for block in self.transformer_blocks:
            x = block(x, encoder_hidden_states, num_frames)
        if self.use_linear_projection:
            x = self.proj_out(x)
        # Back to [(B N), C, h, w]; the tokens are already channels-last in memory, so keep that
        # layout when the input had it (opt-in channels-last), else the plain contiguous one.
        x = x.reshape(bn, h, w, c).permute(0, 3, 1, 2).contiguous(memory_format=_memory_format(residual))
        if not self.use_linear_projection:
            x = self.proj_out(x)
        return x + residual


class Downsample(nn.Module):
    def __init__(self, channels: int, padding: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, stride=2, padding=padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest x2 in h and w (never along frames), then a 3x3 conv."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor, output_size: Sequence[int] | None = None) -> torch.Tensor:
        if output_size is None:
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        else:
            x = F.interpolate(x, size=tuple(output_size), mode="nearest")
        return self.conv(x)


class _Block(nn.Module):
    """Shared gradient-checkpointing plumbing for the UNet blocks."""

    def __init__(self):
        super().__init__()
        self.gradient_checkpointing = False

    def _run(self, module: nn.Module, *args):
        if self.gradient_checkpointing and torch.is_grad_enabled():
            return self._gradient_checkpointing_func(module, *args)
        return module(*args)

    def _add_layers(self, channels, num_layers, cross_attention, motion_module_kwargs, *, groups, heads,
                    cross_attention_dim, use_linear_projection, num_text_tokens, num_ip_tokens):
        """Per layer: an optional spatial transformer and an optional motion module (the official
        key names ``attentions.{i}`` / ``motion_modules.{i}``)."""
        self.attentions = None
        if cross_attention:
            self.attentions = nn.ModuleList(
                [SpatialTransformer(channels, heads, cross_attention_dim, groups, use_linear_projection,
                                    num_text_tokens, num_ip_tokens) for _ in range(num_layers)]
            )
        self.motion_modules = None
        if motion_module_kwargs is not None:
            self.motion_modules = nn.ModuleList(
                [VanillaTemporalModule(channels, **motion_module_kwargs) for _ in range(num_layers)]
            )

    def _layer(self, i, x, temb, encoder_hidden_states, num_frames):
        """Layer i: ResNet -> (spatial transformer) -> (motion module)."""
        x = self._run(self.resnets[i], x, temb, num_frames)
        if self.attentions is not None:
            x = self._run(self.attentions[i], x, encoder_hidden_states, num_frames)
        if self.motion_modules is not None:
            x = self._run(self.motion_modules[i], x, num_frames)
        return x


class DownBlock(_Block):
    """``[ResNet -> (spatial transformer) -> (motion module)] x layers``, then an optional
    stride-2 conv. Every layer output (and the downsampled one) is a skip connection."""

    def __init__(self, in_channels, out_channels, temb_channels, num_layers, add_downsample, cross_attention,
                 motion_module_kwargs, *, groups, eps, downsample_padding, heads, cross_attention_dim,
                 use_linear_projection, num_text_tokens, num_ip_tokens):
        super().__init__()
        self.resnets = nn.ModuleList(
            [ResnetBlock(in_channels if i == 0 else out_channels, out_channels, temb_channels, groups, eps) for i in range(num_layers)]
        )
        self._add_layers(out_channels, num_layers, cross_attention, motion_module_kwargs, groups=groups, heads=heads,
                         cross_attention_dim=cross_attention_dim, use_linear_projection=use_linear_projection,
                         num_text_tokens=num_text_tokens, num_ip_tokens=num_ip_tokens)
        self.downsamplers = nn.ModuleList([Downsample(out_channels, downsample_padding)]) if add_downsample else None

    def forward(self, x, temb, encoder_hidden_states, num_frames, stop=None):
        """`stop`: run only the first `stop` layers, without the downsampler (DeepCache)."""
        skips = ()
        for i in range(len(self.resnets[:stop])):
            x = self._layer(i, x, temb, encoder_hidden_states, num_frames)
            skips += (x,)
        if self.downsamplers is not None and stop is None:
            x = self.downsamplers[0](x)
            skips += (x,)
        return x, skips


class UpBlock(_Block):
    """``[concat skip -> ResNet -> (spatial transformer) -> (motion module)] x layers``, then
    an optional nearest-x2 upsample + conv."""

    def __init__(self, in_channels, prev_output_channel, out_channels, temb_channels, num_layers, add_upsample,
                 cross_attention, motion_module_kwargs, *, groups, eps, heads, cross_attention_dim,
                 use_linear_projection, num_text_tokens, num_ip_tokens):
        super().__init__()
        resnets = []
        for i in range(num_layers):
            skip_channels = in_channels if i == num_layers - 1 else out_channels
            resnet_in = prev_output_channel if i == 0 else out_channels
            resnets.append(ResnetBlock(resnet_in + skip_channels, out_channels, temb_channels, groups, eps))
        self.resnets = nn.ModuleList(resnets)
        self._add_layers(out_channels, num_layers, cross_attention, motion_module_kwargs, groups=groups, heads=heads,
                         cross_attention_dim=cross_attention_dim, use_linear_projection=use_linear_projection,
                         num_text_tokens=num_text_tokens, num_ip_tokens=num_ip_tokens)
        self.upsamplers = nn.ModuleList([Upsample(out_channels)]) if add_upsample else None

    def forward(self, x, skips, temb, encoder_hidden_states, num_frames, upsample_size=None, start=0, stop=None):
        """Layers `start` to `stop` (None: to the end, then the upsampler); `skips` always has
        one entry per layer (layer i reads skips[-1 - i])."""
        for i in range(len(self.resnets)):
            if i < start:
                continue
            if stop is not None and i >= stop:
                return x
            x = self._layer(i, torch.cat([x, skips[-1 - i]], dim=1), temb, encoder_hidden_states, num_frames)
        if self.upsamplers is not None:
            x = self.upsamplers[0](x, upsample_size)
        return x


class MidBlock(_Block):
    """ResNet -> spatial transformer -> (motion module) -> ResNet."""

    def __init__(self, channels, temb_channels, output_scale_factor, motion_module_kwargs, *, groups, eps, heads,
                 cross_attention_dim, use_linear_projection, num_text_tokens, num_ip_tokens):
        super().__init__()
        self.resnets = nn.ModuleList(
            [ResnetBlock(channels, channels, temb_channels, groups, eps, output_scale_factor) for _ in range(2)]
        )
        self.attentions = nn.ModuleList(
            [SpatialTransformer(channels, heads, cross_attention_dim, groups, use_linear_projection,
                                num_text_tokens, num_ip_tokens)]
        )
        self.motion_modules = None
        if motion_module_kwargs is not None:
            self.motion_modules = nn.ModuleList([VanillaTemporalModule(channels, **motion_module_kwargs)])

    def forward(self, x, temb, encoder_hidden_states, num_frames):
        x = self._run(self.resnets[0], x, temb, num_frames)
        x = self._run(self.attentions[0], x, encoder_hidden_states, num_frames)
        if self.motion_modules is not None:
            x = self._run(self.motion_modules[0], x, num_frames)
        return self._run(self.resnets[1], x, temb, num_frames)


@dataclass
class XDynaUNetOutput(BaseOutput):
    """``sample``: predicted noise ``[B, C_out, 1 + F, h, w]`` (frame 0 = prediction for the
    reference frame, which the pipeline discards). ``deep_features``: with
    ``return_deep_features=True``, the input of the last up block (the DeepCache cache)."""

    sample: torch.Tensor
    deep_features: torch.Tensor | None = None


def timesteps_for_batch(timestep, batch: int, device) -> torch.Tensor:
    """A timestep given as a number, a 0-d or a 1-d tensor -> a tensor [batch] on `device`
    (as diffusers' UNet2DConditionModel accepts it)."""
    timesteps = timestep
    if not torch.is_tensor(timesteps):
        dtype = torch.float64 if isinstance(timestep, float) else torch.int64
        timesteps = torch.tensor([timesteps], dtype=dtype, device=device)
    elif timesteps.ndim == 0:
        timesteps = timesteps[None].to(device)
    return timesteps.expand(batch)


def _memory_format(x: torch.Tensor) -> torch.memory_format:
    """``torch.channels_last`` for a channels-last 4-D tensor (and not also plain contiguous),
    else ``torch.contiguous_format``."""
    if x.ndim == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def _per_block(value, n: int, name: str) -> list:
    if isinstance(value, int):
        return [value] * n
    value = list(value)
    if len(value) != n:
        raise ValueError(f"{name} must be an int or have one entry per block ({n}); got {value}")
    return value


class XDynaUNet(ModelMixin, ConfigMixin):
    r"""The X-Dyna video UNet (official ``UNet3DConditionModel`` with ``configs/x_dyna.yaml``).

    ``XDynaUNet.from_config(sd15_unet_config)`` builds the official architecture: the diffusers
    config of a Stable Diffusion 1.5 UNet (2-D or 3-D block type names are both accepted); the
    X-Dyna options below default to the official values.

    X-Dyna options:
        num_text_tokens / num_ip_tokens: layout of ``encoder_hidden_states`` (77 text tokens
            followed by 16 IP-Adapter-Plus tokens).
        use_motion_module, motion_module_resolutions, motion_module_mid_block,
        motion_module_decoder_only: where AnimateDiff motion modules go (official: after every
            layer of all down and up blocks, none in the mid block).
        motion_module_num_attention_heads (8), motion_module_num_transformer_block (1),
        motion_module_num_attention_blocks (2 temporal self-attentions),
        motion_module_norm_num_groups (32, hard-coded in the official code),
        motion_module_position_encoding (True), motion_module_max_len (24 frames).

    Runtime setting: :meth:`set_adapter_scale` (Dynamics-Adapter residual weight, 1.0 = official).
    """

    _supports_gradient_checkpointing = True

    @register_to_config
    def __init__(
        self,
        sample_size: int | None = None,
        in_channels: int = 4,
        out_channels: int = 4,
        center_input_sample: bool = False,
        flip_sin_to_cos: bool = True,
        freq_shift: int = 0,
        down_block_types: Sequence[str] = ("CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "DownBlock3D"),
        up_block_types: Sequence[str] = ("UpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D"),
        block_out_channels: Sequence[int] = (320, 640, 1280, 1280),
        layers_per_block: int | Sequence[int] = 2,
        downsample_padding: int = 1,
        mid_block_scale_factor: float = 1.0,
        act_fn: str = "silu",
        norm_num_groups: int = 32,
        norm_eps: float = 1e-5,
        cross_attention_dim: int = 768,
        attention_head_dim: int | Sequence[int] = 8,
        num_attention_heads: int | Sequence[int] | None = None,
        use_linear_projection: bool = False,
        # X-Dyna
        num_text_tokens: int = 77,
        num_ip_tokens: int = 16,
        use_motion_module: bool = True,
        motion_module_resolutions: Sequence[int] = (1, 2, 4, 8),
        motion_module_mid_block: bool = False,
        motion_module_decoder_only: bool = False,
        motion_module_num_attention_heads: int = 8,
        motion_module_num_transformer_block: int = 1,
        motion_module_num_attention_blocks: int = 2,
        motion_module_norm_num_groups: int = 32,
        motion_module_position_encoding: bool = True,
        motion_module_max_len: int = 24,
    ):
        super().__init__()
        n_blocks = len(block_out_channels)
        if len(down_block_types) != n_blocks or len(up_block_types) != n_blocks:
            raise ValueError("down_block_types, up_block_types and block_out_channels must have the same length")
        for t in down_block_types:
            if t not in CROSS_ATTN_DOWN + PLAIN_DOWN:
                raise ValueError(f"unsupported down block type {t!r}; expected one of {CROSS_ATTN_DOWN + PLAIN_DOWN}")
        for t in up_block_types:
            if t not in CROSS_ATTN_UP + PLAIN_UP:
                raise ValueError(f"unsupported up block type {t!r}; expected one of {CROSS_ATTN_UP + PLAIN_UP}")
        if act_fn not in ("silu", "swish"):
            raise ValueError(f"unsupported act_fn {act_fn!r}; the SD1.5 UNet uses 'silu'")
        if num_ip_tokens < 1:
            raise ValueError("num_ip_tokens must be at least 1 (the IP-Adapter cross-attention needs image tokens)")

        # diffusers convention: SD1.5's `attention_head_dim` is really the number of heads.
        heads = _per_block(num_attention_heads or attention_head_dim, n_blocks, "attention_head_dim")
        layers = _per_block(layers_per_block, n_blocks, "layers_per_block")
        for ch, nh in zip(block_out_channels, heads):
            if ch % nh:
                raise ValueError(f"block width {ch} is not divisible by its {nh} attention heads")
        time_embed_dim = block_out_channels[0] * 4
        common = dict(
            groups=norm_num_groups,
            eps=norm_eps,
            cross_attention_dim=cross_attention_dim,
            use_linear_projection=use_linear_projection,
            num_text_tokens=num_text_tokens,
            num_ip_tokens=num_ip_tokens,
        )
        mm_kwargs = dict(
            num_attention_heads=motion_module_num_attention_heads,
            num_transformer_block=motion_module_num_transformer_block,
            num_attention_blocks=motion_module_num_attention_blocks,
            norm_num_groups=motion_module_norm_num_groups,
            temporal_position_encoding=motion_module_position_encoding,
            temporal_position_encoding_max_len=motion_module_max_len,
        )

        self.conv_in = nn.Conv2d(in_channels, block_out_channels[0], kernel_size=3, padding=1)
        self.time_proj = Timesteps(block_out_channels[0], flip_sin_to_cos, freq_shift)
        self.time_embedding = TimestepEmbedding(block_out_channels[0], time_embed_dim)

        self.down_blocks = nn.ModuleList()
        output_channel = block_out_channels[0]
        for i, block_type in enumerate(down_block_types):
            input_channel, output_channel = output_channel, block_out_channels[i]
            # Official placement rule: down block i sits at "resolution" 2**i.
            use_mm = use_motion_module and (2**i in motion_module_resolutions) and not motion_module_decoder_only
            self.down_blocks.append(
                DownBlock(
                    input_channel, output_channel, time_embed_dim, layers[i],
                    add_downsample=i < n_blocks - 1,
                    cross_attention=block_type in CROSS_ATTN_DOWN,
                    motion_module_kwargs=mm_kwargs if use_mm else None,
                    downsample_padding=downsample_padding, heads=heads[i], **common,
                )
            )

        self.mid_block = MidBlock(
            block_out_channels[-1], time_embed_dim, mid_block_scale_factor,
            mm_kwargs if (use_motion_module and motion_module_mid_block) else None,
            heads=heads[-1], **common,
        )

        self.up_blocks = nn.ModuleList()
        self.num_upsamplers = 0
        rev_channels = list(reversed(block_out_channels))
        rev_heads = list(reversed(heads))
        rev_layers = list(reversed(layers))
        output_channel = rev_channels[0]
        for i, block_type in enumerate(up_block_types):
            is_final = i == n_blocks - 1
            prev_output_channel, output_channel = output_channel, rev_channels[i]
            input_channel = rev_channels[min(i + 1, n_blocks - 1)]
            if not is_final:
                self.num_upsamplers += 1
            # Official placement rule: up block i sits at "resolution" 2**(3 - i) (written for
            # four blocks; kept as is so motion_module_resolutions means the same thing).
            use_mm = use_motion_module and (2 ** (3 - i) in motion_module_resolutions)
            self.up_blocks.append(
                UpBlock(
                    input_channel, prev_output_channel, output_channel, time_embed_dim, rev_layers[i] + 1,
                    add_upsample=not is_final,
                    cross_attention=block_type in CROSS_ATTN_UP,
                    motion_module_kwargs=mm_kwargs if use_mm else None,
                    heads=rev_heads[i], **common,
                )
            )

        self.conv_norm_out = FramePooledGroupNorm(norm_num_groups, block_out_channels[0], eps=norm_eps)
        self.conv_out = nn.Conv2d(block_out_channels[0], out_channels, kernel_size=3, padding=1)

    # ------------------------------------------------------------------ runtime settings
    def set_adapter_scale(self, scale: float) -> None:
        """Weight of the Dynamics-Adapter residual in every ``attn1`` (1.0 = official, 0.0 = off)."""
        for module in self.modules():
            if isinstance(module, DynamicsAdapterAttention):
                module.adapter_scale = float(scale)

    @property
    def adapter_scale(self) -> float:
        for module in self.modules():
            if isinstance(module, DynamicsAdapterAttention):
                return module.adapter_scale
        return 1.0

    def enable_memory_chunking(self, num_chunks: int = 4) -> None:
        """Lower the peak memory of a call: every feed-forward (spatial and motion-module
        blocks) runs on ``num_chunks`` slices of its batch axis, and every frame-pooled
        GroupNorm on ``num_chunks`` slices of its groups. These are the largest temporaries
        at full resolution (the first level's GEGLU, 8x the width per token, and the float32
        GroupNorm copies). Same values up to matmul rounding (GroupNorm: identical); a little
        slower. Off by default; ``num_chunks=1`` turns it off."""
        if num_chunks < 1:
            raise ValueError(f"num_chunks must be at least 1, got {num_chunks}")
        for module in self.modules():
            if hasattr(module, "ff_chunks"):
                module.ff_chunks = int(num_chunks)
            if isinstance(module, FramePooledGroupNorm):
                module.chunks = int(num_chunks)

    def disable_memory_chunking(self) -> None:
        self.enable_memory_chunking(1)

    def reset_positional_encodings(self) -> None:
        """Recompute the motion modules' fixed sinusoids (``...pos_encoder.pe`` buffers)."""
        for module in self.modules():
            if isinstance(module, PositionalEncoding):
                module.reset_parameters()

    # ------------------------------------------------------------------ parameter groups
    def named_parameter_group(self, group: str) -> list[tuple[str, nn.Parameter]]:
        if group not in PARAMETER_GROUPS:
            raise ValueError(f"unknown parameter group {group!r}; expected one of {PARAMETER_GROUPS}")
        return [(n, p) for n, p in self.named_parameters() if parameter_group(n) == group]

    def dynamics_adapter_parameters(self) -> list[nn.Parameter]:
        """``attn1.to_q_ff`` and ``attn1.to_out_ff`` of every spatial transformer."""
        return [p for _, p in self.named_parameter_group("dynamics_adapter")]

    def motion_module_parameters(self) -> list[nn.Parameter]:
        return [p for _, p in self.named_parameter_group("motion_module")]

    def ip_adapter_parameters(self) -> list[nn.Parameter]:
        """``attn2.to_k_ip`` and ``attn2.to_v_ip`` of every spatial transformer."""
        return [p for _, p in self.named_parameter_group("ip_adapter")]

    def backbone_parameters(self) -> list[nn.Parameter]:
        """The SD1.5 weights (everything not in another group)."""
        return [p for _, p in self.named_parameter_group("backbone")]

    # ------------------------------------------------------------------ construction helpers
    @classmethod
    def from_unet2d(cls, unet2d: nn.Module, **xdyna_options) -> "XDynaUNet":
        """Inflate a diffusers ``UNet2DConditionModel`` (e.g. SD1.5) into an X-Dyna UNet.

        Backbone weights are copied; ``to_q_ff`` starts as a copy of ``to_q`` and ``to_out_ff``
        at zero (so the adapter starts as a no-op, as in the paper); ``to_k_ip``/``to_v_ip``
        start as copies of ``to_k``/``to_v``; motion modules are fresh with a zero ``proj_out``.
        """
        # Options of the 2-D UNet that XDynaUNet does not take are dropped (the weight check below
        # still refuses a 2-D UNet whose structure differs).
        accepted = set(inspect.signature(cls.__init__).parameters)
        config = {k: v for k, v in dict(unet2d.config).items() if k in accepted}
        config.update(xdyna_options)
        model = cls.from_config(config)
        param = next(unet2d.parameters())
        model = model.to(device=param.device, dtype=param.dtype)
        source, target = unet2d.state_dict(), model.state_dict()
        unexpected = [k for k in source if k not in target]
        mismatched = [k for k in source if k in target and source[k].shape != target[k].shape]
        backbone_missing = [k for k in target if k not in source and parameter_group(k) == "backbone"]
        if unexpected or mismatched or backbone_missing:
            raise ValueError(
                "the 2-D UNet does not match the X-Dyna backbone: "
                f"unexpected keys {_abbrev(unexpected)}; shape mismatches {_abbrev(mismatched)}; "
                f"missing backbone keys {_abbrev(backbone_missing)}"
            )
        model.load_state_dict(source, strict=False)
        with torch.no_grad():
            for module in model.modules():
                if isinstance(module, DynamicsAdapterAttention):
                    module.to_q_ff.weight.copy_(module.to_q.weight)
                    module.to_out_ff.weight.zero_()
                    module.to_out_ff.bias.zero_()
                elif isinstance(module, IPAdapterCrossAttention):
                    module.to_k_ip.weight.copy_(module.to_k.weight)
                    module.to_v_ip.weight.copy_(module.to_v.weight)
        return model

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | float | int,
        encoder_hidden_states: torch.Tensor,
        down_block_additional_residuals: Sequence[torch.Tensor] | None = None,
        mid_block_additional_residual: torch.Tensor | None = None,
        return_dict: bool = True,
        return_deep_features: bool = False,
        deep_features: torch.Tensor | None = None,
        deep_cache_branch: int | None = None,
    ) -> XDynaUNetOutput | tuple:
        r"""Predict the noise of every frame.

        Args:
            sample: ``[B, C_in, 1 + F, h, w]``; frame 0 is the clean reference latent.
            timestep: int/float, 0-d tensor, or ``[B]`` tensor; all frames of a sample share it.
            encoder_hidden_states: ``[B, num_text_tokens + num_ip_tokens, D]``, text tokens first.
            down_block_additional_residuals: ControlNet skip residuals, one per skip connection,
                each ``[B, C, 1 + F, h', w']`` (frame 0 normally zero). Tensors with only ``F``
                frames are taken as residuals of frames 1..F (frame 0 gets none).
            mid_block_additional_residual: ControlNet mid residual, same layout.
            return_deep_features: also return the features where the shallow branch joins
                the deep path (``deep_features``, ``[(B N), C, h, w]``) for feature caching.
            deep_features: DeepCache partial step (Ma et al., "DeepCache: Accelerating
                Diffusion Models for Free", CVPR 2024, Sec. 3.3): run only the shallow branch
                and take everything deeper from these cached features of an earlier step.
            deep_cache_branch: the shallow branch, as the number ``b`` of first-level layers
                it recomputes: ``conv_in``, the first ``b`` layers of the first down block,
                the last ``b + 1`` layers of the last up block (those that read the skips
                of ``conv_in`` and of these ``b`` layers) and the output head. None = all
                layers of the first level. Must be the same for the call that returns the
                features and the calls that use them. ControlNet residuals may be given for
                the ``b + 1`` shallow skips only, or for all. With the features of the same
                inputs the result equals the full forward.
        """
        if sample.ndim != 5:
            raise ValueError(f"sample must be [B, C, 1 + F, h, w]; got shape {tuple(sample.shape)}")
        batch, _, num_frames, height, width = sample.shape

        # Sizes that are not a multiple of the total upsampling factor need explicit sizes.
        up_factor = 2**self.num_upsamplers
        forward_upsample_size = height % up_factor != 0 or width % up_factor != 0

        if self.config.center_input_sample:
            sample = 2 * sample - 1.0

        timesteps = timesteps_for_batch(timestep, batch, sample.device)
        # The sinusoid is float32; the embedding MLP runs in the model dtype.
        emb = self.time_embedding(self.time_proj(timesteps).to(dtype=self.dtype))

        x = sample.transpose(1, 2).reshape(batch * num_frames, sample.shape[1], height, width)
        x = self.conv_in(x)

        first_layers = len(self.down_blocks[0].resnets)
        branch = first_layers if deep_cache_branch is None else int(deep_cache_branch)
        if not 0 <= branch <= first_layers:
            raise ValueError(f"deep_cache_branch must be in 0..{first_layers}, got {deep_cache_branch}")
        join = len(self.up_blocks[-1].resnets) - 1 - branch  # first last-block layer of the shallow branch
        if deep_features is not None:
            # DeepCache partial step: shallow branch only, deeper features from the cache.
            n_shallow = branch + 1
            _, block_skips = self.down_blocks[0](x, emb, encoder_hidden_states, num_frames, stop=branch)
            skips = (x,) + block_skips
            residuals = down_block_additional_residuals
            if residuals is not None:
                if len(residuals) not in (n_shallow, self.skip_count):
                    raise ValueError(
                        f"expected {n_shallow} (shallow) or {self.skip_count} down-block residuals, got {len(residuals)}"
                    )
                skips = tuple(s + self._fold(r, batch, num_frames) for s, r in zip(skips, residuals[:n_shallow]))
            if deep_features.shape[0] != batch * num_frames:
                raise ValueError(
                    f"deep_features has batch {deep_features.shape[0]}; this call needs {batch * num_frames} = B x N"
                )
            features = deep_features
            skips = skips + (None,) * (len(self.up_blocks[-1].resnets) - n_shallow)  # layer i reads skips[-1 - i]
            x = self.up_blocks[-1](deep_features, skips, emb, encoder_hidden_states, num_frames, start=join)
        else:
            skips = (x,)
            for block in self.down_blocks:
                x, block_skips = block(x, emb, encoder_hidden_states, num_frames)
                skips += block_skips

            if down_block_additional_residuals is not None:
                if len(down_block_additional_residuals) != len(skips):
                    raise ValueError(
                        f"expected {len(skips)} down-block residuals, got {len(down_block_additional_residuals)}"
                    )
                skips = tuple(s + self._fold(r, batch, num_frames) for s, r in zip(skips, down_block_additional_residuals))

            x = self.mid_block(x, emb, encoder_hidden_states, num_frames)
            if mid_block_additional_residual is not None:
                x = x + self._fold(mid_block_additional_residual, batch, num_frames)

            features = None
            for i, block in enumerate(self.up_blocks):
                n = len(block.resnets)
                block_skips, skips = skips[-n:], skips[:-n]
                upsample_size = None
                if forward_upsample_size and i < len(self.up_blocks) - 1:
                    upsample_size = skips[-1].shape[-2:]
                if i == len(self.up_blocks) - 1 and return_deep_features:
                    x = block(x, block_skips, emb, encoder_hidden_states, num_frames, upsample_size, stop=join)
                    features = x
                    x = block(x, block_skips, emb, encoder_hidden_states, num_frames, upsample_size, start=join)
                else:
                    x = block(x, block_skips, emb, encoder_hidden_states, num_frames, upsample_size)

        x = F.silu(self.conv_norm_out(x, num_frames))
        x = self.conv_out(x)
        out = x.view(batch, num_frames, x.shape[1], height, width).transpose(1, 2).contiguous()
        features = features if return_deep_features else None
        if not return_dict:
            return (out,) if features is None else (out, features)
        return XDynaUNetOutput(sample=out, deep_features=features)

    @property
    def skip_count(self) -> int:
        """Number of skip connections = of ControlNet down-block residuals."""
        return 1 + sum(len(b.resnets) + (b.downsamplers is not None) for b in self.down_blocks)

    @property
    def shallow_skip_count(self) -> int:
        """Skips the last up block consumes (``conv_in`` + the first down block's layers):
        what a DeepCache partial step with the full first level needs from the ControlNets
        (``deep_cache_branch + 1`` for a shallower branch)."""
        return len(self.up_blocks[-1].resnets)

    @staticmethod
    def _fold(residual: torch.Tensor, batch: int, num_frames: int) -> torch.Tensor:
        """``[B, C, N, h, w]`` -> ``[(B N), C, h, w]``; an ``F = N - 1``-frame residual gets a zero frame 0."""
        if residual.ndim != 5 or residual.shape[0] != batch:
            raise ValueError(f"ControlNet residuals must be [B, C, 1 + F, h, w] with B = {batch}; got {tuple(residual.shape)}")
        if residual.shape[2] == num_frames - 1:
            residual = F.pad(residual, (0, 0, 0, 0, 1, 0))
        elif residual.shape[2] != num_frames:
            raise ValueError(f"ControlNet residual has {residual.shape[2]} frames; the sample has {num_frames}")
        b, c, n, h, w = residual.shape
        return residual.transpose(1, 2).reshape(b * n, c, h, w)


def _abbrev(keys: Iterable[str], limit: int = 5) -> str:
    keys = list(keys)
    if not keys:
        return "none"
    shown = ", ".join(keys[:limit])
    return f"{shown} (+{len(keys) - limit} more)" if len(keys) > limit else shown
