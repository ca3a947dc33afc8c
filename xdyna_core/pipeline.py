"""XDynaPipeline: animate one reference photo with pose (and optional S-Face)
images, as a diffusers `DiffusionPipeline`.

By default every numeric step follows the official X-Dyna inference
(`docs/official-behaviour.md`, cited below as §n; each rule there names the official file and function): text and
IP-Adapter-Plus tokens (§21-23), reference latent = seeded VAE posterior sample
(§24), reference-mixed latent initialisation (§26), DDIM with the official
linear betas (§25), frame 0 = clean reference latent that is never updated
(§27), ControlNets on the noisy frames with text-only embeddings (§17-19),
CFG whenever guidance_scale >= 1 (§30), decode (§31).

Deliberate differences, all documented:
- Every random draw comes from `generator` (the official initial noise and
  window offsets are unseeded, §41): same seed + inputs = same video.
- `window_schedule="blend"` (default) uses non-looping windows with smooth
  weights; `"official"` reproduces the closed-loop schedule of §28/§29.
- A constant control stream (e.g. no face found in any frame) would give 0/0 =
  NaN in the official min-max normalisation (§42); we map it to all zeros (the
  value a black pixel gets in any normal clip) instead.
- Guidance-free runs (guidance_scale < 1) work (the official code crashes).
"""

from __future__ import annotations

import inspect
import math
from contextlib import nullcontext
from dataclasses import dataclass, replace
from typing import Any, Callable, Optional, Sequence

import cv2
import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, DDIMScheduler, DPMSolverMultistepScheduler, DiffusionPipeline
from diffusers.utils import BaseOutput, logging
from diffusers.utils.torch_utils import randn_tensor
from torch import _dynamo

# Importing our model classes registers them, so `from_pretrained` can resolve the
# `["xdyna_core.models.unet", "XDynaUNet"]` entries of model_index.json (diffusers
# only loads custom classes from modules that are already imported).
import xdyna_core.models  # noqa: F401
from xdyna_core.models.loading import OFFICIAL_SCHEDULER_CONFIG, load_official_components, official_scheduler  # noqa: F401  (DDIM, §25)
from xdyna_core.distributed import World, describe_share, share
from xdyna_core.errors import Cancelled, InputError
from xdyna_core.models.controlnet import controlnet_shallow_residuals
from xdyna_core.speed import SAMPLERS, DeepCacheState, SpeedOptions  # noqa: F401  (SAMPLERS: re-exported)
from xdyna_core.windows import blend_windows, official_windows, window_weights

logger = logging.get_logger(__name__)

WINDOW_SCHEDULES = ("blend", "official")
OUTPUT_TYPES = ("np", "pt", "pil", "uint8", "latent")

@dataclass
class XDynaPipelineOutput(BaseOutput):
    """`frames`: the generated video, one entry per driving frame: float32
    [T, H, W, 3] in [0, 1] ("np"), float32 tensor [T, 3, H, W] ("pt"),
    list of PIL images ("pil"), uint8 [T, H, W, 3] ("uint8"), or the final
    latents [1, 4, T, h, w] ("latent")."""

    frames: Any


@dataclass
class ProgressInfo:
    """What the `progress` callable receives.

    stage "denoise": called after every window; `step` is the 0-based index of
    the denoising step, `total_steps` their number, `window` how many windows of
    this step are done (1..num_windows). stage "decode": called after every VAE
    chunk; `step` chunks done, `total_steps` chunks in all, window fields 0.
    `fraction` is the overall share of denoising (or decoding) done."""

    stage: str
    step: int
    total_steps: int
    window: int
    num_windows: int

    @property
    def fraction(self) -> float:
        if self.stage == "decode":
            return 1.0 if self.total_steps == 0 else self.step / self.total_steps
        return (self.step * self.num_windows + self.window) / max(1, self.total_steps * self.num_windows)


@dataclass
class Conditioning:
    """What the noise predictor reads besides latents and timestep; fixed during sampling
    (built by `XDynaPipeline.encode_conditioning`)."""

    unet_context: torch.Tensor  # [halves, 77 + 16, D]: text + IP tokens; [uncond, cond] with CFG
    control_text: torch.Tensor  # [R, 77, D]: ControlNet text (R = 1 when both CFG halves see the same, §17)
    pose: np.ndarray  # uint8 [T, H, W, 3]
    pose_range: tuple  # clip-wide (min, max) after x/255*2-1 (§18)
    pose_scale: float  # 0 = pose ControlNet off
    face: Optional[np.ndarray]  # uint8 [T, H, W, 6] or None
    face_ranges: Optional[tuple]  # (local, global) ranges
    face_scale: float

    @property
    def halves(self) -> int:
        """UNet batch per window: 2 with CFG ([uncond, cond]), else 1."""
        return self.unet_context.shape[0]

    def conditional(self) -> "Conditioning":
        """The conditional half only (steps without CFG)."""
        return replace(self, unet_context=self.unet_context[-1:], control_text=self.control_text[-1:])


# ---------------------------------------------------------------------------
# plain functions (official numerics)
# ---------------------------------------------------------------------------


def gaussian_blur(x: torch.Tensor, kernel_size: int = 9, sigma: float = 18.0) -> torch.Tensor:
    """Per-channel Gaussian blur of [N, C, H, W] with reflect padding, the same
    arithmetic as torchvision's `GaussianBlur` used by the official
    `downgrade_input` (§26). Latents smaller than the kernel cannot be
    reflect-padded; they use replicate padding (the official code would fail)."""
    half = (kernel_size - 1) * 0.5
    grid = torch.linspace(-half, half, steps=kernel_size)
    pdf = torch.exp(-0.5 * (grid / sigma).pow(2))
    k1 = (pdf / pdf.sum()).to(device=x.device, dtype=x.dtype)
    kernel = torch.mm(k1[:, None], k1[None, :]).expand(x.shape[1], 1, kernel_size, kernel_size)
    pad = kernel_size // 2
    mode = "reflect" if min(x.shape[-2:]) > pad else "replicate"
    return F.conv2d(F.pad(x, [pad, pad, pad, pad], mode=mode), kernel, groups=x.shape[1])


def _step_kwargs(scheduler, eta: float, generator) -> dict:
    """`eta` and `generator` for schedulers whose `step` takes them (DDIM), nothing for
    the others (DPM-Solver++), as diffusers pipelines do."""

    params = set(inspect.signature(scheduler.step).parameters)
    kwargs = {}
    if "eta" in params:
        kwargs["eta"] = eta
    if "generator" in params:
        kwargs["generator"] = generator
    return kwargs


def default_dtype(device) -> torch.dtype:
    """The dtype to run the models in on `device`: bfloat16 on CUDA GPUs that support
    it (as fast as float16, no overflow; within PSNR 35 dB of float32, see the README
    "Speed and memory"), float16 on older GPUs, float32 on CPU."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def _rand(shape, generator: Optional[torch.Generator], device: torch.device) -> torch.Tensor:
    """torch.rand drawn on the generator's device (so a CPU generator gives the
    same numbers whatever device the pipeline runs on), then moved."""
    gen_device = generator.device if generator is not None else device
    return torch.rand(shape, generator=generator, device=gen_device).to(device)


def reference_mixed_latents(
    ref_latent: torch.Tensor,
    num_frames: int,
    generator: Optional[torch.Generator],
    kernel_size: int = 9,
    sigma: float = 18.0,
) -> torch.Tensor:
    """Official latent initialisation before noising (§26, `downgrade_input`):
    repeat the reference latent [B, C, h, w] over 1 + num_frames frames, draw a
    per-element mask `rand >= 0.5` (one draw over the whole [B, C, 1+T, h, w]
    tensor, same order as the official), and mix latent·mask + blur(latent)·(1−mask);
    frame 0 keeps the clean reference. Returns [B, C, 1+T, h, w]."""
    b, c, h, w = ref_latent.shape
    frames = 1 + num_frames
    repeated = ref_latent[:, :, None].expand(b, c, frames, h, w).contiguous()
    mask = (_rand(repeated.shape, generator, ref_latent.device) >= 0.5).to(ref_latent.dtype)
    folded = repeated.permute(0, 2, 1, 3, 4).reshape(b * frames, c, h, w)
    blurred = gaussian_blur(folded, kernel_size, sigma).reshape(b, frames, c, h, w).permute(0, 2, 1, 3, 4)
    mixed = repeated * mask + blurred * (1 - mask)
    mixed[:, :, 0] = ref_latent
    return mixed


def control_range(frames_u8: np.ndarray) -> tuple:
    """Global (min, max) of a control stream after the official preprocessing
    x/255·2−1 (§18), computed from the uint8 extremes with the same float32
    operations the element-wise path uses, so per-window normalisation with
    these numbers equals normalising the whole clip at once."""
    lo = torch.tensor(float(frames_u8.min()), dtype=torch.float32) / 255.0 * 2 - 1
    hi = torch.tensor(float(frames_u8.max()), dtype=torch.float32) / 255.0 * 2 - 1
    return lo, hi


def normalize_control(frames_u8: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """uint8 [n, H, W, C] -> float32 [n, C, H, W]: x/255·2−1, then min-max over
    the whole clip with its (lo, hi) (§18). A constant stream (hi == lo, e.g. no
    face found anywhere) gives zeros instead of the official NaN (§42)."""
    x = frames_u8.permute(0, 3, 1, 2).to(torch.float32) / 255.0 * 2 - 1
    lo, hi = lo.to(x.device), hi.to(x.device)
    if bool(hi == lo):
        return torch.zeros_like(x)
    return (x - lo) / (hi - lo)


def prepare_reference_image(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Official `imread_resize_crop` (§34): centre-crop to the width:height
    aspect (int arithmetic as the official), then cv2 bilinear resize to W×H."""

    target = width / height
    h, w = image.shape[:2]
    if w / h > target:
        new_w = int(target * h)
        off = (w - new_w) // 2
        image = image[:, off : off + new_w]
    else:
        new_h = int(w / target)
        off = (h - new_h) // 2
        image = image[off : off + new_h, :]
    if image.shape[:2] != (height, width):
        image = cv2.resize(np.ascontiguousarray(image), (width, height))
    return np.ascontiguousarray(image)


def _as_rgb_uint8(image, what: str) -> np.ndarray:
    if isinstance(image, PIL.Image.Image):
        return np.asarray(image.convert("RGB"))
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().numpy()
    if not isinstance(image, np.ndarray):
        raise InputError(f"{what} must be a PIL image or a uint8 array [H, W, 3], got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise InputError(f"{what} must be uint8 (0..255), got dtype {image.dtype}; convert it with np.uint8 or load it with xdyna_core.io.load_image")
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise InputError(f"{what} must have shape [H, W, 3], got {tuple(image.shape)}")
    return np.ascontiguousarray(image[..., :3])


def _as_frames(frames, channels: int, what: str) -> np.ndarray:
    """List of PIL / arrays or one array [T, H, W, C] -> uint8 [T, H, W, C]."""
    if frames is None:
        raise InputError(f"{what} is missing")
    if isinstance(frames, torch.Tensor):
        frames = frames.detach().cpu().numpy()
    if isinstance(frames, (list, tuple)):
        if len(frames) == 0:
            raise InputError(f"{what} is empty: give at least one frame")
        arrs = []
        for i, f in enumerate(frames):
            if isinstance(f, PIL.Image.Image):
                f = np.asarray(f.convert("RGB")) if channels == 3 else np.asarray(f)
            arrs.append(np.asarray(f))
        shapes = {a.shape for a in arrs}
        if len(shapes) != 1:
            raise InputError(f"all frames of {what} must have the same size, got {sorted(shapes)}")
        frames = np.stack(arrs)
    if not isinstance(frames, np.ndarray):
        raise InputError(f"{what} must be a uint8 array [T, H, W, {channels}] or a list of images, got {type(frames).__name__}")
    if frames.ndim != 4 or frames.shape[-1] != channels:
        raise InputError(f"{what} must have shape [T, H, W, {channels}], got {tuple(frames.shape)}")
    if frames.shape[0] == 0:
        raise InputError(f"{what} is empty: give at least one frame")
    if frames.dtype != np.uint8:
        raise InputError(f"{what} must be uint8 (0..255), got dtype {frames.dtype}")
    return frames


def _blend_window(acc: torch.Tensor, den: torch.Tensor, frames, weights, eps: torch.Tensor) -> None:
    """Add one window's noise prediction [halves, 4, n, h, w] with its per-frame weights into the
    running weighted sum `acc` [halves, 4, T, h, w] and the weight total `den` [T] (§29)."""
    idx = torch.tensor(frames, device=acc.device)
    wt = torch.tensor(weights, device=acc.device, dtype=torch.float32)
    acc.index_add_(2, idx, eps * wt[None, None, :, None, None])  # x * 1.0 is exact: official sum
    den.index_add_(0, idx, wt)


def _window_share(num_windows: int, window_batch_size: int, world: Optional[World]):
    """The groups of `window_batch_size` windows (lists of window indices), the groups this rank
    runs (all of them without `world`; else its contiguous share, `distributed.share`) and how many
    windows each rank runs (None without `world`). The groups are those of one process, so a
    batched UNet call sees the same windows either way."""
    groups = [list(range(s, min(s + window_batch_size, num_windows))) for s in range(0, num_windows, window_batch_size)]
    if world is None:
        return groups, range(len(groups)), None
    counts = [sum(len(groups[g]) for g in share(len(groups), r, world.size)) for r in range(world.size)]
    return groups, world.share(len(groups)), counts


# ---------------------------------------------------------------------------
# the pipeline
# ---------------------------------------------------------------------------


class XDynaPipeline(DiffusionPipeline):
    r"""X-Dyna: zero-shot human image animation (Chang et al., 2025).

    Components: `vae` (AutoencoderKL), `text_encoder` (CLIPTextModel),
    `tokenizer` (CLIPTokenizer), `unet` (XDynaUNet: SD1.5 inflated to video with
    the Dynamics-Adapter, IP-Adapter-Plus cross-attention and AnimateDiff motion
    modules; frame 0 of its input is the clean reference latent), `controlnet`
    (pose ControlNet, 3 channels), `controlnet_face` (S-Face ControlNet, 6
    channels, optional), `image_encoder` (CLIPVisionModelWithProjection),
    `feature_extractor` (CLIPImageProcessor), `image_proj` (IP-Adapter-Plus
    resampler), `scheduler` (DDIM, official settings by default).
    """

    model_cpu_offload_seq = "text_encoder->image_encoder->image_proj->controlnet->controlnet_face->unet->vae"
    _optional_components = ["controlnet_face"]
    _callback_tensor_inputs = ["latents", "noise_pred"]

    def __init__(
        self,
        vae: AutoencoderKL,
        text_encoder,
        tokenizer,
        unet,
        controlnet,
        scheduler,
        image_encoder,
        feature_extractor,
        image_proj,
        controlnet_face=None,
    ):
        super().__init__()
        self.register_modules(
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            unet=unet,
            controlnet=controlnet,
            controlnet_face=controlnet_face,
            image_encoder=image_encoder,
            feature_extractor=feature_extractor,
            image_proj=image_proj,
            scheduler=scheduler,
        )
        self._interrupt = False

    # -- sizes -------------------------------------------------------------

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def size_multiple(self) -> int:
        """Height and width must be multiples of this: the VAE factor (8), as in
        the official check. The UNet and ControlNets handle latent sizes that do
        not divide by their downsampling (diffusers-style upsample sizes)."""
        return self.vae_scale_factor

    @property
    def max_window_size(self) -> Optional[int]:
        """Longest window the motion modules' positional encoding allows (24
        officially), if the UNet config says."""
        cfg = self.unet.config
        for key in ("motion_module_max_len", "temporal_position_encoding_max_len", "motion_max_seq_length"):
            if key in cfg:
                return int(cfg[key])
        kwargs = cfg.get("motion_module_kwargs") if hasattr(cfg, "get") else None
        if isinstance(kwargs, dict) and "temporal_position_encoding_max_len" in kwargs:
            return int(kwargs["temporal_position_encoding_max_len"])
        return None

    @property
    def interrupt(self) -> bool:
        return self._interrupt

    # -- loading -----------------------------------------------------------

    @classmethod
    def from_official(cls, *args, torch_dtype: Optional[torch.dtype] = None, face: bool = True, **kwargs) -> "XDynaPipeline":
        """Load the official X-Dyna release: fetch (or find in the Hugging Face
        cache or in local folders) `unet-checkpoint-epoch-5.ckpt`, both
        ControlNet checkpoints, `ip-adapter-plus_sd15.bin`, the CLIP image
        encoder and SD1.5, and load every file strictly. Arguments go to
        `xdyna_core.models.loading.load_official_components` (`xdyna_repo`,
        `sd_repo`, `ip_adapter_repo` as hub ids or folders, file names,
        `cache_dir`, `local_files_only`; `HF_HUB_OFFLINE` is honoured).
        `face=False` gives a pose-only pipeline. Convert once with
        `xdyna convert` and use `from_pretrained` for fast loading."""

        components = load_official_components(*args, face=face, torch_dtype=torch_dtype or torch.float32, **kwargs)
        return cls(**components)

    # -- encoders (run once per call; training encodes with the same methods) ----

    def encode_prompt(self, prompt: str, device=None) -> torch.Tensor:
        """CLIP text tokens of `prompt`, padded to the tokenizer's length (77): [1, 77, D]
        float32 (§21)."""
        device = self._execution_device if device is None else device
        ids = self.tokenizer(
            prompt,
            padding="max_length",
            max_length=self.tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        ).input_ids
        return self.text_encoder(ids.to(device))[0].float()

    def encode_image(self, image, device=None, unconditional: bool = True) -> tuple:
        """Penultimate-layer CLIP hidden states of `image` (a PIL image or uint8 [H, W, 3]
        array, or a list of them; given uncropped, the CLIP processor resizes and crops,
        §22): [N, L, D] in the image encoder's dtype. With `unconditional`, also those of
        the all-zero *normalised* pixel tensor, i.e. the CLIP mean-colour image (the
        unconditional image, §23): [1, L, D] (else None). Returns (cond, uncond), as
        diffusers' `encode_image(..., output_hidden_states=True)`."""
        device = self._execution_device if device is None else device
        images = list(image) if isinstance(image, (list, tuple)) else [image]
        images = [im if isinstance(im, PIL.Image.Image) else PIL.Image.fromarray(im) for im in images]
        pixels = self.feature_extractor(images=images, return_tensors="pt").pixel_values
        pixels = pixels.to(device=device, dtype=self.image_encoder.dtype)
        hidden = self.image_encoder(pixels, output_hidden_states=True).hidden_states[-2]
        uncond = None
        if unconditional:
            uncond = self.image_encoder(torch.zeros_like(pixels[:1]), output_hidden_states=True).hidden_states[-2]
        return hidden, uncond

    def encode_ip_adapter_tokens(self, image, device=None) -> tuple:
        """IP-Adapter-Plus tokens: the resampler (`image_proj`) on `encode_image`'s hidden
        states; cond from the uncropped reference (§22), uncond from the mean-colour image
        (§23). Returns (uncond, cond), each [1, 16, D] float32."""
        hidden, uncond = self.encode_image(image, device)
        return tuple(self.image_proj(h.to(self.image_proj.dtype)).float() for h in (uncond, hidden))

    def preprocess_reference(self, image: np.ndarray, height: int, width: int, device=None) -> torch.Tensor:
        """Reference photo uint8 [H', W', 3] -> [1, 3, height, width] float32 in [-1, 1]:
        centre-crop and resize to the output (§34), then /127.5 − 1 (§24)."""
        device = self._execution_device if device is None else device
        framed = prepare_reference_image(image, height, width)
        x = torch.from_numpy(framed).permute(2, 0, 1)[None].to(device=device, dtype=torch.float32)
        return x / 127.5 - 1.0

    def encode_latents(self, images: torch.Tensor, generator: Optional[torch.Generator] = None,
                       chunk_size: int = 64) -> torch.Tensor:
        """Images [N, 3, H, W] in [-1, 1] -> VAE posterior *sample* drawn from `generator`,
        × scaling factor (the reference latent, §24): [N, 4, h, w] float32. `chunk_size`
        images per VAE call (one draw per chunk)."""
        out = []
        for s in range(0, images.shape[0], chunk_size):
            x = images[s : s + chunk_size].to(self.vae.dtype)
            out.append(self.vae.encode(x).latent_dist.sample(generator=generator))
        return torch.cat(out).float() * self.vae.config.scaling_factor

    def encode_conditioning(self, prompt: str, negative_prompt: str, ip_image: np.ndarray, pose: np.ndarray,
                            face: Optional[np.ndarray], do_cfg: bool, pose_scale: float, face_scale: float,
                            device=None) -> "Conditioning":
        """Everything the noise predictor reads that does not change during sampling: UNet
        context = text + IP-Adapter tokens ([uncond, cond] with CFG), the ControlNets' text
        (text only, §17) and the control streams with their clip-wide ranges (§18)."""
        device = self._execution_device if device is None else device
        text_c = self.encode_prompt(prompt, device)
        text_u = text_c if negative_prompt == prompt else self.encode_prompt(negative_prompt, device)
        ip_u, ip_c = self.encode_ip_adapter_tokens(ip_image, device)
        if do_cfg:
            unet_context = torch.cat([torch.cat([text_u, ip_u], 1), torch.cat([text_c, ip_c], 1)])
            # ControlNets see text only (§17): identical halves -> compute once.
            control_text = text_c if negative_prompt == prompt else torch.cat([text_u, text_c])
        else:
            unet_context = torch.cat([text_c, ip_c], 1)
            control_text = text_c
        face_ranges = (control_range(face[..., :3]), control_range(face[..., 3:])) if face is not None else None
        return Conditioning(unet_context, control_text, pose, control_range(pose), pose_scale, face, face_ranges,
                            face_scale)

    # -- one ControlNet over a window ---------------------------------------

    def _control_residuals(self, controlnet, latents_n, t, text, cond, scale, batch_halves, num_windows=1, shallow=None):
        """Run a ControlNet on the noisy frames [k·n, 4, h, w] of k windows (§17).
        `text`: [R, 77, D] (R = 1 when both CFG halves are identical, then the
        residuals are computed once and repeated; R = 2 = [uncond, cond]
        otherwise). Returns residuals as 5-D [k·batch_halves, C, 1+n, h', w']
        (window-major, frame 0 zero-padded, §15). `shallow`: compute only the first
        that many down residuals (DeepCache partial step); mid is then None."""
        r, kn = text.shape[0], latents_n.shape[0]
        k = num_windows
        n = kn // k
        dtype = controlnet.dtype
        args = (latents_n.repeat(r, 1, 1, 1).to(dtype), t)
        kwargs = dict(encoder_hidden_states=text.repeat_interleave(kn, dim=0).to(dtype),
                      controlnet_cond=cond.repeat(r, 1, 1, 1).to(dtype), conditioning_scale=scale)
        if shallow is not None:
            down, mid = controlnet_shallow_residuals(controlnet, *args, num_residuals=shallow, **kwargs), None
        else:
            down, mid = controlnet(*args, return_dict=False, **kwargs)

        def to5d(res):
            res = res.reshape(r, k, n, *res.shape[1:]).permute(1, 0, 3, 2, 4, 5)  # [k, r, C, n, h', w']
            res = torch.cat([torch.zeros_like(res[:, :, :, :1]), res], dim=3)
            if batch_halves != r:
                res = res.repeat(1, batch_halves // r, 1, 1, 1, 1)
            return res.reshape(k * batch_halves, *res.shape[2:])

        return [to5d(d) for d in down], (None if mid is None else to5d(mid))

    # -- input checks ------------------------------------------------------------

    @property
    def _first_level_layers(self) -> int:
        """Layers of the UNet's first down block (the range of `deep_cache_branch`)."""
        return len(self.unet.down_blocks[0].resnets) if hasattr(self.unet, "down_blocks") else 0

    @staticmethod
    def _speed_options(speed: Optional[SpeedOptions], **keywords) -> SpeedOptions:
        """The call's `SpeedOptions`: `speed`, or built from the keyword arguments of the same
        names (presets set those); giving both is an error."""
        if speed is None:
            return SpeedOptions(**keywords)
        if not isinstance(speed, SpeedOptions):
            raise InputError(f"speed must be a SpeedOptions, got {type(speed).__name__}")
        default = SpeedOptions()
        given = sorted(k for k, v in keywords.items() if v != getattr(default, k))
        if given:
            raise InputError(f"give the speed settings either as speed=SpeedOptions(...) or as keywords, not both "
                             f"(got speed and {given})")
        return speed

    def _sampler(self, sampler: Optional[str]):
        """The scheduler for one call: the pipeline's own (None), or a fresh DDIM /
        DPM-Solver++ built from its config (same betas and timestep spacing)."""
        if sampler is None:
            return self.scheduler

        config = {k: v for k, v in dict(self.scheduler.config).items() if not k.startswith("_")}
        if sampler == "ddim":
            return DDIMScheduler.from_config(config)

        keep = set(inspect.signature(DPMSolverMultistepScheduler.__init__).parameters)
        config = {k: v for k, v in config.items() if k in keep}
        return DPMSolverMultistepScheduler.from_config(config, algorithm_type="dpmsolver++", solver_order=2)

    # -- opt-in speed-ups ------------------------------------------------------

    def compile(self, components: Sequence[str] = ("unet", "controlnet", "controlnet_face"), **compile_kwargs) -> "XDynaPipeline":
        """`torch.compile` the repeated blocks of the UNet and the ControlNets in place
        (regional compilation: each ResNet, spatial-transformer and motion-module block
        is compiled once per shape and reused; whole-model graphs would take much
        longer to compile). `compile_kwargs` go to `torch.compile` (e.g. mode=
        "max-autotune-no-cudagraphs", fullgraph=True); `components` names the models.
        The first call after this pays
        the compile time (one graph per block shape; new frame sizes or window batch
        sizes compile again). Returns the pipeline."""

        blocks = {"ResnetBlock", "SpatialTransformer", "TemporalTransformer3DModel",
                  "ResnetBlock2D", "Transformer2DModel"}
        # One compiled graph per block shape; all blocks of a class share one code object,
        # whose default recompile limit (8) the ~20 shapes of the UNet would exceed.
        for limit in ("recompile_limit", "cache_size_limit", "accumulated_recompile_limit", "accumulated_cache_size_limit"):
            if hasattr(_dynamo.config, limit):
                setattr(_dynamo.config, limit, max(getattr(_dynamo.config, limit), 256))
        compile_kwargs.setdefault("dynamic", False)  # static shapes: the fastest kernels, few shapes here
        for name in components:
            model = getattr(self, name, None)
            if model is None:
                continue
            for module in model.modules():
                if type(module).__name__ in blocks:
                    module.compile(**compile_kwargs)
        return self

    def enable_channels_last(self) -> "XDynaPipeline":
        """Store the convolution weights of the UNet, ControlNets and VAE channels-last
        (NHWC), which the tensor-core convolution kernels prefer. Opt-in: measure it
        on your GPU (`xdyna bench --modes default,channels-last`). Same results up to
        convolution rounding."""
        for name in ("unet", "controlnet", "controlnet_face", "vae"):
            model = getattr(self, name, None)
            if model is not None:
                model.to(memory_format=torch.channels_last)
        return self

    def check_inputs(self, height, width, num_frames, num_inference_steps, guidance_scale, window_size, window_overlap,
                     window_schedule, output_type, decode_chunk_size, callback_on_step_end_tensor_inputs,
                     strength=1.0, window_offsets=None, latents=None):
        m = self.size_multiple
        if height % m or width % m or height <= 0 or width <= 0:
            raise InputError(
                f"height and width must be positive multiples of {m} for this model, got {height}x{width}; "
                f"try {max(m, round(height / m) * m)}x{max(m, round(width / m) * m)}"
            )
        if num_inference_steps < 1:
            raise InputError(f"num_inference_steps must be at least 1, got {num_inference_steps}")
        if guidance_scale < 0:
            raise InputError(f"guidance_scale must be >= 0, got {guidance_scale}")
        if window_schedule not in WINDOW_SCHEDULES:
            raise InputError(f"window_schedule must be one of {WINDOW_SCHEDULES}, got {window_schedule!r}")
        if window_size < 1 or not 0 <= window_overlap < window_size:
            raise InputError(f"need window_size >= 1 and 0 <= window_overlap < window_size, got {window_size} and {window_overlap}")
        limit = self.max_window_size
        if limit is not None and min(window_size, num_frames) > limit:
            raise InputError(f"window_size {window_size} exceeds the motion modules' maximum of {limit} frames")
        if output_type not in OUTPUT_TYPES:
            raise InputError(f"output_type must be one of {OUTPUT_TYPES}, got {output_type!r}")
        if decode_chunk_size < 1:
            raise InputError(f"decode_chunk_size must be at least 1, got {decode_chunk_size}")
        bad = [k for k in callback_on_step_end_tensor_inputs if k not in self._callback_tensor_inputs]
        if bad:
            raise InputError(f"callback_on_step_end_tensor_inputs {bad} not in {self._callback_tensor_inputs}")
        if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not 0 < strength <= 1:
            raise InputError(f"strength is the fraction of the denoising schedule to run, in (0, 1]; got {strength!r}")
        if window_offsets is not None and window_schedule == "official" and len(window_offsets) < num_inference_steps:
            raise InputError(f"window_offsets needs one offset per step ({num_inference_steps}), got {len(window_offsets)}")
        h, w = height // self.vae_scale_factor, width // self.vae_scale_factor
        if latents is not None and tuple(latents.shape) != (1, 4, num_frames, h, w):
            raise InputError(f"latents (noise) must have shape {(1, 4, num_frames, h, w)}, got {tuple(latents.shape)}")

    def check_control_images(self, pose: np.ndarray, face_images, height: int, width: int,
                             face_conditioning_scale: float) -> Optional[np.ndarray]:
        """Check the pose frames' size and convert the face patches (uint8 [T, H, W, 6]);
        returns them, or None when there are none to use (no S-Face ControlNet, scale 0)."""
        num_frames = pose.shape[0]
        if pose.shape[1:3] != (height, width):
            raise InputError(
                f"pose_images are {pose.shape[2]}x{pose.shape[1]} (WxH) but the output is {width}x{height}; "
                "render or resize the pose frames to the output size (xdyna animate does this for you)"
            )
        face = None
        if face_images is not None:
            if self.controlnet_face is None:
                logger.warning("face_images given but this pipeline has no S-Face ControlNet (pose-only model); ignoring them")
            else:
                face = _as_frames(face_images, 6, "face_images")
                if face.shape[0] != num_frames:
                    raise InputError(f"face_images has {face.shape[0]} frames but pose_images has {num_frames}; they must match frame for frame")
                if face.shape[1:3] != (height, width):
                    raise InputError(f"face_images are {face.shape[2]}x{face.shape[1]} (WxH) but the output is {width}x{height}")
        return None if face_conditioning_scale == 0 else face

    @torch.no_grad()
    def __call__(
        self,
        image,
        pose_images,
        face_images=None,
        ip_adapter_image=None,
        prompt: str = "",
        negative_prompt: str = "",
        height: Optional[int] = 896,
        width: Optional[int] = 512,
        num_inference_steps: int = 25,
        guidance_scale: float = 7.5,
        adapter_scale: float = 1.0,
        pose_conditioning_scale: float = 1.0,
        face_conditioning_scale: float = 1.0,
        window_size: int = 16,
        window_overlap: int = 4,
        window_schedule: str = "blend",
        window_weighting: str = "linear",
        window_offsets: Optional[Sequence[int]] = None,
        eta: float = 0.0,
        generator: Optional[torch.Generator] = None,
        latents: Optional[torch.Tensor] = None,
        output_type: str = "np",
        return_dict: bool = True,
        callback_on_step_end: Optional[Callable] = None,
        callback_on_step_end_tensor_inputs: Sequence[str] = ("latents",),
        progress: Optional[Callable[[ProgressInfo], Any]] = None,
        decode_chunk_size: int = 8,
        window_batch_size: int = 1,
        sampler: Optional[str] = None,
        guidance_truncation: Optional[float] = None,
        deep_cache_interval: int = 1,
        deep_cache_branch: Optional[int] = None,
        strength: float = 1.0,
        speed: Optional[SpeedOptions] = None,
        world: Optional[World] = None,
    ):
        r"""Generate a video of the person in `image` following `pose_images`.

        Args:
            image: reference photo, PIL image or uint8 [H, W, 3] of any size; it is
                centre-cropped to the output aspect and resized for the VAE (§34),
                and used uncropped for the CLIP image encoder (§22).
            pose_images: uint8 [T, height, width, 3] or list of T images: DWPose-style
                skeletons on black, already at the output size.
            ip_adapter_image: optional image for the CLIP image encoder (IP-Adapter
                tokens). Default: `image` itself, uncropped, as the official. Give the
                original photo here when `image` is a photo already framed to the
                canvas (e.g. `Motion.reference_image`).
            face_images: optional uint8 [T, height, width, 6] S-Face patches
                (channels 0-2 local eyes+mouth patch, 3-5 global face patch). Ignored
                with a warning if the pipeline has no `controlnet_face`.
            prompt / negative_prompt: text; the official default is "" for both.
            height, width: output size (multiples of 8, the VAE factor).
                None = the size of the pose frames.
            num_inference_steps, guidance_scale, eta: DDIM settings (official 25, 7.5, 0).
                CFG is on whenever guidance_scale >= 1 (§30).
            adapter_scale: multiplies the Dynamics-Adapter residual (1.0 = paper).
            pose_conditioning_scale, face_conditioning_scale: ControlNet scales
                (0 skips that ControlNet entirely).
            window_size, window_overlap: temporal windows (16 / 4 officially).
            window_schedule: "blend" (non-looping windows, smooth `window_weighting`
                weights: "linear", "pyramid" or "uniform") or "official" (closed-loop
                windows with a random offset per step, equal-weight average, §28-29).
            window_offsets: "official" schedule only: the offset for every step
                (default: drawn from `generator`, uniform in 0..window_size-1).
            generator: torch.Generator; every random draw uses it (same seed = same video).
            latents: optional Gaussian noise [1, 4, T, h, w] used to noise the
                initial latents (§26) instead of drawing it from `generator`.
            output_type: "np" (float32 [T, H, W, 3] in [0, 1]), "pt" (float32
                [T, 3, H, W]), "pil", "uint8" ([T, H, W, 3], ×255 truncated like the
                official writer) or "latent".
            callback_on_step_end: `fn(pipe, step, timestep, callback_kwargs) -> dict`
                after every step (diffusers convention); set `pipe._interrupt = True`
                or raise `Cancelled` to stop.
            progress: `fn(ProgressInfo)` after every window and decoded chunk;
                returning False (or raising `Cancelled`) stops.
            decode_chunk_size: frames per VAE decode call.
            speed: `SpeedOptions` holding the five settings below in one object (give
                either it or those keywords, not both).
            window_batch_size: windows denoised together in one UNet (and ControlNet) call.
                Same result as one at a time (windows of a step are independent); faster
                on a GPU with memory to spare, activation memory grows with it.
            sampler: None (the pipeline's `scheduler`, official DDIM), "ddim" or "dpmpp"
                (DPM-Solver++(2M), Lu et al. 2022, built from the same betas; good
                results with fewer steps; changes the output).
            guidance_truncation: fraction of the steps that use CFG (e.g. 0.6); the later,
                low-noise steps run the conditional branch only (half the UNet batch).
                Guidance matters least at low noise (Kynkäänniemi et al., "Applying
                guidance in a limited interval...", NeurIPS 2024). None = CFG on every step.
                Changes the output.
            deep_cache_interval: N > 1 reuses the deep UNet features: every N-th step runs
                the full UNet and caches the input of its last up block; the steps between
                run only the shallow branch (DeepCache, Ma et al., CVPR 2024, uniform 1:N).
                "blend" windows only. 1 = off. Changes the output.
            deep_cache_branch: how shallow the recomputed branch is, in first-level UNet
                layers (0 .. layers_per_block; None = the whole first level). Smaller is
                faster and changes the output more.
            strength: how much of the denoising schedule runs, in (0, 1] (SDEdit, Meng et al.,
                ICLR 2022). 1.0 = official: the reference-mixed initial latents (§26) are
                noised to the first of the `num_inference_steps` timesteps (almost pure
                noise). Below 1 only the last `int(num_inference_steps * strength)` steps run
                (as in diffusers' image-to-image pipelines), so the latents start less noisy and keep more of the
                reference's colours and layout (fewer steps run). Changes the output.
            world: several processes on this one call (`xdyna_core.distributed.World`; every
                rank calls with the same arguments and seed): at every step each rank predicts
                the noise of its contiguous share of the windows (of the `window_batch_size`
                groups), all gather every window's prediction and blend them in the
                one-process order, then every rank takes the same scheduler step; the VAE
                chunks are shared too. Every rank returns the same frames, equal to one
                process's. `callback_on_step_end` and `progress` run on every rank (progress
                counts the rank's own windows). None = this process alone.

        Returns `XDynaPipelineOutput(frames=...)` (or a tuple `(frames,)`).
        Raises `InputError` for bad inputs and `Cancelled` when interrupted (no
        partial result is returned).
        """
        self._interrupt = False
        world = world if world is not None and world.size > 1 else None
        together = world.together if world is not None else nullcontext
        with together():  # an error in steps 1-3 on one rank ends every rank (none left waiting)
            # 1. check and convert the inputs
            ref_rgb = _as_rgb_uint8(image, "image")
            ip_rgb = ref_rgb if ip_adapter_image is None else _as_rgb_uint8(ip_adapter_image, "ip_adapter_image")
            pose = _as_frames(pose_images, 3, "pose_images")
            num_frames = pose.shape[0]
            height = pose.shape[1] if height is None else height
            width = pose.shape[2] if width is None else width
            self.check_inputs(height, width, num_frames, num_inference_steps, guidance_scale, window_size, window_overlap,
                              window_schedule, output_type, decode_chunk_size, callback_on_step_end_tensor_inputs,
                              strength, window_offsets, latents)
            speed = self._speed_options(speed, window_batch_size=window_batch_size, sampler=sampler,
                                        guidance_truncation=guidance_truncation, deep_cache_interval=deep_cache_interval,
                                        deep_cache_branch=deep_cache_branch)
            speed.validate(self._first_level_layers, window_schedule)
            face = self.check_control_images(pose, face_images, height, width, face_conditioning_scale)
            device = self._execution_device
            do_cfg = guidance_scale >= 1.0  # §30
            if hasattr(self.unet, "set_adapter_scale"):
                self.unet.set_adapter_scale(adapter_scale)

            # 2. encode (once per call): text + IP-Adapter tokens, control streams, reference latent
            conditioning = self.encode_conditioning(prompt, negative_prompt, ip_rgb, pose, face, do_cfg,
                                                    pose_conditioning_scale, face_conditioning_scale, device)
            ref_latent = self.encode_latents(self.preprocess_reference(ref_rgb, height, width, device), generator)

            # 3. timesteps, initial latents (§25-27) and the windows of every step (§28-29)
            scheduler = self._sampler(speed.sampler)
            timesteps = self.get_timesteps(scheduler, num_inference_steps, strength, device)
            lat = self.prepare_latents(ref_latent, num_frames, timesteps[:1], scheduler, generator, latents, device)
            windows = self.prepare_windows(num_frames, num_inference_steps, window_size, window_overlap, window_schedule,
                                           window_weighting, window_offsets, generator)
            step_kwargs = _step_kwargs(scheduler, eta, generator)
            cfg_steps = speed.cfg_steps(len(timesteps))  # guidance truncation: CFG on the first steps only
            conditional_only = conditioning.conditional()
            deep_cache = speed.deep_cache()
        if world is not None:
            groups, my_groups, _ = _window_share(len(windows[0][0]), speed.window_batch_size, world)
            mine = [j for g in my_groups for j in groups[g]]
            mine = range(mine[0], mine[-1] + 1) if mine else range(0)
            steps = f"{len(timesteps)} step{'s' if len(timesteps) != 1 else ''}"
            world.log(f"denoising {describe_share(mine, len(windows[0][0]), 'windows')} at each of {steps}")

        # 4. denoising loop
        self._num_timesteps = len(timesteps)
        for i, t in enumerate(timesteps):
            if deep_cache is not None:
                deep_cache.begin_step(i)
            noise_pred = self.predict_noise(
                lat, t, *windows[i], conditioning if do_cfg and i < cfg_steps else conditional_only, scheduler,
                guidance_scale=guidance_scale, window_batch_size=speed.window_batch_size, deep_cache=deep_cache,
                step=i, num_steps=len(timesteps), progress=progress, world=world,
            )
            with together():  # a cancel or a failing callback on one rank stops every rank
                lat[:, :, 1:] = scheduler.step(noise_pred, t, lat[:, :, 1:], **step_kwargs).prev_sample

                if callback_on_step_end is not None:
                    local = {"latents": lat, "noise_pred": noise_pred}
                    out = callback_on_step_end(self, i, t, {k: local[k] for k in callback_on_step_end_tensor_inputs})
                    if isinstance(out, dict) and out.get("latents") is not None:
                        lat = out["latents"]
                if self._interrupt:
                    raise Cancelled(f"generation cancelled after step {i + 1}/{len(timesteps)}")

        # 5. decode
        frames = self.decode_latents(lat[:, :, 1:], decode_chunk_size, output_type, progress, world=world)
        self.maybe_free_model_hooks()
        if not return_dict:
            return (frames,)
        return XDynaPipelineOutput(frames=frames)

    # -- the steps of __call__ ------------------------------------------------------

    @staticmethod
    def get_timesteps(scheduler, num_inference_steps: int, strength: float = 1.0, device=None) -> torch.Tensor:
        """The scheduler's timesteps for `num_inference_steps` (§25); with `strength` < 1 only
        the last int(steps * strength) of them (SDEdit, as diffusers' image-to-image)."""
        scheduler.set_timesteps(num_inference_steps, device=device)
        timesteps = scheduler.timesteps
        if strength < 1.0:
            timesteps = timesteps[len(timesteps) - max(1, int(len(timesteps) * strength)):]
        return timesteps

    def prepare_latents(self, ref_latent: torch.Tensor, num_frames: int, timestep: torch.Tensor, scheduler,
                        generator: Optional[torch.Generator] = None, latents: Optional[torch.Tensor] = None,
                        device=None) -> torch.Tensor:
        """Initial latents [1, 4, 1 + T, h, w]: the reference-mixed latents (§26) noised to
        `timestep` with `latents` (Gaussian noise [1, 4, T, h, w]) or noise drawn from
        `generator`; frame 0 is the clean reference latent, never updated (§27)."""
        device = self._execution_device if device is None else device
        _, _, h, w = ref_latent.shape
        mixed = reference_mixed_latents(ref_latent, num_frames, generator)
        if latents is None:
            noise = randn_tensor((1, 4, num_frames, h, w), generator=generator, device=device, dtype=torch.float32)
        else:
            noise = latents.to(device=device, dtype=torch.float32)
        lat = torch.empty_like(mixed)
        lat[:, :, 1:] = scheduler.add_noise(mixed[:, :, 1:], noise, timestep)
        lat[:, :, 0] = ref_latent
        return lat

    def prepare_windows(self, num_frames: int, num_inference_steps: int, window_size: int = 16, window_overlap: int = 4,
                        window_schedule: str = "blend", window_weighting: str = "linear",
                        window_offsets: Optional[Sequence[int]] = None,
                        generator: Optional[torch.Generator] = None) -> list:
        """(windows, weights) for every step. "blend": the same non-looping windows with
        smooth weights at every step. "official": closed-loop windows moved by each step's
        offset (`window_offsets`, default drawn from `generator`), equal weights (§28-29)."""
        if window_schedule == "blend":
            windows = blend_windows(num_frames, window_size, window_overlap)
            return [(windows, window_weights(windows, num_frames, window_overlap, window_weighting))] * num_inference_steps
        if window_offsets is None:
            gen_device = generator.device if generator is not None else "cpu"
            window_offsets = torch.randint(0, window_size, (num_inference_steps,), generator=generator, device=gen_device).tolist()
        steps = []
        for offset in window_offsets[:num_inference_steps]:
            windows = official_windows(num_frames, window_size, window_overlap, int(offset))
            steps.append((windows, [[1.0] * len(win) for win in windows]))  # equal-weight sum / count (§29)
        return steps

    def predict_noise(self, latents: torch.Tensor, t, windows, weights, conditioning: "Conditioning", scheduler, *,
                      guidance_scale: float, window_batch_size: int = 1, deep_cache: Optional[DeepCacheState] = None,
                      step: int = 0, num_steps: int = 1, progress: Optional[Callable] = None,
                      world: Optional[World] = None) -> torch.Tensor:
        """Noise prediction for every noisy frame at timestep `t`: [1, 4, T, h, w] from
        latents [1, 4, 1 + T, h, w]. The windows go through the ControlNets and the UNet in
        groups of `window_batch_size`; each frame's predictions are blended with its
        windows' `weights` (§29); then CFG (§30) when `conditioning` has both halves.
        `progress` is called after every window (`step` of `num_steps` for its info).

        With `world`, this rank runs its contiguous share of the groups, every rank gathers all
        windows' predictions and blends them in window order, as one process does: the same sum
        in the same order, so the same numbers."""
        device = self._execution_device
        halves = conditioning.halves
        num_frames, h, w = latents.shape[2] - 1, latents.shape[3], latents.shape[4]
        acc = torch.zeros((halves, 4, num_frames, h, w), device=device, dtype=torch.float32)
        den = torch.zeros((num_frames,), device=device, dtype=torch.float32)
        groups, my_groups, counts = _window_share(len(windows), window_batch_size, world)
        my_count = sum(len(groups[g]) for g in my_groups)
        mine = []  # with `world`: this rank's predictions, in window order, until all are gathered
        done = 0
        with (world.together() if world is not None else nullcontext()):
            for gi in my_groups:
                group = groups[gi]
                if self._interrupt:
                    raise Cancelled(f"generation cancelled at step {step + 1}/{num_steps}")
                cached = deep_cache.reusable(gi, halves) if deep_cache is not None else None
                eps, features = self._predict_window_group(latents, [windows[j] for j in group], t, conditioning,
                                                           scheduler, deep_cache, cached)
                if features is not None:
                    deep_cache.store(gi, halves, features)
                for j, eps_j in zip(group, eps):
                    if world is None:
                        _blend_window(acc, den, windows[j], weights[j], eps_j)
                    else:
                        mine.append(eps_j)
                    done += 1
                    if progress is not None:
                        if progress(ProgressInfo("denoise", step, num_steps, done, my_count)) is False:
                            self._interrupt = True
                del eps
                if self._interrupt:
                    raise Cancelled(f"generation cancelled at step {step + 1}/{num_steps}")
        if world is not None:
            if len({len(win) for win in windows}) != 1:
                raise ValueError("windows shared between processes must have the same length")
            shape = (halves, 4, len(windows[0]), h, w)
            local = torch.stack(mine) if mine else torch.zeros((0, *shape), device=device, dtype=torch.float32)
            for j, eps_j in enumerate(world.gather_rows(local, counts)):
                _blend_window(acc, den, windows[j], weights[j], eps_j)
        noise_pred = acc / den[None, None, :, None, None]
        if halves == 2:
            uncond, cond = noise_pred.chunk(2)
            noise_pred = uncond + guidance_scale * (cond - uncond)
        return noise_pred

    def _predict_window_group(self, lat, windows, t, conditioning: "Conditioning", scheduler,
                              deep_cache: Optional[DeepCacheState] = None, deep_features: Optional[torch.Tensor] = None):
        """UNet ε̂ for a group of k windows of equal length n in one call: per window the
        input [ref, window] doubled for CFG, ControlNet residuals on the window's noisy
        frames (§29). Returns (list of k tensors [halves, 4, n, h, w], new deep features).

        DeepCache (`deep_cache` given): with `deep_features` only the shallow branch runs on
        them (and the ControlNets compute only the residuals it needs); without, the full
        UNet runs and its deep features are returned for the state to keep (else None)."""
        device = self._execution_device
        halves = conditioning.halves
        k, n = len(windows), len(windows[0])
        if any(len(win) != n for win in windows):
            raise ValueError("windows batched together must have the same length")
        model_in, control_in = [], []
        for frames in windows:
            idx = torch.tensor(frames, device=device)
            window_lat = lat[:, :, 1:].index_select(2, idx)  # [1, 4, n, h, w]
            x = torch.cat([lat[:, :, :1], window_lat], dim=2).repeat(halves, 1, 1, 1, 1)
            x = scheduler.scale_model_input(x, t)
            model_in.append(x)
            control_in.append(x[0, :, 1:].permute(1, 0, 2, 3))  # [n, 4, h, w]; identical in both CFG halves
        model_in = model_in[0] if k == 1 else torch.cat(model_in)
        control_in = control_in[0] if k == 1 else torch.cat(control_in)
        shallow = deep_cache.shallow_residual_count(self.unet) if deep_features is not None else None
        down, mid = self._control_residuals_for(conditioning, windows, control_in, t, halves, k, shallow)
        dtype = self.unet.dtype
        kwargs = {}
        if down is not None:
            kwargs["down_block_additional_residuals"] = tuple(d.to(dtype) for d in down)
            if mid is not None:
                kwargs["mid_block_additional_residual"] = mid.to(dtype)
        if deep_cache is not None:
            kwargs["deep_cache_branch"] = deep_cache.branch
            if deep_features is not None:
                kwargs["deep_features"] = deep_features
            else:
                kwargs["return_deep_features"] = True
        context = conditioning.unet_context
        context = context if k == 1 else context.repeat(k, 1, 1)
        out = self.unet(model_in.to(dtype), t, encoder_hidden_states=context.to(dtype), return_dict=True, **kwargs)
        new_features = out.deep_features if deep_cache is not None and deep_features is None else None
        pred = out.sample[:, :, 1:].float()  # frame 0's prediction is discarded (§16)
        return (list(pred.chunk(k)) if k > 1 else [pred]), new_features

    def _control_residuals_for(self, conditioning: "Conditioning", windows, control_in, t, halves, k, shallow):
        """Summed pose + S-Face ControlNet residuals (§19) of k windows, or (None, None)
        when both are off; `shallow` as in `_control_residuals`."""
        device = self._execution_device
        down = mid = None
        sel = np.concatenate([np.asarray(f) for f in windows])
        text = conditioning.control_text
        if conditioning.pose_scale != 0:
            cond = normalize_control(torch.from_numpy(conditioning.pose[sel]).to(device), *conditioning.pose_range)
            down, mid = self._control_residuals(self.controlnet, control_in, t, text, cond, conditioning.pose_scale,
                                                halves, k, shallow)
        if conditioning.face is not None and conditioning.face_scale != 0:
            f = torch.from_numpy(conditioning.face[sel]).to(device)
            ranges = conditioning.face_ranges
            cond = torch.cat([normalize_control(f[..., :3], *ranges[0]), normalize_control(f[..., 3:], *ranges[1])], dim=1)
            fdown, fmid = self._control_residuals(self.controlnet_face, control_in, t, text, cond,
                                                  conditioning.face_scale, halves, k, shallow)
            if down is None:
                down, mid = fdown, fmid
            else:
                down = [a + b for a, b in zip(down, fdown)]
                mid = None if mid is None else mid + fmid
        return down, mid

    def decode_latents(self, latents: torch.Tensor, decode_chunk_size: int = 8, output_type: str = "np",
                       progress: Optional[Callable] = None, world: Optional[World] = None):
        """Final latents [1, 4, T, h, w] -> frames as `output_type` (see `__call__`; §31),
        `decode_chunk_size` frames per VAE call. Frames leave the accelerator as they are
        decoded; uint8 and PIL chunks are converted as they arrive (4x less host memory
        than float). With `world` each rank decodes its contiguous share of the chunks (the
        chunks of one process) and every rank gets all frames."""
        if output_type == "latent":
            return latents.cpu()
        as_uint8 = output_type in ("uint8", "pil")
        frames = self._decode(latents, decode_chunk_size, progress, as_uint8, world)
        if output_type == "pil":
            return [PIL.Image.fromarray(f) for f in frames]
        return frames if as_uint8 else self._format(frames, output_type)

    def _decode(self, latents, chunk, progress, as_uint8: bool = False, world: Optional[World] = None):
        """Latents [1, 4, T, h, w] -> float32 CPU [T, 3, H, W] in [0, 1] (§31), or with
        `as_uint8` uint8 [T, H, W, 3] converted chunk by chunk (same values as `_format`)."""
        frames = latents[0].permute(1, 0, 2, 3) / self.vae.config.scaling_factor
        starts = list(range(0, frames.shape[0], chunk))
        mine = range(len(starts)) if world is None else world.share(len(starts))
        if world is not None:
            first, last = starts[mine[0]] if mine else 0, min(frames.shape[0], starts[mine[-1]] + chunk) if mine else 0
            world.log("decoding " + describe_share(range(first, last), frames.shape[0], "frames"))
        out = []
        with (world.together() if world is not None else nullcontext()):
            for done, ci in enumerate(mine, 1):
                s = starts[ci]
                if self._interrupt:
                    raise Cancelled("generation cancelled while decoding")
                img = self.vae.decode(frames[s : s + chunk].to(self.vae.dtype)).sample
                img = (img.float() / 2 + 0.5).clamp(0, 1).cpu()
                out.append(self._format(img, "uint8") if as_uint8 else img)
                if progress is not None and progress(ProgressInfo("decode", done, len(mine), 0, 0)) is False:
                    self._interrupt = True
                    raise Cancelled("generation cancelled while decoding")
        if world is not None:  # every rank gets every frame, in order
            h, w = frames.shape[2] * self.vae_scale_factor, frames.shape[3] * self.vae_scale_factor
            row = (h, w, 3) if as_uint8 else (3, h, w)
            local = torch.cat([torch.as_tensor(o) for o in out]) if out else \
                torch.zeros((0, *row), dtype=torch.uint8 if as_uint8 else torch.float32)
            counts = [sum(min(chunk, frames.shape[0] - starts[c]) for c in share(len(starts), r, world.size))
                      for r in range(world.size)]
            gathered = world.gather_rows(local, counts)
            return gathered.numpy() if as_uint8 else gathered
        return np.concatenate(out) if as_uint8 else torch.cat(out)

    @staticmethod
    def _format(frames: torch.Tensor, output_type: str):
        if output_type == "pt":
            return frames
        arr = frames.permute(0, 2, 3, 1).numpy()
        if output_type == "np":
            return arr
        u8 = (arr * 255).astype(np.uint8)  # truncation, as the official writer
        if output_type == "uint8":
            return u8
        return [PIL.Image.fromarray(f) for f in u8]
