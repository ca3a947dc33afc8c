"""Synthetic training and test data: procedurally generated people dancing over dynamic scenes.

``render_clip(seed)`` draws a clip of a sampled person (``Character``: body proportions, skin,
hair style, clothes with stripes / checks / dots, a face with 68 landmarks) performing a sampled
dance (``Choreography``: steps, bounces, arm waves, twists and turns, blinking, talking and
smiling) in a sampled ``Scene`` (drifting clouds, rippling water with glints, flickering stage
lights, shifting gradients, fire). Long hair, skirts and capes swing behind the body's motion
(damped springs). Every clip comes with its ground truth: keypoints in the project's
``Keypoints`` format, the DWPose-style pose images (``preprocess.draw.draw_pose``), the S-Face
patches (``preprocess.face.face_patches``) and person masks. ``person=False`` gives scene-only
clips for the natural-scene stream of Harmonic Data Fusion.

``style="photo"`` (opt-in; the default style is unchanged) renders the same people, dances and
ground truth with a photographic look (``PhotoLook``: one light shading every limb, the head
and a cast shadow; studio / room / outdoor / street backdrops with depth of field; full-body,
half-body, distant and off-centre framing; white balance, vignette and grain), so that a model
trained on it has a chance on real photos (issue #17).

Everything is deterministic: a clip is a pure function of its arguments. A seed is split into
one seed per factor (identity, motion, scene); ``split="train"`` and ``split="heldout"`` draw
those from disjoint ranges, so held-out clips have identities, dances and backgrounds never seen
in training.

Time: a dance is an endless performance; a clip is a window of it starting at ``start_time``
(seconds). ``render_reference`` renders the same person at another time (the reference frame of
a training item); ``swap_identity`` the same dance and face expressions on another person (the
identity-swapped face patches S-Face is trained on).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Optional, Union

import numpy as np

from ..errors import InputError
from . import raster as rz
from ..preprocess.draw import draw_pose
from ..preprocess.face import face_patches
from ..preprocess.pose import Keypoints
from .body import Character, Projection, draw_person, keypoint_arrays, person_states
from .motion import Choreography
from .photo import STYLES, PhotoLook
from .scene import Scene

__all__ = ["Character", "Choreography", "PhotoLook", "Scene", "SyntheticClip", "factor_seeds", "render_clip",
           "render_frames", "render_reference", "swap_identity", "SPLITS", "STYLES"]

SPLITS = ("train", "heldout")
FACTOR_RANGE = 1 << 30        # train factor seeds in [0, 2^30), held-out ones in [2^30, 2^31)
PERFORMANCE_SECONDS = 20.0    # clip windows and reference frames are drawn from [0, this)


def factor_seeds(seed: int, split: str = "train") -> dict:
    """Seeds of the identity, motion and scene of clip ``seed`` in ``split``.

    Each factor gets its own hash of (seed, factor); train and held-out use disjoint halves of
    the seed space, so no held-out identity, motion or background is ever a training one."""
    if split not in SPLITS:
        raise InputError(f"split must be one of {SPLITS}, got {split!r}.")
    base = 0 if split == "train" else FACTOR_RANGE
    out = {}
    for i, name in enumerate(("identity", "motion", "scene", "time")):
        h = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, 0x51D, i]).generate_state(1)[0]
        out[name] = base + int(h) % FACTOR_RANGE
    return out


def split_of(factor_seed: int) -> str:
    """Which split a factor seed belongs to."""
    return "train" if int(factor_seed) < FACTOR_RANGE else "heldout"


@dataclass
class SyntheticClip:
    """One rendered clip and its ground truth (all arrays have T = number of frames).

    - ``frames``       uint8 [T, H, W, 3] RGB
    - ``keypoints``    list of ``Keypoints`` (pixels of the frame), ``None`` in scene-only clips
    - ``keypoint_array`` float32 [T, 128, 3] (``Keypoints.to_array`` layout; zeros without a person)
    - ``pose_images``  uint8 [T, H, W, 3] DWPose-style skeletons (black without a person)
    - ``face_images``  uint8 [T, H, W, 6] S-Face patches [local RGB, global RGB]
    - ``face_found``   bool [T]
    - ``masks``        bool [T, H, W] person pixels (hair and clothes included)
    - ``times``        float [T] seconds into the performance; ``fps``
    - ``character``, ``motion``, ``scene``: the sampled factors (None for no person)
    - ``meta``         dict: seeds, split, size, ...
    - ``look``         the ``PhotoLook`` of a style="photo" clip, None in the default style
    """

    frames: np.ndarray
    keypoints: list
    keypoint_array: np.ndarray
    pose_images: np.ndarray
    face_images: np.ndarray
    face_found: np.ndarray
    masks: np.ndarray
    times: np.ndarray
    fps: float
    character: Optional[Character]
    motion: Optional[Choreography]
    scene: Scene
    meta: dict = field(default_factory=dict)
    look: Optional[PhotoLook] = None

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def has_person(self) -> bool:
        return self.character is not None


def projection_for(scene: Scene, height: int, width: int) -> Projection:
    """Where the person stands and how big they are (scene framing, any image size)."""
    scale = min(scene.person_height * height, 1.6 * width)  # narrow frames: keep most of the arms in view
    return Projection(cx=scene.person_x * width, floor_y=scene.floor_y * height, scale=scale)


def render_frames(times, height: int, width: int, scene: Scene, character: Optional[Character] = None,
                  motion: Optional[Choreography] = None, meta: Optional[dict] = None, fps: float = 8.0,
                  with_controls: bool = True, look: Optional[PhotoLook] = None) -> SyntheticClip:
    """Render the frames at ``times`` (seconds into the performance). A person is drawn when
    ``character`` and ``motion`` are given. ``with_controls=False`` skips pose images and face
    patches (left black) when only pixels, masks and keypoints are needed. ``look``: render in
    the photographic style with this ``PhotoLook`` (its framing replaces the scene's)."""

    H, W = int(height), int(width)
    if H < 16 or W < 16:
        raise InputError(f"synthetic clips need at least 16×16 pixels, got {W}×{H}.")
    times = np.atleast_1d(np.asarray(times, np.float64))
    if len(times) == 0:
        raise InputError("render_frames needs at least one time.")
    if times.min() < 0:
        raise InputError("times must be >= 0 (seconds into the performance).")
    T = len(times)
    person = character is not None and motion is not None
    frames = np.zeros((T, H, W, 3), np.uint8)
    masks = np.zeros((T, H, W), bool)
    pose_images = np.zeros((T, H, W, 3), np.uint8)
    face_images = np.zeros((T, H, W, 6), np.uint8)
    face_found = np.zeros(T, bool)
    kp_arr = np.zeros((T, 128, 3), np.float32)
    keypoints: list = [None] * T
    proj = projection_for(scene, H, W) if look is None else look.projection(H, W)
    st = person_states(character, motion, times) if person else None
    if person:
        kp_arr = keypoint_arrays(st, proj, H, W)
    for k, t in enumerate(times):
        background = scene.render(t, H, W) if look is None else look.background(scene, t, H, W)
        canvas = rz.Canvas(background)
        if look is not None:
            canvas.light = look.light()
        if person:
            draw_person(canvas, character, st, k, proj)
            # the scene lights the person: a tint from the background's mean colour (flickers with
            # stage lights and fire, warm at sunset, dim in the dark)
            tint = (0.8 + 0.28 * background.mean(axis=(0, 1))).astype(np.float32)
            canvas.image *= 1.0 + (tint - 1.0) * canvas.person[..., None]
            if look is not None:
                look.light_person(canvas, proj)
        if look is not None:
            canvas.image = look.finish(canvas.image, t)
        frames[k] = canvas.to_uint8()
        if person:
            masks[k] = canvas.person > 0.5
            kp = Keypoints.from_array(kp_arr[k])
            keypoints[k] = kp
            if with_controls:
                pose_images[k] = draw_pose(kp, H, W)
                face_images[k], face_found[k] = face_patches(frames[k], kp.face)
    m = dict(meta or {})
    m.update(height=H, width=W, person=person, fps=float(fps))
    if look is not None:
        m.update(style="photo")
    return SyntheticClip(frames=frames, keypoints=keypoints, keypoint_array=kp_arr, pose_images=pose_images,
                         face_images=face_images, face_found=face_found, masks=masks, times=times, fps=float(fps),
                         character=character if person else None, motion=motion if person else None, scene=scene, meta=m,
                         look=look)


def render_clip(seed: int = 0, num_frames: int = 16, height: int = 256, width: int = 128, fps: float = 8.0,
                person: bool = True, character: Optional[Character] = None, motion: Optional[Choreography] = None,
                scene: Optional[Scene] = None, split: str = "train", start_time: Optional[float] = None,
                with_controls: bool = True, style: str = "default") -> SyntheticClip:
    """A ``num_frames`` clip at ``fps`` of clip ``seed`` in ``split``: frames and ground truth.

    Factors not given are sampled from ``factor_seeds(seed, split)``; ``start_time`` (seconds
    into the performance) defaults to a seeded time so different seeds show different parts of a
    dance. ``person=False`` renders the scene alone. ``style="photo"``: the same person, dance
    and time with a photographic look (a ``PhotoLook`` drawn from the scene's factor seed, so
    held-out clips get held-out looks); its own framing, so the keypoints differ from the
    default style's, and they match its pixels just as well."""
    if style not in STYLES:
        raise InputError(f"style must be one of {STYLES}, got {style!r}.")
    if num_frames < 1:
        raise InputError(f"num_frames must be >= 1, got {num_frames}.")
    if not fps or fps <= 0:
        raise InputError(f"fps must be positive, got {fps}.")
    fs = factor_seeds(seed, split)
    if person:
        character = character if character is not None else Character.sample(fs["identity"])
        motion = motion if motion is not None else Choreography.sample(fs["motion"])
    scene = scene if scene is not None else Scene.sample(fs["scene"], person=person)
    duration = (num_frames - 1) / fps
    if start_time is None:
        span = max(0.0, PERFORMANCE_SECONDS - duration)
        start_time = float(np.random.default_rng(fs["time"]).uniform(0.0, span))
    times = float(start_time) + np.arange(num_frames) / float(fps)
    meta = dict(seed=int(seed), split=split, factor_seeds=fs, start_time=float(start_time))
    look = PhotoLook.sample(fs["scene"]) if style == "photo" else None
    if look is not None and not person:  # natural-scene clips keep their moving scene, seen by the camera
        look = replace(look, backdrop="scene")
    return render_frames(times, height, width, scene, character if person else None, motion if person else None,
                         meta=meta, fps=fps, with_controls=with_controls, look=look)


def reference_time(clip: SyntheticClip, seed: Optional[int] = None, margin: float = 0.5) -> float:
    """A time of the same performance outside the clip's window (± margin), drawn from seed."""
    r = np.random.default_rng([int(clip.meta.get("seed", 0)) & 0xFFFFFFFF, 0x2EF, int(seed or 0) & 0xFFFFFFFF])
    lo, hi = float(clip.times.min()) - margin, float(clip.times.max()) + margin
    total = PERFORMANCE_SECONDS
    before, after = max(0.0, lo), max(0.0, total - hi)
    if before + after <= 0:
        return float(r.uniform(0, total))
    x = r.uniform(0, before + after)
    return float(x if x < before else hi + (x - before))


def render_reference(clip: SyntheticClip, seed: Optional[int] = None, time: Optional[float] = None,
                     with_controls: bool = True) -> SyntheticClip:
    """The same person, dance and scene as ``clip`` at another ``time`` (default: drawn from
    ``seed`` outside the clip's window): a one-frame clip, e.g. the reference image."""
    t = reference_time(clip, seed) if time is None else float(time)
    meta = dict(clip.meta, reference_of=clip.meta.get("seed"), reference_time=t)
    return render_frames([t], clip.meta["height"], clip.meta["width"], clip.scene, clip.character, clip.motion,
                         meta=meta, fps=clip.fps, with_controls=with_controls, look=clip.look)


def swap_identity(clip_or_character: Union[SyntheticClip, Character], seed: int):
    """The same motion and expressions on a different identity.

    Given a ``Character``: a new one with the same geometry (body and face shape) and a new
    appearance (skin, hair, eyes, lips, clothes) drawn from ``seed``. Given a clip: that clip
    re-rendered (same times, scene and dance) with the swapped character, so its keypoints and
    face landmarks are identical and its face patches show the same expression on another face."""
    if isinstance(clip_or_character, Character):
        return clip_or_character.swapped(seed)
    clip = clip_or_character
    if clip.character is None:
        raise InputError("swap_identity needs a clip with a person (this one is scene-only).")
    new = clip.character.swapped(seed)
    meta = dict(clip.meta, swapped_from=clip.character.seed, swap_seed=int(seed))
    return render_frames(clip.times, clip.meta["height"], clip.meta["width"], clip.scene, new, clip.motion,
                         meta=meta, fps=clip.fps, look=clip.look)
