"""Numerical parity with the official X-Dyna implementation, from recorded outputs.

``tests/data/official_parity.safetensors`` holds outputs of the *official* model classes
(GitHub bytedance/X-Dyna 9a54f8e, diffusers 0.24.0, torch 2.13 CPU, fp32, xformers replaced by
plain softmax attention) on tiny configurations. Weights and inputs are not stored: both sides
fill every tensor from a deterministic function of its key name (:func:`fill_`) and draw the
inputs from fixed seeds (:func:`case_inputs`), so the file stays small. The recording script
ran outside this repository against the official code (it imports this module for these two
helpers); see tests/data/README.md.

Top-level imports are torch only, so the recording side can import the helpers.
"""

import math
import zlib
from pathlib import Path

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

DATA = Path(__file__).parent / "data" / "official_parity.safetensors"

# Diffusers-style UNet configs (2-D block names); the official side uses the 3-D names plus
# configs/x_dyna.yaml's unet_additional_kwargs.
CASES = {
    # SD1.5 structure (3 cross-attention down blocks + 1 plain, 2 layers), odd latent size
    "sd_like": dict(
        config=dict(block_out_channels=[32, 64, 64, 64], layers_per_block=2, norm_num_groups=32, cross_attention_dim=48,
                    attention_head_dim=8,
                    down_block_types=["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
                    up_block_types=["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3),
        batch=2, frames=4, height=12, width=10, timestep=961, seed=11,
    ),
    # two levels, one layer, GroupNorm(8) in the backbone, per-block head counts
    "tiny2": dict(
        config=dict(block_out_channels=[32, 64], layers_per_block=1, norm_num_groups=8, cross_attention_dim=32,
                    attention_head_dim=[2, 4],
                    down_block_types=["CrossAttnDownBlock2D", "DownBlock2D"],
                    up_block_types=["UpBlock2D", "CrossAttnUpBlock2D"]),
        batch=2, frames=5, height=12, width=12, timestep=41, seed=12,
    ),
}
RESAMPLER = dict(dim=32, depth=2, dim_head=8, heads=4, num_queries=16, embedding_dim=40, output_dim=32, ff_mult=4)


def fill_(model: torch.nn.Module) -> torch.nn.Module:
    """Overwrite every parameter with values that depend only on its key name and shape
    (norm layers: weight ~ 1, bias ~ 0; other weights ~ N(0, 1/fan_in); biases small)."""
    norms = (torch.nn.GroupNorm, torch.nn.LayerNorm)
    with torch.no_grad():
        for module_name, module in model.named_modules():
            for param_name, p in module.named_parameters(recurse=False):
                name = f"{module_name}.{param_name}" if module_name else param_name
                g = torch.Generator().manual_seed(zlib.crc32(name.encode()))
                noise = torch.randn(p.shape, generator=g, dtype=torch.float32)
                if isinstance(module, norms):
                    value = (1.0 if param_name == "weight" else 0.0) + 0.1 * noise
                elif p.ndim == 1:
                    value = 0.05 * noise
                elif param_name == "latents":
                    value = noise / math.sqrt(p.shape[-1])
                else:
                    value = noise / math.sqrt(math.prod(p.shape[1:]))
                p.copy_(value)
    return model


def case_inputs(case: str):
    """Latents ``[B, 4, 1+F, h, w]``, timestep, text+IP tokens ``[B, 93, D]``, pose/face images
    ``[B*F, 3|6, 8h, 8w]`` (frames folded batch-major, as the official pipeline feeds them)."""
    c = CASES[case]
    b, f, h, w = c["batch"], c["frames"], c["height"], c["width"]
    g = torch.Generator().manual_seed(c["seed"])
    sample = torch.randn(b, 4, 1 + f, h, w, generator=g)
    ehs = torch.randn(b, 93, c["config"]["cross_attention_dim"], generator=g)
    pose = torch.rand(b * f, 3, 8 * h, 8 * w, generator=g) * 2 - 1
    face = torch.rand(b * f, 6, 8 * h, 8 * w, generator=g) * 2 - 1
    return sample, torch.tensor(c["timestep"]), ehs, pose, face


def resampler_input():
    return torch.randn(3, 257, RESAMPLER["embedding_dim"], generator=torch.Generator().manual_seed(13))


def controlnet_residuals(pose_net, face_net, sample, t, ehs, pose, face):
    """Pipeline-style ControlNet call on frames 1..F with text tokens only; pose + face summed."""
    b, _, n, h, w = sample.shape
    f = n - 1
    latents = sample[:, :, 1:].permute(0, 2, 1, 3, 4).reshape(b * f, 4, h, w)
    text = ehs[:, :77].repeat_interleave(f, 0)
    d_pose, m_pose = pose_net(latents, t, encoder_hidden_states=text, controlnet_cond=pose, return_dict=False)
    d_face, m_face = face_net(latents, t, encoder_hidden_states=text, controlnet_cond=face, return_dict=False)

    def to5(x):  # [(B F), C, h, w] -> [B, C, 1+F, h, w] with a zero reference frame
        x = x.reshape(b, f, *x.shape[1:]).permute(0, 2, 1, 3, 4)
        return torch.cat([torch.zeros_like(x[:, :, :1]), x], dim=2)

    return [to5(a) + to5(c) for a, c in zip(d_pose, d_face)], to5(m_pose) + to5(m_face)


@pytest.fixture(scope="module")
def recorded():
    from safetensors.torch import load_file

    return load_file(str(DATA))


@pytest.mark.parametrize("case", sorted(CASES))
def test_unet_and_controlnets_match_official(recorded, case):
    from xdyna_core.models import XDynaUNet, make_controlnet

    cfg = CASES[case]["config"]
    unet = fill_(XDynaUNet.from_config(cfg)).eval()
    pose_net = fill_(make_controlnet(cfg, 3)).eval()
    face_net = fill_(make_controlnet(cfg, 6)).eval()
    sample, t, ehs, pose, face = case_inputs(case)
    with torch.no_grad():
        plain = unet(sample, t, ehs).sample
        down, mid = controlnet_residuals(pose_net, face_net, sample, t, ehs, pose, face)
        controlled = unet(sample, t, ehs, down, mid).sample
    expected_plain, expected_controlled = recorded[f"{case}.plain"], recorded[f"{case}.controlled"]
    scale = float(expected_controlled.abs().max())
    assert scale > 0.1  # the recorded outputs are not degenerate
    assert float((plain - expected_plain).abs().max()) < 2e-5
    assert float((controlled - expected_controlled).abs().max()) < 2e-5
    assert float((controlled - plain).abs().max()) > 1e-2  # the residuals matter


def test_image_projection_matches_official(recorded):
    from xdyna_core.models import XDynaImageProjection

    proj = fill_(XDynaImageProjection(**RESAMPLER)).eval()
    with torch.no_grad():
        tokens = proj(resampler_input())
    assert float((tokens - recorded["resampler"]).abs().max()) < 2e-5


# ---- float64 ------------------------------------------------------------------------------
# The recording is float32, so a float64 forward can only be compared with it at float32
# precision. What float64 must honestly give is float64 arithmetic throughout: no hard-coded
# float32 step inside. That is checked op by op (every floating-point result of a float64
# forward is float64), and the steps that used to downcast are compared at 1e-8 with an
# independent float64 computation (torch's own GroupNorm; math.sin / math.cos).


class _NonFloat64Results(TorchDispatchMode):
    """Records the ops that give a floating-point result other than float64, except inside
    diffusers' ``Timesteps`` of the given models (its sinusoid is float32 in diffusers and in the
    official UNet alike; both cast it to the model dtype before the embedding MLP)."""

    def __init__(self, models):
        from diffusers.models.embeddings import Timesteps

        super().__init__()
        self.stray, self.in_timesteps = {}, 0
        for model in models:
            for m in model.modules():
                if isinstance(m, Timesteps):
                    m.register_forward_pre_hook(lambda *_: self._enter(1))
                    m.register_forward_hook(lambda *_: self._enter(-1))

    def _enter(self, step):
        self.in_timesteps += step

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for r in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(r, torch.Tensor) and r.is_floating_point() and r.dtype != torch.float64 and not self.in_timesteps:
                self.stray[str(func)] = self.stray.get(str(func), 0) + 1
        return out


@pytest.mark.parametrize("case", sorted(CASES))
def test_float64_forward_computes_in_float64(recorded, case):
    from xdyna_core.models import XDynaUNet, make_controlnet

    cfg = CASES[case]["config"]
    unet = fill_(XDynaUNet.from_config(cfg)).eval().double()
    pose_net = fill_(make_controlnet(cfg, 3)).eval().double()
    face_net = fill_(make_controlnet(cfg, 6)).eval().double()
    sample, t, ehs, pose, face = (x.double() if x.is_floating_point() else x for x in case_inputs(case))
    spy = _NonFloat64Results([unet, pose_net, face_net])
    with torch.no_grad(), spy:
        plain = unet(sample, t, ehs).sample
        down, mid = controlnet_residuals(pose_net, face_net, sample, t, ehs, pose, face)
        controlled = unet(sample, t, ehs, down, mid).sample
    assert spy.stray == {}, f"float64 forward computed these ops in lower precision: {spy.stray}"
    assert plain.dtype == controlled.dtype == torch.float64
    # agrees with the float32 recording at float32 precision
    assert float((plain - recorded[f"{case}.plain"].double()).abs().max()) < 2e-5
    assert float((controlled - recorded[f"{case}.controlled"].double()).abs().max()) < 2e-5


def test_float64_image_projection_computes_in_float64(recorded):
    from xdyna_core.models import XDynaImageProjection

    proj = fill_(XDynaImageProjection(**RESAMPLER)).eval().double()
    embeds = resampler_input().double()
    spy = _NonFloat64Results([proj])
    with torch.no_grad(), spy:
        tokens = proj(embeds)
    assert spy.stray == {}, f"float64 forward computed these ops in lower precision: {spy.stray}"
    assert float((tokens - recorded["resampler"].double()).abs().max()) < 2e-5


@pytest.mark.parametrize("chunks", [1, 3])
def test_float64_frame_pooled_group_norm_matches_groupnorm_on_5d(chunks):
    """docs/official-behaviour.md §10: the official norm is ``nn.GroupNorm`` on ``[B, C, N, h, w]``."""
    from xdyna_core.models.unet import FramePooledGroupNorm

    g = torch.Generator().manual_seed(0)
    b, n, c, h, w = 2, 5, 32, 6, 7
    x = (3 * torch.randn(b * n, c, h, w, generator=g) + 1).double()  # an offset: rounding of the mean matters
    norm = FramePooledGroupNorm(8, c, eps=1e-5).double()
    with torch.no_grad():
        norm.weight.copy_(1 + 0.1 * torch.randn(c, generator=g))
        norm.bias.copy_(0.1 * torch.randn(c, generator=g))
    norm.chunks = chunks
    reference = torch.nn.GroupNorm(8, c, eps=1e-5).double()
    reference.load_state_dict(norm.state_dict())
    with torch.no_grad():
        ours = norm(x, n)
        expected = reference(x.view(b, n, c, h, w).transpose(1, 2)).transpose(1, 2).reshape(b * n, c, h, w)
    assert ours.dtype == torch.float64
    assert float((ours - expected).abs().max()) < 1e-8


def test_positional_encoding_follows_the_default_dtype():
    """Like the official code, the motion modules' sinusoid is computed in torch's default dtype."""
    from xdyna_core.models.motion_module import sinusoidal_positions

    default = torch.get_default_dtype()
    try:
        torch.set_default_dtype(torch.float64)
        pe = sinusoidal_positions(24, 32)
    finally:
        torch.set_default_dtype(default)
    pos, i = torch.meshgrid(torch.arange(24, dtype=torch.float64), torch.arange(16, dtype=torch.float64), indexing="ij")
    angle = pos * torch.tensor(10000.0, dtype=torch.float64) ** (-2 * i / 32)
    assert pe.dtype == torch.float64
    assert float((pe[0, :, 0::2] - torch.sin(angle)).abs().max()) < 1e-8
    assert float((pe[0, :, 1::2] - torch.cos(angle)).abs().max()) < 1e-8
    assert sinusoidal_positions(24, 32).dtype == torch.float32  # float32 default: unchanged
