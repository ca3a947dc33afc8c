"""Attention layers of the X-Dyna spatial transformer blocks.

Hidden states arrive with the frames folded into the batch, ``[(B N), L, C]`` with
``N = 1 + F`` frames per sample and frame 0 the clean reference latent. Parameter names
follow the official checkpoint (``attn1.to_q_ff``, ``attn2.to_k_ip`` ...).

All attention is ``softmax(Q K^T / sqrt(d_head)) V`` with no mask, computed by
``torch.nn.functional.scaled_dot_product_attention``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def multi_head_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
    """Unmasked multi-head attention on ``[batch, tokens, heads * d_head]`` tensors.

    Queries and keys may have different token counts; batch sizes must match.
    """
    b, lq, c = q.shape
    d = c // heads
    q = q.view(b, lq, heads, d).transpose(1, 2)
    k = k.reshape(b, k.shape[1], heads, d).transpose(1, 2)
    v = v.reshape(b, v.shape[1], heads, d).transpose(1, 2)
    out = F.scaled_dot_product_attention(q, k, v)
    return out.transpose(1, 2).reshape(b, lq, c)


def chunked_feed_forward(ff: nn.Module, x: torch.Tensor, num_chunks: int | None) -> torch.Tensor:
    """``ff(x)`` for a per-token feed-forward, computed on ``num_chunks`` slices of the batch
    axis at a time (None or 1: in one go). The values are the same up to matmul rounding;
    the temporary GEGLU activations (8x the block width per token) shrink ``num_chunks``-fold,
    which bounds the UNet's peak memory at full resolution."""
    if not num_chunks or num_chunks <= 1 or x.shape[0] < 2:
        return ff(x)
    return torch.cat([ff(part) for part in x.chunk(num_chunks, dim=0)], dim=0)


class DynamicsAdapterAttention(nn.Module):
    """Self-attention with the Dynamics-Adapter residual (X-Dyna paper, Sec. 3.2, Fig. 3c).

    For the tokens ``x`` of a frame and ``x0`` of the reference frame (frame 0 of the same
    sample, same layer, same call)::

        out = W_O MHA(W_Q x, W_K x, W_V x) + b_O
              + adapter_scale * (W_O' MHA(W_Q' x, W_K x0, W_V x0) + b_O')

    ``W_Q'`` = ``to_q_ff`` (no bias) and ``W_O'`` = ``to_out_ff`` are the only trainable
    adapter weights; the reference keys/values come from the frozen ``to_k``/``to_v``.
    Every frame takes part, frame 0 included (it then attends to itself in both branches).
    ``adapter_scale`` 1.0 reproduces the official model.
    """

    def __init__(self, dim: int, heads: int, dropout: float = 0.0):
        super().__init__()
        self.heads = heads
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_k = nn.Linear(dim, dim, bias=False)
        self.to_v = nn.Linear(dim, dim, bias=False)
        self.to_out = nn.ModuleList([nn.Linear(dim, dim), nn.Dropout(dropout)])
        self.to_q_ff = nn.Linear(dim, dim, bias=False)
        self.to_out_ff = nn.Linear(dim, dim)
        # Zero-initialised output projection: a fresh adapter leaves the backbone unchanged.
        nn.init.zeros_(self.to_out_ff.weight)
        nn.init.zeros_(self.to_out_ff.bias)
        self.adapter_scale = 1.0

    def forward(self, hidden_states: torch.Tensor, num_frames: int) -> torch.Tensor:
        bn, length, dim = hidden_states.shape
        batch = bn // num_frames
        key = self.to_k(hidden_states)
        value = self.to_v(hidden_states)
        out = self.to_out[0](multi_head_attention(self.to_q(hidden_states), key, value, self.heads))

        if self.adapter_scale != 0.0:
            # Reference K/V: frame 0 of each sample, already projected above (computed once).
            ref_key = key.view(batch, num_frames, length, dim)[:, 0]
            ref_value = value.view(batch, num_frames, length, dim)[:, 0]
            # All frames of a sample query the same reference tokens, so their queries can
            # share one attention call: [B, N*L, C] against [B, L, C].
            query_ff = self.to_q_ff(hidden_states).view(batch, num_frames * length, dim)
            ref = multi_head_attention(query_ff, ref_key, ref_value, self.heads)
            ref = self.to_out_ff(ref.view(bn, length, dim))
            out = out + ref if self.adapter_scale == 1.0 else out + self.adapter_scale * ref
        return self.to_out[1](out)


class IPAdapterCrossAttention(nn.Module):
    """Decoupled text + image cross-attention (IP-Adapter, Ye et al. 2023, Eq. 5).

    ``encoder_hidden_states`` is ``[B, T + K, D]``: ``T`` text tokens followed by ``K``
    IP tokens. One query ``W_Q x``; separate softmaxes over the text keys (``to_k``/``to_v``)
    and the IP keys (``to_k_ip``/``to_v_ip``); the two results are summed with weight 1
    *before* the shared output projection (as the official X-Dyna model does).
    """

    def __init__(
        self,
        dim: int,
        cross_attention_dim: int,
        heads: int,
        num_text_tokens: int = 77,
        num_ip_tokens: int = 16,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.heads = heads
        self.num_text_tokens = num_text_tokens
        self.num_ip_tokens = num_ip_tokens
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_k = nn.Linear(cross_attention_dim, dim, bias=False)
        self.to_v = nn.Linear(cross_attention_dim, dim, bias=False)
        self.to_out = nn.ModuleList([nn.Linear(dim, dim), nn.Dropout(dropout)])
        self.to_k_ip = nn.Linear(cross_attention_dim, dim, bias=False)
        self.to_v_ip = nn.Linear(cross_attention_dim, dim, bias=False)

    def forward(self, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor, num_frames: int) -> torch.Tensor:
        bn, length, dim = hidden_states.shape
        batch = encoder_hidden_states.shape[0]
        expected = self.num_text_tokens + self.num_ip_tokens
        if encoder_hidden_states.shape[1] != expected or batch * num_frames != bn:
            raise ValueError(
                f"encoder_hidden_states must be [B, {expected}, D] ({self.num_text_tokens} text tokens then "
                f"{self.num_ip_tokens} IP tokens) with B = {bn // max(num_frames, 1)}; "
                f"got {tuple(encoder_hidden_states.shape)}"
            )
        text = encoder_hidden_states[:, : self.num_text_tokens]
        image = encoder_hidden_states[:, self.num_text_tokens :]
        # Every frame of a sample sees the same context: fold the frames into the query axis
        # instead of repeating the context per frame.
        query = self.to_q(hidden_states).view(batch, num_frames * length, dim)
        out = multi_head_attention(query, self.to_k(text), self.to_v(text), self.heads)
        out = out + multi_head_attention(query, self.to_k_ip(image), self.to_v_ip(image), self.heads)
        out = self.to_out[0](out.view(bn, length, dim))
        return self.to_out[1](out)
