"""Speed-ups on the tiny random model (CPU): the ones that keep the output (window
batching, compile, channels-last, CPU offload, memory that does not grow with the clip)
and the opt-in ones that change it (DPM-Solver++, guidance truncation, DeepCache)."""

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from xdyna_core.bench import LiveTensorBytes
from xdyna_core.errors import InputError
from xdyna_core.eval.metrics import psnr
from xdyna_core.models.attention import DynamicsAdapterAttention, multi_head_attention
from xdyna_core.pipeline import XDynaPipeline
from xdyna_core.testing import make_tiny_components

sys.path.insert(0, str(Path(__file__).parent))
from test_pipeline import H, W, clip  # noqa: E402  (same tiny clips as the pipeline tests)


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def _pipe(seed=0):
    p = XDynaPipeline(**make_tiny_components(seed=seed))
    p.set_progress_bar_config(disable=True)
    return p


def gen(pipe, num_frames=20, steps=2, output_type="latent", **kw):
    photo, pose, faces = clip(num_frames)
    return pipe(photo, pose, faces, height=H, width=W, num_inference_steps=steps,
                generator=torch.Generator().manual_seed(0), output_type=output_type, **kw).frames


def count_calls(modules):
    """Forward pre-hooks that record the batch size of every call."""
    calls = {name: [] for name in modules}
    hooks = [m.register_forward_pre_hook(
        lambda _m, args, kw, name=name: calls[name].append((args[0] if args else kw.get("sample", kw.get("hidden_states"))).shape[0]),
        with_kwargs=True) for name, m in modules.items()]
    return calls, hooks


def rel_err(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


# --------------------------------------------------------------------------- output kept


def test_reference_keys_values_projected_once_per_layer_and_reused():
    """attn1 projects K/V once for all frames; the reference (frame 0) K/V are a slice of
    that projection, and the result equals recomputing them from frame 0's tokens."""
    torch.manual_seed(0)
    attn = DynamicsAdapterAttention(32, heads=4).eval()
    torch.nn.init.normal_(attn.to_out_ff.weight, std=0.1)
    frames, tokens = 5, 12
    x = torch.randn(2 * frames, tokens, 32)
    calls, hooks = count_calls({"k": attn.to_k, "v": attn.to_v})
    with torch.no_grad():
        out = attn(x, frames)
    for h in hooks:
        h.remove()
    assert calls == {"k": [2 * frames], "v": [2 * frames]}
    with torch.no_grad():  # naive: every frame recomputes K/V of its sample's frame 0
        ref_tokens = x.view(2, frames, tokens, 32)[:, :1].expand(2, frames, tokens, 32).reshape(2 * frames, tokens, 32)
        main = attn.to_out[0](multi_head_attention(attn.to_q(x), attn.to_k(x), attn.to_v(x), 4))
        adapter = attn.to_out_ff(multi_head_attention(attn.to_q_ff(x), attn.to_k(ref_tokens), attn.to_v(ref_tokens), 4))
    assert torch.allclose(out, main + adapter, atol=1e-6)


def test_window_batching_same_video_fewer_calls():
    pipe = _pipe()
    calls, hooks = count_calls({"unet": pipe.unet, "controlnet": pipe.controlnet})
    try:
        one = gen(pipe, 40, steps=2)  # 3 windows per step
        assert calls == {"unet": [2] * 6, "controlnet": [16] * 6}
        for v in calls.values():
            v.clear()
        two = gen(pipe, 40, steps=2, window_batch_size=2)
        assert calls == {"unet": [4, 2] * 2, "controlnet": [32, 16] * 2}
        for v in calls.values():
            v.clear()
        three = gen(pipe, 40, steps=2, window_batch_size=3)
        assert calls == {"unet": [6] * 2, "controlnet": [48] * 2}
        official = gen(pipe, 40, steps=2, window_schedule="official", window_offsets=[3, 9])
        official3 = gen(pipe, 40, steps=2, window_schedule="official", window_offsets=[3, 9], window_batch_size=3)
    finally:
        for h in hooks:
            h.remove()
    # Windows of a step are independent, so batching is exact math; float32 BLAS may
    # round a batched GEMM differently in the last bit (observed <= 2e-6 relative).
    assert rel_err(two, one) < 1e-5 and rel_err(three, one) < 1e-5
    assert rel_err(official3, official) < 1e-5
    assert not torch.equal(one, official)


def test_compile_traces_every_block_without_graph_breaks(pipe):
    """pipe.compile() on the tiny model with dynamo + AOT autograd (fullgraph=True fails on
    any graph break); inductor code generation is covered by the slow test below."""
    p = _pipe()
    eager = gen(p, 20)
    p.compile(backend="aot_eager", fullgraph=True)
    try:
        compiled = gen(p, 20)
    finally:
        torch._dynamo.reset()
    assert rel_err(compiled, eager) < 1e-5


@pytest.mark.slow
def test_compile_inductor_unet_cpu():
    """Inductor compiles the repeated UNet blocks on this CPU (about a minute on 2 cores)."""
    p = _pipe()
    unet = p.unet
    g = torch.Generator().manual_seed(0)
    x, ctx = torch.randn(2, 4, 17, 8, 8, generator=g), torch.randn(2, 93, 32, generator=g)
    with torch.no_grad():
        eager = unet(x, 500, ctx).sample
        p.compile(components=("unet",))
        try:
            compiled = unet(x, 500, ctx).sample
            again = unet(x, 500, ctx).sample
        finally:
            torch._dynamo.reset()
    compiled_blocks = [m for m in unet.modules() if getattr(m, "_compiled_call_impl", None) is not None]
    assert len(compiled_blocks) >= 6
    assert rel_err(compiled, eager) < 1e-5 and torch.equal(compiled, again)


def test_channels_last_same_video_up_to_rounding():
    p = _pipe()
    plain = gen(p, 20)
    p.enable_channels_last()
    assert p.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    assert rel_err(gen(p, 20), plain) < 1e-5


def test_model_cpu_offload_identical(pipe):
    """enable_model_cpu_offload with the CPU as 'accelerator' (diffusers allows naming it):
    the hooks run, the result is unchanged. The CUDA test in test_pipeline moves real weights."""
    ref = gen(pipe, 20, output_type="np")
    p = _pipe()
    p.enable_model_cpu_offload(device="cpu")
    assert len(p._all_hooks) > 0
    assert np.array_equal(gen(p, 20, output_type="np"), ref)


def test_sequential_offload_hooks_identical(pipe):
    """Sequential offload = accelerate.cpu_offload on every model: weights live on 'meta'
    and are loaded into each layer just for its forward. Every weight must be used through
    its module's forward (the frame-pooled GroupNorms are modules for this), else meta
    tensors reach the math. diffusers refuses a CPU execution device, so the hooks are
    installed directly with the same accelerate call."""
    from accelerate import cpu_offload

    ref = gen(pipe, 20, output_type="np")
    p = _pipe()
    for name in ("unet", "controlnet", "controlnet_face", "vae", "text_encoder", "image_encoder", "image_proj"):
        cpu_offload(getattr(p, name), execution_device=torch.device("cpu"), offload_buffers=True)
    assert p.unet.conv_in.weight.device.type == "meta"
    assert np.array_equal(gen(p, 20, output_type="np"), ref)


def test_memory_during_denoising_does_not_grow_with_clip_length(pipe):
    """CPU stand-in for the GPU peak: bytes of tensors alive during the call (weights
    excluded). Only the clip's latents (a few float32 copies of [4, T, h, w]) may grow
    with T; activations stay those of one window, model calls see one window."""
    calls, hooks = count_calls({"unet": pipe.unet, "controlnet": pipe.controlnet, "decoder": pipe.vae.decoder})
    peaks = {}
    try:
        for frames in (16, 64):
            with LiveTensorBytes() as live:
                gen(pipe, frames, steps=2)
            peaks[frames] = live.peak["cpu"]
        with LiveTensorBytes() as live:
            gen(pipe, 64, steps=1, output_type="uint8", decode_chunk_size=8)
    finally:
        for h in hooks:
            h.remove()
    latent_frame = 4 * (H // 8) * (W // 8) * 4  # bytes of one float32 latent frame
    growth = peaks[64] - peaks[16]
    print(f"\npeak live bytes: 16 frames {peaks[16]}, 64 frames {peaks[64]}; growth per frame "
          f"{growth / 48 / latent_frame:.1f} latent frames")
    assert growth < 48 * 16 * latent_frame  # < 16 latent-sized buffers per extra frame
    assert growth < 0.25 * peaks[16]  # activations of a window dominate, not the clip
    assert max(calls["unet"]) == 2 and max(calls["controlnet"]) == 16  # one window per call
    assert max(calls["decoder"]) <= 8  # VAE decodes chunk by chunk


def test_memory_chunking_same_output_lower_peak():
    """UNet memory chunking: feed-forwards and frame-pooled GroupNorms in slices. Same
    result up to matmul rounding (the GroupNorm slices are the same arithmetic), lower
    peak of live activations."""
    from xdyna_core.models.unet import frame_pooled_group_norm, frame_pooled_group_norm_chunked

    norm = torch.nn.GroupNorm(8, 32)
    torch.nn.init.normal_(norm.weight)
    torch.nn.init.normal_(norm.bias)
    x = torch.randn(2 * 5, 32, 6, 7)
    assert torch.allclose(frame_pooled_group_norm_chunked(x, norm, 5, 3), frame_pooled_group_norm(x, norm, 5), atol=1e-6)

    unet = make_tiny_components(seed=0)["unet"]
    g = torch.Generator().manual_seed(0)
    x, ctx = torch.randn(2, 4, 17, 16, 16, generator=g), torch.randn(2, 93, 32, generator=g)
    peaks = {}
    with torch.no_grad():
        for chunks in (1, 4):
            unet.enable_memory_chunking(chunks)
            with LiveTensorBytes() as live:
                out = unet(x, 500, ctx).sample
            peaks[chunks] = (live.peak["cpu"], out)
    unet.disable_memory_chunking()
    assert rel_err(peaks[4][1], peaks[1][1]) < 1e-5
    assert peaks[4][0] < 0.85 * peaks[1][0], (peaks[4][0], peaks[1][0])


def test_full_size_unet_activation_estimate():
    """Activation peak of one full-size UNet call (CFG batch 2, 17 frames, 896x512, bf16),
    estimated on the meta device: about 5 GiB, and memory chunking cuts it by > 25%. With
    about 5.4 GiB of bf16 weights this is what keeps the default mode under 12 GB."""
    import json

    from xdyna_core.bench import estimate_unet_peak_bytes
    from xdyna_core.models import XDynaUNet

    cfg = json.loads((Path(__file__).parent / "data" / "official_keys" / "sd15_unet_config.json").read_text())
    with torch.device("meta"):
        unet = XDynaUNet.from_config(cfg)
    plain = estimate_unet_peak_bytes(unet)
    chunked = estimate_unet_peak_bytes(unet, memory_chunks=4)
    print(f"\nfull-size UNet activation peak (bf16, meta estimate): {plain / 2**30:.2f} GiB, "
          f"chunked {chunked / 2**30:.2f} GiB")
    assert 2 * 2**30 < plain < 6.5 * 2**30
    assert chunked < 0.75 * plain


# --------------------------------------------------------------------------- opt-in, output changes


def test_dpmpp_sampler_same_betas(pipe):
    from diffusers import DPMSolverMultistepScheduler

    sched = pipe._sampler("dpmpp")
    assert isinstance(sched, DPMSolverMultistepScheduler) and sched.config.algorithm_type == "dpmsolver++"
    assert torch.equal(sched.betas, pipe.scheduler.betas)
    assert sched.config.timestep_spacing == pipe.scheduler.config.timestep_spacing
    ddim = gen(pipe, 20, steps=3)
    assert torch.equal(gen(pipe, 20, steps=3, sampler="ddim"), ddim)  # fresh DDIM = the component
    dpm = gen(pipe, 20, steps=3, sampler="dpmpp")
    assert torch.isfinite(dpm).all() and not torch.equal(dpm, ddim)


def test_guidance_truncation_drops_the_uncond_batch(pipe):
    calls, hooks = count_calls({"unet": pipe.unet})
    try:
        out = gen(pipe, 8, steps=5, guidance_truncation=0.6)
    finally:
        for h in hooks:
            h.remove()
    assert calls["unet"] == [2, 2, 2, 1, 1]  # ceil(0.6 * 5) = 3 CFG steps
    assert torch.equal(gen(pipe, 8, steps=5, guidance_truncation=1.0), gen(pipe, 8, steps=5))
    assert not torch.equal(out, gen(pipe, 8, steps=5))


@pytest.mark.parametrize("branch", [0, 1, 2, None])
def test_deep_cache_unet_shallow_branch_is_exact(branch):
    """With the features of the same inputs, the shallow branch reproduces the full
    forward exactly, ControlNet residuals included (the shallow ControlNet residuals are
    the first ones of a full ControlNet call). Two layers per block: branch 0, 1, 2 (=None)."""
    from xdyna_core.models import controlnet_shallow_residuals

    c = make_tiny_components(seed=3, layers_per_block=2)
    unet, cn = c["unet"], c["controlnet"]
    g = torch.Generator().manual_seed(1)
    b, n = 2, 5
    x = torch.randn(b, 4, 1 + n, 8, 8, generator=g)
    ctx = torch.randn(b, 93, 32, generator=g)
    cn_in, cond = torch.randn(n, 4, 8, 8, generator=g), torch.rand(n, 3, 64, 64, generator=g)
    text = torch.randn(n, 77, 32, generator=g)
    k = unet.shallow_skip_count if branch is None else branch + 1
    with torch.no_grad():
        down, mid = cn(cn_in, 500, encoder_hidden_states=text, controlnet_cond=cond, conditioning_scale=0.7, return_dict=False)
        shallow = controlnet_shallow_residuals(cn, cn_in, 500, text, cond, 0.7, num_residuals=k)
        assert len(down) == unet.skip_count and k < len(down) and len(shallow) == k
        for a, s in zip(down[:k], shallow):
            assert torch.equal(a, s)

        def five(r):  # [n, C, h, w] -> [b, C, 1 + n, h, w], frame 0 zero, same for both halves
            r = r.permute(1, 0, 2, 3)[None].repeat(b, 1, 1, 1, 1)
            return torch.cat([torch.zeros_like(r[:, :, :1]), r], 2)

        full = unet(x, 500, ctx, [five(d) for d in down], five(mid), return_deep_features=True, deep_cache_branch=branch)
        plain = unet(x, 500, ctx, [five(d) for d in down], five(mid)).sample
        assert torch.equal(full.sample, plain) and full.deep_features is not None
        part = unet(x, 500, ctx, [five(s) for s in shallow], deep_features=full.deep_features, deep_cache_branch=branch).sample
        assert torch.equal(part, plain)
        other = unet(x, 400, ctx, [five(s) for s in shallow], deep_features=full.deep_features, deep_cache_branch=branch).sample
        assert not torch.equal(other, plain)


def test_deep_cache_pipeline_runs_deep_blocks_every_nth_step(pipe):
    calls, hooks = count_calls({"mid": pipe.unet.mid_block, "unet": pipe.unet, "cn_mid": pipe.controlnet.mid_block})
    try:
        out = gen(pipe, 20, steps=5, deep_cache_interval=2)  # 2 windows; full steps 0, 2, 4
    finally:
        for h in hooks:
            h.remove()
    assert len(calls["unet"]) == 10 and len(calls["mid"]) == 6 and len(calls["cn_mid"]) == 6
    assert torch.equal(gen(pipe, 20, steps=5, deep_cache_interval=1), gen(pipe, 20, steps=5))
    assert not torch.equal(out, gen(pipe, 20, steps=5))
    shallower = gen(pipe, 20, steps=5, deep_cache_interval=2, deep_cache_branch=0)
    assert not torch.equal(shallower, out) and torch.isfinite(shallower).all()
    with pytest.raises(InputError, match="blend"):
        gen(pipe, 20, deep_cache_interval=2, window_schedule="official")
    with pytest.raises(InputError, match="deep_cache_branch"):
        gen(pipe, 20, deep_cache_interval=2, deep_cache_branch=5)


def test_speed_option_errors(pipe):
    for kw, msg in [(dict(window_batch_size=0), "window_batch_size"), (dict(sampler="euler"), "sampler"),
                    (dict(guidance_truncation=0.0), "guidance_truncation"), (dict(deep_cache_interval=0), "deep_cache")]:
        with pytest.raises(InputError, match=msg):
            gen(pipe, 8, **kw)


def test_fast_presets_quality_against_default():
    """Each fast preset's settings (steps scaled 25 -> 10) on the tiny model vs the
    default on the same inputs: the video changes, but stays close (PSNR, eval tool)."""
    from xdyna_core.bench import mode_call_kwargs, mode_steps

    p = _pipe()
    base = gen(p, 20, steps=10, output_type="uint8")
    for mode in ("fast-dpmpp", "fast-truncate", "fast-deepcache", "fast-all"):
        call = mode_call_kwargs(mode)
        steps = mode_steps(call.pop("num_inference_steps", None), 10)
        out = gen(p, 20, steps=steps, output_type="uint8", **call)
        value = float(np.mean(psnr(out, base)))
        print(f"\n{mode}: {steps} steps, PSNR vs default {value:.1f} dB")
        assert math.isfinite(value) and 20 < value < 80, (mode, value)


# --------------------------------------------------------------------------- CUDA


@pytest.mark.gpu
def test_cuda_bf16_offload_and_batching():
    """On a GPU: bf16 close to fp32 (TF32 off) on the tiny model, both diffusers offload
    modes give the .to('cuda') frames, window batching matches one window at a time."""
    tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        full = _pipe().to("cuda")
        ref = gen(full, 40, output_type="np")
        batched = gen(full, 40, output_type="np", window_batch_size=3)
        bf16 = gen(_pipe().to("cuda", torch.bfloat16), 40, output_type="np")
        model_off, seq_off = _pipe(), _pipe()
        model_off.enable_model_cpu_offload()
        seq_off.enable_sequential_cpu_offload()
        a, b = gen(model_off, 40, output_type="np"), gen(seq_off, 40, output_type="np")
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32
    assert np.abs(batched - ref).max() < 1e-4
    assert np.isfinite(bf16).all() and np.abs(bf16 - ref).mean() < 0.05
    assert np.abs(a - ref).max() < 1e-5 and np.abs(b - ref).max() < 1e-5
    assert model_off.unet.device.type == "cpu"


# --------------------------------------------------------------------------- settings object


def test_speed_options_object_equals_the_keywords(pipe):
    from dataclasses import FrozenInstanceError

    from xdyna_core.speed import SpeedOptions

    kw = dict(window_batch_size=2, guidance_truncation=0.6, deep_cache_interval=2, deep_cache_branch=0)
    speed = SpeedOptions(**kw)
    assert torch.equal(gen(pipe, 40, steps=5, speed=speed), gen(pipe, 40, steps=5, **kw))
    assert torch.equal(gen(pipe, 8, speed=SpeedOptions()), gen(pipe, 8))
    with pytest.raises(InputError, match="not both"):
        gen(pipe, 8, speed=speed, sampler="dpmpp")
    with pytest.raises(InputError, match="window_batch_size"):
        gen(pipe, 8, speed=SpeedOptions(window_batch_size=0))
    with pytest.raises(FrozenInstanceError):
        speed.sampler = "dpmpp"
    assert SpeedOptions(guidance_truncation=0.6).cfg_steps(5) == 3 and SpeedOptions().cfg_steps(5) == 5
    with pytest.raises(InputError, match="deep_cache_branch"):
        SpeedOptions(deep_cache_interval=2, deep_cache_branch=2).validate(first_level_layers=1)
    with pytest.raises(InputError, match="blend"):
        SpeedOptions(deep_cache_interval=2).validate(1, window_schedule="official")


def test_deep_cache_state_reuses_features_between_full_steps_with_the_same_cfg_batch():
    from xdyna_core.speed import SpeedOptions

    assert SpeedOptions().deep_cache() is None  # interval 1 = off
    state = SpeedOptions(deep_cache_interval=3, deep_cache_branch=1).deep_cache()
    source = {}  # step -> the step whose features it reused
    for step, halves in enumerate([2, 2, 2, 2, 1, 1, 1]):  # CFG off from step 4 (guidance truncation)
        state.begin_step(step)
        got = state.reusable(0, halves)
        if got is None:
            state.store(0, halves, torch.tensor(step))  # a full step caches its features
        else:
            source[step] = int(got)
    # full steps: 0 and 3 (every 3rd), 4 (CFG batch changed), 6 (every 3rd)
    assert source == {1: 0, 2: 0, 5: 4}
    assert state.reusable(1, 1) is None  # another window group has nothing cached
    assert state.shallow_residual_count(None) == 2  # conv_in + the one recomputed layer
