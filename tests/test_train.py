"""Training: data (Harmonic Data Fusion, items in the pipeline's format), the training layout
against the pipeline, stage freezing, loss going down, exact resume. Tiny sizes, CPU."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from xdyna_core.errors import InputError
from xdyna_core.train import losses as L
from xdyna_core.train.config import config_from_dict, load_config
from xdyna_core.train.data import (KeyedDataset, StepSampler, SyntheticHumanDataset, SyntheticSceneDataset,
                                   harmonic_data_fusion, sample_window)

H = W = 64
F = 4
TINY = dict(block_out_channels=[16, 32], down_block_types=["CrossAttnDownBlock2D", "DownBlock2D"],
            attention_head_dim=2, cross_attention_dim=16, norm_num_groups=8, vae_channels=[8, 8, 16, 16],
            vae_norm_num_groups=8, controlnet_conditioning_channels=[8, 8, 16, 16], vision_hidden_size=16,
            clip_image_size=32, clip_patch_size=8, image_proj_depth=1, motion_module_heads=2)


def base_config(tmp, stage, **over):
    cfg = {
        "stage": stage, "output_dir": str(tmp), "seed": 3, "max_steps": 2, "learning_rate": 1e-3,
        "checkpointing_steps": 0, "train_batch_size": 1, "image_dropout": 0.5, "train_ip_adapter": True,
        "device": "cpu",
        "validation": {"every_steps": 0, "at_end": False},
        "data": {"height": H, "width": W, "num_frames": F, "scene_ratio": 0.5, "num_workers": 0,
                 "human": {"kind": "synthetic", "num_clips": 8, "clip_frames": 6},
                 "scene": {"kind": "synthetic", "num_clips": 4, "clip_frames": 6}},
        "stage0": {"vae_steps": 1, "vae_batch_size": 2, "backbone_batch_size": 2, "tiny": TINY},
    }
    for k, v in over.items():
        node = cfg
        *parents, leaf = k.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = v
    return config_from_dict(cfg)


def snapshot(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def changed(before, module, keys=None):
    after = module.state_dict()
    keys = keys if keys is not None else before.keys()
    return {k for k in keys if not torch.equal(before[k], after[k])}


# ----------------------------------------------------------------------------------------
# data
# ----------------------------------------------------------------------------------------


class Tagged(KeyedDataset):
    def __init__(self, n, tag):
        self.n, self.tag = n, tag

    def __len__(self):
        return self.n

    def get(self, index, epoch):
        return (self.tag, index, epoch)


@pytest.mark.parametrize("ratio", [0.0, 0.2, 0.5])
def test_harmonic_data_fusion_ratio_in_every_epoch(ratio):
    human, scene = Tagged(40, "human"), Tagged(7, "scene")
    fused = harmonic_data_fusion(human, scene, ratio, seed=1)
    n = len(fused)
    assert n == 40 + round(40 * ratio / (1 - ratio))
    orders = []
    for epoch in range(3):
        items = [fused[epoch * n + i] for i in range(n)]
        tags = [t for t, _, _ in items]
        assert tags.count("scene") / n == pytest.approx(ratio, abs=0.5 / n)
        # every human clip exactly once per epoch
        assert sorted(i for t, i, _ in items if t == "human") == list(range(40))
        orders.append(tags)
    if ratio:
        assert orders[0] != orders[1]  # shuffled anew every epoch
    assert [fused[i] for i in range(n)] == [fused[i] for i in range(n)]  # deterministic


def test_fusion_blocks_keep_windows_of_one_clip_together():
    fused = harmonic_data_fusion(Tagged(16, "human"), Tagged(8, "scene"), 0.2, seed=0, block_size=4)
    n = len(fused)
    assert n % 4 == 0
    for b in range(0, 2 * n, 4):
        items = [fused[k] for k in range(b, b + 4)]
        assert len({t for t, _, _ in items}) == 1  # one source per block
        idx = [i for _, i, _ in items]
        assert idx == list(range(idx[0], idx[0] + 4)) and idx[0] % 4 == 0  # one clip's windows


def test_fusion_rejects_bad_ratio():
    with pytest.raises(InputError):
        harmonic_data_fusion(Tagged(4, "h"), Tagged(4, "s"), 1.0)


def test_step_sampler_disjoint_processes_and_resume():
    it = iter(StepSampler(3, num_processes=2, process_index=1))
    keys = [next(it) for _ in range(9)]
    other = iter(StepSampler(3, num_processes=2, process_index=0))
    assert not set(keys) & {next(other) for _ in range(9)}
    resumed = iter(StepSampler(3, start_batch=2, num_processes=2, process_index=1))
    assert [next(resumed) for _ in range(3)] == keys[6:9]


def test_window_and_reference_from_another_time():
    rng = np.random.default_rng(0)
    for _ in range(50):
        window, ref = sample_window(rng, 40, 16, 2)
        assert len(window) == 16 and np.all(np.diff(window) == 2) and window[-1] < 40
        assert ref < window[0] or ref > window[-1]


def test_synthetic_items_shapes_and_controls_match_the_generator():
    from xdyna_core import synthetic

    ds = SyntheticHumanDataset(num_clips=4, seed=5, height=H, width=W, num_frames=F, clip_frames=8)
    item = ds.get(1, 2)
    assert item["frames"].shape == (F, 3, H, W) and item["frames"].dtype == torch.float32
    assert item["reference"].shape == (3, H, W)
    assert -1.0 <= float(item["frames"].min()) and float(item["frames"].max()) <= 1.0
    # controls are exactly what the pipeline takes: uint8, channels last
    assert item["pose"].shape == (F, H, W, 3) and item["pose"].dtype == torch.uint8
    assert item["face"].shape == (F, H, W, 6) and item["face"].dtype == torch.uint8
    assert bool(item["has_person"])
    clip = synthetic.render_clip(ds.clip_seed(1, 2), num_frames=8, height=H, width=W)
    frames_u8 = ((item["frames"] + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    starts = [s for s in range(8 - F + 1) if np.array_equal(clip.frames[s:s + F], frames_u8)]
    assert starts, "item frames are not a window of the rendered clip"
    s = starts[0]
    np.testing.assert_array_equal(item["pose"].numpy(), clip.pose_images[s:s + F])
    np.testing.assert_array_equal(item["face"].numpy(), clip.face_images[s:s + F])
    # deterministic per (index, epoch); another epoch gives another clip
    assert torch.equal(ds.get(1, 2)["frames"], item["frames"])
    assert not torch.equal(ds.get(1, 3)["frames"], item["frames"])


def test_scene_items_have_blank_controls_and_identity_swap_changes_only_the_face():
    scene = SyntheticSceneDataset(num_clips=2, seed=1, height=H, width=W, num_frames=F, clip_frames=8).get(0, 0)
    assert not bool(scene["has_person"]) and int(scene["pose"].max()) == 0 and int(scene["face"].max()) == 0
    a = SyntheticHumanDataset(num_clips=2, seed=4, height=128, width=64, num_frames=F, clip_frames=8).get(0, 0)
    b = SyntheticHumanDataset(num_clips=2, seed=4, height=128, width=64, num_frames=F, clip_frames=8,
                              identity_swap=True).get(0, 0)
    assert torch.equal(a["frames"], b["frames"]) and torch.equal(a["pose"], b["pose"])
    assert not torch.equal(a["face"], b["face"])  # another person's face with the same expression
    assert int(b["face"].max()) > 0


def test_human_video_folder_dataset_with_a_cross_identity_face_source(tmp_path):
    """A folder of dance clips is preprocessed once with extract_motion (cached) into frames,
    skeletons and face patches; a cross-identity face source replaces the face patches."""
    from xdyna_core.train.data import HumanVideoDataset

    (tmp_path / "v").mkdir()
    shutil.copy(Path(__file__).resolve().parents[1] / "assets" / "examples" / "dance_1.mp4", tmp_path / "v")
    kw = dict(height=128, width=64, num_frames=F, fps=8, max_frames=12, cache_dir=tmp_path / "cache", progress=False)
    ds = HumanVideoDataset(tmp_path / "v", **kw)
    item = ds.get(0, 0)
    assert item["frames"].shape == (F, 3, 128, 64) and item["pose"].shape == (F, 128, 64, 3)
    assert bool(item["has_person"]) and int(item["pose"].max()) > 0  # a skeleton was found and drawn
    calls = []

    def other_identity(frames, face, rng):
        calls.append(frames.shape)
        return 255 - face

    swapped = HumanVideoDataset(tmp_path / "v", cross_identity_face_source=other_identity, **kw).get(0, 0)
    assert calls == [(F, 128, 64, 3)]
    assert torch.equal(swapped["face"], 255 - item["face"]) and torch.equal(swapped["frames"], item["frames"])


def test_scene_video_folder_dataset(tmp_path):
    from xdyna_core.io import write_video
    from xdyna_core import synthetic
    from xdyna_core.train.data import SceneVideoDataset

    clip = synthetic.render_clip(0, num_frames=10, height=96, width=80, person=False)
    (tmp_path / "v").mkdir()
    write_video(tmp_path / "v" / "sky.mp4", clip.frames, fps=8)
    ds = SceneVideoDataset(tmp_path / "v", height=H, width=W, num_frames=F, cache_dir=tmp_path / "cache",
                           progress=False)
    item = ds.get(0, 0)
    assert len(ds) == 1 and item["frames"].shape == (F, 3, H, W) and not bool(item["has_person"])
    assert int(item["pose"].max()) == 0
    again = SceneVideoDataset(tmp_path / "v", height=H, width=W, num_frames=F, cache_dir=tmp_path / "cache",
                              progress=False)  # cached: no second decode
    assert torch.equal(again.get(0, 0)["frames"], item["frames"])
    with pytest.raises(InputError):
        SceneVideoDataset(tmp_path / "empty-folder-that-does-not-exist")


# ----------------------------------------------------------------------------------------
# training layout == pipeline layout
# ----------------------------------------------------------------------------------------


def test_training_prediction_equals_the_pipeline_unet_call():
    """The UNet input built by training (reference latent at frame 0, controls normalised per
    clip, ControlNets on the noisy frames with text-only context, text + IP tokens) equals what
    the pipeline feeds its UNet: captured from a real pipeline call (one step, no CFG) and
    rebuilt by the training code from the same latents."""
    from xdyna_core.pipeline import XDynaPipeline
    from xdyna_core.testing import make_tiny_components
    from xdyna_core import synthetic
    from xdyna_core.train.trainer import VideoObjective

    pipe = XDynaPipeline(**make_tiny_components(seed=0))
    pipe.set_progress_bar_config(disable=True)
    # Zero-initialised parts (ControlNet zero convs, adapter output, motion-module output) would
    # hide layout mistakes: give them weights.
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in (pipe.unet, pipe.controlnet, pipe.controlnet_face):
            for p in m.parameters():
                if not p.any():
                    p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    clip = synthetic.render_clip(2, num_frames=F, height=64, width=64)
    ref_u8 = synthetic.render_reference(clip, seed=2).frames[0]
    calls = []

    def hook(module, args, kwargs, output):
        calls.append((args, kwargs, output))

    handle = pipe.unet.register_forward_hook(hook, with_kwargs=True)
    try:
        pipe(ref_u8, clip.pose_images, clip.face_images, height=64, width=64, num_inference_steps=1,
             guidance_scale=0.0, generator=torch.Generator().manual_seed(0), output_type="latent")
    finally:
        handle.remove()
    assert len(calls) == 1
    args, kwargs, output = calls[0]
    sample = args[0] if args else kwargs["sample"]
    t = args[1] if len(args) > 1 else kwargs["timestep"]
    context = kwargs["encoder_hidden_states"]
    expected = (output.sample if hasattr(output, "sample") else output[0])[:, :, 1:]

    with torch.no_grad():
        text = pipe.encode_prompt("", "cpu")
        obj = VideoObjective(pipe.unet, pipe.controlnet, pipe.image_proj, pipe.vae, pipe.image_encoder,
                             pipe.feature_extractor, text, torch.ones(1000), pipe.controlnet_face, use_face=True)
        reference = torch.from_numpy(ref_u8).permute(2, 0, 1)[None].float() / 127.5 - 1
        hidden, _ = obj.clip_hidden_states(reference)
        ours = torch.cat([text, pipe.image_proj(hidden)], 1)
        torch.testing.assert_close(ours, context.float(), rtol=0, atol=1e-6)  # text + IP tokens
        pose_c, face_c = L.normalize_controls(torch.from_numpy(clip.pose_images)[None],
                                              torch.from_numpy(clip.face_images)[None])
        t_b = torch.as_tensor(t).reshape(-1)[:1].expand(1)
        got = L.predict_noise(pipe.unet, sample[:, :, 0], sample[:, :, 1:], t_b, ours,
                              [(pipe.controlnet, pose_c), (pipe.controlnet_face, face_c)], text)
    torch.testing.assert_close(got, expected.float(), rtol=1e-5, atol=1e-5)


def test_training_noise_schedule_is_the_inference_one():
    from xdyna_core.pipeline import official_scheduler

    ddim = official_scheduler()
    ddpm = L.ddpm_scheduler_from(ddim.config)
    torch.testing.assert_close(ddpm.alphas_cumprod, ddim.alphas_cumprod)
    assert ddim.config.beta_schedule == "linear" and ddpm.config.num_train_timesteps == 1000


# ----------------------------------------------------------------------------------------
# stages: freezing, loss, resume
# ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stage0(tmp_path_factory):
    """A tiny stage-0 model folder, made through `xdyna train` (1 VAE step + 1 backbone step)."""
    import yaml

    from xdyna_core import cli

    tmp = tmp_path_factory.mktemp("stage0")
    cfg = base_config(tmp / "out", "0").to_dict()
    (tmp / "stage0.yaml").write_text(yaml.safe_dump(cfg))
    assert cli.main(["train", "--config", str(tmp / "stage0.yaml"), "--quiet", "--set", "data.num_workers=0"]) == 0
    return tmp / "out", tmp / "out" / "model"


def test_stage0_trains_vae_then_backbone_and_inflates(stage0):
    from xdyna_core.models import XDynaUNet
    from xdyna_core.pipeline import XDynaPipeline

    tmp, model = stage0
    summary = json.loads((tmp / "summary.json").read_text())
    assert summary["phases"]["vae"]["steps"] == 1 and summary["phases"]["backbone"]["steps"] == 1
    assert (tmp / "loss.png").is_file() and (tmp / "stage0_vae" / "config.json").is_file()
    pipe = XDynaPipeline.from_pretrained(str(model))
    assert isinstance(pipe.unet, XDynaUNet) and pipe.controlnet_face is not None
    assert pipe.vae.config.scaling_factor != 0.18215  # measured from the trained VAE's latents
    # inflation: adapter query = backbone query, adapter output zero, ControlNet = backbone encoder
    sd = pipe.unet.state_dict()
    q = [k for k in sd if k.endswith("attn1.to_q.weight")][0]
    torch.testing.assert_close(sd[q.replace("to_q", "to_q_ff")], sd[q])
    assert all(float(v.abs().max()) == 0 for k, v in sd.items() if ".to_out_ff." in k)
    torch.testing.assert_close(pipe.controlnet.conv_in.weight, pipe.unet.conv_in.weight)
    out = pipe(np.zeros((H, W, 3), np.uint8), np.zeros((F, H, W, 3), np.uint8), height=H, width=W,
               num_inference_steps=2, output_type="uint8").frames
    assert out.shape == (F, H, W, 3)


def test_stage0_phases_freeze_each_other(tmp_path):
    from xdyna_core.train.trainer import Trainer

    cfg = base_config(tmp_path, "0", max_steps=3, **{"stage0.vae_steps": 2})
    trainer = Trainer(cfg, progress_bar=False, log=lambda *_: None)
    phases = trainer.stage0_phases()
    vae, unet2d = trainer.components["vae"], trainer.components["unet2d"]
    v0, u0 = snapshot(vae), snapshot(unet2d)
    trainer.run_phase(phases[0])
    assert changed(v0, vae) and not changed(u0, unet2d)
    v1 = snapshot(vae)
    trainer.run_phase(phases[1].make())
    assert changed(u0, unet2d) and not changed(v1, vae)


def _trainer(cfg, resume=None):
    from xdyna_core.train.trainer import Trainer

    return Trainer(cfg, resume=resume, progress_bar=False, log=lambda *_: None)


def test_stage1_trains_only_adapter_motion_pose_ip(stage0, tmp_path):
    from xdyna_core.models.unet import parameter_group

    _, model = stage0
    trainer = _trainer(base_config(tmp_path, "1", pretrained_model=str(model)))
    phase = trainer.video_phases()[0]
    c = trainer.components
    before = {n: snapshot(c[n]) for n in ("unet", "controlnet", "controlnet_face", "vae", "image_proj",
                                          "image_encoder", "text_encoder")}
    trainer.run_phase(phase)
    unet_changed = changed(before["unet"], c["unet"])
    groups = {parameter_group(k) for k in unet_changed}
    assert groups == {"dynamics_adapter", "motion_module", "ip_adapter"}
    assert not any(parameter_group(k) == "backbone" for k in unet_changed)
    assert changed(before["controlnet"], c["controlnet"]) and changed(before["image_proj"], c["image_proj"])
    for frozen in ("controlnet_face", "vae", "image_encoder", "text_encoder"):
        assert not changed(before[frozen], c[frozen]), frozen


def test_stage2_trains_only_the_face_controlnet(stage0, tmp_path):
    _, model = stage0
    trainer = _trainer(base_config(tmp_path, "2", pretrained_model=str(model), gradient_checkpointing=True,
                                   **{"data.scene_ratio": 0.0}))
    phase = trainer.video_phases()[0]
    c = trainer.components
    names = ("unet", "controlnet", "controlnet_face", "vae", "image_proj", "image_encoder", "text_encoder")
    before = {n: snapshot(c[n]) for n in names}
    trainer.run_phase(phase)
    assert changed(before["controlnet_face"], c["controlnet_face"])
    for frozen in names[:2] + names[3:]:
        assert not changed(before[frozen], c[frozen]), frozen
    assert all(bool(phase.dataset[i]["has_person"]) for i in range(3))  # human data only


def test_a_few_steps_on_a_fixed_batch_lower_the_loss(stage0, tmp_path):
    from torch.utils.data import default_collate

    _, model = stage0
    trainer = _trainer(base_config(tmp_path, "1", pretrained_model=str(model), image_dropout=0.0))
    phase = trainer.video_phases()[0]
    batch = default_collate([phase.dataset[i] for i in range(2)])
    opt = torch.optim.AdamW(phase.params, lr=2e-3)

    def loss():
        return phase.objective(batch, L.ItemNoise(0, range(2)))  # same noise every time

    with torch.no_grad():
        first = float(loss())
    for _ in range(6):
        opt.zero_grad()
        loss().backward()
        opt.step()
    with torch.no_grad():
        last = float(loss())
    assert last < 0.9 * first, (first, last)


def test_resume_continues_the_same_run(stage0, tmp_path):
    _, model = stage0
    over = dict(pretrained_model=str(model), max_steps=4, checkpointing_steps=2, lr_scheduler="cosine",
                lr_warmup_steps=1)
    full = _trainer(base_config(tmp_path / "full", "1", **over))
    full.train()
    ckpt = tmp_path / "full" / "checkpoints" / "checkpoint-0000002"
    assert (ckpt / "model.safetensors").is_file() and (ckpt / "optimizer.bin").is_file()
    # a run "interrupted" after step 2: only the checkpoint survives
    (tmp_path / "resumed" / "checkpoints").mkdir(parents=True)
    shutil.copytree(ckpt, tmp_path / "resumed" / "checkpoints" / ckpt.name)
    resumed = _trainer(base_config(tmp_path / "resumed", "1", **over), resume=str(tmp_path / "resumed"))
    assert resumed.state["step"] == 2
    resumed.train()
    losses_full = [l for l in full.state["losses"]]
    losses_res = [l for l in resumed.state["losses"]]
    assert [l[0] for l in losses_res] == [0, 1, 2, 3]
    np.testing.assert_allclose([l[2] for l in losses_res[2:]], [l[2] for l in losses_full[2:]], rtol=1e-6, atol=0)
    for name in ("unet", "controlnet", "image_proj"):
        a, b = full.components[name].state_dict(), resumed.components[name].state_dict()
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=1e-6, atol=1e-7, msg=f"{name}.{k}")


def test_resume_refuses_a_different_config(stage0, tmp_path):
    _, model = stage0
    over = dict(pretrained_model=str(model), max_steps=1)
    t = _trainer(base_config(tmp_path, "1", gradient_accumulation_steps=2, **over))
    t.train()
    assert t.state["step"] == 1 and len(t.state["losses"]) == 1  # one optimiser step of 2 micro-batches
    with pytest.raises(InputError):
        _trainer(base_config(tmp_path, "1", seed=99, **over), resume="latest")


def test_configs_load_and_typos_are_errors(tmp_path):
    for name in ("tiny_stage0", "tiny_stage1", "tiny_stage2", "sd15_stage1", "sd15_stage2"):
        cfg = load_config(f"configs/train/{name}.yaml")
        assert cfg.stage in "012"
    assert load_config("configs/train/sd15_stage1.yaml").learning_rate == 1e-5  # the paper's AdamW lr
    bad = tmp_path / "bad.yaml"
    bad.write_text("stage: 1\npretrained_model: x\nlearning_rat: 1.0\n")
    with pytest.raises(InputError, match="learning_rat"):
        load_config(str(bad))
    with pytest.raises(InputError, match="pretrained_model"):
        config_from_dict({"stage": 1})


def test_untrained_baseline_equals_a_fresh_stage0_model(stage0):
    """`untrained_like` (the model card's "untrained" baseline) puts the stage-1/2 modules back to
    their stage-0 initial values: on a stage-0 model it changes nothing but the (random) image
    projection."""
    from xdyna_core.pipeline import XDynaPipeline
    from xdyna_core.eval.model_card import untrained_like

    _, model = stage0
    pipe = XDynaPipeline.from_pretrained(str(model))
    pipe.set_progress_bar_config(disable=True)
    fresh = untrained_like(pipe)
    fresh.image_proj.load_state_dict(pipe.image_proj.state_dict())
    rng = np.random.default_rng(0)
    args = (rng.integers(0, 255, (H, W, 3), dtype=np.uint8), rng.integers(0, 255, (F, H, W, 3), dtype=np.uint8))
    kw = dict(height=H, width=W, num_inference_steps=2, output_type="np")
    a = pipe(*args, generator=torch.Generator().manual_seed(1), **kw).frames
    b = fresh(*args, generator=torch.Generator().manual_seed(1), **kw).frames
    np.testing.assert_allclose(a, b, atol=1e-4)


def test_a_wall_time_budget_ends_the_stage(stage0, tmp_path):
    import time

    _, model = stage0
    t0 = time.time()
    trainer = _trainer(base_config(tmp_path, "1", pretrained_model=str(model), max_steps=10**6, max_minutes=0.1))
    trainer.train()
    steps = trainer.state["step"]
    assert 1 <= steps < 10**6 and time.time() - t0 < 120
    assert json.loads((tmp_path / "summary.json").read_text())["steps"] == steps


def test_tiny_recipe_trains_extends_and_documents(tmp_path, monkeypatch):
    """`tiny_recipe train` then `extend` at toy sizes: the extension continues stage 1 from the
    first run's model (backbone untouched, trained modules moved on), trains stage 2 again on
    top, publishes that model, and the recipe/model card record both commands. A rerun of
    `train` on the finished folder keeps the recorded times and extensions."""
    import yaml
    from safetensors.torch import load_file

    from xdyna_core.train import tiny_recipe as R

    configs = tmp_path / "configs"
    configs.mkdir()
    for s in "012":
        cfg = yaml.safe_load((Path("configs/train") / f"tiny_stage{s}.yaml").read_text())
        cfg["data"].update(height=H, width=W, num_frames=F)
        cfg["validation"] = {"every_steps": 0, "at_end": False}
        if s == "0":
            cfg["stage0"]["tiny"] = TINY
        (configs / f"tiny_stage{s}.yaml").write_text(yaml.safe_dump(cfg))
    monkeypatch.setitem(R.PROFILES, "cpu", dict(R.PROFILES["cpu"], num_workers=0, clip_frames=6, vae_batch_size=2,
                                                backbone_batch_size=2, checkpointing_steps=0))
    out = tmp_path / "tiny"
    R.train(str(out), minutes=0.05, profile="cpu", device="cpu", configs=str(configs), image_pool=8)
    R.extend(str(out), minutes=0.05, profile="cpu", device="cpu", learning_rate=1e-3, configs=str(configs))

    recipe = json.loads((out / "recipe.json").read_text())
    (ext,) = recipe["extensions"]
    assert ext["stages"]["1"]["config"]["pretrained_model"] == str(out / "stage1" / "model")
    assert ext["stages"]["1"]["steps"] >= 1 and ext["stages"]["2"]["steps"] >= 1
    assert recipe["wall_seconds_total"] > recipe["wall_seconds"]
    first = load_file(out / "stage1" / "model" / "unet" / "diffusion_pytorch_model.safetensors")
    longer = load_file(out / "stage1_r1" / "model" / "unet" / "diffusion_pytorch_model.safetensors")
    moved = {k for k in first if not torch.equal(first[k], longer[k])}
    assert any("motion_modules" in k for k in moved) and not any(".attn2.to_k.weight" in k for k in moved)
    face = "controlnet_face/diffusion_pytorch_model.safetensors"
    assert not torch.equal(*(load_file(out / d / "model" / face)["conv_in.weight"] for d in ("stage1_r1", "stage2_r1")))
    for a, b in zip(sorted((out / "tiny-xdyna").rglob("*.safetensors")), sorted((out / "stage2_r1" / "model").rglob("*.safetensors"))):
        assert a.read_bytes() == b.read_bytes()

    R.train(str(out), minutes=0.05, profile="cpu", device="cpu", configs=str(configs), image_pool=8)
    assert json.loads((out / "recipe.json").read_text()) == recipe

    row = {"psnr": 20.0, "pose_iou": 0.5}
    res = {"summary": {k: row for k in ("trained", "untrained", "repeat_reference")}, "num_clips": 1, "num_frames": F,
           "call_kwargs": {"num_inference_steps": 10, "guidance_scale": 7.0}, "seconds_per_clip_trained": 1.0}
    card = R.model_card(recipe, res, H, W, 1.0, 4)
    assert "1 (restart 1)" in card and "2 (superseded)" in card
    assert "tiny_recipe extend --minutes 0.05 --profile cpu --lr 0.001" in card


def test_synthetic_style_photo_from_the_config(tmp_path):
    """data.human / data.scene ``style: photo`` (issue #17) reaches the generator: the items are
    windows of ``render_clip(style="photo")``; the default stays the default style; typos fail."""
    from xdyna_core import synthetic
    from xdyna_core.train.trainer import build_video_dataset

    cfg = base_config(tmp_path, "1", pretrained_model="x", **{"data.human.style": "photo", "data.scene.style": "photo"})
    assert cfg.data.human.style == "photo" and cfg.data.scene.style == "photo"
    assert base_config(tmp_path, "1", pretrained_model="x").data.human.style == "default"
    with pytest.raises(InputError, match="style"):
        base_config(tmp_path, "1", pretrained_model="x", **{"data.human.style": "photograph"})
    fused = build_video_dataset(cfg)
    assert fused.human.style == "photo" and fused.scene.style == "photo"
    ds = SyntheticHumanDataset(num_clips=4, seed=5, height=H, width=W, num_frames=F, clip_frames=8, style="photo")
    item = ds.get(1, 2)
    clip = synthetic.render_clip(ds.clip_seed(1, 2), num_frames=8, height=H, width=W, style="photo")
    plain = synthetic.render_clip(ds.clip_seed(1, 2), num_frames=8, height=H, width=W)
    frames_u8 = ((item["frames"] + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    starts = [s for s in range(8 - F + 1) if np.array_equal(clip.frames[s:s + F], frames_u8)]
    assert starts, "item frames are not a window of the photo-style clip"
    np.testing.assert_array_equal(item["pose"].numpy(), clip.pose_images[starts[0]:starts[0] + F])
    assert not any(np.array_equal(plain.frames[s:s + F], frames_u8) for s in range(8 - F + 1))
    # stage 2's identity swap keeps the look
    swap = SyntheticHumanDataset(num_clips=4, seed=5, height=H, width=W, num_frames=F, clip_frames=8, style="photo",
                                 identity_swap=True).get(1, 2)
    assert torch.equal(swap["frames"], item["frames"]) and not torch.equal(swap["face"], item["face"])
    # stage 0's single frames too
    from xdyna_core.train.data import SyntheticImageDataset

    kw = dict(num_images=4, seed=2, height=H, width=W, scene_ratio=0.0, frames_per_clip=2)
    photo_img = SyntheticImageDataset(style="photo", **kw).get(0, 0)["image"]
    assert torch.equal(photo_img, SyntheticImageDataset(style="photo", **kw).get(0, 0)["image"])
    assert (photo_img - SyntheticImageDataset(**kw).get(0, 0)["image"]).abs().mean() > 0.02


def test_tiny_v2_configs_load():
    for stage in ("0", "1", "2"):
        cfg = load_config(f"configs/train/tiny_v2_stage{stage}.yaml")
        assert cfg.stage == stage and cfg.data.human.style == "photo"
        assert cfg.data.height >= 256 and cfg.data.width >= 128
    wide = load_config("configs/train/tiny_v2_stage0.yaml").stage0.tiny
    assert wide["block_out_channels"][0] > 32  # wider than v1 (trainer.TINY_DEFAULTS)
