"""Load the official X-Dyna release files, strictly, and fetch them with huggingface_hub.

The official files and what the official script does with them (docs/official-behaviour.md §1-5):

- ``unet-checkpoint-epoch-5.ckpt``, ``controlnet-checkpoint-epoch-5.ckpt``,
  ``controlnet-face-checkpoint-epoch-2.ckpt`` (hub ``Boese0601/X-Dyna``): pickled dicts; if a
  ``"state_dict"`` entry exists it is the state dict; every ``"module."`` in a key is removed.
- ``models/ip-adapter-plus_sd15.bin`` (hub ``h94/IP-Adapter``): its ``"image_proj"`` entry is
  the resampler; ``models/image_encoder`` is the CLIP ViT-H/14 image encoder.
- a Stable Diffusion 1.5 diffusers folder (hub ``stable-diffusion-v1-5/stable-diffusion-v1-5``):
  ``vae``, ``text_encoder``, ``tokenizer`` and ``unet/config.json`` (the architecture).

Unlike the official script, every key is demanded (the official UNet loader tolerates missing
keys and silently keeps initial values); only the fixed ``pos_encoder.pe`` sinusoids may be
absent, they are recomputed. Files are read with ``torch.load(weights_only=True)`` or
safetensors. Every failure is one line that names the file.
"""

from __future__ import annotations

import json
import os
import pickle
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import huggingface_hub.constants as hf_constants
import torch
from diffusers import AutoencoderKL, DDIMScheduler
from huggingface_hub import hf_hub_download, snapshot_download
from safetensors.torch import load_file
from transformers import CLIPTextModel, CLIPTokenizer, CLIPVisionModelWithProjection

from ..errors import InputError, MissingWeightsError
from .controlnet import make_controlnet
from .image_proj import XDynaImageProjection
from .motion_module import PositionalEncoding, sinusoidal_positions
from .unet import XDynaUNet

DEFAULT_XDYNA_REPO = "Boese0601/X-Dyna"
DEFAULT_SD_REPO = "stable-diffusion-v1-5/stable-diffusion-v1-5"
DEFAULT_IP_ADAPTER_REPO = "h94/IP-Adapter"
UNET_FILE = "unet-checkpoint-epoch-5.ckpt"
CONTROLNET_FILE = "controlnet-checkpoint-epoch-5.ckpt"
CONTROLNET_FACE_FILE = "controlnet-face-checkpoint-epoch-2.ckpt"
IP_ADAPTER_FILE = "models/ip-adapter-plus_sd15.bin"
IMAGE_ENCODER_SUBFOLDER = "models/image_encoder"

# Official DDIM settings (configs/x_dyna.yaml noise_scheduler_kwargs + diffusers defaults).
OFFICIAL_SCHEDULER_CONFIG = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "linear",
    "steps_offset": 1,
    "clip_sample": False,
    "set_alpha_to_one": True,
    "prediction_type": "epsilon",
    "timestep_spacing": "leading",
}

_SD_WEIGHTS = {
    "vae": ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin"),
    "text_encoder": ("model.safetensors", "pytorch_model.bin"),
}
_TOKENIZER_FILES = (("vocab.json", "merges.txt"), ("tokenizer.json",))
_IMAGE_ENCODER_WEIGHTS = ("model.safetensors", "pytorch_model.bin")
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


def _abbrev(items, limit: int = 4) -> str:
    items = list(items)
    shown = ", ".join(items[:limit])
    return f"{shown}, ... (+{len(items) - limit} more)" if len(items) > limit else shown


def _short(exc: BaseException, limit: int = 160) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ------------------------------------------------------------------------------ reading files


def read_state_dict_file(path: str | Path) -> dict:
    """``torch.load(weights_only=True)`` (memory-mapped when possible) or safetensors; any
    failure becomes one line naming the file."""
    path = Path(path)
    if not path.exists():
        raise MissingWeightsError(f"{path}: file not found")
    if path.is_dir():
        raise InputError(f"{path}: is a folder, expected a checkpoint file")
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path))
        except Exception as exc:  # noqa: BLE001 - every reader error becomes one clear line
            raise InputError(f"{path}: not a readable safetensors file ({_short(exc)}); download it again") from exc
    try:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:
            if "mmap" not in str(exc):
                raise
            obj = torch.load(path, map_location="cpu", weights_only=True)  # legacy (non-zip) format
    except pickle.UnpicklingError as exc:
        if "weights only" not in str(exc).lower():  # not a pickle at all (an HTML error page, say)
            raise InputError(f"{path}: not a readable PyTorch checkpoint (truncated, corrupt or not a weights "
                             "file); download it again") from exc
        # weights_only refused an object that would run code while loading: say so in our words
        raise InputError(
            f"{path}: refused — it holds Python objects that would run code when loaded, not plain tensors. "
            "Only weight files (safetensors, or PyTorch checkpoints of tensors) are loaded; get the file from "
            "its official source again"
        ) from exc
    except Exception as exc:  # noqa: BLE001
        raise InputError(
            f"{path}: not a readable PyTorch checkpoint (truncated, corrupt or not a weights file: "
            f"{type(exc).__name__}: {_short(exc)}); download it again"
        ) from exc
    if not isinstance(obj, Mapping):
        raise InputError(f"{path}: holds a {type(obj).__name__}, not a dict of weights")
    return dict(obj)


def read_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """An official X-Dyna ``.ckpt`` as a state dict: unwrap ``"state_dict"``, drop every ``module.``."""
    obj = read_state_dict_file(path)
    state = obj["state_dict"] if "state_dict" in obj else obj
    if not isinstance(state, Mapping):
        raise InputError(f"{path}: its 'state_dict' entry is a {type(state).__name__}, not a dict of weights")
    return {str(k).replace("module.", ""): v for k, v in state.items()}


def read_ip_adapter_image_proj(path: str | Path) -> dict[str, torch.Tensor]:
    """The ``"image_proj"`` part of ``ip-adapter-plus_sd15.bin`` (or ``image_proj.*`` keys of the
    ``.safetensors`` variant)."""
    obj = read_state_dict_file(path)
    if "image_proj" in obj and isinstance(obj["image_proj"], Mapping):
        return dict(obj["image_proj"])
    prefixed = {k[len("image_proj."):]: v for k, v in obj.items() if isinstance(k, str) and k.startswith("image_proj.")}
    if prefixed:
        return prefixed
    raise MissingWeightsError(
        f"{path}: no 'image_proj' weights (found entries: {_abbrev(map(str, obj)) or 'none'}); "
        "expected the IP-Adapter-Plus file ip-adapter-plus_sd15.bin"
    )


# ------------------------------------------------------------------------------ strict loading


def load_strict(
    factory: Callable[[], torch.nn.Module],
    state: Mapping[str, torch.Tensor],
    path: str | Path,
    what: str,
    torch_dtype: torch.dtype | None = torch.float32,
    optional: Callable[[str], bool] = lambda key: False,
) -> torch.nn.Module:
    """Build ``factory()`` without allocating (meta device) and fill it from ``state``.

    Every key of the model must be in ``state`` (except those ``optional`` accepts), with the
    same shape, and ``state`` may hold nothing else. ``what`` names the model in messages.
    """
    with torch.device("meta"):
        model = factory()
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = [k for k in expected if k not in state and not optional(k)]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        f"{k} {tuple(state[k].shape)} vs {expected[k]}"
        for k in expected
        if k in state and (not torch.is_tensor(state[k]) or tuple(state[k].shape) != expected[k])
    ]
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys ({_abbrev(missing)})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys ({_abbrev(unexpected)})")
        if mismatched:
            parts.append(f"{len(mismatched)} shape mismatches ({_abbrev(mismatched, 2)})")
        error = MissingWeightsError if missing else InputError
        raise error(f"{path}: does not match the {what}: " + "; ".join(parts))
    tensors = {
        k: (v.to(torch_dtype) if torch_dtype is not None and v.is_floating_point() else v) for k, v in state.items()
    }
    model.load_state_dict(tensors, strict=False, assign=True)
    _materialize_fixed_buffers(model, torch_dtype)
    return model.eval()


def _materialize_fixed_buffers(model: torch.nn.Module, torch_dtype: torch.dtype | None) -> None:
    for module in model.modules():
        if isinstance(module, PositionalEncoding) and module.pe.is_meta:
            _, max_len, dim = module.pe.shape
            module.register_buffer("pe", sinusoidal_positions(max_len, dim).to(torch_dtype or torch.float32), persistent=True)
    left = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if left:  # cannot happen with a complete state dict; guard against silent garbage
        raise MissingWeightsError(f"weights not loaded for {_abbrev(left)}")


def load_unet(path: str | Path, config: Mapping, torch_dtype: torch.dtype | None = torch.float32, **unet_kwargs):
    """``unet-checkpoint-epoch-5.ckpt`` into an :class:`XDynaUNet` built from the SD UNet ``config``."""

    config = {k: v for k, v in dict(config).items() if not k.startswith("_")}
    return load_strict(
        lambda: XDynaUNet.from_config({**config, **unet_kwargs}),
        read_checkpoint(path),
        path,
        "X-Dyna UNet",
        torch_dtype,
        optional=lambda k: k.endswith(".pos_encoder.pe"),
    )


def load_controlnet(path: str | Path, config: Mapping, conditioning_channels: int,
                    torch_dtype: torch.dtype | None = torch.float32, **controlnet_kwargs):
    """A pose (3 channels) or S-Face (6 channels) ControlNet ``.ckpt``; ``config`` = SD UNet config
    (the official ControlNets are the standard SD1.5 ControlNet architecture)."""

    what = f"{'S-Face' if conditioning_channels == 6 else 'pose'} ControlNet ({conditioning_channels} channels)"
    return load_strict(
        lambda: make_controlnet(config, conditioning_channels, **controlnet_kwargs),
        read_checkpoint(path),
        path,
        what,
        torch_dtype,
    )


def load_image_proj(path: str | Path, torch_dtype: torch.dtype | None = torch.float32, **config):
    """The IP-Adapter-Plus resampler of ``ip-adapter-plus_sd15.bin``.

    Sizes are read from the weights (width, queries, input/output widths, depth, feed-forward
    ratio); the head split is not visible in shapes and defaults to the official 64-wide heads
    (override with ``dim_head``/``heads``).
    """

    state = read_ip_adapter_image_proj(path)
    try:
        latents, proj_in, proj_out = state["latents"], state["proj_in.weight"], state["proj_out.weight"]
        dim = latents.shape[-1]
        inferred = dict(
            dim=dim,
            num_queries=latents.shape[1],
            embedding_dim=proj_in.shape[1],
            output_dim=proj_out.shape[0],
            depth=len({k.split(".")[1] for k in state if k.startswith("layers.")}),
            ff_mult=state["layers.0.1.1.weight"].shape[0] // dim,
        )
        inner = state["layers.0.0.to_q.weight"].shape[0]
    except (KeyError, AttributeError, IndexError) as exc:
        raise MissingWeightsError(
            f"{path}: 'image_proj' is not an IP-Adapter-Plus resampler (no {exc}); expected ip-adapter-plus_sd15.bin"
        ) from exc
    dim_head = config.pop("dim_head", None)
    heads = config.pop("heads", None)
    if dim_head is None:
        dim_head = inner // heads if heads else 64
    heads = heads or max(inner // dim_head, 1)
    cfg = {**inferred, "dim_head": dim_head, "heads": heads, **config}
    return load_strict(lambda: XDynaImageProjection(**cfg), state, path, "IP-Adapter-Plus image projection", torch_dtype)


def load_image_encoder(folder: str | Path, torch_dtype: torch.dtype | None = torch.float32):
    """CLIP image encoder folder (``CLIPVisionModelWithProjection``)."""

    folder = Path(folder)
    _require_files(folder, "CLIP image encoder", [("config.json",), _IMAGE_ENCODER_WEIGHTS])
    try:
        return CLIPVisionModelWithProjection.from_pretrained(folder, dtype=torch_dtype or torch.float32).eval()
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"{folder}: cannot load the CLIP image encoder ({_short(exc)})") from exc


def load_sd_components(folder: str | Path, torch_dtype: torch.dtype | None = torch.float32) -> dict:
    """``vae``, ``text_encoder``, ``tokenizer`` and ``unet_config`` of an SD1.5 diffusers folder."""

    folder = Path(folder)
    check_sd_folder(folder)
    dtype = torch_dtype or torch.float32
    out = {}
    for name, load in (
        ("vae", lambda: AutoencoderKL.from_pretrained(folder, subfolder="vae", torch_dtype=dtype)),
        ("text_encoder", lambda: CLIPTextModel.from_pretrained(folder, subfolder="text_encoder", dtype=dtype)),
        ("tokenizer", lambda: CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer")),
    ):
        try:
            out[name] = load()
        except Exception as exc:  # noqa: BLE001
            raise InputError(f"{folder / name}: cannot load the SD1.5 {name} ({_short(exc)})") from exc
    for name in ("vae", "text_encoder"):
        out[name].eval()
    try:
        out["unet_config"] = json.loads((folder / "unet" / "config.json").read_text())
    except ValueError as exc:
        raise InputError(f"{folder / 'unet' / 'config.json'}: not valid JSON ({_short(exc)})") from exc
    return out


def check_sd_folder(folder: Path) -> None:
    _require_files(folder / "unet", "SD1.5 folder", [("config.json",)])
    _require_files(folder / "vae", "SD1.5 folder", [("config.json",), _SD_WEIGHTS["vae"]])
    _require_files(folder / "text_encoder", "SD1.5 folder", [("config.json",), _SD_WEIGHTS["text_encoder"]])
    tok = folder / "tokenizer"
    if not any(all((tok / f).is_file() for f in group) for group in _TOKENIZER_FILES):
        raise MissingWeightsError(f"{tok}: SD1.5 folder is missing the tokenizer (vocab.json + merges.txt or tokenizer.json)")


def _require_files(folder: Path, what: str, groups) -> None:
    """Each group is a tuple of alternatives; one of each group must exist in ``folder``."""
    missing = [" or ".join(g) for g in groups if not any((folder / f).is_file() for f in g)]
    if missing:
        raise MissingWeightsError(f"{folder}: {what} is missing {', '.join(missing)}")


def default_feature_extractor():
    """The official image preprocessing: a default ``CLIPImageProcessor`` (shortest side 224,
    bicubic, centre crop 224, CLIP mean/std) with PIL resizing, as transformers 4.25 did."""
    try:  # transformers >= 5 names the PIL backend explicitly (the default one needs torchvision)
        from transformers import CLIPImageProcessorPil as processor_class  # not at the top: version fallback
    except ImportError:  # pragma: no cover - older transformers: the default class uses PIL
        from transformers import CLIPImageProcessor as processor_class
    return processor_class()


def official_scheduler():
    """``DDIMScheduler`` with the official settings (linear betas 0.00085..0.012, leading spacing,
    ``steps_offset`` 1, no clipping, ``set_alpha_to_one``)."""

    return DDIMScheduler(**OFFICIAL_SCHEDULER_CONFIG)


# ------------------------------------------------------------------------------ locating files


@dataclass
class OfficialPaths:
    """Local paths of every official file/folder."""

    unet: Path
    controlnet: Path
    controlnet_face: Path | None
    ip_adapter: Path
    image_encoder: Path
    sd: Path


def _offline(local_files_only: bool | None) -> bool:
    if local_files_only is not None:
        return local_files_only

    env = os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}
    return env or bool(getattr(hf_constants, "HF_HUB_OFFLINE", False))


def _is_local(source: str | Path) -> bool:
    s = str(source)
    return Path(s).expanduser().exists() or not _REPO_ID.match(s)


def _hub_error(repo_id: str, what: str, exc: Exception, offline: bool) -> MissingWeightsError:
    name = type(exc).__name__
    if offline or "Offline" in name:
        return MissingWeightsError(
            f"{repo_id}: {what} is not in the local Hugging Face cache and downloads are off (HF_HUB_OFFLINE); "
            "download it once online or pass a local folder"
        )
    if "LocalEntryNotFound" in name:  # raised when the hub cannot be reached and nothing is cached
        return MissingWeightsError(
            f"{repo_id}: cannot reach the Hugging Face hub and {what} is not in the local cache; "
            "check the network connection or pass a local folder"
        )
    return MissingWeightsError(f"{repo_id}: cannot download {what} ({name}: {_short(exc)})")


def resolve_file(source: str | Path, filename: str, *, cache_dir=None, local_files_only=None, token=None) -> Path:
    """``filename`` from a hub repo id or a local folder (searched recursively, so the official
    ``pretrained_weights/`` tree works too). An absolute ``filename`` is used as is."""
    if Path(filename).is_absolute():
        if not Path(filename).is_file():
            raise MissingWeightsError(f"{filename}: file not found")
        return Path(filename)
    if _is_local(source):
        folder = Path(source).expanduser()
        if not folder.is_dir():
            raise MissingWeightsError(f"{folder}: folder not found (looked for {filename})")
        direct = folder / filename
        if direct.is_file():
            return direct
        found = sorted(p for p in folder.rglob(Path(filename).name) if p.is_file())
        if found:
            return found[0]
        raise MissingWeightsError(f"{folder}: {filename} not found in this folder")

    offline = _offline(local_files_only)
    try:
        return Path(hf_hub_download(str(source), filename, cache_dir=cache_dir, local_files_only=offline, token=token))
    except Exception as exc:  # noqa: BLE001
        raise _hub_error(str(source), filename, exc, offline) from exc


def resolve_folder(source: str | Path, subfolder: str, patterns: list[str], marker: str, *,
                   cache_dir=None, local_files_only=None, token=None) -> Path:
    """A folder (``subfolder`` of a repo / local folder); hub downloads are limited to ``patterns``.
    ``marker`` is a file that identifies the folder when searching a local tree."""
    if _is_local(source):
        folder = Path(source).expanduser()
        if not folder.is_dir():
            raise MissingWeightsError(f"{folder}: folder not found")
        for candidate in (folder / subfolder, folder):
            if (candidate / marker).is_file():
                return candidate
        depth = len(Path(marker).parts)
        found = sorted(
            p.parents[depth - 1] for p in folder.rglob(marker) if p.parents[depth - 1].as_posix().endswith(subfolder.strip("/"))
        )
        if found:
            return found[0]
        raise MissingWeightsError(f"{folder}: no {subfolder.strip('/') or 'folder'} with {marker} found here")

    offline = _offline(local_files_only)
    try:
        root = snapshot_download(str(source), allow_patterns=patterns, cache_dir=cache_dir, local_files_only=offline, token=token)
    except Exception as exc:  # noqa: BLE001
        raise _hub_error(str(source), subfolder or "the model folder", exc, offline) from exc
    return Path(root) / subfolder


def download_official(
    xdyna_repo: str | Path = DEFAULT_XDYNA_REPO,
    sd_repo: str | Path = DEFAULT_SD_REPO,
    ip_adapter_repo: str | Path = DEFAULT_IP_ADAPTER_REPO,
    *,
    unet_file: str = UNET_FILE,
    controlnet_file: str = CONTROLNET_FILE,
    controlnet_face_file: str = CONTROLNET_FACE_FILE,
    ip_adapter_file: str = IP_ADAPTER_FILE,
    image_encoder_subfolder: str = IMAGE_ENCODER_SUBFOLDER,
    face: bool = True,
    cache_dir: str | Path | None = None,
    local_files_only: bool | None = None,
    token: str | bool | None = None,
) -> OfficialPaths:
    """Fetch (or find) every official file. Each ``*_repo`` is a hub repo id or a local folder.

    Honours ``HF_HUB_OFFLINE`` (then only the local cache is used; ``local_files_only``
    overrides). Downloads only what inference needs (~9 GB with S-Face, fp32).
    """
    kw = dict(cache_dir=cache_dir, local_files_only=local_files_only, token=token)
    sd_patterns = [
        "model_index.json", "unet/config.json", "vae/config.json", "vae/diffusion_pytorch_model.safetensors",
        "text_encoder/config.json", "text_encoder/model.safetensors", "tokenizer/*",
    ]
    enc = image_encoder_subfolder.strip("/")
    paths = OfficialPaths(
        unet=resolve_file(xdyna_repo, unet_file, **kw),
        controlnet=resolve_file(xdyna_repo, controlnet_file, **kw),
        controlnet_face=resolve_file(xdyna_repo, controlnet_face_file, **kw) if face else None,
        ip_adapter=resolve_file(ip_adapter_repo, ip_adapter_file, **kw),
        image_encoder=resolve_folder(ip_adapter_repo, enc, [f"{enc}/config.json", f"{enc}/model.safetensors"], "config.json", **kw),
        sd=resolve_folder(sd_repo, "", sd_patterns, "unet/config.json", **kw),
    )
    # A hub snapshot can be incomplete (offline cache, interrupted download): check now.
    _require_files(paths.image_encoder, "CLIP image encoder", [("config.json",), _IMAGE_ENCODER_WEIGHTS])
    check_sd_folder(paths.sd)
    return paths


def load_components_from_paths(
    paths: OfficialPaths,
    *,
    torch_dtype: torch.dtype | None = torch.float32,
    unet_kwargs: Mapping | None = None,
    controlnet_kwargs: Mapping | None = None,
    image_proj_kwargs: Mapping | None = None,
) -> dict:
    """Build every component from local official files (see :func:`load_official_components`)."""
    sd = load_sd_components(paths.sd, torch_dtype)
    unet_config = sd.pop("unet_config")
    image_encoder = load_image_encoder(paths.image_encoder, torch_dtype)
    unet = load_unet(paths.unet, unet_config, torch_dtype, **dict(unet_kwargs or {}))
    proj_cfg = dict(image_proj_kwargs or {})
    if proj_cfg.get("embedding_dim", image_encoder.config.hidden_size) != image_encoder.config.hidden_size:
        raise InputError("image_proj_kwargs['embedding_dim'] differs from the image encoder's hidden size")
    image_proj = load_image_proj(paths.ip_adapter, torch_dtype, **proj_cfg)
    if image_proj.config.embedding_dim != image_encoder.config.hidden_size:
        raise InputError(
            f"{paths.ip_adapter}: resampler input width {image_proj.config.embedding_dim} does not match the "
            f"image encoder in {paths.image_encoder} (hidden size {image_encoder.config.hidden_size})"
        )
    if image_proj.config.output_dim != unet.config.cross_attention_dim:
        raise InputError(
            f"{paths.ip_adapter}: resampler output width {image_proj.config.output_dim} does not match the "
            f"UNet cross-attention width {unet.config.cross_attention_dim}"
        )
    cn_kwargs = dict(controlnet_kwargs or {})
    return {
        "unet": unet,
        "controlnet": load_controlnet(paths.controlnet, unet_config, 3, torch_dtype, **cn_kwargs),
        "controlnet_face": (
            load_controlnet(paths.controlnet_face, unet_config, 6, torch_dtype, **cn_kwargs)
            if paths.controlnet_face is not None else None
        ),
        "image_proj": image_proj,
        "image_encoder": image_encoder,
        "feature_extractor": default_feature_extractor(),
        "vae": sd["vae"],
        "text_encoder": sd["text_encoder"],
        "tokenizer": sd["tokenizer"],
        "scheduler": official_scheduler(),
    }


def load_official_components(
    xdyna_repo: str | Path = DEFAULT_XDYNA_REPO,
    sd_repo: str | Path = DEFAULT_SD_REPO,
    ip_adapter_repo: str | Path = DEFAULT_IP_ADAPTER_REPO,
    *,
    face: bool = True,
    torch_dtype: torch.dtype | None = torch.float32,
    unet_kwargs: Mapping | None = None,
    controlnet_kwargs: Mapping | None = None,
    image_proj_kwargs: Mapping | None = None,
    **download_kwargs,
) -> dict:
    """Everything the X-Dyna pipeline needs, from the official release files.

    Returns a dict with ``unet`` (:class:`XDynaUNet`), ``controlnet`` (pose) and
    ``controlnet_face`` (S-Face, ``None`` if ``face=False``) (diffusers ``ControlNetModel``),
    ``image_proj`` (:class:`XDynaImageProjection`), ``image_encoder``
    (``CLIPVisionModelWithProjection``), ``feature_extractor`` (default ``CLIPImageProcessor``),
    ``vae``, ``text_encoder``, ``tokenizer`` and ``scheduler`` (official ``DDIMScheduler``).
    Models are in eval mode, on the CPU, in ``torch_dtype``.

    ``download_kwargs`` go to :func:`download_official` (file names, ``cache_dir``,
    ``local_files_only``, ``token``). ``unet_kwargs``/``controlnet_kwargs``/``image_proj_kwargs``
    override architecture options (only needed for non-official, e.g. tiny, weights).
    """
    paths = download_official(xdyna_repo, sd_repo, ip_adapter_repo, face=face, **download_kwargs)
    return load_components_from_paths(
        paths, torch_dtype=torch_dtype, unet_kwargs=unet_kwargs,
        controlnet_kwargs=controlnet_kwargs, image_proj_kwargs=image_proj_kwargs,
    )
