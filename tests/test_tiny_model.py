"""The shipped tiny X-Dyna (assets/tiny-xdyna): loads offline, stays small, and beats the
untrained model and the repeat-the-reference baseline on held-out synthetic clips."""

import json
from pathlib import Path

import pytest
import torch

ASSET = Path(__file__).resolve().parents[1] / "assets" / "tiny-xdyna"


# The trained model is not shipped yet (issue 5 stays open): a CPU run of the recipe did not beat
# the repeat-the-reference baseline, and a model that fails these checks is not committed. Once
# `bash scripts/train_tiny.sh` has produced a model that passes, it lands with these checks on.
pytestmark = pytest.mark.skipif(
    not (ASSET / "model_index.json").is_file(),
    reason="assets/tiny-xdyna is not shipped yet; make it with `bash scripts/train_tiny.sh` (issue 5)",
)


@pytest.fixture(scope="module")
def pipe():
    from xdyna_core.pipeline import XDynaPipeline

    p = XDynaPipeline.from_pretrained(str(ASSET), torch_dtype=torch.float32)
    p.set_progress_bar_config(disable=True)
    return p


def test_folder_is_small_and_documented(pipe):
    size = sum(f.stat().st_size for f in ASSET.rglob("*") if f.is_file())
    assert size < 50e6, f"{size / 1e6:.1f} MB"
    card = (ASSET / "README.md").read_text()
    metrics = json.loads((ASSET / "metrics.json").read_text())["summary"]
    assert f"{metrics['trained']['psnr']:.2f}" in card  # the card shows the measured numbers
    assert (ASSET / "media" / "frame_strip.png").is_file() and (ASSET / "media" / "sample_0.mp4").is_file()
    assert pipe.controlnet_face is not None


def test_beats_untrained_model_and_repeated_reference_on_heldout_clips(pipe):
    from xdyna_core.train.evaluate import evaluate, heldout_clips

    s = pipe.unet.config.sample_size
    h, w = (s[0], s[1]) if isinstance(s, (list, tuple)) else (s, s)
    f = pipe.vae_scale_factor
    # clips 100.. : not the ones in the model card (0..7), same held-out split
    clips = heldout_clips(2, num_frames=16, height=h * f, width=w * f, first_seed=100)
    # generated with the app's settings for this model (presets/tiny-offline.yaml)
    res = evaluate(pipe, clips, log=lambda *_: None)["summary"]
    trained = res["trained"]
    for baseline in ("untrained", "repeat_reference"):
        assert trained["psnr"] > res[baseline]["psnr"], (baseline, res)
        assert trained["pose_iou"] > res[baseline]["pose_iou"], (baseline, res)
