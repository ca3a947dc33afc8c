"""The diffusers-internals contract of the ControlNet "shallow path".

DeepCache partial steps need only the first few ControlNet down residuals, so
`controlnet_shallow_residuals` (and the pipeline's `_control_residuals(..., shallow=k)`)
re-run the first layers of diffusers' `ControlNetModel` by calling its sub-modules
directly instead of `forward`. A diffusers upgrade that renames those sub-modules, changes
their signatures or changes the order of `forward` must fail here, not silently change
the video: the residuals must equal the first k of a full `ControlNetModel.forward`
(bit for bit) on tiny random weights."""

import inspect

import pytest
import torch
from diffusers import ControlNetModel

from xdyna_core.models import controlnet_shallow_residuals, make_controlnet
from xdyna_core.pipeline import XDynaPipeline

N = 3  # noisy frames


def tiny_controlnet(first_block: str, channel_order: str = "rgb", seed: int = 0) -> ControlNetModel:
    """A two-level ControlNet (two layers per block) with every weight random, the zero
    convolutions included (zero residuals would make any comparison pass)."""
    cn = make_controlnet(
        dict(block_out_channels=(32, 64), down_block_types=(first_block, "DownBlock2D"), layers_per_block=2,
             cross_attention_dim=32, attention_head_dim=4, norm_num_groups=8, in_channels=4),
        3, conditioning_embedding_out_channels=(16, 32), controlnet_conditioning_channel_order=channel_order,
    ).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in cn.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.1)
    return cn


def inputs(seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    sample = torch.randn(N, 4, 8, 8, generator=g)
    text = torch.randn(N, 77, 32, generator=g)
    cond = torch.rand(N, 3, 16, 16, generator=g)  # conditioning embedding downsamples by 2
    return sample, text, cond


def residuals_available(cn: ControlNetModel) -> int:
    first = cn.down_blocks[0]
    return 1 + len(first.resnets) + (first.downsamplers is not None)


@pytest.mark.parametrize("first_block,channel_order",
                         [("CrossAttnDownBlock2D", "rgb"), ("DownBlock2D", "rgb"), ("CrossAttnDownBlock2D", "bgr")])
def test_shallow_residuals_equal_the_first_of_a_full_forward(first_block, channel_order):
    cn = tiny_controlnet(first_block, channel_order)
    sample, text, cond = inputs()
    with torch.no_grad():
        down, mid = cn(sample, 500, encoder_hidden_states=text, controlnet_cond=cond, conditioning_scale=0.7,
                       return_dict=False)
        assert len(down) == 1 + 2 * 3 - 1 and residuals_available(cn) == 4  # conv_in, 2 layers + downsample, ...
        assert all(d.abs().max() > 0 for d in down)  # random zero convs: the comparison means something
        for k in range(1, residuals_available(cn) + 1):  # partial first block (k < 4) and the whole block (k = 4)
            for t in (500, torch.tensor(500), torch.full((N,), 500)):
                shallow = controlnet_shallow_residuals(cn, sample, t, text, cond, 0.7, num_residuals=k)
                assert len(shallow) == k
                for full, part in zip(down[:k], shallow):
                    assert torch.equal(full, part)
        with pytest.raises(ValueError, match="at most 4"):
            controlnet_shallow_residuals(cn, sample, 500, text, cond, num_residuals=5)


def test_pipeline_shallow_control_residuals_are_the_first_full_ones():
    """The pipeline's window layout (5-D, frame 0 zero-padded, CFG halves) on top of the
    shallow path gives the first k residuals of the full path, for one and for two texts."""
    cn = tiny_controlnet("CrossAttnDownBlock2D")
    pipe = XDynaPipeline(vae=None, text_encoder=None, tokenizer=None, unet=None, controlnet=cn, scheduler=None,
                         image_encoder=None, feature_extractor=None, image_proj=None)
    sample, text, cond = inputs()
    windows = 1
    with torch.no_grad():
        for texts in (text[:1], torch.cat([text[:1], text[1:2]])):  # shared text / [uncond, cond]
            down, mid = pipe._control_residuals(cn, sample, 500, texts, cond, 0.7, 2, windows)
            for k in (1, 2, 3):  # inside the first block (attention path) and the whole block
                shallow, no_mid = pipe._control_residuals(cn, sample, 500, texts, cond, 0.7, 2, windows, shallow=k)
                assert no_mid is None and len(shallow) == k
                for full, part in zip(down[:k], shallow):
                    assert full.shape[0] == 2 and full.shape[2] == 1 + N  # [k·halves, C, 1 + n, h, w]
                    assert torch.equal(full, part)


def _params(fn) -> list:
    return list(inspect.signature(fn).parameters)


def test_diffusers_controlnet_internals_the_shallow_path_calls():
    """Names and signatures `controlnet_shallow_residuals` relies on (read its body)."""
    cn = tiny_controlnet("CrossAttnDownBlock2D")
    for name in ("time_proj", "time_embedding", "conv_in", "controlnet_cond_embedding", "down_blocks",
                 "controlnet_down_blocks", "class_embedding"):
        assert hasattr(cn, name), f"ControlNetModel.{name} is gone"
    for key in ("addition_embed_type", "global_pool_conditions", "controlnet_conditioning_channel_order"):
        assert key in cn.config, f"ControlNetModel config has no {key}"
    assert len(cn.controlnet_down_blocks) == 1 + 2 * 3 - 1  # one zero conv per down residual
    forward = _params(ControlNetModel.forward)
    assert forward[:5] == ["self", "sample", "timestep", "encoder_hidden_states", "controlnet_cond"]
    assert {"conditioning_scale", "return_dict", "guess_mode"} <= set(forward)
    # time_embedding(emb, condition) is called with the condition positional
    assert _params(type(cn.time_embedding).forward)[:3] == ["self", "sample", "condition"]
    first = cn.down_blocks[0]
    assert first.has_cross_attention and len(first.attentions) == len(first.resnets) == 2
    assert first.downsamplers is not None
    assert _params(type(first).forward)[:4] == ["self", "hidden_states", "temb", "encoder_hidden_states"]
    assert _params(type(first.resnets[0]).forward)[:3] == ["self", "input_tensor", "temb"]
    attn = _params(type(first.attentions[0]).forward)
    assert attn[:3] == ["self", "hidden_states", "encoder_hidden_states"] and "return_dict" in attn
    plain = tiny_controlnet("DownBlock2D").down_blocks[0]
    assert not getattr(plain, "has_cross_attention", False) and getattr(plain, "attentions", None) is None
    assert _params(type(plain).forward)[:3] == ["self", "hidden_states", "temb"]
