"""IP-Adapter-Plus image projection ("Resampler", a Perceiver over CLIP patch features).

Ye et al. 2023, "IP-Adapter", Sec. 3.2 / IP-Adapter-Plus: learned query tokens cross-attend
to the penultimate hidden states of a CLIP image encoder and become the image tokens that
the UNet's ``attn2.to_k_ip``/``to_v_ip`` read. Parameter names equal the ``"image_proj"``
part of ``ip-adapter-plus_sd15.bin``.
"""

from __future__ import annotations

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from .attention import multi_head_attention


class PerceiverAttention(nn.Module):
    """Queries = LN(latents); keys/values = [LN(features), LN(latents)]."""

    def __init__(self, dim: int, dim_head: int = 64, heads: int = 8):
        super().__init__()
        self.heads = heads
        inner_dim = dim_head * heads
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, inner_dim, bias=False)
        self.to_kv = nn.Linear(dim, inner_dim * 2, bias=False)
        self.to_out = nn.Linear(inner_dim, dim, bias=False)

    def forward(self, features: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        features = self.norm1(features)
        latents = self.norm2(latents)
        key, value = self.to_kv(torch.cat([features, latents], dim=1)).chunk(2, dim=-1)
        return self.to_out(multi_head_attention(self.to_q(latents), key, value, self.heads))


def _feed_forward(dim: int, mult: int) -> nn.Sequential:
    # Index layout (0 LayerNorm, 1 Linear, 2 GELU, 3 Linear) is part of the checkpoint keys.
    return nn.Sequential(
        nn.LayerNorm(dim),
        nn.Linear(dim, dim * mult, bias=False),
        nn.GELU(),
        nn.Linear(dim * mult, dim, bias=False),
    )


class XDynaImageProjection(ModelMixin, ConfigMixin):
    """CLIP image features ``[B, 257, embedding_dim]`` -> IP tokens ``[B, num_queries, output_dim]``.

    Defaults = the official IP-Adapter-Plus SD1.5 resampler (width 768, depth 4, 12 heads of
    64, 16 queries, CLIP ViT-H/14 input 1280, output 768, feed-forward x4).
    """

    @register_to_config
    def __init__(
        self,
        dim: int = 768,
        depth: int = 4,
        dim_head: int = 64,
        heads: int = 12,
        num_queries: int = 16,
        embedding_dim: int = 1280,
        output_dim: int = 768,
        ff_mult: int = 4,
    ):
        super().__init__()
        self.latents = nn.Parameter(torch.randn(1, num_queries, dim) / dim**0.5)
        self.proj_in = nn.Linear(embedding_dim, dim)
        self.proj_out = nn.Linear(dim, output_dim)
        self.norm_out = nn.LayerNorm(output_dim)
        self.layers = nn.ModuleList(
            [
                nn.ModuleList([PerceiverAttention(dim, dim_head, heads), _feed_forward(dim, ff_mult)])
                for _ in range(depth)
            ]
        )

    def forward(self, image_embeds: torch.Tensor) -> torch.Tensor:
        latents = self.latents.expand(image_embeds.shape[0], -1, -1)
        features = self.proj_in(image_embeds)
        for attention, ff in self.layers:
            latents = attention(features, latents) + latents
            latents = ff(latents) + latents
        return self.norm_out(self.proj_out(latents))
