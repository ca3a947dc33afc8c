"""Where and with what the models run: the device and dtype policy, the model choice ("tiny",
"official", or a model folder) and loading each model once per process. Every front door (the
studio, `xdyna animate`, Python's `xdyna_core.animate`) resolves models here, so the same
request gives the same pipeline, dtype and device whoever asks.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import torch
from diffusers.utils import logging as diffusers_logging

from xdyna_core import resources
from xdyna_core.errors import InputError, MissingWeightsError, ModelUnavailable
from xdyna_core.pipeline import XDynaPipeline, default_dtype
from xdyna_core.testing import make_tiny_components

log = logging.getLogger("xdyna.runtime")

MODEL_TINY = "tiny"
MODEL_OFFICIAL = "official"
MIN_OFFICIAL_GPU_GB = 12.0  # fp16 weights (~6 GB) + activations of a 16-frame window at 896x512 with CFG
OFFICIAL_SIZE = (896, 512)  # (height, width) of the official checkpoints' training and inference
UNTRAINED_TINY_SIZE = (64, 64)  # (height, width) of the random stand-in when the tiny model is not installed
DTYPES = ("float32", "float16", "bfloat16")

# --------------------------------------------------------------------------------------
# Device and dtype: one policy
# --------------------------------------------------------------------------------------


def resolve_device(device: Optional[str] = "auto") -> torch.device:
    """"auto" (or None): XDYNA_DEVICE if set, else CUDA when available, else the CPU."""
    want = (device or "auto").strip().lower()
    if want == "auto":
        want = os.environ.get("XDYNA_DEVICE", "").strip().lower() or "auto"
    if want == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(want)
    except RuntimeError:
        raise InputError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError("a CUDA GPU was asked for but this machine has none; use the CPU (device 'cpu')")
    return dev


def resolve_dtype(device: torch.device, dtype: Optional[str] = "auto", preset_dtype: Optional[str] = None) -> torch.dtype:
    """The one dtype policy: an explicit dtype wins (argument, else XDYNA_DTYPE); otherwise float32
    on the CPU, and on a GPU the preset's dtype, else `pipeline.default_dtype` (bfloat16 where
    supported)."""
    name = dtype if dtype not in (None, "", "auto") else os.environ.get("XDYNA_DTYPE", "").strip() or None
    if name is None and torch.device(device).type == "cuda":
        name = preset_dtype
    if name is None:
        return default_dtype(device)
    if name not in DTYPES:
        raise InputError(f"dtype must be one of {', '.join(DTYPES)}, got {name!r}")
    return getattr(torch, name)


@dataclass
class DeviceInfo:
    device: str  # "cuda" or "cpu"
    dtype: str  # torch dtype name the official model would use here
    name: str  # GPU name or "CPU (n cores, no GPU)"
    memory_free: Optional[int]  # bytes free on the device (GPU memory, or RAM on CPU)
    memory_total: Optional[int]


def _ram() -> tuple:
    """(available, total) bytes of system memory, from /proc/meminfo where it exists."""
    try:
        info = {}
        with open("/proc/meminfo") as fh:
            for line in fh:
                key, value = line.split(":", 1)
                info[key] = int(value.split()[0]) * 1024
        return info.get("MemAvailable"), info.get("MemTotal")
    except OSError:
        return None, None


def device_info() -> DeviceInfo:
    """What this machine offers (XDYNA_DEVICE / XDYNA_DTYPE override the choice)."""
    want = os.environ.get("XDYNA_DEVICE", "").strip().lower()
    if os.environ.get("SPACES_ZERO_GPU") and want != "cpu":
        # ZeroGPU attaches a GPU only inside each `spaces.GPU` call; outside it nothing can be asked.
        return DeviceInfo("cuda", os.environ.get("XDYNA_DTYPE") or "float16", "ZeroGPU", None, None)
    if torch.cuda.is_available() and want != "cpu":
        free, total = torch.cuda.mem_get_info()
        dtype = str(resolve_dtype(torch.device("cuda"))).replace("torch.", "")
        return DeviceInfo("cuda", dtype, torch.cuda.get_device_name(), free, total)
    free, total = _ram()
    return DeviceInfo("cpu", "float32", f"CPU ({os.cpu_count()} cores, no GPU)", free, total)


def free_memory() -> None:
    """Give back what a finished or cancelled job held (Python objects and the CUDA cache)."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# --------------------------------------------------------------------------------------
# Model choice
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelSpec:
    """A resolved model choice. `choice` is "tiny", "official" or "folder"; `folder` is where its
    files are (None: the untrained tiny stand-in, or official weights from the hub)."""

    choice: str
    folder: Optional[Path]

    @property
    def trained(self) -> bool:
        return not (self.choice == MODEL_TINY and self.folder is None)


def tiny_model_dir() -> Optional[Path]:
    """The trained embedded model, if present: XDYNA_TINY_MODEL or the shipped one."""
    path = Path(os.environ.get("XDYNA_TINY_MODEL") or resources.tiny_model_dir())
    return path if (path / "model_index.json").is_file() else None


def official_model_dir() -> Optional[Path]:
    """A local copy of the official model (a folder written by `xdyna convert`): XDYNA_MODEL when
    it is a folder, else XDYNA_OFFICIAL_MODEL."""
    for var in ("XDYNA_MODEL", "XDYNA_OFFICIAL_MODEL"):
        value = os.environ.get(var, "").strip()
        if value and value not in (MODEL_TINY, MODEL_OFFICIAL):
            path = Path(value)
            if not (path / "model_index.json").is_file():
                raise ModelUnavailable(f"{var}={value} is not a model folder (no model_index.json). "
                                       "Point it at a folder written by `xdyna convert`, or unset it.")
            return path
    return None


def default_model_choice() -> str:
    """XDYNA_MODEL: "tiny" (default), "official", or a folder holding the official model
    (then official is chosen and loaded from there)."""
    value = os.environ.get("XDYNA_MODEL", "").strip()
    return MODEL_TINY if value in ("", MODEL_TINY) else MODEL_OFFICIAL


def resolve_model(model: Optional[str] = None) -> ModelSpec:
    """"tiny" (default), "official", or a model folder (written by `xdyna convert` or
    `save_pretrained`) -> `ModelSpec`. The shipped tiny model's folder counts as "tiny"."""
    model = str(model or default_model_choice()).strip()
    if model == MODEL_TINY:
        return ModelSpec(MODEL_TINY, tiny_model_dir())
    if model == MODEL_OFFICIAL:
        return ModelSpec(MODEL_OFFICIAL, official_model_dir())
    folder = Path(model)
    if not (folder / "model_index.json").is_file():
        raise ModelUnavailable(f"{model} is not a model folder (no model_index.json). Create one with "
                               "`xdyna convert`, or choose 'tiny' (embedded) or 'official' (download).")
    tiny = tiny_model_dir()
    if tiny is not None and folder.resolve() == tiny.resolve():
        return ModelSpec(MODEL_TINY, tiny)
    return ModelSpec("folder", folder)


def check_model(spec: ModelSpec) -> None:
    """Refuse, before any work is done, the official model where it cannot run; says what to do."""
    if spec.choice != MODEL_OFFICIAL:
        return
    info = device_info()
    if info.device != "cuda":
        raise ModelUnavailable(
            "Official X-Dyna needs a CUDA GPU and this machine has none. Choose the embedded tiny "
            "model here, or run on a machine (or a Hugging Face Space) with a GPU of 12 GB or more.")
    if info.memory_total is not None and info.memory_total < MIN_OFFICIAL_GPU_GB * 1024**3:
        raise ModelUnavailable(
            f"Official X-Dyna needs about {MIN_OFFICIAL_GPU_GB:.0f} GB of GPU memory; {info.name} has "
            f"{info.memory_total / 1024**3:.1f} GB. Use the embedded tiny model or a bigger GPU.")


def native_size(spec: ModelSpec) -> tuple:
    """(height, width) a model was made for, read from its config files (no weights loaded)."""
    if spec.choice == MODEL_OFFICIAL:
        return OFFICIAL_SIZE
    if spec.folder is None:
        return UNTRAINED_TINY_SIZE
    try:
        unet = json.loads((spec.folder / "unet" / "config.json").read_text())
        vae = json.loads((spec.folder / "vae" / "config.json").read_text())
    except (OSError, ValueError) as err:
        raise ModelUnavailable(f"{spec.folder} has no readable unet/vae config.json ({err})") from None
    factor = 2 ** (len(vae["block_out_channels"]) - 1)
    size = unet["sample_size"]
    h, w = (size, size) if isinstance(size, int) else size  # an int means square
    return max(64, int(h) * factor // 64 * 64), max(64, int(w) * factor // 64 * 64)


def load_pipeline(spec: ModelSpec, device: torch.device, dtype: torch.dtype, offload: bool = False) -> XDynaPipeline:
    """The pipeline of a model choice, on `device` in `dtype`. A failed download or a missing file
    is explained with what to do."""
    if spec.choice == MODEL_TINY and spec.folder is None:
        # Not installed: the same classes with random weights, made deterministically so every run
        # shows the same (meaningless) output; front doors label it as untrained.

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            pipe = XDynaPipeline(**make_tiny_components())
        pipe = pipe.to(dtype=dtype)
    else:
        # the front doors show their own "loading the model" stage; diffusers' bar would be a second one
        diffusers_logging.disable_progress_bar()
        try:
            if spec.folder is not None:
                pipe = XDynaPipeline.from_pretrained(str(spec.folder), dtype=dtype)
            else:
                pipe = XDynaPipeline.from_official(torch_dtype=dtype)
        except MissingWeightsError as err:
            raise ModelUnavailable(
                f"Official X-Dyna could not be loaded: {err}. To use it here, run once with internet access "
                "(the files are then cached), or download the weights elsewhere, convert them with `xdyna convert` "
                "and set XDYNA_OFFICIAL_MODEL to that folder. The embedded tiny model works offline.") from None
        except InputError as err:  # a damaged or refused file: the loaders name it
            raise ModelUnavailable(f"the model in {spec.folder or 'the hub cache'} could not be loaded: {err}") from None
        except (OSError, ValueError, RuntimeError) as err:  # diffusers/safetensors readers on a bad folder
            raise ModelUnavailable(f"the model in {spec.folder or 'the hub cache'} could not be loaded "
                                   f"({type(err).__name__}: {str(err).splitlines()[0][:300]}). Write it again with "
                                   "`xdyna convert` or `save_pretrained`, or choose another model.") from None
    pipe.set_progress_bar_config(disable=True)
    if offload and device.type == "cuda":
        pipe.enable_model_cpu_offload(device=device)
    else:
        pipe.to(device)
    return pipe


@dataclass
class LoadedModel:
    pipe: XDynaPipeline
    spec: ModelSpec
    device: torch.device
    dtype: torch.dtype

    @property
    def choice(self) -> str:
        return self.spec.choice

    @property
    def trained(self) -> bool:
        return self.spec.trained


class ModelManager:
    """Loads a model once and keeps it; asking for another (model, device, dtype) frees the first.
    One manager per process serves every job (the studio's visitors, a batch of CLI jobs)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._loaded: Optional[LoadedModel] = None

    @property
    def loaded(self) -> Optional[LoadedModel]:
        return self._loaded

    def unload(self) -> None:
        with self._lock:
            self._loaded = None
        free_memory()

    def get(self, spec: ModelSpec, device: torch.device, dtype: torch.dtype, offload: bool = False,
            on_load: Optional[Callable[[ModelSpec], None]] = None) -> LoadedModel:
        check_model(spec)
        with self._lock:
            held = self._loaded
            if held is not None and (held.spec, held.device, held.dtype) == (spec, device, dtype):
                return held
            self._loaded = None
            free_memory()
            if on_load is not None:
                on_load(spec)
            self._loaded = LoadedModel(load_pipeline(spec, device, dtype, offload), spec, device, dtype)
            return self._loaded


MODELS = ModelManager()  # the process's models, shared by every front door
