"""Held-out evaluation of an X-Dyna model on synthetic clips (the tiny model's model card):
`evaluate_model_card`.

Protocol (self-reenactment, as the paper's TikTok evaluation): for held-out synthetic clips
(identities, dances and backgrounds never used in training, ``split="heldout"``), the model
animates a reference frame of the same performance taken at another time, driven by the clip's
ground-truth skeletons (and face patches); the output is compared with the clip's frames.

Metrics (higher is better for both):

- ``psnr``: PSNR in dB between generated and ground-truth uint8 frames, per frame
  (`xdyna_core.eval.metrics.psnr`), averaged over the frames.
- ``pose_iou`` (pose following): IoU between the generator's ground-truth person mask and a
  person mask *estimated from the generated frame*: pixels whose colour differs from the clip's
  true background at that time (the same scene rendered without the person) by more than
  ``MASK_THRESHOLD`` (max over RGB of the absolute difference, after a 5x5 box blur of both),
  cleaned with a 3x3 opening. A person drawn where the skeleton is, with the background kept,
  scores high; a person left in the reference pose, or a smeared background, scores low.

Baselines: ``repeat_reference`` (the reference image as every frame) and ``untrained`` (the same
model with its stage-1/2 modules back at their initial values, see `untrained_like`).
"""

from __future__ import annotations

import inspect
import time
from dataclasses import dataclass
from typing import Dict, List, Optional

import cv2
import numpy as np
import torch
from diffusers import UNet2DConditionModel

from xdyna_core import synthetic
from xdyna_core.models import XDynaUNet, make_controlnet
from xdyna_core.models.unet import parameter_group
from xdyna_core.presets import call_kwargs, load_preset

from .metrics import psnr

MASK_THRESHOLD = 40  # of 255


@dataclass
class EvalClip:
    seed: int
    reference: np.ndarray  # uint8 [H, W, 3]
    frames: np.ndarray  # uint8 [T, H, W, 3]
    pose: np.ndarray  # uint8 [T, H, W, 3]
    face: np.ndarray  # uint8 [T, H, W, 6]
    masks: np.ndarray  # bool [T, H, W]
    background: np.ndarray  # uint8 [T, H, W, 3] the scene without the person


def heldout_clips(num_clips: int, num_frames: int = 16, height: int = 256, width: int = 128, first_seed: int = 0,
                  fps: float = 8.0) -> List[EvalClip]:
    clips = []
    for s in range(first_seed, first_seed + num_clips):
        clip = synthetic.render_clip(s, num_frames=num_frames, height=height, width=width, fps=fps, split="heldout")
        ref = synthetic.render_reference(clip, seed=s, with_controls=False)
        bg = synthetic.render_frames(clip.times, height, width, clip.scene, None, None, fps=clip.fps,
                                     with_controls=False)
        clips.append(EvalClip(s, ref.frames[0], clip.frames, clip.pose_images, clip.face_images, clip.masks, bg.frames))
    return clips


def estimate_person_mask(frame: np.ndarray, background: np.ndarray, threshold: int = MASK_THRESHOLD) -> np.ndarray:
    """Pixels of ``frame`` that differ from ``background`` (both uint8 [H, W, 3]): see module doc."""

    a = cv2.blur(frame, (5, 5)).astype(np.int16)
    b = cv2.blur(background, (5, 5)).astype(np.int16)
    diff = np.abs(a - b).max(axis=2)
    mask = (diff > threshold).astype(np.uint8)
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    return mask.astype(bool)


def mask_iou(pred: np.ndarray, gt: np.ndarray) -> float:
    union = np.logical_or(pred, gt).sum()
    return 1.0 if union == 0 else float(np.logical_and(pred, gt).sum() / union)


def pose_following(frames: np.ndarray, clip: EvalClip) -> float:
    """Mean over frames of the IoU between the estimated and the true person mask."""
    return float(np.mean([mask_iou(estimate_person_mask(f, b), m)
                          for f, b, m in zip(frames, clip.background, clip.masks)]))


def score(frames: np.ndarray, clip: EvalClip) -> Dict[str, float]:
    """The card's metrics of one generated clip (uint8 [T, H, W, 3]), each averaged over frames."""
    return {"psnr": float(np.mean(psnr(frames, clip.frames))), "pose_iou": pose_following(frames, clip)}


def preset_kwargs(name: str = "tiny-offline") -> dict:
    """The pipeline arguments of a preset (what the app uses), without its size."""

    kw = call_kwargs(load_preset(name))
    kw.pop("height", None)
    kw.pop("width", None)
    return kw


def generate(pipe, clip: EvalClip, seed: int = 0, use_face: bool = True, **call_kwargs) -> np.ndarray:
    """The model's video for ``clip`` (uint8 [T, H, W, 3]) with pipeline arguments ``call_kwargs``."""
    h, w = clip.frames.shape[1:3]
    kw = dict(num_inference_steps=10, guidance_scale=2.5)
    kw.update(call_kwargs)
    out = pipe(clip.reference, clip.pose, clip.face if use_face else None, height=h, width=w,
               generator=torch.Generator().manual_seed(seed), output_type="uint8", **kw)
    return out.frames


def untrained_like(pipe, seed: int = 0):
    """A copy of ``pipe`` with every stage-1/2 module back at its initial value, as stage 0
    leaves them: Dynamics-Adapter ``to_q_ff`` = ``to_q`` and ``to_out_ff`` = 0, motion modules
    freshly initialised (zero output), IP-Adapter K/V = the text K/V, a fresh image projection,
    and both ControlNets re-initialised from the backbone (``ControlNetModel.from_unet``). The
    frozen parts (VAE, backbone, encoders) are shared with ``pipe``."""

    torch.manual_seed(seed)
    unet = pipe.unet
    cfg = dict(unet.config)
    blocks2d = {"CrossAttnDownBlock3D": "CrossAttnDownBlock2D", "DownBlock3D": "DownBlock2D",
                "CrossAttnUpBlock3D": "CrossAttnUpBlock2D", "UpBlock3D": "UpBlock2D"}
    accepted = set(inspect.signature(UNet2DConditionModel.__init__).parameters)
    cfg2d = {k: v for k, v in cfg.items() if k in accepted}
    cfg2d["down_block_types"] = [blocks2d.get(b, b) for b in cfg["down_block_types"]]
    cfg2d["up_block_types"] = [blocks2d.get(b, b) for b in cfg["up_block_types"]]
    unet2d = UNet2DConditionModel.from_config(cfg2d)
    backbone = {k: v for k, v in unet.state_dict().items() if parameter_group(k) == "backbone" and "pos_encoder" not in k}
    missing, unexpected = unet2d.load_state_dict(backbone, strict=False)
    if missing:
        raise RuntimeError(f"backbone does not match a 2-D UNet: missing {missing[:5]}")
    xd_opts = {k: v for k, v in cfg.items() if k.startswith(("motion_module", "num_ip_tokens", "num_text_tokens", "use_motion"))}
    new_unet = XDynaUNet.from_unet2d(unet2d, **xd_opts).eval()
    cond = tuple(pipe.controlnet.config.conditioning_embedding_out_channels)
    comps = dict(pipe.components)
    comps["unet"] = new_unet
    comps["controlnet"] = make_controlnet(unet2d, 3, conditioning_embedding_out_channels=cond).eval()
    if pipe.controlnet_face is not None:
        comps["controlnet_face"] = make_controlnet(unet2d, 6, conditioning_embedding_out_channels=cond).eval()
    proj = pipe.image_proj
    comps["image_proj"] = type(proj).from_config(proj.config).eval()
    return type(pipe)(**comps)


def evaluate_model_card(pipe, clips: List[EvalClip], call_kwargs: Optional[dict] = None, with_untrained: bool = True,
             keep_frames: bool = False, log=print) -> dict:
    """Scores of the model, the untrained model and the repeat-the-reference baseline, all
    generated with ``call_kwargs`` (default: the ``tiny-offline`` preset's settings)."""
    call_kwargs = preset_kwargs() if call_kwargs is None else dict(call_kwargs)
    models = {"trained": pipe}
    if with_untrained:
        models["untrained"] = untrained_like(pipe)
    results: Dict[str, list] = {name: [] for name in list(models) + ["repeat_reference"]}
    frames_out: Dict[str, list] = {name: [] for name in results}
    timings = []
    for clip in clips:
        for name, model in models.items():
            t0 = time.time()
            frames = generate(model, clip, **call_kwargs)
            if name == "trained":
                timings.append(time.time() - t0)
            results[name].append(score(frames, clip))
            if keep_frames:
                frames_out[name].append(frames)
        rep = np.repeat(clip.reference[None], len(clip.frames), axis=0)
        results["repeat_reference"].append(score(rep, clip))
        if keep_frames:
            frames_out["repeat_reference"].append(rep)
        log(f"clip {clip.seed}: " + ", ".join(f"{k} psnr {v[-1]['psnr']:.2f} iou {v[-1]['pose_iou']:.3f}"
                                             for k, v in results.items()))
    summary = {name: {m: float(np.mean([r[m] for r in rs])) for m in ("psnr", "pose_iou")}
               for name, rs in results.items()}
    out = {"summary": summary, "per_clip": results, "num_clips": len(clips),
           "num_frames": int(len(clips[0].frames)) if clips else 0,
           "call_kwargs": call_kwargs,
           "seconds_per_clip_trained": float(np.mean(timings)) if timings else None}
    if keep_frames:
        out["frames"] = frames_out
    return out
