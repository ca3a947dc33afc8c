"""X-Dyna networks: architecture vs the official key lists, and behaviour on tiny random models."""

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from xdyna_core.models import XDynaImageProjection, XDynaUNet, make_controlnet
from xdyna_core.models.attention import DynamicsAdapterAttention
from xdyna_core.models.motion_module import VanillaTemporalModule, sinusoidal_positions
from xdyna_core.models.unet import frame_pooled_group_norm, parameter_group

# Copies of the reference key lists of the official checkpoints (built from the official
# classes; see tests/data/official_keys/README.md).
REFERENCE = Path(__file__).parent / "data" / "official_keys"

TINY = dict(
    block_out_channels=(32, 64),
    layers_per_block=1,
    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=32,
    attention_head_dim=4,
    norm_num_groups=8,
    motion_module_norm_num_groups=8,
    motion_module_num_attention_heads=4,
)


def read_key_list(name):
    keys = {}
    for line in (REFERENCE / name).read_text().splitlines():
        key, shape, _dtype = line.split("\t")
        keys[key] = tuple(json.loads(shape))
    return keys


def compare(model, name):
    expected = read_key_list(name)
    actual = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = sorted(set(expected) - set(actual))
    unexpected = sorted(set(actual) - set(expected))
    mismatched = sorted(k for k in set(expected) & set(actual) if expected[k] != actual[k])
    return missing, unexpected, mismatched


def randomize_(model, scale=0.05, seed=0):
    """Give zero-initialised layers (adapter out-proj, motion proj_out) non-zero weights."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "to_out_ff" in name or "temporal_transformer.proj_out" in name or torch.count_nonzero(p) == 0:
                p.copy_(scale * torch.randn(p.shape, generator=g))
    return model


@pytest.fixture(scope="module")
def tiny_unet():
    torch.manual_seed(0)
    return randomize_(XDynaUNet.from_config(TINY)).eval()


def inputs(batch=2, frames=4, size=16, dim=32, seed=1):
    g = torch.Generator().manual_seed(seed)
    sample = torch.randn(batch, 4, 1 + frames, size, size, generator=g)
    ehs = torch.randn(batch, 77 + 16, dim, generator=g)
    return sample, torch.tensor(500), ehs


# ---------------------------------------------------------------- full size, meta device


@pytest.fixture(scope="module")
def sd15_config():
    return json.loads((REFERENCE / "sd15_unet_config.json").read_text())


def test_full_unet_matches_official_keys(sd15_config):
    with torch.device("meta"):
        unet = XDynaUNet.from_config(sd15_config)
    missing, unexpected, mismatched = compare(unet, "official_unet_keys.tsv")
    assert (missing, unexpected, mismatched) == ([], [], [])
    assert len(unet.state_dict()) == 1326
    # X-Dyna options registered with their official defaults
    cfg = unet.config
    assert (cfg.num_text_tokens, cfg.num_ip_tokens) == (77, 16)
    assert cfg.motion_module_num_attention_heads == 8 and cfg.motion_module_max_len == 24
    assert cfg.motion_module_num_attention_blocks == 2 and not cfg.motion_module_mid_block


def test_full_unet_parameter_groups(sd15_config):
    with torch.device("meta"):
        unet = XDynaUNet.from_config(sd15_config)
    sizes = {g: sum(p.numel() for p in getattr(unet, f"{g}_parameters")()) for g in
             ("dynamics_adapter", "motion_module", "ip_adapter", "backbone")}
    # element counts of the official checkpoint (reference README table; pe buffers excluded)
    assert sizes == {
        "dynamics_adapter": 24_793_280,
        "motion_module": 417_137_600,
        "ip_adapter": 19_169_280,
        "backbone": 859_520_964,
    }
    assert sum(sizes.values()) == sum(p.numel() for p in unet.parameters()) == 1_320_621_124


@pytest.mark.parametrize(
    "channels,key_list", [(3, "official_pose_controlnet_keys.tsv"), (6, "official_face_controlnet_keys.tsv")]
)
def test_full_controlnets_match_official_keys(sd15_config, channels, key_list):
    with torch.device("meta"):
        controlnet = make_controlnet(sd15_config, channels)
    assert compare(controlnet, key_list) == ([], [], [])
    assert controlnet.config.conditioning_channels == channels


def test_full_image_projection_matches_official_keys():
    with torch.device("meta"):
        proj = XDynaImageProjection()
    assert compare(proj, "official_image_proj_keys.tsv") == ([], [], [])


# ---------------------------------------------------------------- tiny models, behaviour


def test_forward_shapes_and_control_residuals(tiny_unet):
    sample, t, ehs = inputs()
    with torch.no_grad():
        out = tiny_unet(sample, t, ehs)
        assert out.sample.shape == sample.shape
        assert tiny_unet(sample, 500, ehs, return_dict=False)[0].shape == sample.shape
        assert torch.allclose(tiny_unet(sample, torch.tensor([500, 500]), ehs).sample, out.sample, atol=1e-6)

        # ControlNet residual shapes: conv_in + every down layer + downsamplers, frame 0 zero.
        skips = [(32, 16), (32, 16), (32, 8), (64, 8)]
        g = torch.Generator().manual_seed(3)
        res_f = [torch.randn(2, c, 4, s, s, generator=g) for c, s in skips]
        mid_f = torch.randn(2, 64, 4, 8, 8, generator=g)
        pad = lambda r: torch.cat([torch.zeros_like(r[:, :, :1]), r], dim=2)  # noqa: E731
        with_ctrl = tiny_unet(sample, t, ehs, [pad(r) for r in res_f], pad(mid_f)).sample
        # F-frame residuals are taken as frames 1..F (frame 0 padded with zeros)
        with_ctrl_f = tiny_unet(sample, t, ehs, res_f, mid_f).sample
    assert not torch.allclose(with_ctrl, out.sample, atol=1e-3)
    assert torch.equal(with_ctrl, with_ctrl_f)
    with pytest.raises(ValueError, match="down-block residuals"):
        tiny_unet(sample, t, ehs, res_f[:-1], mid_f)


def test_odd_latent_size(tiny_unet):
    sample, t, ehs = inputs(size=10)
    sample = sample[..., :9]  # 10 x 9: not a multiple of 2 -> explicit upsample sizes
    with torch.no_grad():
        assert tiny_unet(sample, t, ehs).sample.shape == sample.shape


def test_encoder_hidden_states_layout_is_checked(tiny_unet):
    sample, t, ehs = inputs()
    with pytest.raises(ValueError, match="77 text tokens then 16 IP tokens"):
        tiny_unet(sample, t, ehs[:, :77])
    custom = XDynaUNet.from_config(TINY, num_text_tokens=8, num_ip_tokens=4)
    assert custom.config.num_ip_tokens == 4
    with torch.no_grad():
        assert custom(sample, t, ehs[:, :12]).sample.shape == sample.shape


def test_adapter_scale_zero_equals_zero_initialised_adapter(tiny_unet):
    sample, t, ehs = inputs()
    zeroed = XDynaUNet.from_config(TINY).eval()
    zeroed.load_state_dict(tiny_unet.state_dict())
    with torch.no_grad():
        for name, p in zeroed.named_parameters():
            if "to_out_ff" in name:
                p.zero_()
        reference = zeroed(sample, t, ehs).sample
        full = tiny_unet(sample, t, ehs).sample
        tiny_unet.set_adapter_scale(0.0)
        try:
            assert tiny_unet.adapter_scale == 0.0
            off = tiny_unet(sample, t, ehs).sample
            tiny_unet.set_adapter_scale(0.5)
            half = tiny_unet(sample, t, ehs).sample
        finally:
            tiny_unet.set_adapter_scale(1.0)
    assert torch.allclose(off, reference, atol=1e-6)
    assert not torch.allclose(full, reference, atol=1e-3)
    assert not torch.allclose(half, full, atol=1e-4) and not torch.allclose(half, off, atol=1e-4)


def test_dynamics_adapter_formula():
    """attn1 = SD self-attention + W_O' MHA(W_Q' x, W_K x0, W_V x0) + b_O' (docs/official-behaviour.md §12)."""
    torch.manual_seed(0)
    attn = randomize_(DynamicsAdapterAttention(16, heads=2)).eval()
    batch, frames, length = 2, 3, 5
    x = torch.randn(batch * frames, length, 16)

    def mha(q, k, v):
        q, k, v = (t.view(t.shape[0], t.shape[1], 2, 8).transpose(1, 2) for t in (q, k, v))
        w = torch.softmax(q @ k.transpose(-1, -2) / 8**0.5, dim=-1)
        return (w @ v).transpose(1, 2).reshape(q.shape[0], -1, 16)

    x0 = x.view(batch, frames, length, 16)[:, 0].repeat_interleave(frames, 0)
    expected = attn.to_out[0](mha(attn.to_q(x), attn.to_k(x), attn.to_v(x))) + attn.to_out_ff(
        mha(attn.to_q_ff(x), attn.to_k(x0), attn.to_v(x0))
    )
    with torch.no_grad():
        assert torch.allclose(attn(x, frames), expected, atol=1e-5)


def test_motion_module_passes_reference_frame_through():
    torch.manual_seed(0)
    mm = randomize_(VanillaTemporalModule(32, num_attention_heads=4, norm_num_groups=8)).eval()
    x = torch.randn(2 * 5, 32, 4, 4)
    with torch.no_grad():
        y = mm(x, 5).view(2, 5, 32, 4, 4)
        # changing only the reference frame changes nothing else
        x2 = x.clone().view(2, 5, 32, 4, 4)
        x2[:, 0] += 1.0
        y2 = mm(x2.view(10, 32, 4, 4), 5).view(2, 5, 32, 4, 4)
    xv = x.view(2, 5, 32, 4, 4)
    assert torch.equal(y[:, 0], xv[:, 0])
    assert not torch.allclose(y[:, 1:], xv[:, 1:], atol=1e-3)
    assert torch.equal(y2[:, 1:], y[:, 1:])


def test_positional_encoding_buffer():
    mm = VanillaTemporalModule(32, num_attention_heads=4, norm_num_groups=8)
    pe = dict(mm.named_buffers())["temporal_transformer.transformer_blocks.0.attention_blocks.0.pos_encoder.pe"]
    assert pe.shape == (1, 24, 32)
    assert torch.allclose(pe[0, 3, 0], torch.sin(torch.tensor(3.0)))
    assert torch.allclose(pe[0, 3, 1], torch.cos(torch.tensor(3.0)))
    assert torch.equal(pe, sinusoidal_positions(24, 32))
    with pytest.raises(ValueError, match="at most 24"):
        mm(torch.randn(26, 32, 2, 2), 26)


def test_frame_pooled_group_norm_equals_groupnorm_on_5d():
    norm = nn.GroupNorm(4, 16, eps=1e-5)
    with torch.no_grad():
        norm.weight.normal_()
        norm.bias.normal_()
    x5 = torch.randn(2, 16, 3, 5, 6) * 3 + 1  # [B, C, N, h, w]
    folded = x5.transpose(1, 2).reshape(6, 16, 5, 6)
    ours = frame_pooled_group_norm(folded, norm, 3).view(2, 3, 16, 5, 6).transpose(1, 2)
    assert torch.allclose(ours, norm(x5), atol=1e-5)


def test_reference_output_depends_on_noisy_frames(tiny_unet):
    """Shared GroupNorm statistics: changing only frames 1..F changes frame 0's prediction."""
    sample, t, ehs = inputs()
    changed = sample.clone()
    changed[:, :, 1:] = torch.randn_like(changed[:, :, 1:])
    with torch.no_grad():
        a = tiny_unet(sample, t, ehs).sample
        b = tiny_unet(changed, t, ehs).sample
    assert not torch.allclose(a[:, :, 0], b[:, :, 0], atol=1e-4)


def test_samples_in_a_batch_are_independent(tiny_unet):
    sample, t, ehs = inputs()
    with torch.no_grad():
        both = tiny_unet(sample, t, ehs).sample
        first = tiny_unet(sample[:1], t, ehs[:1]).sample
    assert torch.allclose(both[:1], first, atol=1e-5)


def test_gradient_checkpointing_same_output_and_grads():
    torch.manual_seed(0)
    unet = randomize_(XDynaUNet.from_config(TINY)).train()
    sample, t, ehs = inputs(frames=2, size=8)

    def run():
        unet.zero_grad()
        out = unet(sample, t, ehs).sample
        out.square().mean().backward()
        return out.detach(), [p.grad.clone() for p in unet.dynamics_adapter_parameters()]

    plain_out, plain_grads = run()
    unet.enable_gradient_checkpointing()
    assert all(b.gradient_checkpointing for b in unet.down_blocks)
    ckpt_out, ckpt_grads = run()
    assert torch.allclose(plain_out, ckpt_out, atol=1e-6)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(plain_grads, ckpt_grads))


def test_parameter_groups_partition_the_model(tiny_unet):
    groups = {
        "dynamics_adapter": tiny_unet.dynamics_adapter_parameters(),
        "motion_module": tiny_unet.motion_module_parameters(),
        "ip_adapter": tiny_unet.ip_adapter_parameters(),
        "backbone": tiny_unet.backbone_parameters(),
    }
    ids = [id(p) for ps in groups.values() for p in ps]
    assert len(ids) == len(set(ids)) == len(list(tiny_unet.parameters()))
    names = {g: [n for n, _ in tiny_unet.named_parameter_group(g)] for g in groups}
    assert names["dynamics_adapter"] and all(".attn1.to_q_ff." in n or ".attn1.to_out_ff." in n for n in names["dynamics_adapter"])
    assert names["ip_adapter"] and all(".attn2.to_k_ip." in n or ".attn2.to_v_ip." in n for n in names["ip_adapter"])
    assert all(parameter_group(n) == "motion_module" for n in names["motion_module"])


def _tiny_unet2d():
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    return UNet2DConditionModel(
        sample_size=8,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=4,
        norm_num_groups=8,
    ).eval()


def test_from_unet2d_starts_as_the_image_model():
    """Fresh adapter (to_out_ff = 0), fresh motion modules (proj_out = 0) and all-zero IP tokens:
    every frame of a clip of identical frames is denoised exactly like the 2-D UNet does."""
    unet2d = _tiny_unet2d()
    with torch.no_grad():
        for p in unet2d.parameters():  # diffusers zero-inits nothing relevant, but be explicit
            p.add_(0.01 * torch.randn_like(p))
    unet = XDynaUNet.from_unet2d(unet2d, motion_module_norm_num_groups=8, motion_module_num_attention_heads=4).eval()
    for module in unet.modules():
        if isinstance(module, DynamicsAdapterAttention):
            assert torch.equal(module.to_q_ff.weight, module.to_q.weight)
            assert not module.to_out_ff.weight.any()
    g = torch.Generator().manual_seed(0)
    latent = torch.randn(2, 4, 8, 8, generator=g)
    text = torch.randn(2, 77, 32, generator=g)
    ehs = torch.cat([text, torch.zeros(2, 16, 32)], dim=1)
    with torch.no_grad():
        expected = unet2d(latent, 300, text).sample
        clip = latent[:, :, None].repeat(1, 1, 3, 1, 1)
        out = unet(clip, 300, ehs).sample
    for f in range(3):
        assert torch.allclose(out[:, :, f], expected, atol=1e-4)
    assert len(unet.motion_module_parameters()) > 0


def test_from_unet2d_rejects_other_architectures():
    unet2d = _tiny_unet2d()
    with pytest.raises(ValueError, match="does not match"):
        XDynaUNet.from_unet2d(unet2d, use_linear_projection=True, motion_module_norm_num_groups=8)


def test_save_and_reload_roundtrip(tmp_path, tiny_unet):
    tiny_unet.save_pretrained(tmp_path / "unet")
    again = XDynaUNet.from_pretrained(tmp_path / "unet").eval()
    sample, t, ehs = inputs()
    with torch.no_grad():
        assert torch.equal(again(sample, t, ehs).sample, tiny_unet(sample, t, ehs).sample)


def test_tiny_controlnets_and_image_projection():
    unet2d = _tiny_unet2d()
    face = make_controlnet(unet2d, 6, conditioning_embedding_out_channels=(8, 16))
    assert face.config.conditioning_channels == 6
    assert torch.equal(face.conv_in.weight, unet2d.conv_in.weight)
    pose = make_controlnet(XDynaUNet.from_config(TINY).config, 3, conditioning_embedding_out_channels=(8, 16))
    with torch.no_grad():
        down, mid = pose(
            torch.randn(3, 4, 8, 8), 10, torch.randn(3, 77, 32), controlnet_cond=torch.rand(3, 3, 16, 16), return_dict=False
        )
    assert [tuple(d.shape[1:]) for d in down] == [(32, 8, 8), (32, 8, 8), (32, 4, 4), (64, 4, 4)]
    assert mid.shape == (3, 64, 4, 4)

    proj = XDynaImageProjection(dim=32, depth=2, dim_head=8, heads=4, num_queries=16, embedding_dim=40, output_dim=32)
    with torch.no_grad():
        tokens = proj(torch.randn(2, 257, 40))
    assert tokens.shape == (2, 16, 32)


@pytest.mark.gpu
def test_cuda_half_precision_matches_cpu_fp32(tiny_unet):
    """Needs CUDA (fp16/bf16 kernels); the same forward runs in fp32 on CPU in the tests above."""
    sample, t, ehs = inputs()
    with torch.no_grad():
        expected = tiny_unet(sample, t, ehs).sample
        for dtype, tol in ((torch.float32, 1e-3), (torch.float16, 2e-2), (torch.bfloat16, 1e-1)):
            unet = XDynaUNet.from_config(TINY).to("cuda", dtype).eval()
            unet.load_state_dict(tiny_unet.state_dict())
            out = unet(sample.to("cuda", dtype), t, ehs.to("cuda", dtype)).sample.float().cpu()
            assert torch.isfinite(out).all()
            assert (out - expected).abs().max() < tol * expected.abs().max(), dtype
