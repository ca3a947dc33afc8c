"""Official-format files (written here from tiny random models) through the public loader."""

import shutil
from pathlib import Path

import pytest
import torch

from xdyna_core.errors import InputError, MissingWeightsError, XDynaError
from xdyna_core.models import XDynaImageProjection, XDynaUNet
from xdyna_core.models.loading import (
    CONTROLNET_FACE_FILE,
    CONTROLNET_FILE,
    UNET_FILE,
    download_official,
    load_controlnet,
    load_image_proj,
    load_official_components,
    load_unet,
    read_checkpoint,
)
from xdyna_core.testing import TINY_UNET_CONFIG, write_tiny_official_files


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_tiny_official_files(tmp_path_factory.mktemp("official"))


@pytest.fixture(scope="module")
def components(tiny):
    return load_official_components(tiny.xdyna_dir, tiny.sd_dir, tiny.ip_adapter_dir, **tiny.loader_kwargs)


class NotWeights:  # a pickled object that torch.load(weights_only=True) must refuse
    pass


def assert_one_line_naming(exc_info, path):
    message = str(exc_info.value)
    assert "\n" not in message
    assert str(path) in message
    return message


def test_components_load_with_exact_weights(tiny, components):
    from diffusers import AutoencoderKL, ControlNetModel, DDIMScheduler
    from transformers import CLIPTextModel, CLIPTokenizer, CLIPVisionModelWithProjection

    assert isinstance(components["unet"], XDynaUNet)
    assert isinstance(components["controlnet"], ControlNetModel)
    assert isinstance(components["controlnet_face"], ControlNetModel)
    assert isinstance(components["image_proj"], XDynaImageProjection)
    assert isinstance(components["image_encoder"], CLIPVisionModelWithProjection)
    assert isinstance(components["vae"], AutoencoderKL)
    assert isinstance(components["text_encoder"], CLIPTextModel)
    assert isinstance(components["tokenizer"], CLIPTokenizer)
    assert isinstance(components["scheduler"], DDIMScheduler)
    assert components["controlnet"].config.conditioning_channels == 3
    assert components["controlnet_face"].config.conditioning_channels == 6
    for name in ("unet", "controlnet", "controlnet_face", "image_proj"):
        loaded = components[name].state_dict()
        written = tiny.state_dicts[name]
        assert loaded.keys() == written.keys(), name
        for key, value in written.items():  # includes the recomputed pos_encoder.pe buffers
            assert torch.equal(loaded[key], value), (name, key)
        assert not components[name].training
    fe = components["feature_extractor"]
    assert fe.crop_size["height"] == 224 and fe.size["shortest_edge"] == 224


def test_official_scheduler(components):
    scheduler = components["scheduler"]
    cfg = scheduler.config
    assert (cfg.beta_schedule, cfg.beta_start, cfg.beta_end) == ("linear", 0.00085, 0.012)
    assert (cfg.steps_offset, cfg.clip_sample, cfg.set_alpha_to_one, cfg.timestep_spacing) == (1, False, True, "leading")
    scheduler.set_timesteps(25)
    assert scheduler.timesteps[0] == 961 and scheduler.timesteps[-1] == 1
    assert abs(float(scheduler.alphas_cumprod[961]) - 0.0024783) < 1e-6


def test_loaded_components_run(components):
    tok = components["tokenizer"]
    ids = tok([""], padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    with torch.no_grad():
        text = components["text_encoder"](ids).last_hidden_state  # [1, 77, 32]
        pixels = components["feature_extractor"](images=torch.zeros(64, 48, 3, dtype=torch.uint8).numpy(), return_tensors="pt").pixel_values
        hidden = components["image_encoder"](pixels, output_hidden_states=True).hidden_states[-2]
        ip = components["image_proj"](hidden)
        sample = torch.randn(1, 4, 3, 8, 8)
        out = components["unet"](sample, 961, torch.cat([text, ip], dim=1)).sample
        latent = components["vae"].encode(torch.zeros(1, 3, 64, 64)).latent_dist.mean
    assert text.shape == (1, 77, 32) and ip.shape == (1, 16, 32)
    assert out.shape == sample.shape and torch.isfinite(out).all()
    assert latent.shape == (1, 4, 8, 8)


def test_stored_pe_buffers_are_accepted(tmp_path):
    files = write_tiny_official_files(tmp_path, include_pe=True)
    unet = load_unet(files.xdyna_dir / UNET_FILE, TINY_UNET_CONFIG)
    assert torch.equal(unet.state_dict()["down_blocks.0.motion_modules.0.temporal_transformer.transformer_blocks.0."
                                          "attention_blocks.1.pos_encoder.pe"],
                       files.state_dicts["unet"]["down_blocks.0.motion_modules.0.temporal_transformer.transformer_blocks.0."
                                                 "attention_blocks.1.pos_encoder.pe"])


def test_unwraps_state_dict_and_strips_every_module_prefix(tmp_path):
    path = tmp_path / "wrapped.ckpt"
    torch.save({"state_dict": {"module.a.module.b": torch.ones(1)}, "epoch": 5}, path)
    assert list(read_checkpoint(path)) == ["a.b"]


def test_dtype_conversion(tiny):
    unet = load_unet(tiny.xdyna_dir / UNET_FILE, TINY_UNET_CONFIG, torch_dtype=torch.float16)
    assert {p.dtype for p in unet.parameters()} == {torch.float16}
    assert {b.dtype for b in unet.buffers()} == {torch.float16}


def test_legacy_torch_save_format(tmp_path, tiny):
    state = torch.load(tiny.xdyna_dir / CONTROLNET_FILE, weights_only=True)
    path = tmp_path / CONTROLNET_FILE
    torch.save(state, path, _use_new_zipfile_serialization=False)
    controlnet = load_controlnet(path, TINY_UNET_CONFIG, 3)
    assert torch.equal(controlnet.state_dict()["conv_in.weight"], tiny.state_dicts["controlnet"]["conv_in.weight"])


# ------------------------------------------------------------------ strictness and clear errors


def _rewrite(tiny, tmp_path, name, edit):
    state = torch.load(tiny.xdyna_dir / name, weights_only=True)
    edit(state["state_dict"] if "state_dict" in state else state)
    path = tmp_path / name
    torch.save(state, path)
    return path


def test_missing_key_is_named(tiny, tmp_path):
    key = "module.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_out_ff.weight"
    path = _rewrite(tiny, tmp_path, UNET_FILE, lambda s: s.pop(key))
    with pytest.raises(MissingWeightsError) as info:
        load_unet(path, TINY_UNET_CONFIG)
    message = assert_one_line_naming(info, path)
    assert "1 missing keys" in message and key.replace("module.", "") in message


def test_many_missing_keys_are_abbreviated(tiny, tmp_path):
    path = _rewrite(tiny, tmp_path, UNET_FILE, lambda s: [s.pop(k) for k in list(s) if "motion_modules" in k])
    with pytest.raises(MissingWeightsError) as info:
        load_unet(path, TINY_UNET_CONFIG)
    message = assert_one_line_naming(info, path)
    assert "more)" in message and len(message) < 600


def test_unexpected_key_is_named(tiny, tmp_path):
    path = _rewrite(tiny, tmp_path, CONTROLNET_FILE, lambda s: s.update({"module.extra.weight": torch.zeros(2)}))
    with pytest.raises(InputError) as info:
        load_controlnet(path, TINY_UNET_CONFIG, 3)
    assert "1 unexpected keys (extra.weight)" in assert_one_line_naming(info, path)


def test_face_checkpoint_in_pose_slot_is_a_shape_mismatch(tiny):
    path = tiny.xdyna_dir / CONTROLNET_FACE_FILE
    with pytest.raises(InputError) as info:
        load_controlnet(path, TINY_UNET_CONFIG, 3)
    message = assert_one_line_naming(info, path)
    assert "shape mismatches" in message and "controlnet_cond_embedding.conv_in.weight" in message


def test_ip_adapter_file_without_image_proj(tmp_path):
    path = tmp_path / "ip-adapter_sd15.bin"
    torch.save({"ip_adapter": {"1.to_k_ip.weight": torch.zeros(2, 2)}}, path)
    with pytest.raises(MissingWeightsError) as info:
        load_image_proj(path)
    assert "image_proj" in assert_one_line_naming(info, path)


@pytest.mark.parametrize("kind", ["truncated", "text", "empty", "not-weights", "folder", "absent"])
def test_unreadable_files_give_one_line(tiny, tmp_path, kind):
    path = tmp_path / UNET_FILE
    if kind == "truncated":
        data = (tiny.xdyna_dir / UNET_FILE).read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "text":
        path.write_text("<html>404 Not Found</html>")
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "not-weights":
        torch.save({"state_dict": {"a": torch.zeros(1)}, "obj": NotWeights()}, path)
    elif kind == "folder":
        path.mkdir()
    with pytest.raises(XDynaError) as info:
        load_unet(path, TINY_UNET_CONFIG)
    assert_one_line_naming(info, path)
    if kind == "absent":
        assert isinstance(info.value, MissingWeightsError)


def test_incomplete_sd_folder_names_the_missing_file(tiny, tmp_path):
    sd = tmp_path / "sd"
    shutil.copytree(tiny.sd_dir, sd)
    (sd / "vae" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(MissingWeightsError) as info:
        load_official_components(tiny.xdyna_dir, sd, tiny.ip_adapter_dir, **tiny.loader_kwargs)
    message = assert_one_line_naming(info, sd / "vae")
    assert "diffusion_pytorch_model.safetensors" in message


# ------------------------------------------------------------------ locating files


def test_official_pretrained_weights_tree(tiny, tmp_path):
    """The official repo's pretrained_weights/ layout (one subfolder per checkpoint) is searched."""
    tree = tmp_path / "pretrained_weights"
    for sub, name in (("unet", UNET_FILE), ("controlnet", CONTROLNET_FILE), ("controlnet_face", CONTROLNET_FACE_FILE)):
        (tree / sub).mkdir(parents=True)
        shutil.copy(tiny.xdyna_dir / name, tree / sub / name)
    ip = tree / "initialization" / "unet_initialization" / "IP-Adapter" / "IP-Adapter"
    shutil.copytree(tiny.ip_adapter_dir, ip)
    sd = tree / "initialization" / "unet_initialization" / "SD" / "stable-diffusion-v1-5"
    shutil.copytree(tiny.sd_dir, sd)
    paths = download_official(tree, tree, tree)
    assert paths.unet == tree / "unet" / UNET_FILE
    assert paths.controlnet_face == tree / "controlnet_face" / CONTROLNET_FACE_FILE
    assert paths.ip_adapter == ip / "models" / "ip-adapter-plus_sd15.bin"
    assert paths.image_encoder == ip / "models" / "image_encoder"
    assert paths.sd == sd
    assert download_official(tree, sd, ip, face=False).controlnet_face is None


def _fake_hub_cache(cache: Path, repo_id: str, source: Path):
    """A Hugging Face cache entry (refs/main -> snapshot) holding a copy of ``source``."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    shutil.copytree(source, repo / "snapshots" / commit)


def test_offline_hub_cache_and_missing_entries(tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cache = tmp_path / "hub"
    cache.mkdir()
    with pytest.raises(MissingWeightsError) as info:
        download_official(cache_dir=cache)
    message = str(info.value)
    assert "\n" not in message and "Boese0601/X-Dyna" in message and "HF_HUB_OFFLINE" in message

    _fake_hub_cache(cache, "Boese0601/X-Dyna", tiny.xdyna_dir)
    _fake_hub_cache(cache, "h94/IP-Adapter", tiny.ip_adapter_dir)
    with pytest.raises(MissingWeightsError) as info:  # SD1.5 still absent
        download_official(cache_dir=cache)
    assert "stable-diffusion-v1-5/stable-diffusion-v1-5" in str(info.value)

    _fake_hub_cache(cache, "stable-diffusion-v1-5/stable-diffusion-v1-5", tiny.sd_dir)
    components = load_official_components(cache_dir=cache, **tiny.loader_kwargs)  # default repo ids
    assert torch.equal(components["unet"].state_dict()["conv_in.weight"], tiny.state_dicts["unet"]["conv_in.weight"])
