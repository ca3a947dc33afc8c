"""Opt-in speed-ups of the sampling loop: one settings object and the DeepCache state.

`SpeedOptions` groups the settings `XDynaPipeline.__call__` accepts one by one (presets
set them by name); `DeepCacheState` is what the denoising loop remembers between steps
for DeepCache (Ma et al., "DeepCache: Accelerating Diffusion Models for Free", CVPR 2024).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Dict, Optional, Tuple

import torch

from xdyna_core.errors import InputError

SAMPLERS = ("ddim", "dpmpp")


@dataclass(frozen=True)
class SpeedOptions:
    """Speed settings of one generation; the defaults are the official sampling.

    window_batch_size: windows denoised together in one UNet (and ControlNet) call; same
        result, more activation memory.
    sampler: None (the pipeline's scheduler, official DDIM), "ddim" or "dpmpp"
        (DPM-Solver++(2M), Lu et al. 2022; changes the output).
    guidance_truncation: fraction of the steps that use CFG (Kynkäänniemi et al.,
        NeurIPS 2024); None = every step. Changes the output.
    deep_cache_interval: N > 1 runs the full UNet every N-th step and only its shallow
        branch between (DeepCache, uniform 1:N); 1 = off. Changes the output.
    deep_cache_branch: first-level UNet layers the shallow branch recomputes
        (None = all of them)."""

    window_batch_size: int = 1
    sampler: Optional[str] = None
    guidance_truncation: Optional[float] = None
    deep_cache_interval: int = 1
    deep_cache_branch: Optional[int] = None

    @classmethod
    def field_names(cls) -> Tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    def validate(self, first_level_layers: Optional[int] = None, window_schedule: str = "blend") -> "SpeedOptions":
        """Raise `InputError` for a bad setting. `first_level_layers`: layers of the UNet's
        first down block (the range of `deep_cache_branch`); `window_schedule`: the call's
        ("official" windows move every step, so DeepCache cannot reuse features)."""
        if not isinstance(self.window_batch_size, int) or self.window_batch_size < 1:
            raise InputError(f"window_batch_size must be an integer >= 1, got {self.window_batch_size!r}")
        if self.sampler is not None and self.sampler not in SAMPLERS:
            raise InputError(f"sampler must be None (the pipeline's scheduler) or one of {SAMPLERS}, got {self.sampler!r}")
        if self.guidance_truncation is not None and not 0 < self.guidance_truncation <= 1:
            raise InputError(f"guidance_truncation is the fraction of steps with CFG, in (0, 1]; got {self.guidance_truncation}")
        if not isinstance(self.deep_cache_interval, int) or self.deep_cache_interval < 1:
            raise InputError(f"deep_cache_interval must be an integer >= 1 (1 = off), got {self.deep_cache_interval!r}")
        if self.deep_cache_branch is not None:
            layers = first_level_layers or 0
            if not isinstance(self.deep_cache_branch, int) or not 0 <= self.deep_cache_branch <= layers:
                raise InputError(f"deep_cache_branch must be an integer in 0..{layers} (first-level UNet layers), "
                                 f"got {self.deep_cache_branch!r}")
        if self.deep_cache_interval > 1 and window_schedule != "blend":
            raise InputError("deep_cache_interval > 1 needs window_schedule='blend' (the official windows move every step, "
                             "so cached features would belong to other frames)")
        return self

    def cfg_steps(self, num_steps: int) -> int:
        """How many of the first `num_steps` steps use CFG (all without truncation)."""
        if self.guidance_truncation is None:
            return num_steps
        return math.ceil(self.guidance_truncation * num_steps - 1e-9)

    def deep_cache(self) -> Optional["DeepCacheState"]:
        """A fresh DeepCache state for one denoising run, or None when DeepCache is off."""
        if self.deep_cache_interval <= 1:
            return None
        return DeepCacheState(interval=self.deep_cache_interval, branch=self.deep_cache_branch)


@dataclass
class DeepCacheState:
    """DeepCache during one denoising run (Ma et al., CVPR 2024, Sec. 3.3, uniform 1:N).

    Every `interval`-th step runs the full UNet and caches, per window group, its deep
    features (the input of the last up block); the steps between run only the shallow
    branch (`branch` first-level layers) on them. Features are reused only with the same
    CFG batch (`halves`): after guidance truncation switches CFG off, the next step runs
    the full UNet again."""

    interval: int
    branch: Optional[int] = None
    step: int = 0  # the denoising step being run
    features: Dict[int, torch.Tensor] = field(default_factory=dict)  # window group -> deep features
    halves: Dict[int, int] = field(default_factory=dict)  # window group -> CFG batch of its features

    def begin_step(self, step: int) -> None:
        self.step = step

    @property
    def full_step(self) -> bool:
        return self.step % self.interval == 0

    def reusable(self, group: int, halves: int) -> Optional[torch.Tensor]:
        """The cached features window group `group` may reuse on this step, else None
        (then the full UNet runs and `store` keeps its new features)."""
        if self.full_step or self.halves.get(group) != halves:
            return None
        return self.features[group]

    def store(self, group: int, halves: int, features: torch.Tensor) -> None:
        self.features[group] = features
        self.halves[group] = halves

    def shallow_residual_count(self, unet) -> int:
        """ControlNet down residuals a partial step needs: the skips of `conv_in` and of
        the recomputed first-level layers."""
        return unet.shallow_skip_count if self.branch is None else self.branch + 1
