"""Training data: human-motion clips, natural-scene clips, and Harmonic Data Fusion.

Every dataset here is map-style and *keyed*: ``dataset[key]`` with ``key = epoch * len + index``
gives item ``index`` of epoch ``epoch``. All randomness of an item (window, reference frame,
synthetic identity ...) comes from ``(seed, epoch, index)``, so the batch of training step ``s``
is a pure function of the config: a resumed run sees exactly the data the uninterrupted run
would have seen, whatever the number of data-loader workers.

An item is a dict of tensors, all at the generation size ``H x W``:

- ``reference``  [3, H, W]    float in [-1, 1]: the appearance reference (another time of the clip)
- ``frames``     [F, 3, H, W] float in [-1, 1]: the frames to generate (ground truth)
- ``pose``       [F, H, W, 3] uint8: DWPose-style skeleton images (black = blank)
- ``face``       [F, H, W, 6] uint8: S-Face patches, channels 0-2 local, 3-5 global
- ``has_person`` []           bool: False for natural-scene clips (controls left blank)

Controls stay exactly what ``XDynaPipeline(pose_images=..., face_images=...)`` takes (uint8,
channels last); the trainer normalises them with the pipeline's own functions
(``pipeline.control_range`` / ``pipeline.normalize_control``), so training and inference see
the same numbers.
"""

from __future__ import annotations

import hashlib
import multiprocessing as mp
import os
import shutil
from pathlib import Path
from typing import Callable, Iterator, Optional

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler
from tqdm.auto import tqdm

from xdyna_core import synthetic
from xdyna_core.errors import InputError
from xdyna_core.io import read_video
from xdyna_core.preprocess.framing import centre_crop_framing
from xdyna_core.preprocess.motion import extract_motion

VIDEO_SUFFIXES = (".mp4", ".mov", ".webm", ".mkv", ".avi", ".gif", ".m4v")


# ----------------------------------------------------------------------------------------
# deterministic randomness
# ----------------------------------------------------------------------------------------


def item_rng(*parts: int) -> np.random.Generator:
    """A numpy generator that depends only on ``parts`` (seed, epoch, index, ...)."""
    return np.random.default_rng([int(p) & 0xFFFFFFFF for p in parts])


def _to_item(frames: np.ndarray, reference: np.ndarray, pose: np.ndarray, face: np.ndarray,
             has_person: bool, **extra) -> dict:
    """uint8 numpy arrays (channels last) -> the item dict (images channels first in [-1, 1],
    controls uint8 channels last)."""
    def chw(a):
        return torch.from_numpy(np.ascontiguousarray(a)).permute(0, 3, 1, 2)

    item = {
        "reference": torch.from_numpy(np.ascontiguousarray(reference)).permute(2, 0, 1).float() / 127.5 - 1.0,
        "frames": chw(frames).float() / 127.5 - 1.0,
        "pose": torch.from_numpy(np.ascontiguousarray(pose, dtype=np.uint8)),
        "face": torch.from_numpy(np.ascontiguousarray(face, dtype=np.uint8)),
        "has_person": torch.tensor(bool(has_person)),
    }
    item.update(extra)
    return item


def sample_window(rng: np.random.Generator, length: int, num_frames: int, stride: int = 1):
    """Random window of ``num_frames`` frames (every ``stride``-th) in a clip of ``length``
    frames, and a reference frame index drawn from *another time* of the same clip (outside
    the window when the clip is long enough, else any frame). Short clips repeat their last
    frame (the window never runs past the end)."""
    span = (num_frames - 1) * stride + 1
    if length >= span:
        start = int(rng.integers(0, length - span + 1))
        window = start + stride * np.arange(num_frames)
    else:
        window = np.minimum(np.arange(num_frames) * max(1, (length - 1) // max(1, num_frames - 1)), length - 1)
    lo, hi = int(window[0]), int(window[-1])
    outside = np.concatenate([np.arange(0, lo), np.arange(hi + 1, length)])
    ref = int(rng.choice(outside)) if len(outside) else int(rng.integers(0, length))
    return window.astype(np.int64), ref


# ----------------------------------------------------------------------------------------
# the sampler: batch of step s is a function of s
# ----------------------------------------------------------------------------------------


class StepSampler(Sampler):
    """Yields item keys ``0, 1, 2, ...`` for one process, starting at micro-batch
    ``start_batch``.

    Micro-batch ``m`` (counted over the whole run, gradient-accumulation steps included) of
    process ``r`` out of ``R`` holds keys ``((m * R) + r) * B + j``, ``j < B``: processes never
    share items, and resuming at optimiser step ``s`` means ``start_batch = s * accumulation``.
    Optimiser step ``s`` therefore reads keys ``s * G ... (s + 1) * G - 1`` with the global batch
    ``G = B x accumulation x R``, however G is split. Infinite: the training loop decides when to stop.
    """

    def __init__(self, batch_size: int, start_batch: int = 0, num_processes: int = 1, process_index: int = 0):
        self.batch_size = int(batch_size)
        self.start_batch = int(start_batch)
        self.num_processes = int(num_processes)
        self.process_index = int(process_index)

    def __iter__(self) -> Iterator[int]:
        m = self.start_batch
        while True:
            base = (m * self.num_processes + self.process_index) * self.batch_size
            yield from range(base, base + self.batch_size)
            m += 1


class WithKeys(Dataset):
    """``dataset[key]`` with the key added to the item (``item["key"]``): the trainer draws the
    item's noise from its key (``losses.ItemNoise``) and can log which items it read."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __getitem__(self, key: int) -> dict:
        return dict(self.dataset[key], key=int(key))


class KeyedDataset(Dataset):
    """Base class: ``get(index, epoch)`` builds an item; ``dataset[key]`` decodes the key."""

    seed: int = 0

    def __len__(self) -> int:  # nominal epoch length
        raise NotImplementedError

    def get(self, index: int, epoch: int) -> dict:
        raise NotImplementedError

    def __getitem__(self, key: int) -> dict:
        epoch, index = divmod(int(key), len(self))
        return self.get(index, epoch)


# ----------------------------------------------------------------------------------------
# Harmonic Data Fusion
# ----------------------------------------------------------------------------------------


class HarmonicDataFusion(KeyedDataset):
    """Human-motion and natural-scene clips mixed at a fixed ratio in *every* epoch.

    X-Dyna paper, Sec. 3.4 (Harmonic Data Fusion Training): natural-scene videos are trained
    alongside human videos, with the Pose / S-Face ControlNet inputs left blank for the clips
    without a person, so the backbone and motion module learn scene dynamics and the
    ControlNets learn that a blank region means "no constraint".

    One epoch = every human clip once plus ``round(n_human * r / (1 - r))`` scene clips
    (r = ``scene_ratio``), in a per-epoch random order; scene clips are cycled across epochs
    when there are fewer of them than an epoch needs. ``scene_ratio = 0`` (or ``scene=None``)
    gives human clips only (stage 2).

    ``block_size`` > 1 shuffles blocks of that many consecutive items of one source instead of
    single items (the synthetic datasets' ``windows_per_clip``: the windows of one rendered clip
    then stay together in a batch, and the clip is rendered once).
    """

    def __init__(self, human: KeyedDataset, scene: Optional[KeyedDataset] = None, scene_ratio: float = 0.25,
                 seed: int = 0, block_size: int = 1):
        if not 0.0 <= scene_ratio < 1.0:
            raise InputError(f"scene_ratio must be in [0, 1), got {scene_ratio}")
        if len(human) == 0:
            raise InputError("Harmonic Data Fusion needs at least one human clip")
        self.human, self.scene, self.seed = human, scene, int(seed)
        self.block = max(1, int(block_size))
        self.scene_ratio = float(scene_ratio) if scene is not None else 0.0
        self.num_human = len(human) // self.block * self.block
        if self.num_human == 0:
            raise InputError(f"Harmonic Data Fusion needs at least {self.block} human clips (block size)")
        self.num_scene = int(round(self.num_human * self.scene_ratio / (1.0 - self.scene_ratio) / self.block)) * self.block
        if self.num_scene and len(scene) == 0:
            raise InputError("scene_ratio > 0 but the scene dataset is empty")
        self._perm_epoch, self._perm = None, None

    def __len__(self) -> int:
        return self.num_human + self.num_scene

    def _permutation(self, epoch: int) -> np.ndarray:
        if self._perm_epoch != epoch:
            self._perm = item_rng(self.seed, epoch, 0xF05E).permutation(len(self) // self.block)
            self._perm_epoch = epoch
        return self._perm

    def source(self, key: int):
        """(dataset, index, epoch, is_scene) that key ``key`` reads."""
        epoch, pos = divmod(int(key), len(self))
        block, offset = divmod(pos, self.block)
        j = int(self._permutation(epoch)[block]) * self.block + offset
        if j < self.num_human:
            return self.human, j, epoch, False
        k = epoch * self.num_scene + (j - self.num_human)
        scene_epoch, scene_index = divmod(k, len(self.scene))
        return self.scene, scene_index, scene_epoch, True

    def get(self, index: int, epoch: int) -> dict:
        return self[epoch * len(self) + index]

    def __getitem__(self, key: int) -> dict:
        dataset, index, epoch, _ = self.source(key)
        return dataset.get(index, epoch)


def harmonic_data_fusion(human: KeyedDataset, scene: Optional[KeyedDataset] = None, scene_ratio: float = 0.25,
                         seed: int = 0, block_size: int = 1) -> HarmonicDataFusion:
    """Mix human-motion and natural-scene clips at ``scene_ratio`` in every epoch.

    X-Dyna paper, Sec. 3.4 "Harmonic Data Fusion Training" (and Sec. 4.1: five epochs of
    stage 1 on the fused data). Scene clips come with blank pose / face controls
    (``has_person = False``). See `HarmonicDataFusion` for the exact epoch layout.
    """
    return HarmonicDataFusion(human, scene, scene_ratio=scene_ratio, seed=seed, block_size=block_size)


# ----------------------------------------------------------------------------------------
# synthetic data (procedural people and scenes, rendered on the fly)
# ----------------------------------------------------------------------------------------


class _RenderCache:
    """Tiny LRU of rendered clips: items that share a clip (same batch, same worker) render it
    once. Only a speed-up: results never depend on what is cached."""

    def __init__(self, size: int = 2):
        self.size, self._store = size, {}

    def get(self, key, make):
        if key in self._store:
            value = self._store.pop(key)
        else:
            value = make()
            while len(self._store) >= self.size:
                self._store.pop(next(iter(self._store)))
        self._store[key] = value
        return value


class SyntheticHumanDataset(KeyedDataset):
    """Procedurally generated people dancing over dynamic backgrounds
    (`xdyna_core.synthetic.render_clip`).

    Item ``index`` of epoch ``epoch`` shows clip ``index // windows_per_clip`` of that epoch
    (a new identity / dance / scene every epoch when ``fresh_each_epoch``): ``clip_frames``
    frames are rendered once and ``windows_per_clip`` items take their window and reference
    frame from them (set ``windows_per_clip`` to a divisor of the batch size so the clip is
    rendered once per batch). ``style="photo"`` renders them with a photographic look.

    ``identity_swap`` (stage 2, S-Face): the face patches come from the same dance and
    expressions rendered on *another* identity (``synthetic.swap_identity``), as the paper's
    cross-identity face patches (Sec. 3.3).
    """

    def __init__(self, num_clips: int = 4096, split: str = "train", seed: int = 0, height: int = 256,
                 width: int = 128, num_frames: int = 16, frame_stride: int = 1, clip_frames: int = 32,
                 fps: float = 8.0, windows_per_clip: int = 1, fresh_each_epoch: bool = True,
                 identity_swap: bool = False, style: str = "default"):
        self.num_clips, self.split, self.seed = int(num_clips), split, int(seed)
        self.style = str(style)  # synthetic.render_clip's style: "default" or "photo"
        self.height, self.width = int(height), int(width)
        self.num_frames, self.frame_stride = int(num_frames), int(frame_stride)
        self.clip_frames = max(int(clip_frames), (self.num_frames - 1) * self.frame_stride + 2)
        self.fps, self.windows_per_clip = float(fps), max(1, int(windows_per_clip))
        self.fresh_each_epoch, self.identity_swap = bool(fresh_each_epoch), bool(identity_swap)
        self._cache = _RenderCache()

    person = True

    def __len__(self) -> int:
        return self.num_clips

    def clip_seed(self, index: int, epoch: int) -> int:
        clip = index // self.windows_per_clip
        return int(item_rng(self.seed, epoch if self.fresh_each_epoch else 0, clip, 0xC11).integers(0, 2**31))

    def _clip(self, index: int, epoch: int):
        s = self.clip_seed(index, epoch)
        return self._cache.get((s, self.person), lambda: synthetic.render_clip(
            s, num_frames=self.clip_frames, height=self.height, width=self.width, fps=self.fps,
            person=self.person, split=self.split, style=self.style))

    def get(self, index: int, epoch: int) -> dict:
        clip = self._clip(index, epoch)
        rng = item_rng(self.seed, epoch, index, 0x1E)
        window, ref = sample_window(rng, len(clip), self.num_frames, self.frame_stride)
        face = clip.face_images[window]
        if self.identity_swap and self.person:
            face = self._swapped_faces(clip, window, rng)
        return _to_item(clip.frames[window], clip.frames[ref], clip.pose_images[window], face, self.person)

    def _swapped_faces(self, clip, window, rng) -> np.ndarray:
        other = synthetic.swap_identity(clip.character, int(rng.integers(0, 2**31)))
        sub = synthetic.render_frames(clip.times[window], self.height, self.width, clip.scene, other, clip.motion,
                                      fps=clip.fps, look=clip.look)
        return sub.face_images


class SyntheticSceneDataset(SyntheticHumanDataset):
    """Scene-only synthetic clips (clouds, water, lights, fire ...): the natural-scene stream of
    Harmonic Data Fusion; pose and face controls are blank."""

    person = False

    def __init__(self, *args, **kwargs):
        kwargs.pop("identity_swap", None)
        super().__init__(*args, **kwargs)


class SyntheticImageDataset(KeyedDataset):
    """Single frames for stage 0 (VAE and image backbone): people at random times of random
    dances, and scene-only frames with probability ``scene_ratio``. ``frames_per_clip`` items
    share one sampled identity / dance / scene (rendered once per group).

    Item: ``{"image": float [3, H, W] in [-1, 1]}``. ``style="photo"``: photographic look.
    """

    def __init__(self, num_images: int = 65536, split: str = "train", seed: int = 0, height: int = 256,
                 width: int = 128, scene_ratio: float = 0.25, frames_per_clip: int = 8, style: str = "default"):
        self.num_images, self.split, self.seed = int(num_images), split, int(seed)
        self.style = str(style)
        self.height, self.width, self.scene_ratio = int(height), int(width), float(scene_ratio)
        self.frames_per_clip = max(1, int(frames_per_clip))
        self._cache = _RenderCache()

    def __len__(self) -> int:
        return self.num_images

    def _group(self, group: int, epoch: int) -> np.ndarray:
        rng = item_rng(self.seed, epoch, group, 0x1A6)
        s = int(rng.integers(0, 2**31))
        person = bool(rng.random() >= self.scene_ratio)
        times = np.sort(rng.uniform(0.0, synthetic.PERFORMANCE_SECONDS, self.frames_per_clip))

        def make():
            fs = synthetic.factor_seeds(s, self.split)
            scene = synthetic.Scene.sample(fs["scene"], person=person)
            char = synthetic.Character.sample(fs["identity"]) if person else None
            motion = synthetic.Choreography.sample(fs["motion"]) if person else None
            look = synthetic.PhotoLook.sample(fs["scene"]) if self.style == "photo" else None
            return synthetic.render_frames(times, self.height, self.width, scene, char, motion,
                                           with_controls=False, look=look).frames

        return self._cache.get((group, epoch), make)

    def get(self, index: int, epoch: int) -> dict:
        frames = self._group(index // self.frames_per_clip, epoch)
        frame = frames[index % self.frames_per_clip]
        return {"image": torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1).float() / 127.5 - 1.0}


def _render_group(args):
    dataset, group = args
    return dataset._group(group, 0)


def render_image_pool(dataset: SyntheticImageDataset, workers: int = 1) -> np.ndarray:
    """All ``len(dataset)`` images of epoch 0 of ``dataset`` as one uint8 array [N, H, W, 3],
    rendered by ``workers`` processes (a fixed pool that stage 0 then reuses every epoch; on a GPU
    the renderer, not the GPU, is the bottleneck)."""
    groups = list(range((len(dataset) + dataset.frames_per_clip - 1) // dataset.frames_per_clip))
    out = np.empty((len(dataset), dataset.height, dataset.width, 3), np.uint8)
    if workers > 1:
        with mp.get_context("fork").Pool(workers) as pool:
            results = pool.imap(_render_group, [(dataset, g) for g in groups], chunksize=4)
            for g, frames in zip(groups, results):
                n = min(dataset.frames_per_clip, len(dataset) - g * dataset.frames_per_clip)
                out[g * dataset.frames_per_clip: g * dataset.frames_per_clip + n] = frames[:n]
    else:
        for g in groups:
            frames = dataset._group(g, 0)
            n = min(dataset.frames_per_clip, len(dataset) - g * dataset.frames_per_clip)
            out[g * dataset.frames_per_clip: g * dataset.frames_per_clip + n] = frames[:n]
    return out


class PooledImages(KeyedDataset):
    """A fixed pool of images (uint8 [N, H, W, 3]) or of their VAE latent distributions
    (``mean``/``std`` float [N, 4, h, w]), shuffled anew every epoch.

    Items: ``{"image": float [3, H, W] in [-1, 1]}`` or ``{"latent_mean", "latent_std"}``."""

    def __init__(self, images: Optional[np.ndarray] = None, mean: Optional[torch.Tensor] = None,
                 std: Optional[torch.Tensor] = None, seed: int = 0):
        self.images = torch.from_numpy(images) if images is not None else None
        self.mean, self.std, self.seed = mean, std, int(seed)
        self._perm_epoch, self._perm = None, None

    def __len__(self) -> int:
        return len(self.images) if self.images is not None else len(self.mean)

    def get(self, index: int, epoch: int) -> dict:
        if self._perm_epoch != epoch:
            self._perm, self._perm_epoch = item_rng(self.seed, epoch, 0x9001).permutation(len(self)), epoch
        j = int(self._perm[index])
        if self.images is not None:
            return {"image": self.images[j].permute(2, 0, 1).float() / 127.5 - 1.0}
        return {"latent_mean": self.mean[j], "latent_std": self.std[j]}


# ----------------------------------------------------------------------------------------
# video folders
# ----------------------------------------------------------------------------------------

# A cross-identity face source (S-Face training, paper Sec. 3.3): given the window's frames
# uint8 [F, H, W, 3], their face patches uint8 [F, H, W, 6] and a numpy generator, return face
# patches uint8 [F, H, W, 6] showing the same expressions and head poses on another identity
# (the paper uses a portrait reenactment network such as Face-Vid2Vid).
CrossIdentityFaceSource = Callable[[np.ndarray, np.ndarray, np.random.Generator], np.ndarray]


def list_videos(folder) -> list:
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"video folder not found: {folder}")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file())
    if not files:
        raise InputError(f"no videos in {folder} (looked for {', '.join(VIDEO_SUFFIXES)})")
    return files


def _file_key(path: Path, settings: dict) -> str:
    h = hashlib.sha256(repr(sorted(settings.items())).encode())
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:24]


def _save_arrays_atomic(folder: Path, arrays: dict) -> None:
    """Write ``name.npy`` files into ``folder`` all at once (temp folder + rename)."""
    tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    for name, arr in arrays.items():
        np.save(tmp / f"{name}.npy", np.ascontiguousarray(arr))
    try:
        os.replace(tmp, folder)
    except OSError:  # another process finished first

        shutil.rmtree(tmp, ignore_errors=True)


class _FolderDataset(KeyedDataset):
    person = True

    def __init__(self, folder, height: int = 256, width: int = 128, num_frames: int = 16, frame_stride: int = 1,
                 fps: Optional[float] = None, max_frames: Optional[int] = 600, cache_dir=None, seed: int = 0,
                 progress: bool = True):
        self.folder, self.height, self.width = Path(folder), int(height), int(width)
        self.num_frames, self.frame_stride = int(num_frames), int(frame_stride)
        self.fps, self.max_frames, self.seed = fps, max_frames, int(seed)
        self.cache_dir = Path(cache_dir) if cache_dir else self.folder / ".xdyna_cache"
        files = list_videos(self.folder)
        settings = dict(kind=type(self).__name__, h=self.height, w=self.width, fps=fps, max_frames=max_frames, v=1)
        self.clips = []
        iterator = files
        if progress:
            iterator = tqdm(files, desc=f"preparing {self.folder.name}", unit="clip")
        for path in iterator:
            target = self.cache_dir / _file_key(path, settings)
            if not (target / "frames.npy").is_file():
                _save_arrays_atomic(target, self._prepare(path))
            self.clips.append(target)

    def _prepare(self, path: Path) -> dict:
        raise NotImplementedError

    def __len__(self) -> int:
        return len(self.clips)

    def _arrays(self, index: int):
        d = self.clips[index]
        return (np.load(d / "frames.npy", mmap_mode="r"), np.load(d / "pose.npy", mmap_mode="r"),
                np.load(d / "face.npy", mmap_mode="r"))

    def get(self, index: int, epoch: int) -> dict:
        frames, pose, face = self._arrays(index)
        rng = item_rng(self.seed, epoch, index, 0xF01D)
        window, ref = sample_window(rng, len(frames), self.num_frames, self.frame_stride)
        face_w = np.array(face[window])
        if self.person and getattr(self, "cross_identity_face_source", None) is not None:
            face_w = np.asarray(self.cross_identity_face_source(np.array(frames[window]), face_w, rng), np.uint8)
        return _to_item(np.array(frames[window]), np.array(frames[ref]), np.array(pose[window]), face_w, self.person)


class HumanVideoDataset(_FolderDataset):
    """A folder of human-motion clips (searched recursively).

    Each clip is preprocessed once with ``extract_motion`` (person-centred framing onto the
    H x W canvas, DWPose-style skeletons, S-Face patches; no retargeting: the reference comes
    from the same clip) and cached as ``.npy`` files in ``cache_dir`` (default
    ``<folder>/.xdyna_cache``), keyed by the file's content and the settings. Items take a
    random ``num_frames`` window and a reference frame from another time of the same clip.

    ``cross_identity_face_source``: optional `CrossIdentityFaceSource` for stage 2 (S-Face);
    without one the clip's own face patches are used.
    """

    def __init__(self, folder, *args, cross_identity_face_source: Optional[CrossIdentityFaceSource] = None,
                 estimator: str = "auto", **kwargs):
        self.estimator = estimator
        self.cross_identity_face_source = cross_identity_face_source
        super().__init__(folder, *args, **kwargs)

    def _prepare(self, path: Path) -> dict:
        m = extract_motion(str(path), None, size=(self.height, self.width), fps=self.fps, max_frames=self.max_frames,
                           retarget="none", estimator=self.estimator, keep_frames=True, cache_dir=False)
        return dict(frames=m.driving_frames, pose=m.pose_images, face=m.face_images)


class SceneVideoDataset(_FolderDataset):
    """A folder of natural-scene clips (sky, water, fire ...): same loader as
    `HumanVideoDataset`, centre-cropped to the canvas, with blank pose / face controls
    (Harmonic Data Fusion, paper Sec. 3.4)."""

    person = False

    def _prepare(self, path: Path) -> dict:
        video = read_video(str(path), fps=self.fps, max_frames=self.max_frames)
        framing = centre_crop_framing(video.height, video.width, (self.height, self.width))
        frames = np.stack([framing.apply_to_image(f) for f in video.frames])
        t = len(frames)
        # Blank controls are stored as zero-stride views' worth of zeros (small files).
        return dict(frames=frames, pose=np.zeros((t, self.height, self.width, 3), np.uint8),
                    face=np.zeros((t, self.height, self.width, 6), np.uint8))
