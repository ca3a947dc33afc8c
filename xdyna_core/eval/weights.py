"""Where the evaluation backbones' weights come from, and how they are loaded.

Every learned metric names the files it needs here. A file is looked for, in order:
an explicit path, the weights folder (`--weights-dir`, else `$XDYNA_EVAL_WEIGHTS`, else
`~/.cache/xdyna/eval`), a few well-known places other tools put it (the Hugging Face cache,
insightface's model folder, torchmetrics' bundled LPIPS heads) and, only when the caller
asks for it (`download=True`, `xdyna eval --download-weights`), the hub or the original
URL. Nothing is downloaded otherwise, and tests never download.

Weights are read only with safetensors or `torch.load(weights_only=True)`; a `.safetensors`
file with the same stem is accepted in place of any `.pth`/`.pt`/`.tar` file.
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch
from huggingface_hub import hf_hub_download
from safetensors.torch import load_file

from xdyna_core.errors import MissingWeightsError

__all__ = ["WeightSpec", "WEIGHTS", "default_weights_dir", "find_weights", "resolve_weights", "load_state_dict", "weights_status"]


@dataclass(frozen=True)
class WeightSpec:
    key: str
    filename: str  # canonical local file name
    description: str
    source: str  # where a person gets it
    url: Optional[str] = None  # direct download (used only with download=True)
    hf: Optional[tuple] = None  # (repo_id, path in repo) on the Hugging Face hub
    zip_member: Optional[str] = None  # the url is a zip archive holding this member
    extra_places: tuple = field(default_factory=tuple)  # other files that are the same weights
    license: str = ""


def _torchmetrics_lpips_head() -> tuple:
    """torchmetrics bundles the LPIPS v0.1 heads; find them without importing it (slow)."""

    spec = importlib.util.find_spec("torchmetrics")
    if spec is None or not spec.submodule_search_locations:
        return ()
    root = Path(list(spec.submodule_search_locations)[0])
    return (str(root / "functional" / "image" / "lpips_models" / "vgg.pth"),)


WEIGHTS = {
    "inception-fid": WeightSpec(
        key="inception-fid",
        filename="pt_inception-2015-12-05-6726825d.pth",
        description="Inception-v3 of the TensorFlow FID (pytorch-fid port), pool3 features (2048)",
        source="pytorch-fid release 'fid_weights' (github.com/mseitzer/pytorch-fid)",
        url="https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth",
        license="Apache-2.0",
    ),
    "vgg16": WeightSpec(
        key="vgg16",
        filename="vgg16-397923af.pth",
        description="VGG16 ImageNet weights (the LPIPS trunk)",
        source="torchvision model zoo (download.pytorch.org/models)",
        url="https://download.pytorch.org/models/vgg16-397923af.pth",
        extra_places=(str(Path.home() / ".cache" / "torch" / "hub" / "checkpoints" / "vgg16-397923af.pth"),),
        license="BSD-3-Clause (torchvision); ImageNet terms",
    ),
    "lpips-vgg": WeightSpec(
        key="lpips-vgg",
        filename="lpips_vgg_v0.1.pth",
        description="LPIPS v0.1 linear heads for VGG16 (5 x 1x1 conv)",
        source="richzhang/PerceptualSimilarity lpips/weights/v0.1/vgg.pth (also bundled with torchmetrics)",
        url="https://github.com/richzhang/PerceptualSimilarity/raw/master/lpips/weights/v0.1/vgg.pth",
        extra_places=_torchmetrics_lpips_head(),
        license="BSD-2-Clause",
    ),
    "i3d-kinetics400": WeightSpec(
        key="i3d-kinetics400",
        filename="i3d_pretrained_400.pt",
        description="I3D (Inception-v1 3D) trained on Kinetics-400, PyTorch port of the FVD network",
        source="TATS / content-debiased-fvd (github.com/songweige/TATS, tats/fvd/i3d_pretrained_400.pt)",
        url="https://github.com/songweige/TATS/raw/main/tats/fvd/i3d_pretrained_400.pt",
        license="Apache-2.0",
    ),
    "videomae-v2-g": WeightSpec(
        key="videomae-v2-g",
        filename="vit_g_hybrid_pt_1200e_ssv2_ft.pth",
        description="VideoMAE-v2 ViT-g/14 fine-tuned on Something-Something-v2 (the cd-FVD backbone)",
        source="Hugging Face OpenGVLab/InternVideoMAE_models, mae-g/vit_g_hybrid_pt_1200e_ssv2_ft.pth",
        hf=("OpenGVLab/InternVideoMAE_models", "mae-g/vit_g_hybrid_pt_1200e_ssv2_ft.pth"),
        license="CC-BY-NC-4.0 (VideoMAE-v2 models)",
    ),
    "i3d-dtdb": WeightSpec(
        key="i3d-dtdb",
        filename="I3D_16.pth.tar",
        description="I3D trained on the Dynamic Texture DataBase (DTDB), 16 frames: the DTFVD network of Dorkenwald et al. 2021",
        source=(
            "the 'DTI3D/length16/I3D_16.pth.tar' file in the pretrained-models Google Drive folder linked from "
            "github.com/CompVis/image2video-synthesis-using-cINNs (download it by hand)"
        ),
        license="see the CompVis repository",
    ),
    "arcface-r50": WeightSpec(
        key="arcface-r50",
        filename="w600k_r50.onnx",
        description="ArcFace IResNet-50 trained on WebFace600K (insightface buffalo_l recognition model), 512-d embeddings",
        source="insightface model pack buffalo_l (github.com/deepinsight/insightface/releases, buffalo_l.zip)",
        url="https://github.com/deepinsight/insightface/releases/download/v0.7/buffalo_l.zip",
        zip_member="w600k_r50.onnx",
        extra_places=(str(Path.home() / ".insightface" / "models" / "buffalo_l" / "w600k_r50.onnx"),),
        license="insightface models: non-commercial research use",
    ),
}


def default_weights_dir() -> Path:
    env = os.environ.get("XDYNA_EVAL_WEIGHTS")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "xdyna" / "eval"


def _candidates(spec: WeightSpec, weights_dir: Path) -> list:
    stem = spec.filename.split(".")[0]
    names = [spec.filename, stem + ".safetensors"]
    found = [weights_dir / n for n in names]
    found += [Path(p) for p in spec.extra_places]
    return found


def _from_hf_cache(spec: WeightSpec) -> Optional[Path]:
    if spec.hf is None:
        return None
    try:
        return Path(hf_hub_download(spec.hf[0], spec.hf[1], local_files_only=True))
    except Exception:
        return None


def find_weights(key: str, weights_dir=None, path=None) -> Optional[Path]:
    """The local file of weights `key`, or None. Never downloads."""
    spec = WEIGHTS[key]
    if path is not None:
        return Path(path) if Path(path).is_file() else None
    for cand in _candidates(spec, Path(weights_dir) if weights_dir else default_weights_dir()):
        if cand.is_file():
            return cand
    return _from_hf_cache(spec)


def _download(spec: WeightSpec, weights_dir: Path) -> Path:
    weights_dir.mkdir(parents=True, exist_ok=True)
    target = weights_dir / spec.filename
    if spec.hf is not None:
        return Path(hf_hub_download(spec.hf[0], spec.hf[1]))
    if spec.url is None:
        raise MissingWeightsError(f"{spec.filename} cannot be downloaded automatically; get it from {spec.source} and put it in {weights_dir}")
    fd, tmp = tempfile.mkstemp(prefix=f".{spec.filename}.", suffix=".part", dir=weights_dir)
    os.close(fd)
    try:
        urllib.request.urlretrieve(spec.url, tmp)  # noqa: S310 - fixed https URLs from the table above
        if spec.zip_member:
            with zipfile.ZipFile(tmp) as zf:
                member = next((n for n in zf.namelist() if n.endswith(spec.zip_member)), None)
                if member is None:
                    raise MissingWeightsError(f"{spec.url} does not contain {spec.zip_member}")
                with zf.open(member) as src, open(tmp + ".member", "wb") as dst:
                    dst.write(src.read())
            os.replace(tmp + ".member", target)
        else:
            os.replace(tmp, target)
    finally:
        for leftover in (tmp, tmp + ".member"):
            if os.path.exists(leftover):
                os.remove(leftover)
    return target


def resolve_weights(key: str, weights_dir=None, path=None, download: bool = False) -> Path:
    """Path of weights `key`; downloads only when `download` is True.

    Raises:
        MissingWeightsError: naming the file, where it was looked for and where to get it.
    """
    spec = WEIGHTS[key]
    wdir = Path(weights_dir) if weights_dir else default_weights_dir()
    found = find_weights(key, wdir, path)
    if found is not None:
        return found
    if path is not None:
        raise MissingWeightsError(f"{spec.description}: file not found: {path}")
    if download:
        return _download(spec, wdir)
    where = f"put {spec.filename} in {wdir} (or set --weights-dir / XDYNA_EVAL_WEIGHTS)"
    how = "run `xdyna eval --download-weights` to fetch it" if (spec.url or spec.hf) else "it must be downloaded by hand"
    raise MissingWeightsError(f"missing {spec.filename} ({spec.description}); get it from {spec.source}; {where}; {how}")


def load_state_dict(path) -> dict:
    """Tensors of a checkpoint: safetensors, or torch.load(weights_only=True). Unwraps the
    usual containers ('state_dict', 'model', 'module') and a 'module.' prefix (DataParallel)."""

    path = Path(path)
    if path.suffix == ".safetensors":
        sd = load_file(str(path))
    else:
        try:
            sd = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as err:
            raise MissingWeightsError(
                f"{path} could not be loaded safely (torch.load weights_only=True: {err}); "
                "convert it to .safetensors in a trusted environment and put that file next to it"
            ) from err
    for wrapper in ("state_dict", "model", "module"):
        if isinstance(sd, dict) and wrapper in sd and isinstance(sd[wrapper], dict):
            sd = sd[wrapper]
    if not isinstance(sd, dict):
        raise MissingWeightsError(f"{path} does not hold a state dict (got {type(sd).__name__})")
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return sd


def load_into(model, path, ignore_prefixes: tuple = ()) -> None:
    """Load a checkpoint into `model`, strictly except for keys under `ignore_prefixes`
    (classifier heads the metric does not use). Missing keys name the file and the keys."""
    sd = {k: v for k, v in load_state_dict(path).items() if not k.startswith(ignore_prefixes)}
    own = model.state_dict()
    missing = [k for k in own if k not in sd and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in sd if k not in own]
    if missing or unexpected:
        raise MissingWeightsError(
            f"{path} does not match {type(model).__name__}: {len(missing)} missing keys {missing[:5]}, "
            f"{len(unexpected)} unexpected keys {unexpected[:5]}"
        )
    shapes = [k for k in sd if tuple(sd[k].shape) != tuple(own[k].shape)]
    if shapes:
        k = shapes[0]
        raise MissingWeightsError(f"{path}: {len(shapes)} tensors have other shapes, e.g. {k}: {tuple(sd[k].shape)} vs {tuple(own[k].shape)}")
    model.load_state_dict(sd, strict=False)


def weights_status(weights_dir=None) -> list:
    """One row per weights file: key, file name, found path or None, source."""
    rows = []
    for key, spec in WEIGHTS.items():
        found = find_weights(key, weights_dir)
        rows.append({"key": key, "file": spec.filename, "path": str(found) if found else None, "source": spec.source, "description": spec.description, "license": spec.license})
    return rows
