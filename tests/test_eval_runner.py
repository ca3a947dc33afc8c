"""xdyna_core.eval.runner end to end on small folders, with tiny random backbones."""

import json
import math
import shutil

import numpy as np
import pytest
import skimage.data
from PIL import Image

from xdyna_core.errors import InputError, MissingWeightsError
from xdyna_core.eval.faces import FaceDetector, OnnxFaceEmbedder, align_face
from xdyna_core.eval.report import render_report
from xdyna_core.eval.runner import EvalConfig, EvalResult, evaluate
from xdyna_core.testing import tiny_backbones, tiny_face_onnx
from xdyna_core.io import write_video

ALL = ("l1", "psnr", "ssim", "lpips", "fid", "fvd", "cdfvd", "dtfvd", "face-cos", "face-det")


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


@pytest.fixture(scope="module")
def nets(tmp_path_factory, one_thread):
    onnx_path = tiny_face_onnx(tmp_path_factory.mktemp("face") / "face.onnx")
    return {**tiny_backbones(seed=0), "face-embedder": OnnxFaceEmbedder(onnx_path), "face-detector": FaceDetector()}


def person_clip(n=8, size=96, shift=2):
    """A real face (scikit-image's astronaut photo) panning sideways."""
    img = np.asarray(Image.fromarray(skimage.data.astronaut()).resize((size, size), Image.BILINEAR))
    return np.stack([np.roll(img, shift * t, axis=1) for t in range(n)])


def write_frames(folder, frames):
    folder.mkdir(parents=True)
    for i, f in enumerate(frames):
        Image.fromarray(f).save(folder / f"{i + 1:04d}.png")


def test_identical_folders_give_the_closed_form_values(tmp_path, nets):
    gen, ref = tmp_path / "gen", tmp_path / "ref"
    ref.mkdir()
    write_video(ref / "a.mp4", person_clip(8), 8)
    write_video(ref / "b.mp4", person_clip(8, shift=-3), 8)
    shutil.copytree(ref, gen)
    res = evaluate(gen, ref, EvalConfig(metrics=ALL), backbones=nets, progress=False)
    agg = res.aggregate["full"]
    assert agg["l1"] == 0.0 and agg["ssim"] == pytest.approx(1.0) and agg["psnr"] == math.inf
    assert agg["lpips"] == pytest.approx(0.0, abs=1e-6)
    for m in ("fid", "fvd", "cdfvd", "dtfvd"):  # a set against itself
        assert agg[m] == pytest.approx(0.0, abs=1e-6), m
    assert agg["face-det"] == 100.0 and agg["face-cos"] == pytest.approx(1.0, abs=1e-6)
    assert res.counts["psnr_identical_frames"]["full"] == 16 and res.counts["fvd_samples"]["full"] == 4
    assert not res.unavailable
    d = json.loads(json.dumps(res.to_dict()))
    assert d["aggregate"]["full"]["psnr"] == "inf" and d["videos"][0]["per_frame"]["full"]["psnr"][0] == "inf"
    assert "psnr_infinite" in d["rules"] and d["metric_info"]["psnr"]["direction"] == "higher"
    back = EvalResult.load_json(res.save_json(tmp_path / "m.json"))
    assert back.value("psnr") == math.inf
    html = render_report(res, tmp_path / "r.html").read_text()
    assert "∞" in html and "data:image/png;base64" in html and "Foreground" in html


def test_lengths_sizes_and_noise(tmp_path, nets, rng):
    ref_frames = person_clip(10)
    noisy = np.clip(ref_frames + rng.normal(0, 8, ref_frames.shape), 0, 255).astype(np.uint8)
    big = np.stack([np.asarray(Image.fromarray(f).resize((128, 128), Image.BICUBIC)) for f in noisy[:9]])
    write_frames(tmp_path / "ref" / "clip", ref_frames)
    write_frames(tmp_path / "gen" / "clip", big)
    write_frames(tmp_path / "ref" / "clip2", ref_frames[::-1])
    write_frames(tmp_path / "gen" / "clip2", noisy[::-1])
    res = evaluate(tmp_path / "gen", tmp_path / "ref", EvalConfig(metrics=("psnr", "ssim", "l1", "fid", "fvd")), backbones=nets, progress=False)
    v = {x["name"]: x for x in res.videos}
    assert v["clip"]["frames"] == 9 and v["clip"]["generated_frames"] == 9 and v["clip"]["reference_frames"] == 10
    assert v["clip"]["size"] == [96, 96] and v["clip"]["generated_size"] == [128, 128]
    notes = " ".join(v["clip"]["notes"])
    assert "truncated to 9" in notes and "resized to the reference 96x96" in notes
    p = v["clip2"]["metrics"]["full"]["psnr"]  # noise of sigma 8: about 30 dB (less where clipped)
    assert 28 < p < 31.5
    assert 0 < res.value("ssim") < 1 and res.value("fid") > 0 and res.value("fvd") > 0
    # eval_size resizes both.
    res2 = evaluate(tmp_path / "gen", tmp_path / "ref", EvalConfig(metrics=("psnr",), eval_size=(64, 48)), progress=False)
    assert res2.videos[0]["size"] == [64, 48]


def test_foreground_background_with_given_masks(tmp_path, nets):
    ref = person_clip(6)
    gen = ref.copy()
    gen[:, :, 48:] = 255 - gen[:, :, 48:]  # only the right half differs
    mask = np.zeros_like(ref)
    mask[:, :, :48] = 255  # "person" = left half
    write_frames(tmp_path / "ref" / "x", ref)
    write_frames(tmp_path / "gen" / "x", gen)
    write_frames(tmp_path / "masks" / "x", mask)
    res = evaluate(tmp_path / "gen", tmp_path / "ref", EvalConfig(metrics=("l1", "psnr", "ssim", "lpips"), regions=("fg", "bg"), mask_dir=tmp_path / "masks"), backbones=nets, progress=False)
    fg, bg = res.aggregate["fg"], res.aggregate["bg"]
    assert fg["l1"] == 0.0 and fg["psnr"] == math.inf and fg["lpips"] == pytest.approx(0.0, abs=1e-6)
    assert bg["l1"] > 0.1 and bg["psnr"] < 20
    assert res.videos[0]["foreground_share"] == pytest.approx(0.5)


def test_mediapipe_person_masks_when_none_given(tmp_path):
    write_frames(tmp_path / "ref" / "p", person_clip(3, size=128))
    write_frames(tmp_path / "gen" / "p", person_clip(3, size=128))
    res = evaluate(tmp_path / "gen", tmp_path / "ref", EvalConfig(metrics=("l1",), regions=("fg", "bg")), progress=False)
    v = res.videos[0]
    assert "mediapipe" in v["mask_source"] and 0.1 < v["foreground_share"] < 0.9
    assert res.config["mask_model"].startswith("mediapipe")


def test_faces_on_a_real_photo(nets):
    frames = person_clip(2, size=256)
    faces = nets["face-detector"].detect(frames[0])
    assert len(faces) == 1 and faces[0].score > 0.5
    crop = align_face(frames[0], faces[0])
    assert crop.shape == (112, 112, 3) and crop.mean() > 40
    assert nets["face-detector"].detect(np.zeros((128, 128, 3), np.uint8)) == []
    emb = nets["face-embedder"].embed(np.stack([crop, crop[:, ::-1]]))
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-6)


def test_no_face_reports_zero_and_face_cos_unavailable(tmp_path, nets):
    write_frames(tmp_path / "ref" / "blank", np.full((4, 64, 64, 3), 90, np.uint8))
    write_frames(tmp_path / "gen" / "blank", np.full((4, 64, 64, 3), 80, np.uint8))
    res = evaluate(tmp_path / "gen", tmp_path / "ref", EvalConfig(metrics=("face-det", "face-cos")), backbones=nets, progress=False)
    assert res.value("face-det") == 0.0 and res.value("face-cos") is None
    assert "face" in res.unavailable["face-cos"]


def test_missing_weights_are_reported_or_fatal_with_strict(tmp_path):
    write_frames(tmp_path / "ref" / "v", person_clip(3, size=64))
    write_frames(tmp_path / "gen" / "v", person_clip(3, size=64))
    cfg = dict(metrics=("psnr", "fid", "dtfvd"), weights_dir=str(tmp_path / "empty"))
    res = evaluate(tmp_path / "gen", tmp_path / "ref", EvalConfig(**cfg), progress=False)
    assert res.value("psnr") == math.inf and res.value("fid") is None
    assert "pt_inception-2015-12-05-6726825d.pth" in res.unavailable["fid"] and "I3D_16.pth.tar" in res.unavailable["dtfvd"]
    with pytest.raises(MissingWeightsError, match="pt_inception"):
        evaluate(tmp_path / "gen", tmp_path / "ref", EvalConfig(**cfg, strict=True), progress=False)


def test_bad_inputs_have_clear_messages(tmp_path):
    (tmp_path / "empty").mkdir()
    write_frames(tmp_path / "ref" / "a", person_clip(2, size=64))
    with pytest.raises(InputError, match="has no videos"):
        evaluate(tmp_path / "empty", tmp_path / "ref", progress=False)
    with pytest.raises(InputError, match="does not exist"):
        evaluate(tmp_path / "nope", tmp_path / "ref", progress=False)
    write_frames(tmp_path / "gen" / "b", person_clip(2, size=64))
    with pytest.raises(InputError, match=r"no generated video has a reference.*'b'.*'a'"):
        evaluate(tmp_path / "gen", tmp_path / "ref", EvalConfig(metrics=("psnr",)), progress=False)
    write_frames(tmp_path / "gen" / "a", person_clip(2, size=64))
    with pytest.raises(InputError, match=r"1 generated video\(s\) have no reference.*'b'.*--allow-unmatched"):
        evaluate(tmp_path / "gen", tmp_path / "ref", EvalConfig(metrics=("psnr",)), progress=False)
    res = evaluate(tmp_path / "gen", tmp_path / "ref", EvalConfig(metrics=("psnr",), allow_unmatched=True), progress=False)
    assert res.counts["videos"] == 1 and "skipped" in res.notes[0]
    (tmp_path / "gen" / "c.mp4").write_bytes(b"this is not a video")
    (tmp_path / "ref" / "c.mp4").write_bytes(b"neither is this")
    with pytest.raises(InputError, match="generated video c.mp4 could not be read"):
        evaluate(tmp_path / "gen", tmp_path / "ref", EvalConfig(metrics=("psnr",), allow_unmatched=True), progress=False)
    with pytest.raises(InputError, match="unknown metric.*'bleu'"):
        evaluate(tmp_path / "gen", tmp_path / "ref", EvalConfig(metrics=("psnr", "bleu")), progress=False)
    (tmp_path / "gen" / "a.mp4").write_bytes(b"x")
    with pytest.raises(InputError, match="two videos named 'a'"):
        evaluate(tmp_path / "gen", tmp_path / "ref", progress=False)


def test_a_broken_face_model_is_a_clear_weights_error(tmp_path):
    bad = tmp_path / "w600k_r50.onnx"
    bad.write_bytes(b"not onnx")
    with pytest.raises(MissingWeightsError, match="not a usable ONNX"):
        OnnxFaceEmbedder(bad)
    write_frames(tmp_path / "ref" / "v", person_clip(2, size=64))
    write_frames(tmp_path / "gen" / "v", person_clip(2, size=64))
    res = evaluate(tmp_path / "gen", tmp_path / "ref", EvalConfig(metrics=("face-cos",), weights_dir=str(tmp_path)), progress=False)
    assert "not a usable ONNX" in res.unavailable["face-cos"]


def test_paper_scale_l1_through_the_runner(tmp_path):
    ref = np.full((3, 32, 48, 3), 100, np.uint8)
    write_frames(tmp_path / "ref" / "v", ref)
    write_frames(tmp_path / "gen" / "v", ref + 10)
    res = evaluate(tmp_path / "gen", tmp_path / "ref", EvalConfig(metrics=("l1", "l1-disco")), progress=False)
    assert res.value("l1") == pytest.approx(10 / 255) and res.value("l1-disco") == pytest.approx(10 / (32 * 48))
    assert "L1 (paper scale)" in render_report(res, tmp_path / "r.html").read_text()
