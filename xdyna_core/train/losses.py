"""Training objectives as plain functions (one place each, shared by trainer and tests).

All diffusion losses are the DDPM noise-prediction MSE (Ho et al. 2020, Eq. 14; "simple"
loss) on VAE latents, with the forward process of the pipeline's own scheduler config (the
official X-Dyna inference uses linear betas 0.00085..0.012 over 1000 steps, so training uses
the same betas; Sec. 3.1 of the X-Dyna paper: latent diffusion with DDPM training).
"""

from __future__ import annotations

import zlib
from typing import Iterable, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler

from xdyna_core.pipeline import control_range, normalize_control


class ItemNoise:
    """The randomness of one micro-batch, drawn item by item: item ``i`` has its own generator
    seeded from ``(seed, phase, key_i)``, where ``key_i`` is the item's position in the run's
    item stream (``data.StepSampler``). An item therefore gets the same timestep, Gaussian noise,
    VAE posterior sample and image-dropout draw whichever process reads it and whatever else is
    in its micro-batch: 1 process x batch 4, 2 processes x 2 and 4 micro-batches of 1 train on
    the same noise. Every draw returns ``[B, *shape]`` (item ``i`` from generator ``i``)."""

    def __init__(self, seed: int, keys: Iterable[int], phase: str = "", device="cpu"):
        tag = zlib.crc32(phase.encode())
        self.keys = [int(k) for k in keys]
        self.generators = []
        for k in self.keys:
            s = int(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, tag, k, 0x7EA]).generate_state(1)[0])
            self.generators.append(torch.Generator(device=device).manual_seed(s))

    def __len__(self) -> int:
        return len(self.generators)

    def randn(self, shape: Sequence[int], device=None, dtype=torch.float32) -> torch.Tensor:
        out = torch.stack([torch.randn(tuple(shape), generator=g, device=g.device, dtype=torch.float32)
                           for g in self.generators])
        return out.to(device=device, dtype=dtype)

    def rand(self, device=None) -> torch.Tensor:
        """One uniform [0, 1) number per item: [B]."""
        return torch.cat([torch.rand((1,), generator=g, device=g.device) for g in self.generators]).to(device)

    def randint(self, high: int, device=None) -> torch.Tensor:
        """One integer in [0, high) per item: [B] int64."""
        return torch.cat([torch.randint(0, high, (1,), generator=g, device=g.device)
                          for g in self.generators]).to(device)


def encode_latents(vae, images: torch.Tensor, noise: ItemNoise, chunk_size: int = 64) -> torch.Tensor:
    """VAE posterior samples x scaling factor, as ``XDynaPipeline.encode_latents`` computes them
    (mean + std * eps, float32), with eps drawn per item: images [B, N, 3, H, W] (N images of
    each item, e.g. the frames of a clip) -> latents [B, N, 4, h, w]."""
    b, n = images.shape[:2]
    flat = images.flatten(0, 1)
    means, stds = [], []
    for s in range(0, flat.shape[0], chunk_size):
        dist = vae.encode(flat[s:s + chunk_size].to(vae.dtype)).latent_dist
        means.append(dist.mean)
        stds.append(dist.std)
    mean, std = torch.cat(means), torch.cat(stds)
    eps = noise.randn((n, *mean.shape[1:]), device=mean.device, dtype=mean.dtype).flatten(0, 1)
    z = (mean + std * eps).float() * vae.config.scaling_factor
    return z.view(b, n, *z.shape[1:])


def _dtype(module) -> torch.dtype:
    """Parameter dtype of a model, also through DDP / accelerate wrappers."""
    return next(module.parameters()).dtype


def ddpm_scheduler_from(scheduler_config: dict):
    """A ``DDPMScheduler`` (training form) with the betas of the pipeline's scheduler."""

    keep = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "trained_betas", "prediction_type",
            "steps_offset", "clip_sample", "timestep_spacing")
    cfg = {k: v for k, v in dict(scheduler_config).items() if k in keep}
    return DDPMScheduler(**cfg)


def add_noise(alphas_cumprod: torch.Tensor, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Forward process q(x_t | x_0) = N(sqrt(a_t) x_0, (1 - a_t) I) (DDPM Eq. 4), per sample."""
    a = alphas_cumprod.to(device=x0.device, dtype=torch.float32)[t]
    shape = (-1,) + (1,) * (x0.ndim - 1)
    return (a.sqrt().view(shape) * x0.float() + (1 - a).sqrt().view(shape) * noise.float()).to(x0.dtype)


def vae_loss(vae, images: torch.Tensor, kl_weight: float, noise: ItemNoise):
    """VAE objective for stage 0: L1 + MSE reconstruction, an L1 on image gradients (keeps
    edges sharp without a perceptual network), and a small KL to N(0, I) (Kingma & Welling
    2014; SD's autoencoder uses a KL weight of 1e-6). Returns (loss, parts dict)."""
    posterior = vae.encode(images).latent_dist
    eps = noise.randn(posterior.mean.shape[1:], device=posterior.mean.device, dtype=posterior.mean.dtype)
    z = posterior.mean + posterior.std * eps
    rec = vae.decode(z).sample.float()
    x = images.float()
    l1 = (rec - x).abs().mean()
    mse = F.mse_loss(rec, x)

    def grads(a):
        return a[..., 1:, :] - a[..., :-1, :], a[..., :, 1:] - a[..., :, :-1]

    (ry, rx), (xy, xx) = grads(rec), grads(x)
    grad = (ry - xy).abs().mean() + (rx - xx).abs().mean()
    kl = posterior.kl().mean() / float(np.prod(z.shape[1:]))
    loss = l1 + mse + 0.5 * grad + kl_weight * kl
    return loss, {"l1": l1.detach(), "mse": mse.detach(), "kl": kl.detach()}


def image_diffusion_loss(unet2d, latents: torch.Tensor, text: torch.Tensor, alphas_cumprod: torch.Tensor,
                         item_noise: ItemNoise):
    """Stage 0 backbone: eps-prediction MSE of a 2-D UNet on image latents [B, 4, h, w]."""
    b = latents.shape[0]
    noise = item_noise.randn(latents.shape[1:], device=latents.device)
    t = item_noise.randint(len(alphas_cumprod), device=latents.device)
    noisy = add_noise(alphas_cumprod, latents, noise, t)
    pred = unet2d(noisy.to(_dtype(unet2d)), t, encoder_hidden_states=text.expand(b, -1, -1).to(_dtype(unet2d))).sample
    return F.mse_loss(pred.float(), noise)


def normalize_controls(pose_u8: torch.Tensor, face_u8: Optional[torch.Tensor] = None):
    """Per clip, exactly as the pipeline: x/255*2-1 then min-max over the clip (official
    docs/official-behaviour.md §18, ``pipeline.control_range`` / ``pipeline.normalize_control``); the face's
    local and global streams are normalised separately.

    pose_u8 [B, F, H, W, 3], face_u8 [B, F, H, W, 6] (uint8) -> float [B*F, 3 | 6, H, W]."""
    poses, faces = [], []
    for b in range(pose_u8.shape[0]):
        p = pose_u8[b]
        poses.append(normalize_control(p, *control_range(p.cpu().numpy())))
        if face_u8 is not None:
            f = face_u8[b]
            loc, glo = f[..., :3], f[..., 3:]
            faces.append(torch.cat([normalize_control(loc, *control_range(loc.cpu().numpy())),
                                    normalize_control(glo, *control_range(glo.cpu().numpy()))], dim=1))
    return torch.cat(poses), (torch.cat(faces) if faces else None)


def controlnet_residuals(controlnet, noisy_frames: torch.Tensor, t: torch.Tensor, text: torch.Tensor,
                         cond: torch.Tensor, num_frames: int, scale: float = 1.0):
    """A ControlNet on the noisy frames, folded ``(b f)`` (docs/official-behaviour.md §17): text-only
    context, same timestep for every frame of a sample. Returns 5-D residuals
    [B, C, F, h', w'] (the UNet gives frame 0, the reference, a zero residual)."""
    bf = noisy_frames.shape[0]
    b = bf // num_frames
    dtype = _dtype(controlnet)
    down, mid = controlnet(
        noisy_frames.to(dtype),
        t.repeat_interleave(num_frames),
        encoder_hidden_states=text.repeat_interleave(num_frames, dim=0).to(dtype),
        controlnet_cond=cond.to(dtype),
        conditioning_scale=scale,
        return_dict=False,
    )

    def to5d(r):
        return r.reshape(b, num_frames, *r.shape[1:]).permute(0, 2, 1, 3, 4)

    return [to5d(d) for d in down], to5d(mid)


def predict_noise(unet, ref_latents: torch.Tensor, noisy: torch.Tensor, t: torch.Tensor, context: torch.Tensor,
                  controlnets: Sequence, text: torch.Tensor) -> torch.Tensor:
    """The X-Dyna UNet's noise prediction for the noisy frames, in the pipeline's layout.

    ref_latents [B, 4, h, w] (clean reference: frame 0, same timestep as the clip, official
    docs/official-behaviour.md §7), noisy [B, 4, F, h, w], t [B], context [B, 77 + 16, D] (text + IP tokens),
    controlnets: list of (controlnet, cond [B*F, C, H, W]) whose residuals are summed (§19),
    text [B, 77, D] (ControlNets see text only, §17). Returns eps [B, 4, F, h, w]: frame 0's
    prediction is dropped, as the pipeline drops it (§16)."""
    b, c, f, h, w = noisy.shape
    folded = noisy.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w)
    down = mid = None
    for controlnet, cond in controlnets:
        d, m = controlnet_residuals(controlnet, folded, t, text, cond, f)
        if down is None:
            down, mid = d, m
        else:
            down, mid = [x + y for x, y in zip(down, d)], mid + m
    sample = torch.cat([ref_latents[:, :, None].to(noisy.dtype), noisy], dim=2)
    kwargs = {}
    if down is not None:
        kwargs = dict(down_block_additional_residuals=[d.to(_dtype(unet)) for d in down],
                      mid_block_additional_residual=mid.to(_dtype(unet)))
    pred = unet(sample.to(_dtype(unet)), t, encoder_hidden_states=context.to(_dtype(unet)), **kwargs).sample
    return pred[:, :, 1:]


def video_diffusion_loss(unet, ref_latents: torch.Tensor, latents: torch.Tensor, context: torch.Tensor,
                         alphas_cumprod: torch.Tensor, controlnets: Sequence, text: torch.Tensor,
                         item_noise: ItemNoise):
    """Stages 1-2: eps-prediction MSE of the X-Dyna UNet on a clip (latents [B, 4, F, h, w] of
    the ground-truth frames), noised at one timestep per clip; see `predict_noise`."""
    noise = item_noise.randn(latents.shape[1:], device=latents.device)
    t = item_noise.randint(len(alphas_cumprod), device=latents.device)
    noisy = add_noise(alphas_cumprod, latents, noise, t)
    pred = predict_noise(unet, ref_latents, noisy, t, context, controlnets, text)
    return F.mse_loss(pred.float(), noise)
