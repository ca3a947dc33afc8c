"""Which parameters each training stage trains (X-Dyna paper, Sec. 4.1).

- Stage 0 (tiny model only; no small pretrained Stable Diffusion exists offline): a VAE, then a
  2-D image-diffusion backbone, trained from scratch on synthetic frames; the backbone is then
  inflated to the X-Dyna UNet (``XDynaUNet.from_unet2d``) and the ControlNets are initialised
  from it (``ControlNetModel.from_unet``), exactly as the paper initialises them from SD1.5.
- Stage 1: the backbone is frozen; the Dynamics-Adapter (``to_q_ff``, ``to_out_ff``), the pose
  ControlNet and the motion modules are trained on Harmonic-Data-Fusion data. The tiny model
  also trains the IP-Adapter K/V and the image projection, because no pretrained IP-Adapter
  exists at that size (the full model keeps IP-Adapter-Plus frozen, as the official
  initialisation file ships it).
- Stage 2: everything above frozen; the S-Face ControlNet is trained on human clips only, with
  identity-swapped face patches.
"""

from __future__ import annotations

from typing import Dict, Iterable, List

import torch
from torch import nn


def freeze(*modules: nn.Module) -> None:
    for m in modules:
        if m is not None:
            m.requires_grad_(False)


def _unique(params: Iterable[torch.nn.Parameter]) -> List[torch.nn.Parameter]:
    seen, out = set(), []
    for p in params:
        if id(p) not in seen:
            seen.add(id(p))
            out.append(p)
    return out


def stage1_parameter_groups(unet, pose_controlnet, image_proj=None, train_ip_adapter: bool = False) -> Dict[str, list]:
    """Named groups of the parameters stage 1 trains."""
    groups = {
        "dynamics_adapter": list(unet.dynamics_adapter_parameters()),
        "motion_modules": list(unet.motion_module_parameters()),
        "pose_controlnet": list(pose_controlnet.parameters()),
    }
    if train_ip_adapter:
        groups["ip_adapter"] = list(unet.ip_adapter_parameters())
        if image_proj is not None:
            groups["image_proj"] = list(image_proj.parameters())
    return groups


def stage2_parameter_groups(face_controlnet) -> Dict[str, list]:
    return {"face_controlnet": list(face_controlnet.parameters())}


def set_trainable(all_modules: Iterable[nn.Module], groups: Dict[str, list]) -> List[torch.nn.Parameter]:
    """Freeze every parameter of ``all_modules``, then unfreeze those in ``groups``.

    Returns the trainable parameters (deduplicated, in a stable order)."""
    for m in all_modules:
        if m is not None:
            m.requires_grad_(False)
    params = _unique(p for g in groups.values() for p in g)
    if not params:
        raise ValueError("this stage has no trainable parameters")
    for p in params:
        p.requires_grad_(True)
    return params


def count_parameters(params: Iterable[torch.nn.Parameter]) -> int:
    return sum(p.numel() for p in _unique(params))
