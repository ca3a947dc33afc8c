"""Evaluate a folder of generated videos against a folder of reference videos.

Rules (also written into every JSON and HTML report):

- Pairing: a generated video is paired with the reference video of the same file stem
  (`00335.mp4` <-> `00335.mov`). A "video" is a video file or a folder of frame images
  (sorted by the numbers in their names). A generated video without a reference is an
  error (or skipped with `allow_unmatched`); references without a generated video are
  ignored and listed.
- Length: both clips are truncated to the shorter one; frames are compared by index (the
  frame rates are not resampled; a difference is noted).
- Size: the generated frames are resized to the reference size (area filter when
  shrinking, bicubic when enlarging); with `eval_size` both are resized to that size.
- Per-frame metrics (L1, PSNR, SSIM, LPIPS, Face-Cos) are averaged over all frames of all
  videos (frame-weighted, as DisCo). PSNR: frames identical to the reference have
  PSNR = +inf; means are taken over the finite frames and the identical frames are counted
  (`psnr_identical_frames`); when every frame is identical the mean is +inf. JSON has no
  infinity: it is written as the string "inf"; missing values are null.
- Set metrics (FID, FVD, cd-FVD, DTFVD) are computed once over the whole folder: FID over
  all frames, the video metrics over consecutive non-overlapping clips of the network's
  clip length (16 frames); videos shorter than one clip give no clip.
- Face-Det is the share of generated frames with a detected face (the reference's share
  is reported alongside); Face-Cos averages over frames where both frames show a face.
- Metrics whose backbone weights are missing are reported as unavailable, with the
  reason, unless `strict` is set.
"""

from __future__ import annotations

import base64
import json
import math
import os
import re
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import cv2
import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from xdyna_core.errors import InputError, MissingWeightsError
from xdyna_core.eval import backbones as B, metrics as M
from xdyna_core.eval.faces import FaceDetector, face_embeddings, load_face_embedder
from xdyna_core.eval.frechet import frechet_distance_from_features
from xdyna_core.eval.info import DEFAULT_METRICS, METRICS, REGIONS
from xdyna_core.eval.masks import PersonSegmenter, apply_region, resize_masks
from xdyna_core.io import read_video

__all__ = ["EvalConfig", "EvalResult", "VideoPair", "find_videos", "pair_videos", "load_frames", "align_pair", "build_backbones", "evaluate", "evaluate_pairs", "RULES"]

RULES = {
    "pairing": "videos are paired by file stem; a video is a file or a folder of frame images",
    "length": "both clips are truncated to the shorter one; frames are compared by index",
    "size": "generated frames are resized to the reference size (area filter when shrinking, bicubic when enlarging), or both to --eval-size",
    "psnr_infinite": "identical frames have PSNR +inf: left out of means and counted; all identical gives +inf; JSON writes \"inf\"",
    "aggregation": "per-frame metrics are averaged over all frames of all videos; FID/FVD/cd-FVD/DTFVD are computed once over the whole set",
    "clips": "FVD, cd-FVD and DTFVD use consecutive non-overlapping clips of 16 frames",
    "masks": "foreground/background: person mask of the reference frame (MediaPipe selfie segmentation, or the given mask videos) applied to both clips; other pixels black",
}

VIDEO_SUFFIXES = (".mp4", ".mov", ".m4v", ".webm", ".mkv", ".avi", ".gif")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
SET_METRICS = ("fid", "fvd", "cdfvd", "dtfvd")
LEARNED = ("lpips", "fid", "fvd", "cdfvd", "dtfvd", "face-cos", "face-det")


@dataclass
class EvalConfig:
    metrics: tuple = DEFAULT_METRICS
    regions: tuple = ("full",)  # add "fg" / "bg" for the paper's foreground/background columns
    weights_dir: Optional[str] = None
    device: Optional[str] = None
    strict: bool = False  # missing weights raise instead of marking the metric unavailable
    download: bool = False  # fetch missing weights from the hub / original URL
    eval_size: Optional[tuple] = None  # (height, width) both clips are resized to
    max_frames: Optional[int] = None  # read at most this many frames per video
    clip_stride: Optional[int] = None  # None: non-overlapping clips
    mask_dir: Optional[str] = None
    allow_unmatched: bool = False
    keep_per_frame: bool = True
    previews: bool = True  # a small generated / reference / difference strip per video

    def checked(self) -> "EvalConfig":
        metrics = tuple(dict.fromkeys(m.strip().lower() for m in self.metrics if m.strip()))
        unknown = [m for m in metrics if m not in METRICS]
        if unknown or not metrics:
            raise InputError(f"unknown metric(s) {unknown or '(none given)'}; choose from {', '.join(METRICS)}")
        regions = tuple(dict.fromkeys(["full", *[r.strip().lower() for r in self.regions if r.strip()]]))
        bad = [r for r in regions if r not in REGIONS]
        if bad:
            raise InputError(f"unknown mask region(s) {bad}; use fg, bg or fg,bg")
        if self.eval_size is not None and (len(self.eval_size) != 2 or min(self.eval_size) < 16):
            raise InputError(f"eval_size must be (height, width), each at least 16; got {self.eval_size}")
        cfg = EvalConfig(**{**asdict(self), "metrics": metrics, "regions": regions})
        return cfg


@dataclass
class VideoPair:
    name: str
    generated: Path
    reference: Path
    mask: Optional[Path] = None


# --------------------------------------------------------------------------------------
# Finding, pairing and loading videos
# --------------------------------------------------------------------------------------


def _natural_key(name: str):
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def _frame_files(folder: Path) -> list:
    return sorted((p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")), key=lambda p: _natural_key(p.name))


def find_videos(folder, what: str = "folder") -> dict:
    """{stem: path} of the videos in `folder` (video files, or sub-folders of frame images)."""
    folder = Path(folder)
    if not folder.exists():
        raise InputError(f"{what} {folder} does not exist")
    if not folder.is_dir():
        raise InputError(f"{what} {folder} is not a folder")
    found = {}
    for p in sorted(folder.iterdir(), key=lambda p: _natural_key(p.name)):
        if p.name.startswith("."):
            continue
        is_video = p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES
        is_frames = p.is_dir() and bool(_frame_files(p))
        if not (is_video or is_frames):
            continue
        stem = p.stem if p.is_file() else p.name
        if stem in found:
            raise InputError(f"{what} {folder} has two videos named {stem!r} ({found[stem].name} and {p.name}); keep one")
        found[stem] = p
    if not found:
        raise InputError(
            f"{what} {folder} has no videos: expected files ending in {', '.join(VIDEO_SUFFIXES)} "
            "or sub-folders of frame images"
        )
    return found


def pair_videos(generated_dir, reference_dir, mask_dir=None, allow_unmatched: bool = False) -> tuple:
    """Pair videos by stem. Returns (pairs, notes).

    Raises:
        InputError: a folder is missing or empty, or generated videos have no reference
            (unless `allow_unmatched`), or nothing pairs at all.
    """
    gen = find_videos(generated_dir, "generated folder")
    ref = find_videos(reference_dir, "reference folder")
    masks = find_videos(mask_dir, "mask folder") if mask_dir else {}
    common = [s for s in gen if s in ref]
    unmatched = [s for s in gen if s not in ref]
    notes = []
    if not common:
        raise InputError(
            f"no generated video has a reference of the same name: generated {_sample(gen)}, reference {_sample(ref)}; "
            "videos are paired by file name without extension"
        )
    if unmatched:
        msg = f"{len(unmatched)} generated video(s) have no reference of the same name: {_sample(unmatched)}"
        if not allow_unmatched:
            raise InputError(msg + "; rename them, or pass --allow-unmatched to skip them")
        notes.append(msg + " (skipped)")
    extra = [s for s in ref if s not in gen]
    if extra:
        notes.append(f"{len(extra)} reference video(s) have no generated video and were ignored: {_sample(extra)}")
    missing_masks = [s for s in common if masks and s not in masks]
    if missing_masks:
        notes.append(f"{len(missing_masks)} video(s) have no mask in {mask_dir}; their masks come from the segmenter: {_sample(missing_masks)}")
    pairs = [VideoPair(s, gen[s], ref[s], masks.get(s)) for s in common]
    return pairs, notes


def _sample(names, n: int = 5) -> str:
    names = list(names)
    shown = ", ".join(repr(str(x)) for x in names[:n])
    return f"[{shown}{', ...' if len(names) > n else ''}]"


def load_frames(path, max_frames: Optional[int] = None, what: str = "video") -> tuple:
    """(frames uint8 [T,H,W,3], fps or None) of a video file or a folder of frame images."""
    path = Path(path)
    try:
        if path.is_dir():
            files = _frame_files(path)[: max_frames or None]
            if not files:
                raise InputError(f"{path} has no frame images")
            frames = []
            for f in files:
                try:
                    with Image.open(f) as im:
                        frames.append(np.asarray(im.convert("RGB")))
                except Exception as err:
                    raise InputError(f"{f} is not a readable image ({err})") from err
            if len({fr.shape for fr in frames}) > 1:
                raise InputError(f"the frames in {path} differ in size; all frames of a video must have one size")
            return np.stack(frames), None

        video = read_video(path, max_frames=max_frames, max_side=None, max_duration=None, frame_limit=None)
        return video.frames, float(video.fps)
    except InputError as err:
        raise InputError(f"{what} {path.name} could not be read: {err}") from err


def _resize(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    h, w = frames.shape[1:3]
    interp = cv2.INTER_AREA if (height <= h and width <= w) else cv2.INTER_CUBIC
    return np.stack([cv2.resize(f, (width, height), interpolation=interp) for f in frames])


def align_pair(generated: np.ndarray, reference: np.ndarray, eval_size: Optional[tuple] = None) -> tuple:
    """Apply the length and size rules. Returns (generated, reference, notes)."""
    notes = []
    t = min(len(generated), len(reference))
    if len(generated) != len(reference):
        notes.append(f"lengths differ (generated {len(generated)}, reference {len(reference)} frames): both truncated to {t}")
    generated, reference = generated[:t], reference[:t]
    if eval_size is not None:
        h, w = eval_size
        if reference.shape[1:3] != (h, w):
            reference = _resize(reference, h, w)
        if generated.shape[1:3] != (h, w):
            generated = _resize(generated, h, w)
    elif generated.shape[1:3] != reference.shape[1:3]:
        gh, gw = generated.shape[1:3]
        h, w = reference.shape[1:3]
        notes.append(f"sizes differ: generated {gw}x{gh} resized to the reference {w}x{h}")
        generated = _resize(generated, h, w)
    return generated, reference, notes


def _clips(frames: np.ndarray, length: int, stride: Optional[int]) -> np.ndarray:
    stride = stride or length
    starts = range(0, len(frames) - length + 1, stride)
    if len(frames) < length:
        return np.zeros((0, length, *frames.shape[1:]), dtype=frames.dtype)
    return np.stack([frames[s : s + length] for s in starts])


# --------------------------------------------------------------------------------------
# Backbones
# --------------------------------------------------------------------------------------


def build_backbones(config: EvalConfig, given: Optional[dict] = None) -> tuple:
    """Load the networks the requested metrics need.

    `given` maps names to ready objects (tests pass tiny random ones): "lpips", "fid",
    "fvd", "cdfvd", "dtfvd" (the classes of `backbones.py`), "face-embedder"
    (`OnnxFaceEmbedder`), "face-detector" (`FaceDetector`), "segmenter"
    (`PersonSegmenter`). Returns (backbones, unavailable {metric: reason}).
    """

    given = dict(given or {})
    device = config.device or ("cuda" if _cuda() else "cpu")
    kw = dict(weights_dir=config.weights_dir, device=device, download=config.download)
    loaders = {
        "lpips": lambda: B.load_lpips(**kw),
        "fid": lambda: B.load_inception_fid(**kw),
        "fvd": lambda: B.load_fvd_i3d(**kw),
        "cdfvd": lambda: B.load_videomae_v2(**kw),
        "dtfvd": lambda: B.load_dtfvd_i3d(**kw),
    }
    nets, unavailable = {}, {}

    def attempt(metric, key, load):
        if key in given:
            nets[key] = given[key]
            return
        try:
            nets[key] = load()
        except (MissingWeightsError, ImportError, OSError) as err:
            if config.strict:
                raise
            unavailable[metric] = str(err)

    for metric in config.metrics:
        if metric in loaders:
            attempt(metric, metric, loaders[metric])
    if "face-cos" in config.metrics or "face-det" in config.metrics:
        attempt("face-det", "face-detector", FaceDetector)
        if "face-detector" not in nets:
            unavailable.setdefault("face-cos", unavailable.get("face-det", "no face detector"))
    if "face-cos" in config.metrics and "face-detector" in nets:
        attempt("face-cos", "face-embedder", lambda: load_face_embedder(config.weights_dir, download=config.download))
    if "segmenter" in given:
        nets["segmenter"] = given["segmenter"]
    return nets, unavailable


def _cuda() -> bool:
    try:
        return torch.cuda.is_available()
    except Exception:  # pragma: no cover
        return False


# --------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return [_jsonable(v) for v in x.tolist()]
    if isinstance(x, (np.floating, float)):
        x = float(x)
        if math.isnan(x):
            return None
        if math.isinf(x):
            return "inf" if x > 0 else "-inf"
        return x
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.bool_,)):
        return bool(x)
    if isinstance(x, Path):
        return str(x)
    return x


@dataclass
class EvalResult:
    """Numbers of one evaluation. `aggregate[region][metric]` is a float (inf allowed) or
    None when the metric could not be computed; `unavailable[metric]` says why."""

    aggregate: dict
    videos: list
    unavailable: dict
    metrics: tuple
    regions: tuple
    counts: dict
    notes: list = field(default_factory=list)
    config: dict = field(default_factory=dict)
    label: str = ""

    def value(self, metric: str, region: str = "full"):
        return self.aggregate.get(region, {}).get(metric)

    def to_dict(self) -> dict:
        return _jsonable(
            {
                "label": self.label,
                "metrics": list(self.metrics),
                "regions": list(self.regions),
                "aggregate": self.aggregate,
                "unavailable": self.unavailable,
                "counts": self.counts,
                "notes": self.notes,
                "rules": RULES,
                "metric_info": {k: asdict(METRICS[k]) for k in self.metrics},
                "config": self.config,
                "videos": self.videos,
            }
        )

    def save_json(self, path) -> Path:
        return _atomic_write_text(Path(path), json.dumps(self.to_dict(), indent=1, allow_nan=False))

    @staticmethod
    def load_json(path) -> "EvalResult":
        d = json.loads(Path(path).read_text())

        def back(x):
            if isinstance(x, dict):
                return {k: back(v) for k, v in x.items()}
            if isinstance(x, list):
                return [back(v) for v in x]
            if x in ("inf", "-inf"):
                return float(x)
            return x

        return EvalResult(
            aggregate=back(d["aggregate"]), videos=back(d["videos"]), unavailable=d["unavailable"], metrics=tuple(d["metrics"]),
            regions=tuple(d["regions"]), counts=d["counts"], notes=d.get("notes", []), config=d.get("config", {}), label=d.get("label", ""),
        )


def _atomic_write_text(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; outputs get the usual permissions
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def mean_psnr(values: np.ndarray) -> tuple:
    """(mean over finite frames, or +inf when all are infinite / None when empty; number of infinite frames)."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return None, 0
    finite = np.isfinite(values)
    n_inf = int((~finite).sum())
    if finite.any():
        return float(values[finite].mean()), n_inf
    return math.inf, n_inf


def _mean(values) -> Optional[float]:
    values = np.asarray(values, dtype=np.float64)
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else None


# --------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------


def evaluate(generated_dir, reference_dir, config: Optional[EvalConfig] = None, backbones: Optional[dict] = None, progress=True, label: str = "") -> EvalResult:
    """Evaluate every generated video against the reference video of the same name."""
    config = (config or EvalConfig()).checked()
    pairs, notes = pair_videos(generated_dir, reference_dir, config.mask_dir, config.allow_unmatched)
    result = evaluate_pairs(pairs, config, backbones=backbones, progress=progress, label=label)
    result.notes = notes + result.notes
    result.config.update({"generated_dir": str(generated_dir), "reference_dir": str(reference_dir)})
    return result


def evaluate_pairs(pairs: list, config: Optional[EvalConfig] = None, backbones: Optional[dict] = None, progress=True, label: str = "") -> EvalResult:
    """Evaluate explicit `VideoPair`s (see `evaluate` for the rules)."""
    config = (config or EvalConfig()).checked()
    if not pairs:
        raise InputError("nothing to evaluate: no video pairs")
    nets, unavailable = build_backbones(config, backbones)
    wanted = [m for m in config.metrics if m not in unavailable]
    regions = config.regions
    need_masks = any(r != "full" for r in regions)
    segmenter = nets.get("segmenter")
    if need_masks and segmenter is None and any(p.mask is None for p in pairs):
        segmenter = PersonSegmenter()

    frame_values = {r: {m: [] for m in wanted if METRICS[m].kind == "frame"} for r in regions}
    set_feats = {r: {m: {"gen": [], "ref": []} for m in wanted if m in SET_METRICS} for r in regions}
    face_cos_all, face_found_gen, face_found_ref = [], [], []
    videos = []
    global_notes = []
    total_frames = 0

    bar = _progress_bar(pairs, progress)
    for i, pair in enumerate(pairs):
        if callable(progress):
            progress(i, len(pairs), pair.name)
        gen, gen_fps = load_frames(pair.generated, config.max_frames, "generated video")
        ref, ref_fps = load_frames(pair.reference, config.max_frames, "reference video")
        gen_shape, ref_len = gen.shape, len(ref)
        gen, ref, notes = align_pair(gen, ref, config.eval_size)
        if gen_fps and ref_fps and abs(gen_fps - ref_fps) > 0.01 * ref_fps:
            notes.append(f"frame rates differ (generated {gen_fps:g}, reference {ref_fps:g} fps): frames compared by index")
        t = len(gen)
        total_frames += t
        entry = {
            "name": pair.name,
            "generated": str(pair.generated),
            "reference": str(pair.reference),
            "frames": t,
            "generated_frames": int(gen_shape[0]),
            "reference_frames": int(ref_len),
            "size": [int(gen.shape[1]), int(gen.shape[2])],
            "generated_size": [int(gen_shape[1]), int(gen_shape[2])],
            "notes": notes,
            "metrics": {r: {} for r in regions},
            "per_frame": {r: {} for r in regions},
        }
        if config.previews:
            entry["preview_jpeg"] = preview_jpeg(gen, ref)
        masks = None
        if need_masks:
            masks = _masks_for(pair, ref, segmenter)
            entry["mask_source"] = str(pair.mask) if pair.mask else getattr(segmenter, "name", type(segmenter).__name__)
            entry["foreground_share"] = float(masks.mean())
        for region in regions:
            if region == "full":
                g, r = gen, ref
            else:
                g, r = apply_region(gen, masks, region), apply_region(ref, masks, region)
            per_frame = _frame_metrics(g, r, wanted, nets)
            for m, vals in per_frame.items():
                frame_values[region][m].append(vals)
                if m == "psnr":
                    entry["metrics"][region]["psnr"], entry["metrics"][region]["psnr_identical_frames"] = mean_psnr(vals)
                else:
                    entry["metrics"][region][m] = _mean(vals)
                if config.keep_per_frame:
                    entry["per_frame"][region][m] = vals
            for m in set_feats[region]:
                net = nets[m]
                if m == "fid":
                    set_feats[region][m]["gen"].append(net.embed(g))
                    set_feats[region][m]["ref"].append(net.embed(r))
                else:
                    length = int(getattr(net, "num_frames", 16))
                    gc, rc = _clips(g, length, config.clip_stride), _clips(r, length, config.clip_stride)
                    if len(gc):
                        set_feats[region][m]["gen"].append(net.embed(gc))
                        set_feats[region][m]["ref"].append(net.embed(rc))
                    elif region == "full":
                        notes.append(f"shorter than one {length}-frame clip: not used by {METRICS[m].label}")
        if "face-det" in wanted or "face-cos" in wanted:
            embedder = nets.get("face-embedder") if "face-cos" in wanted else None
            found_g, emb_g = face_embeddings(gen, nets["face-detector"], embedder)
            found_r, emb_r = face_embeddings(ref, nets["face-detector"], embedder)
            face_found_gen.append(found_g)
            face_found_ref.append(found_r)
            if "face-det" in wanted:
                entry["metrics"]["full"]["face-det"] = 100.0 * float(found_g.mean())
                entry["metrics"]["full"]["face-det_reference"] = 100.0 * float(found_r.mean())
                if config.keep_per_frame:
                    entry["per_frame"]["full"]["face-det"] = found_g.astype(float)
            if "face-cos" in wanted:
                cos = np.sum(emb_g * emb_r, axis=1)  # NaN where either side has no face
                face_cos_all.append(cos)
                entry["metrics"]["full"]["face-cos"] = _mean(cos)
                entry["metrics"]["full"]["face-cos_frames"] = int(np.isfinite(cos).sum())
                if config.keep_per_frame:
                    entry["per_frame"]["full"]["face-cos"] = cos
        videos.append(entry)
        if bar is not None:
            bar.update(1)
            shown = {k: entry["metrics"]["full"].get(k) for k in ("psnr", "ssim") if k in entry["metrics"]["full"]}
            bar.set_postfix({k: f"{v:.3f}" for k, v in shown.items() if v is not None}, refresh=False)
    if bar is not None:
        bar.close()

    aggregate = {r: {} for r in regions}
    counts = {"videos": len(videos), "frames": total_frames}
    for region in regions:
        for m, chunks in frame_values[region].items():
            vals = np.concatenate(chunks) if chunks else np.zeros(0)
            if m == "psnr":
                aggregate[region]["psnr"], n_inf = mean_psnr(vals)
                counts.setdefault("psnr_identical_frames", {})[region] = n_inf
            else:
                aggregate[region][m] = _mean(vals)
        for m, sides in set_feats[region].items():
            fg, fr = _stack(sides["gen"]), _stack(sides["ref"])
            counts.setdefault(f"{m}_samples", {})[region] = int(len(fg))
            if len(fg) < 2 or len(fr) < 2:
                unit = "frames" if m == "fid" else f"clips of {getattr(nets[m], 'num_frames', 16)} frames"
                aggregate[region][m] = None
                unavailable.setdefault(m, f"needs at least 2 {unit} on each side, got {len(fg)}")
                continue
            aggregate[region][m] = frechet_distance_from_features(fg, fr)
    if face_found_gen and "face-det" in wanted:
        aggregate["full"]["face-det"] = 100.0 * float(np.concatenate(face_found_gen).mean())
        aggregate["full"]["face-det_reference"] = 100.0 * float(np.concatenate(face_found_ref).mean())
    if face_cos_all:
        cos = np.concatenate(face_cos_all)
        aggregate["full"]["face-cos"] = _mean(cos)
        counts["face-cos_frames"] = int(np.isfinite(cos).sum())
        if counts["face-cos_frames"] == 0:
            unavailable.setdefault("face-cos", "no frame pair where both frames show a detectable face")
    for m in config.metrics:
        if m in unavailable:
            for region in regions:
                if METRICS[m].regions or region == "full":
                    aggregate[region].setdefault(m, None)
    cfg = {k: v for k, v in asdict(config).items() if k not in ("keep_per_frame",)}
    cfg["device"] = config.device or ("cuda" if _cuda() else "cpu")
    cfg["mask_model"] = getattr(segmenter, "name", None) if need_masks else None
    return EvalResult(aggregate, videos, unavailable, config.metrics, regions, counts, global_notes, cfg, label)


def preview_jpeg(gen: np.ndarray, ref: np.ndarray, num: int = 4, height: int = 112) -> str:
    """Base64 JPEG: generated frames (top), reference (middle) and their absolute
    difference as a heat map (bottom), at `num` evenly spaced times."""

    idx = np.linspace(0, len(gen) - 1, min(num, len(gen))).round().astype(int)
    h, w = gen.shape[1:3]
    width = max(1, int(round(w * height / h)))

    def row(frames):
        return np.concatenate([cv2.resize(f, (width, height), interpolation=cv2.INTER_AREA) for f in frames], axis=1)

    diff = np.abs(gen[idx].astype(np.int16) - ref[idx].astype(np.int16)).max(axis=-1).astype(np.uint8)
    heat = np.stack([cv2.applyColorMap(np.clip(d.astype(np.int32) * 3, 0, 255).astype(np.uint8), cv2.COLORMAP_INFERNO)[..., ::-1] for d in diff])
    rows = [row(gen[idx]), row(ref[idx]), row(heat)]
    label_w = 92
    out = []
    for name, r in zip(("generated", "reference", "|diff| x3"), rows):
        pad = np.full((height, label_w, 3), 255, np.uint8)
        cv2.putText(pad, name, (4, height // 2 + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (40, 40, 40), 1, cv2.LINE_AA)
        out.append(np.concatenate([pad, r], axis=1))
    strip = np.concatenate(out, axis=0)
    ok, buf = cv2.imencode(".jpg", strip[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 82])
    return base64.b64encode(buf.tobytes()).decode() if ok else ""


def _stack(chunks: list) -> np.ndarray:
    return np.concatenate(chunks) if chunks else np.zeros((0, 1))


def _masks_for(pair: VideoPair, ref: np.ndarray, segmenter) -> np.ndarray:
    t, h, w = ref.shape[:3]
    if pair.mask is None:
        return segmenter(ref)
    masks, _ = load_frames(pair.mask, None, "mask video")
    if len(masks) < t:
        raise InputError(f"mask {pair.mask.name} has {len(masks)} frames but video {pair.name} has {t}; give one mask per frame")
    return resize_masks(masks[:t], h, w)


def _frame_metrics(g: np.ndarray, r: np.ndarray, wanted: list, nets: dict) -> dict:
    out = {}
    if "l1" in wanted:
        out["l1"] = M.l1(g, r)
    if "l1-disco" in wanted:
        out["l1-disco"] = M.l1_disco(g, r)
    if "psnr" in wanted:
        out["psnr"] = M.psnr(g, r)
    if "ssim" in wanted:
        out["ssim"] = M.ssim(g, r)
    if "lpips" in wanted:
        out["lpips"] = nets["lpips"].distance(g, r)
    return out


def _progress_bar(pairs, progress):
    if progress is not True:
        return None
    try:
        return tqdm(total=len(pairs), desc="xdyna eval", unit="video", file=sys.stderr, dynamic_ncols=True)
    except Exception:  # pragma: no cover
        return None

