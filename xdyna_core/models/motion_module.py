"""AnimateDiff v1 motion module ("Vanilla" temporal transformer), X-Dyna variant.

Guo et al. 2023, "AnimateDiff", Sec. 4.2: a transformer over the frame axis, applied
independently at every pixel. X-Dyna keeps the clean reference latent at frame 0 and
passes it through unchanged; the transformer sees only the noisy frames 1..F.
Parameter names follow the official checkpoint
(``motion_modules.N.temporal_transformer.transformer_blocks.0.attention_blocks.{0,1}...``).
"""

from __future__ import annotations

import math

import torch
from diffusers.models.attention import FeedForward
from torch import nn

from .attention import chunked_feed_forward, multi_head_attention


def sinusoidal_positions(max_len: int, dim: int) -> torch.Tensor:
    """Transformer sinusoid ``[1, max_len, dim]``: even channels sin, odd channels cos,
    frequency ``10000^(-2i/dim)`` (Vaswani et al. 2017, Sec. 3.5). Computed in torch's default
    dtype, like the official code (float32 unless a float64 default is set)."""
    position = torch.arange(max_len, dtype=torch.get_default_dtype()).unsqueeze(1)
    div_term = torch.exp(torch.arange(0, dim, 2, dtype=torch.get_default_dtype()) * (-math.log(10000.0) / dim))
    pe = torch.zeros(1, max_len, dim)
    pe[0, :, 0::2] = torch.sin(position * div_term)
    pe[0, :, 1::2] = torch.cos(position * div_term)
    return pe


class PositionalEncoding(nn.Module):
    """Adds the fixed sinusoid of positions ``0..F-1`` (window-relative) to ``[batch, F, C]``."""

    def __init__(self, dim: int, max_len: int = 24):
        super().__init__()
        # Persistent: the official checkpoints store it (``...pos_encoder.pe``).
        self.register_buffer("pe", sinusoidal_positions(max_len, dim), persistent=True)

    def reset_parameters(self) -> None:
        """Recompute the sinusoid in place (for checkpoints that do not store it)."""
        with torch.no_grad():
            self.pe.copy_(sinusoidal_positions(self.pe.shape[1], self.pe.shape[2]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        frames = x.shape[1]
        if frames > self.pe.shape[1]:
            raise ValueError(
                f"the motion module sees {frames} frames but its positional encoding covers at most "
                f"{self.pe.shape[1]}; use windows of at most {self.pe.shape[1]} frames"
            )
        return x + self.pe[:, :frames].to(x.dtype)


class TemporalSelfAttention(nn.Module):
    """Self-attention along the frame axis on ``[(B h w), F, C]``; Q, K, V all from ``x + PE``."""

    def __init__(self, dim: int, heads: int, position_encoding: bool = True, max_len: int = 24):
        super().__init__()
        self.heads = heads
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_k = nn.Linear(dim, dim, bias=False)
        self.to_v = nn.Linear(dim, dim, bias=False)
        self.to_out = nn.ModuleList([nn.Linear(dim, dim), nn.Dropout(0.0)])
        self.pos_encoder = PositionalEncoding(dim, max_len) if position_encoding else None

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        if self.pos_encoder is not None:
            hidden_states = self.pos_encoder(hidden_states)
        out = multi_head_attention(
            self.to_q(hidden_states), self.to_k(hidden_states), self.to_v(hidden_states), self.heads
        )
        return self.to_out[1](self.to_out[0](out))


class TemporalTransformerBlock(nn.Module):
    """``h <- Attn_i(LN_i(h)) + h`` for each temporal attention, then ``h <- FF(LN(h)) + h``."""

    def __init__(self, dim: int, heads: int, num_attention_blocks: int = 2, position_encoding: bool = True, max_len: int = 24):
        super().__init__()
        self.attention_blocks = nn.ModuleList(
            [TemporalSelfAttention(dim, heads, position_encoding, max_len) for _ in range(num_attention_blocks)]
        )
        self.norms = nn.ModuleList([nn.LayerNorm(dim) for _ in range(num_attention_blocks)])
        self.ff = FeedForward(dim, dropout=0.0, activation_fn="geglu")
        self.ff_norm = nn.LayerNorm(dim)
        self.ff_chunks = None  # see XDynaUNet.enable_feed_forward_chunking

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        for attention, norm in zip(self.attention_blocks, self.norms):
            hidden_states = attention(norm(hidden_states)) + hidden_states
        return chunked_feed_forward(self.ff, self.ff_norm(hidden_states), self.ff_chunks) + hidden_states


class TemporalTransformer3DModel(nn.Module):
    """Per-frame GroupNorm -> ``proj_in`` -> temporal blocks -> ``proj_out`` -> + input.

    Works on ``[(B F), C, h, w]`` (frames folded into the batch, only noisy frames).
    """

    def __init__(
        self,
        in_channels: int,
        heads: int = 8,
        num_layers: int = 1,
        num_attention_blocks: int = 2,
        norm_num_groups: int = 32,
        position_encoding: bool = True,
        max_len: int = 24,
    ):
        super().__init__()
        self.norm = nn.GroupNorm(norm_num_groups, in_channels, eps=1e-6, affine=True)
        self.proj_in = nn.Linear(in_channels, in_channels)
        self.transformer_blocks = nn.ModuleList(
            [
                TemporalTransformerBlock(in_channels, heads, num_attention_blocks, position_encoding, max_len)
                for _ in range(num_layers)
            ]
        )
        self.proj_out = nn.Linear(in_channels, in_channels)

    def forward(self, hidden_states: torch.Tensor, num_frames: int) -> torch.Tensor:
        bf, c, h, w = hidden_states.shape
        batch = bf // num_frames
        residual = hidden_states
        # GroupNorm on the folded batch = statistics per frame (as the official module).
        x = self.norm(hidden_states)
        # [(B F), C, h, w] -> [(B h w), F, C]: one sequence of frames per pixel. LayerNorm,
        # linear layers and the feed-forward act per token, so the whole block can stay in
        # this layout.
        x = x.view(batch, num_frames, c, h * w).permute(0, 3, 1, 2).reshape(batch * h * w, num_frames, c)
        x = self.proj_in(x)
        for block in self.transformer_blocks:
            x = block(x)
        x = self.proj_out(x)
        x = x.view(batch, h * w, num_frames, c).permute(0, 2, 3, 1).reshape(bf, c, h, w)
        return x + residual


class VanillaTemporalModule(nn.Module):
    """Motion module with the reference frame passed through (official ``cross_id: true``).

    Input/output ``[(B N), C, h, w]`` with ``N = 1 + F``; frame 0 of every sample is copied
    unchanged, frames 1..F go through the temporal transformer.
    """

    def __init__(
        self,
        in_channels: int,
        num_attention_heads: int = 8,
        num_transformer_block: int = 1,
        num_attention_blocks: int = 2,
        norm_num_groups: int = 32,
        temporal_position_encoding: bool = True,
        temporal_position_encoding_max_len: int = 24,
        zero_initialize: bool = True,
    ):
        super().__init__()
        self.temporal_transformer = TemporalTransformer3DModel(
            in_channels,
            heads=num_attention_heads,
            num_layers=num_transformer_block,
            num_attention_blocks=num_attention_blocks,
            norm_num_groups=norm_num_groups,
            position_encoding=temporal_position_encoding,
            max_len=temporal_position_encoding_max_len,
        )
        if zero_initialize:
            # AnimateDiff starts from an identity mapping: proj_out = 0.
            nn.init.zeros_(self.temporal_transformer.proj_out.weight)
            nn.init.zeros_(self.temporal_transformer.proj_out.bias)

    def forward(self, hidden_states: torch.Tensor, num_frames: int) -> torch.Tensor:
        if num_frames <= 1:
            return hidden_states
        bn, c, h, w = hidden_states.shape
        x = hidden_states.view(bn // num_frames, num_frames, c, h, w)
        noisy = x[:, 1:].reshape(-1, c, h, w)
        noisy = self.temporal_transformer(noisy, num_frames - 1)
        out = torch.cat([x[:, :1], noisy.view(-1, num_frames - 1, c, h, w)], dim=1)
        return out.view(bn, c, h, w)


__all__ = [
    "PositionalEncoding",
    "TemporalSelfAttention",
    "TemporalTransformer3DModel",
    "TemporalTransformerBlock",
    "VanillaTemporalModule",
    "sinusoidal_positions",
]
