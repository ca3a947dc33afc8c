"""The learned metrics' networks: real layouts, safe loading, tiny random copies on CPU."""

import argparse
import pickle

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from xdyna_core.errors import MissingWeightsError
from xdyna_core.eval import backbones as B
from xdyna_core.eval.frechet import frechet_distance_from_features
from xdyna_core.testing import TINY_BACKBONE_SIZES, tiny_backbones
from xdyna_core.eval.weights import WEIGHTS, find_weights, load_state_dict, resolve_weights


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


@pytest.fixture(scope="module")
def nets(one_thread):
    return tiny_backbones(seed=0)


@pytest.fixture
def videos(rng):
    base = rng.integers(0, 256, size=(6, 8, 40, 48, 3), dtype=np.uint8)
    return base


def test_real_layouts_have_the_published_sizes_and_key_names():
    # Parameter counts are those of the published networks (no classifier heads).
    fid = B.InceptionV3FID()
    assert sum(p.numel() for p in fid.parameters()) == 21_785_568 and fid.feature_dim == 2048
    keys = fid.state_dict()
    assert "Mixed_7c.branch3x3dbl_3b.conv.weight" in keys and tuple(keys["Conv2d_1a_3x3.conv.weight"].shape) == (32, 3, 3, 3)
    lp = B.LPIPS()
    assert sum(p.numel() for n, p in lp.named_parameters() if n.startswith("features.")) == 14_714_688  # VGG16 conv trunk
    assert tuple(lp.state_dict()["lin4.model.1.weight"].shape) == (1, 512, 1, 1) and "features.28.weight" in lp.state_dict()
    i3d = B.InceptionI3d()
    assert sum(p.numel() for p in i3d.parameters()) == 12_697_264
    assert tuple(i3d.state_dict()["logits.conv3d.weight"].shape) == (400, 1024, 1, 1, 1)
    assert tuple(i3d.state_dict()["Mixed_5c.b1b.conv3d.weight"].shape) == (384, 192, 3, 3, 3)
    vit = B.VideoMAEv2(depth=1)  # ViT-g/14 widths, one block (the real one has 40)
    sd = vit.state_dict()
    assert tuple(sd["patch_embed.proj.weight"].shape) == (1408, 3, 2, 14, 14)
    assert tuple(sd["blocks.0.mlp.fc1.weight"].shape) == (6144, 1408)
    assert {"blocks.0.attn.q_bias", "blocks.0.attn.v_bias", "fc_norm.weight"} <= set(sd) and "pos_embed" not in sd


def test_tiny_feature_shapes_and_determinism(nets, videos):
    frames = videos[0]
    f = nets["fid"].embed(frames)
    assert f.shape == (8, nets["fid"].feature_dim) and np.isfinite(f).all()
    np.testing.assert_array_equal(f, nets["fid"].embed(frames))
    clips = videos[:, :4]
    assert nets["fvd"].embed(clips).shape == (6, 400)
    assert nets["dtfvd"].embed(clips).shape == (6, nets["dtfvd"].feature_dim_pooled)
    assert nets["cdfvd"].embed(clips).shape == (6, 32)
    with pytest.raises(ValueError, match="clips of 4 frames"):
        nets["cdfvd"].embed(videos[:, :6])


def test_frechet_of_a_set_against_itself_is_zero_and_positive_otherwise(nets, videos, rng):
    frames = videos.reshape(-1, 40, 48, 3)
    other = np.clip(frames.astype(int) // 3 + 40, 0, 255).astype(np.uint8)  # darker, flatter
    f, g = nets["fid"].embed(frames), nets["fid"].embed(other)
    assert frechet_distance_from_features(f, f) == pytest.approx(0.0, abs=1e-6)
    assert frechet_distance_from_features(f, g) > 1e3 * max(frechet_distance_from_features(f, f), 1e-9)
    for key in ("fvd", "cdfvd", "dtfvd"):
        clips = videos[:, :4]
        a, b = nets[key].embed(clips), nets[key].embed(np.clip(clips.astype(int) // 3 + 40, 0, 255).astype(np.uint8))
        assert frechet_distance_from_features(a, a) == pytest.approx(0.0, abs=1e-6), key
        assert frechet_distance_from_features(a, b) > 0, key


def test_lpips_is_zero_for_identical_and_positive_symmetric_otherwise(nets, videos):
    a, b = videos[0], videos[1]
    np.testing.assert_allclose(nets["lpips"].distance(a, a.copy()), 0.0, atol=1e-7)
    d = nets["lpips"].distance(a, b)
    assert np.all(d > 0)
    np.testing.assert_allclose(d, nets["lpips"].distance(b, a), rtol=1e-5)


@pytest.mark.parametrize("fmt", ["pth", "safetensors"])
def test_weights_load_through_the_real_loaders(tmp_path, nets, videos, fmt):
    """Save a tiny network under the real file name, load it with the real loader."""
    def save(model, key):
        sd = {k: v.contiguous() for k, v in model.state_dict().items()}
        stem = WEIGHTS[key].filename.split(".")[0]
        if fmt == "pth":
            torch.save(sd, tmp_path / WEIGHTS[key].filename)
        else:
            save_file(sd, str(tmp_path / f"{stem}.safetensors"))

    save(nets["fid"], "inception-fid")
    save(nets["fvd"], "i3d-kinetics400")
    loaded = B.load_inception_fid(weights_dir=tmp_path, **TINY_BACKBONE_SIZES["fid"])
    np.testing.assert_allclose(loaded.embed(videos[0]), nets["fid"].embed(videos[0]), rtol=1e-5, atol=1e-7)
    i3d = B.load_fvd_i3d(weights_dir=tmp_path, **TINY_BACKBONE_SIZES["fvd"])
    np.testing.assert_allclose(i3d.embed(videos[:2, :4]), nets["fvd"].embed(videos[:2, :4]), rtol=1e-5, atol=1e-6)
    # LPIPS: trunk from a torchvision-style VGG16 file (with a classifier to ignore), heads apart.
    trunk = {k: v for k, v in nets["lpips"].state_dict().items() if k.startswith("features.")}
    trunk["classifier.0.weight"] = torch.zeros(2, 2)
    torch.save(trunk, tmp_path / WEIGHTS["vgg16"].filename)
    torch.save({k: v for k, v in nets["lpips"].state_dict().items() if k.startswith("lin")}, tmp_path / "heads.pth")
    lp = B.load_lpips(weights_dir=tmp_path, lin_path=tmp_path / "heads.pth", **TINY_BACKBONE_SIZES["lpips"])
    np.testing.assert_allclose(lp.distance(videos[0], videos[1]), nets["lpips"].distance(videos[0], videos[1]), rtol=1e-5)


def test_real_lpips_heads_bundled_with_torchmetrics_load():
    path = find_weights("lpips-vgg", weights_dir="/nonexistent")
    assert path is not None and path.name == "vgg.pth"
    heads = load_state_dict(path)
    assert sorted(heads) == [f"lin{i}.model.1.weight" for i in range(5)]
    assert all((v >= 0).all() for v in heads.values())  # LPIPS heads are non-negative


def test_missing_weights_name_file_place_and_source(tmp_path):
    with pytest.raises(MissingWeightsError) as err:
        resolve_weights("inception-fid", weights_dir=tmp_path)
    msg = str(err.value)
    assert "pt_inception-2015-12-05-6726825d.pth" in msg and str(tmp_path) in msg and "pytorch-fid" in msg and "--download-weights" in msg
    with pytest.raises(MissingWeightsError, match="by hand"):
        resolve_weights("i3d-dtdb", weights_dir=tmp_path)
    with pytest.raises(MissingWeightsError, match="not found"):
        resolve_weights("i3d-kinetics400", path=tmp_path / "nope.pt")


def test_mismatched_or_unsafe_checkpoints_are_refused(tmp_path, nets):
    sd = nets["fvd"].state_dict()
    del sd["Mixed_5c.b0.conv3d.weight"]
    torch.save(sd, tmp_path / "i3d_pretrained_400.pt")
    with pytest.raises(MissingWeightsError, match="missing keys.*Mixed_5c.b0.conv3d.weight"):
        B.load_fvd_i3d(weights_dir=tmp_path, **TINY_BACKBONE_SIZES["fvd"])
    # A checkpoint holding pickled objects is not unpickled.
    with open(tmp_path / "i3d_pretrained_400.pt", "wb") as f:
        pickle.dump({"args": argparse.Namespace(lr=1)}, f)
    with pytest.raises(MissingWeightsError, match="weights_only"):
        B.load_fvd_i3d(weights_dir=tmp_path, **TINY_BACKBONE_SIZES["fvd"])
