"""`Motion`: everything generation needs from a driving video and a photo, and how it is made.

`extract_motion(driving_video, reference_image, ...)` runs the whole preprocessing:

    read_video (timestamps, target fps) → pose per frame (PoseEstimator) → main person track →
    One-Euro smoothing → framing of the photo and the clip onto the generation canvas →
    retargeting of the driving skeleton onto the photo's person → DWPose-style skeleton images →
    S-Face patches from the framed driving frames, moved with the retargeted head → `Motion`

and caches the result (`.npz`, keyed by the content of both files and every setting), so the
second extraction of the same clip is instant.

Speed: the embedded estimator runs on the two halves of the clip at once (a tracking graph each)
and the controls are drawn on both cores. Several people: `person=N` follows dancer N as
`people.find_dancers` numbers them (1 = leftmost), see people.py; without it, the most visible
person (the estimator's own choice, made consistent by `pose.track_main_person`).

Policies (each a documented fallback, never a traceback):
- no person in the photo → InputError; several people in the photo → the biggest one
  (largest keypoint box) is animated, and `Motion.warnings` says so;
- no person in any driving frame → InputError; in some frames → a black skeleton image for those
  frames and `person_found[t] = False` (black is what the model saw for "no person");
- no face in a frame → black face patches and `face_found[t] = False`;
- nobody during the first second or more → the motion starts where the person first appears
  (`Motion.warnings` names the second); a chosen dancer (`person`) not seen during the last
  second or more has left for good → InputError naming the second and the frames to keep.

Face patches and retargeting: retargeting moves and rescales the skeleton, so the driving face
must move with it or the S-Face control would sit somewhere else than the skeleton's head. For
each frame the head's scale + translation from the driving skeleton to the retargeted one is
fitted (least squares on nose, eyes, ears), the framed driving frame is warped by it, and the
official patch construction (face.py) runs on the warped frame and the moved landmarks.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
import threading
import time
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import cv2
import numpy as np
from PIL import Image

from ..errors import Cancelled, InputError
from ..io import Video, file_digest, load_image, read_video, replace_atomically, side_by_side
from .draw import draw_pose, overlay
from .dwpose import find_dwpose_weights
from .face import face_box, face_patches
from .framing import DEFAULT_SIZE, Framing, check_size, fit_framing, union_box
from .people import find_dancers, follow_among, follow_dancer, workers
from .pose import MIN_CONFIDENCE, Keypoints, get_estimator, smooth_keypoints, track_main_person
from .retarget import retarget_sequence

FORMAT_VERSION = 1  # of the .npz layout
CACHE_VERSION = "motion-3"  # bump when extraction results change, to invalidate old cache entries
# (2: the source records the clip's sha256, so a saved motion finds its clip's sound again;
#  3: clips analysed as decoded, on both halves at once; the first second without anybody cut)
DEFAULT_MAX_FRAMES = 600  # frames extracted per clip unless asked otherwise (40 s at 15 fps)
# Pose estimation runs on frames downscaled to this longest side. 512×896 clips go in as decoded:
# the models crop their own fixed-size inputs, so downscaling first only cost ~6 ms a frame and a
# little accuracy (benchmarks/extract_speed.py).
DEFAULT_ANALYSIS_SIDE = 1024
DEFAULT_FPS = 15.0  # official launchers save at 15 fps; None keeps the clip's own rate
HEAD_POINTS = (0, 14, 15, 16, 17)  # nose, eyes, ears (OpenPose-18)
RETARGET_MODES = ("none", "global", "limbs")

ProgressFn = Callable[..., Optional[bool]]


# --------------------------------------------------------------------------------------
# The Motion object
# --------------------------------------------------------------------------------------


@dataclass
class Motion:
    """Control signals for one (driving clip, photo) pair on the generation canvas (H×W).

    pose_images:  uint8 [T,H,W,3] DWPose-style skeletons (black = no person).
    face_images:  uint8 [T,H,W,6] S-Face patches: channels 0-2 the local eyes+mouth patch, 3-5 the
                  global face patch (the official order); black where no face.
    fps:          frame rate of the T frames (they keep the clip's real speed).
    person_found, face_found: bool [T].
    keypoints:    float32 [T,128,3] retargeted whole-body keypoints on the canvas (the drawn ones;
                  `pose.Keypoints.from_array` layout; zeros where no person).
    driving_keypoints: float32 [T,128,3] framed driving keypoints before retargeting.
    reference_keypoints: float32 [128,3] the photo's person on the canvas (None without a photo).
    reference_image: uint8 [H,W,3] the photo framed to the canvas: the image generation must use.
    driving_frames: uint8 [T,H,W,3] framed driving frames (only when extracted with keep_frames).
    """

    pose_images: np.ndarray
    face_images: np.ndarray
    fps: float
    person_found: np.ndarray
    face_found: np.ndarray
    keypoints: np.ndarray
    driving_keypoints: np.ndarray
    reference_keypoints: Optional[np.ndarray] = None
    reference_image: Optional[np.ndarray] = None
    driving_frames: Optional[np.ndarray] = None
    timestamps: Optional[np.ndarray] = None
    retarget: str = "none"
    source: dict = field(default_factory=dict)
    settings: dict = field(default_factory=dict)
    framing: dict = field(default_factory=dict)
    warnings: list = field(default_factory=list)

    # ---- shape facts --------------------------------------------------------------------
    @property
    def num_frames(self) -> int:
        return int(len(self.pose_images))

    def __len__(self) -> int:
        return self.num_frames

    @property
    def size(self) -> tuple:
        """(height, width) of the canvas."""
        return int(self.pose_images.shape[1]), int(self.pose_images.shape[2])

    @property
    def height(self) -> int:
        return self.size[0]

    @property
    def width(self) -> int:
        return self.size[1]

    @property
    def duration(self) -> float:
        return self.num_frames / self.fps

    def summary(self) -> dict:
        """Per-clip facts for people (the app shows these before generating)."""
        return {
            "frames": self.num_frames,
            "fps": round(float(self.fps), 3),
            "duration_s": round(self.duration, 3),
            "size": f"{self.width}x{self.height}",  # as people write sizes: WIDTHxHEIGHT
            "frames_without_person": int((~self.person_found).sum()),
            "frames_without_face": int((~self.face_found).sum()),
            "retarget": self.retarget,
            "estimator": self.settings.get("estimator_used", self.settings.get("estimator")),
            "warnings": list(self.warnings),
        }

    def keypoints_at(self, t: int, retargeted: bool = True):
        """The frame's `pose.Keypoints` (None without a person)."""

        if not self.person_found[t]:
            return None
        return Keypoints.from_array((self.keypoints if retargeted else self.driving_keypoints)[t])

    def validate(self) -> "Motion":
        t, h, w = self.pose_images.shape[:3]
        checks = [
            (self.pose_images.dtype == np.uint8 and self.pose_images.shape == (t, h, w, 3), "pose_images must be uint8 [T,H,W,3]"),
            (self.face_images.dtype == np.uint8 and self.face_images.shape == (t, h, w, 6), "face_images must be uint8 [T,H,W,6]"),
            (self.person_found.shape == (t,) and self.face_found.shape == (t,), "person_found/face_found must be [T]"),
            (self.keypoints.shape == (t, 128, 3) and self.driving_keypoints.shape == (t, 128, 3), "keypoints must be [T,128,3]"),
            (self.fps > 0, "fps must be positive"),
            (self.reference_image is None or self.reference_image.shape == (h, w, 3), "reference_image must be [H,W,3]"),
            (self.driving_frames is None or self.driving_frames.shape == (t, h, w, 3), "driving_frames must be [T,H,W,3]"),
        ]
        for ok, msg in checks:
            if not ok:
                raise InputError(f"invalid motion: {msg}")
        return self

    # ---- save / load --------------------------------------------------------------------
    _ARRAYS = ("pose_images", "face_images", "person_found", "face_found", "keypoints", "driving_keypoints",
               "reference_keypoints", "reference_image", "driving_frames", "timestamps")

    def save(self, path, frames: bool = True) -> Path:
        """Write a compressed `.npz` (arrays + one JSON metadata string; no pickles), atomically.
        frames=False leaves out the (large) framed driving frames."""

        self.validate()
        path = Path(os.fspath(path))
        if path.suffix != ".npz":
            raise InputError(f"motion files end in .npz, got {path.name}")
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {
            "format": "xdyna-motion",
            "version": FORMAT_VERSION,
            "fps": float(self.fps),
            "retarget": self.retarget,
            "source": self.source,
            "settings": self.settings,
            "framing": self.framing,
            "warnings": self.warnings,
        }
        arrays = {k: getattr(self, k) for k in self._ARRAYS if getattr(self, k) is not None}
        if not frames:
            arrays.pop("driving_frames", None)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".tmp.npz", dir=path.parent)
        os.close(fd)
        try:
            _savez_fast(tmp, {"meta": np.array(json.dumps(meta)), **arrays})
            replace_atomically(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    @classmethod
    def load(cls, path) -> "Motion":
        """Read a `.npz` written by `save` (allow_pickle=False)."""
        path = Path(os.fspath(path))
        if not path.exists():
            raise InputError(f"motion file not found: {path}")
        try:
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(str(z["meta"]))
                arrays = {k: z[k] for k in cls._ARRAYS if k in z.files}
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error) as err:
            # a truncated or damaged file (full disk, killed writer) reads as any of these
            raise InputError(f"{path.name} is damaged or not a motion file written by xdyna extract "
                             f"({type(err).__name__}); extract the motion again") from None
        if meta.get("format") != "xdyna-motion":
            raise InputError(f"{path.name} is not a motion file written by xdyna extract")
        if meta.get("version", 0) > FORMAT_VERSION:
            raise InputError(f"{path.name} was written by a newer X-Dyna Studio (format {meta['version']}); update to read it")
        arrays["person_found"] = arrays["person_found"].astype(bool)
        arrays["face_found"] = arrays["face_found"].astype(bool)
        return cls(fps=float(meta["fps"]), retarget=meta.get("retarget", "none"), source=meta.get("source", {}),
                   settings=meta.get("settings", {}), framing=meta.get("framing", {}), warnings=meta.get("warnings", []),
                   **arrays).validate()


def _savez_fast(path, arrays: dict) -> None:
    """`np.savez_compressed` with deflate level 1 instead of 6: the face patches are photo content,
    which level 6 compresses only ~10 % better at 2-3x the time. `np.load` reads it as usual."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1, allowZip64=True) as z:
        for name, a in arrays.items():
            with z.open(f"{name}.npy", "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.asanyarray(a), allow_pickle=False)


# --------------------------------------------------------------------------------------
# Extraction
# --------------------------------------------------------------------------------------


def default_cache_dir() -> Path:
    """`$XDYNA_CACHE_DIR/motion`, default `~/.cache/xdyna/motion` (one cache for every front door)."""
    root = os.environ.get("XDYNA_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "xdyna")
    return Path(root) / "motion"


def _hash_input(h, obj) -> None:
    """Feed a file's bytes, an array's bytes or None into a hash."""
    if obj is None:
        h.update(b"<none>")
    elif isinstance(obj, (str, os.PathLike)):
        p = Path(os.fspath(obj))
        if not p.is_file():
            raise InputError(f"file not found: {p}")
        h.update(b"file")
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    else:
        try:
            if isinstance(obj, Image.Image):
                obj = np.asarray(obj)
        except ImportError:  # pragma: no cover
            pass
        a = np.ascontiguousarray(np.asarray(obj))
        h.update(f"array{a.shape}{a.dtype}".encode())
        h.update(a.tobytes())


def resolve_estimator_name(name) -> str:
    """'auto' → 'dwpose' when its weights are on disk, else 'mediapipe' (no network)."""
    if not isinstance(name, str):
        return type(name).__name__
    name = (name or "auto").lower()
    if name != "auto":
        return name
    try:
        find_dwpose_weights(None, None, download=False)
        return "dwpose"
    except Exception:  # noqa: BLE001 - no weights (or no module): the embedded estimator
        return "mediapipe"


def _make_estimator(name: str, video: bool, analysis_side: int):
    if name == "mediapipe":
        return get_estimator("mediapipe", static_image_mode=not video, max_side=analysis_side)
    return get_estimator(name)


class _Stages:
    """Maps stage progress to one overall fraction and forwards it as progress(fraction, desc)."""

    WEIGHTS = {"photo": 0.03, "decode": 0.1, "pose": 0.67, "draw": 0.2}

    def __init__(self, progress: Optional[ProgressFn]):
        self.progress = progress
        self.base = 0.0

    def report(self, stage: str, done: int, total: Optional[int], desc: str):
        if self.progress is None:
            return
        w = self.WEIGHTS[stage]
        frac = self.base + w * (min(done, total) / total if total else 0.0)
        if self.progress(min(frac, 1.0), desc) is False:
            raise Cancelled("motion extraction stopped by the user")

    def next(self, stage: str):
        self.base += self.WEIGHTS[stage]


def _fit_scale_translation(src: np.ndarray, dst: np.ndarray):
    """Least-squares s, t with dst ≈ s·src + t (no rotation); None with < 2 points."""
    if len(src) < 2:
        return None
    ms, md = src.mean(0), dst.mean(0)
    den = ((src - ms) ** 2).sum()
    if den < 1e-6:
        return None
    s = float(((src - ms) * (dst - md)).sum() / den)
    if not (0.05 < s < 20):
        return None
    return s, md - s * ms


def _head_transform(driving: np.ndarray, retargeted: np.ndarray, min_conf: float):
    """Scale + translation of the head from the driving to the retargeted skeleton ([128,3] arrays).
    Uses nose/eyes/ears, else the face landmarks; identity when nothing moved."""
    for idx in (list(HEAD_POINTS), list(range(60, 128))):
        d, r = driving[idx], retargeted[idx]
        ok = (d[:, 2] >= min_conf) & (r[:, 2] >= min_conf)
        fit = _fit_scale_translation(d[ok, :2].astype(np.float64), r[ok, :2].astype(np.float64))
        if fit is not None:
            return fit
    return 1.0, np.zeros(2)


def _face_patches_for_frame(frame: np.ndarray, framing: Framing, drv: np.ndarray, rt: np.ndarray, min_conf: float,
                            out: Optional[np.ndarray] = None):
    """S-Face patches for one source frame: the driving face on the canvas, moved with the
    retargeted head. Only the official face box is warped from the source frame (framing and head
    move composed into one map): the local eye/mouth rectangles always lie inside that box, so the
    result equals patching a fully warped frame, at a fraction of the cost."""

    face = drv[60:128].copy()  # driving face landmarks on the canvas
    if (face[:, 2] >= min_conf).sum() < 60:
        return None, False
    s, t = _head_transform(drv, rt, min_conf)
    face[:, :2] = face[:, :2] * s + t
    H, W = framing.height, framing.width
    box = face_box(face, H, W)
    if box is None:
        return None, False
    x0, y0, x1, y1 = box
    # canvas = s * (framing.scale * x + framing.d) + t, in continuous coordinates
    S = s * framing.scale
    dx, dy = s * framing.dx + t[0], s * framing.dy + t[1]
    m = np.array([[S, 0.0, dx + 0.5 * S - 0.5 - x0], [0.0, S, dy + 0.5 * S - 0.5 - y0]])
    canvas = np.zeros((H, W, 3), np.uint8)
    canvas[y0:y1, x0:x1] = cv2.warpAffine(frame, m, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR,
                                          borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
    return face_patches(canvas, face, out=out)


def extract_motion(
    driving_video,
    reference_image=None,
    size=DEFAULT_SIZE,
    fps: Optional[float] = DEFAULT_FPS,
    max_frames: Optional[int] = DEFAULT_MAX_FRAMES,
    retarget: str = "global",
    estimator="auto",
    smooth: bool = True,
    keep_frames: bool = False,
    analysis_side: int = DEFAULT_ANALYSIS_SIDE,
    pose_every: int = 1,
    cache_dir=None,
    progress: Optional[ProgressFn] = None,
    person: Optional[int] = None,
) -> Motion:
    """Driving video (+ photo) → `Motion` on the generation canvas.

    Args:
        driving_video: path of the driving clip (or an already decoded `io.Video`).
        reference_image: the photo to animate (path, PIL image or array). None (training data:
            the reference comes from the clip itself) frames the clip alone, without retargeting.
        size: (height, width) of the canvas, multiples of 64, or "896x512".
        fps: frame rate to sample the clip at (by timestamps, real speed kept); None = the clip's.
        max_frames: at most this many frames from the start of the clip.
        retarget: "none" | "global" (scale + translation anchored on the first frame) |
            "limbs" (per-bone lengths of the photo's person, then re-anchored).
        estimator: "auto" | "mediapipe" | "dwpose", or a PoseEstimator instance.
        smooth: One-Euro smoothing of the keypoints over time.
        keep_frames: also store the framed driving frames (`Motion.driving_frames`).
        analysis_side: longest side of the images the pose estimator sees (speed vs accuracy).
        pose_every: run the pose estimator on every k-th frame only (and the last one) and
            interpolate the keypoints linearly in between: k times faster pose estimation, for
            previews or slow motion; 1 (default) analyses every frame.
        cache_dir: folder of cached results (default `default_cache_dir()`); False disables it.
        progress: `progress(fraction, desc)` (gradio.Progress works); returning False, or
            raising `Cancelled`, stops the extraction.
        person: which dancer to follow when the clip shows several: 1 = the leftmost on the frame
            where `people.find_dancers` counts them (the numbers `people.draw_dancers` shows), 2 the
            next, ...; followed through the whole clip (crossings, leaving the frame for a
            moment), every frame analysed (pose_every does not apply). None (default): the most
            visible person, as the estimator finds it.

    Nobody at the start: when nobody (or not the chosen dancer) is seen during the first
    `LEAD_GAP_S` seconds or more, the motion starts at the first frame with the person and
    `Motion.warnings` says from which second. A chosen dancer who leaves for good (not seen
    during the last `LEAD_GAP_S` seconds or more) is refused with the second they leave at.

    Raises:
        InputError: unreadable/empty/too long clip, unreadable/tiny photo, no person in the photo,
            no person in any frame of the clip, bad settings, a `person` beyond the dancers
            counted, a chosen dancer who leaves for good.
    """

    H, W = check_size(size)
    retarget = (retarget or "none").lower()
    if retarget not in RETARGET_MODES:
        raise InputError(f"retarget must be one of {', '.join(RETARGET_MODES)}, got {retarget!r}")
    if reference_image is None:
        retarget = "none"
    if max_frames is not None and max_frames < 1:
        raise InputError(f"max_frames must be at least 1, got {max_frames}")
    if int(pose_every) < 1:
        raise InputError(f"pose_every must be at least 1, got {pose_every}")
    person = check_person(person)
    est_name = resolve_estimator_name(estimator)
    settings = {
        "size": [H, W],
        "fps": None if fps is None else float(fps),
        "max_frames": max_frames,
        "retarget": retarget,
        "estimator": est_name,
        "smooth": bool(smooth),
        "keep_frames": bool(keep_frames),
        "analysis_side": int(analysis_side),
        "pose_every": int(pose_every),
        "has_reference": reference_image is not None,
    }
    if person is not None:  # only then: cache keys of extractions without a dancer stay as they were
        settings["person"] = person

    # ---- cache lookup -----------------------------------------------------------------------
    cache_path = None
    # The clip's content, recorded in the motion: its sound goes with the result (animation.save_video).
    clip_digest = None
    if not isinstance(driving_video, Video) and Path(os.fspath(driving_video)).is_file():
        clip_digest = file_digest(driving_video)  # else read_video below says what is wrong with the path
    cacheable = cache_dir is not False and clip_digest is not None and isinstance(estimator, str)
    if cacheable:
        h = hashlib.sha256(CACHE_VERSION.encode())
        h.update(b"file" + clip_digest.encode())
        _hash_input(h, reference_image)
        h.update(json.dumps(settings, sort_keys=True).encode())
        cache_path = Path(cache_dir or default_cache_dir()) / f"{h.hexdigest()[:32]}.npz"
        if cache_path.is_file():
            try:
                motion = Motion.load(cache_path)
                motion.settings["cache"] = "hit"
                # the same content may have come from another file than the one cached
                motion.source.update(path=os.path.abspath(driving_video), sha256=clip_digest)
                if progress is not None:
                    progress(1.0, "motion loaded from cache")
                return motion
            except InputError:
                cache_path.unlink(missing_ok=True)  # stale or damaged entry: extract again

    stages = _Stages(progress)
    started = time.perf_counter()
    warnings: list = []

    # ---- inputs -----------------------------------------------------------------------------
    photo = None
    if reference_image is not None:
        photo = load_image(reference_image, max_side=2048)
    # ---- the photo's person (first: a bad photo fails before the clip is used), while the clip
    # decodes on a second thread ------------------------------------------------------------------
    decoding = None
    if not isinstance(driving_video, Video):
        # Decode a little larger than the canvas: framing may zoom in on the dancer.
        decoding = _Decoding(driving_video, fps, max_frames, int(max(H, W) * 1.5))
    try:
        ref_kp = _photo_person(photo, estimator, est_name, stages, warnings)
    except BaseException:
        if decoding is not None:
            decoding.abandon()
        raise
    stages.next("photo")

    # ---- the clip ----------------------------------------------------------------------------
    if isinstance(driving_video, Video):
        video = driving_video
        if max_frames is not None and len(video) > max_frames:
            video = dataclasses.replace(video, frames=video.frames[:max_frames], timestamps=video.timestamps[:max_frames],
                                        truncated=True)
    else:
        video = decoding.result(lambda d, t: stages.report("decode", d, t, "reading the video"))
    warnings += list(video.warnings)
    stages.next("decode")

    # ---- pose per frame ---------------------------------------------------------------------
    n = len(video)
    report = lambda done, total, desc: stages.report("pose", done, total, desc)  # noqa: E731
    if person is not None:
        track = _follow_chosen_dancer(driving_video, video, person, estimator, est_name, fps, max_frames, report)
        settings["pose_every"] = 1
        settings["estimator_used"] = (f"{est_name} (following dancer {person})" if isinstance(estimator, str)
                                      else type(estimator).__name__)
    else:
        track, used, retried = _estimate_main_person(video, estimator, est_name, analysis_side, int(pose_every), report)
        settings["frames_reanalysed"] = retried
        settings["estimator_used"] = used
    stages.next("pose")
    if all(k is None for k in track):
        raise InputError(
            "no person found in any frame of the driving video; use a clip where one person is clearly visible"
        )
    video, track, lead_warning = _trim_leading_gap(video, track, person)
    if lead_warning:
        warnings.append(lead_warning)
    if person is not None:
        _check_dancer_stays(video, track, person)
    n = len(video)
    if smooth:
        track = smooth_keypoints(track, video.fps)

    # ---- framing ----------------------------------------------------------------------------
    vh, vw = video.frames.shape[1:3]
    drv_framing = fit_framing(vh, vw, (H, W), union_box(_visible_box(k, vh, vw) for k in track if k is not None))
    drv_kp = [drv_framing.apply_to_keypoints(k) for k in track]
    ref_image = ref_kp_c = None
    framings = {"driving": drv_framing.to_dict()}
    if photo is not None:
        ph_framing = fit_framing(photo.shape[0], photo.shape[1], (H, W), _visible_box(ref_kp, *photo.shape[:2]))
        ref_image = ph_framing.apply_to_image(photo, fill="extend")
        ref_kp_c = ph_framing.apply_to_keypoints(ref_kp)
        framings["reference"] = ph_framing.to_dict()

    # ---- retargeting ------------------------------------------------------------------------

    rt_kp, rt_info = retarget_sequence(drv_kp, ref_kp_c, mode=retarget)
    settings["retarget_info"] = _jsonable(rt_info.__dict__)

    # ---- skeletons and face patches ---------------------------------------------------------

    pose_images = np.zeros((n, H, W, 3), np.uint8)
    face_images = np.zeros((n, H, W, 6), np.uint8)
    person_found = np.zeros(n, bool)
    face_found = np.zeros(n, bool)
    kp_rt = np.zeros((n, 128, 3), np.float32)
    kp_drv = np.zeros((n, 128, 3), np.float32)
    frames_out = np.zeros((n, H, W, 3), np.uint8) if keep_frames else None

    def draw(t: int) -> None:
        if keep_frames:
            frames_out[t] = drv_framing.apply_to_image(video.frames[t])
        if drv_kp[t] is not None and rt_kp[t] is not None:
            person_found[t] = True
            kp_drv[t] = drv_kp[t].to_array()
            kp_rt[t] = rt_kp[t].to_array()
            pose_images[t] = draw_pose(rt_kp[t], H, W)
            # drawn straight into the black face_images[t]; where no face is found it stays black
            _, face_found[t] = _face_patches_for_frame(video.frames[t], drv_framing, kp_drv[t], kp_rt[t], MIN_CONFIDENCE,
                                                       out=face_images[t])

    # frames are independent: both cores draw (OpenCV and numpy let go of the GIL)
    _in_parallel([range(k, n, workers()) for k in range(workers())], lambda part, tick: [(draw(t), tick()) for t in part],
                 lambda done: stages.report("draw", done, n, f"drawing the controls: frame {done}/{n}"))
    if not person_found.all():
        warnings.append(f"{int((~person_found).sum())} of {n} frames show no person; their skeleton images are blank")
    off = _frames_off_canvas(kp_rt[person_found], H, W)
    if retarget != "none" and off > 0.2 * max(1, person_found.sum()):
        warnings.append(
            f"in {off} frames most of the retargeted skeleton lies outside the canvas: the two people were measured "
            "very differently (e.g. a side view against a frontal photo); check the preview, or try retarget 'none'"
        )
    if not face_found.any():
        warnings.append("no face found in any frame; the face controls are blank (the expression will not follow the clip)")

    settings["seconds"] = round(time.perf_counter() - started, 3)
    settings["cache"] = "miss" if cacheable else "off"
    motion = Motion(
        pose_images=pose_images,
        face_images=face_images,
        fps=float(video.fps),
        person_found=person_found,
        face_found=face_found,
        keypoints=kp_rt,
        driving_keypoints=kp_drv,
        reference_keypoints=None if ref_kp_c is None else ref_kp_c.to_array(),
        reference_image=ref_image,
        driving_frames=frames_out,
        timestamps=np.asarray(video.timestamps, np.float64),
        retarget=retarget,
        source={**video.meta(), **({} if clip_digest is None else
                                   {"path": os.path.abspath(driving_video), "sha256": clip_digest})},
        settings=settings,
        framing=framings,
        warnings=warnings,
    ).validate()
    if cache_path is not None:
        motion.save(cache_path)
    if progress is not None:
        progress(1.0, "motion extracted")
    return motion


def _photo_person(photo, estimator, est_name: str, stages: "_Stages", warnings: list):
    """The photo's person (the biggest one; a warning when there are several), or None without a photo."""
    if photo is None:
        return None
    stages.report("photo", 0, 1, "finding the person in the photo")
    photo_est = estimator if not isinstance(estimator, str) else _make_estimator(est_name, video=False, analysis_side=1024)
    people = [p for p in photo_est(photo) if p.has_body()]
    _reset(photo_est)
    if not people:
        raise InputError(
            "no person found in the photo; use a photo where one person is clearly visible "
            "(head and shoulders at least, ideally the whole body), well lit and not too small"
        )
    people.sort(key=lambda p: p.area(), reverse=True)
    if len(people) > 1:
        warnings.append(f"the photo shows {len(people)} people; the biggest one is animated")
    return people[0]


class _Decoding:
    """`read_video` on a thread of its own (the clip decodes while the photo is analysed); its
    progress reaches the caller's thread in `result`, and `abandon` stops it."""

    def __init__(self, path, fps, max_frames, max_side: int):
        self.done = (0, None)
        self.stop = threading.Event()
        self.video, self.error = None, None
        self.thread = threading.Thread(target=self._run, args=(path, fps, max_frames, max_side), daemon=True)
        self.thread.start()

    def _run(self, path, fps, max_frames, max_side):
        try:
            self.video = read_video(path, fps=fps, max_frames=max_frames, max_side=max_side, progress=self._progress)
        except BaseException as err:  # noqa: BLE001 - raised on the caller's thread by result()
            self.error = err

    def _progress(self, done, total):
        self.done = (done, total)
        return not self.stop.is_set()  # False makes read_video stop

    def abandon(self) -> None:
        self.stop.set()
        self.thread.join()

    def result(self, report) -> Video:
        try:
            while self.thread.is_alive():
                self.thread.join(0.05)
                report(*self.done)
        except BaseException:
            self.abandon()
            raise
        if self.error is not None:
            raise self.error
        report(*self.done)
        return self.video


LEAD_GAP_S = 1.0  # nobody during this long at the start: the motion starts later; a chosen dancer gone this long at the end: refused


def check_person(person) -> Optional[int]:
    """`person` as a 1-based dancer number, or None (the most visible person)."""
    if person is None:
        return None
    if isinstance(person, bool) or not isinstance(person, (int, np.integer)) and not (
            isinstance(person, (float, str)) and str(person).strip().lstrip("+").replace(".0", "", 1).isdigit()):
        raise InputError(f"person must be a dancer number from 1 (1 = the leftmost), got {person!r}")
    value = int(float(person))
    if value < 1:
        raise InputError(f"person must be a dancer number from 1 (1 = the leftmost), got {person!r}")
    return value


def _in_parallel(parts: list, work: Callable, report: Callable[[int], None]) -> None:
    """Run work(part, tick) for every part on its own thread, and report(done) on this thread for
    every unit done (`tick()` counts one), so progress callbacks and cancelling stay on the
    caller's thread. A failure or a cancel stops the other parts at their next tick."""
    parts = [p for p in parts if len(p)]
    if len(parts) <= 1:  # no thread needed
        done = [0]

        def tick():
            done[0] += 1
            report(done[0])

        for part in parts:
            work(part, tick)
        return
    state = {"done": 0, "running": len(parts)}
    cond = threading.Condition()
    stop = threading.Event()
    errors: list = []

    def tick():
        if stop.is_set():
            raise _Stopped()
        with cond:
            state["done"] += 1
            cond.notify()

    def run(part):
        try:
            work(part, tick)
        except _Stopped:
            pass
        except BaseException as err:  # noqa: BLE001 - handed to the caller's thread
            errors.append(err)
            stop.set()
        finally:
            with cond:
                state["running"] -= 1
                cond.notify()

    threads = [threading.Thread(target=run, args=(p,), daemon=True) for p in parts]
    for t in threads:
        t.start()
    reported = 0
    try:
        while True:
            with cond:
                while state["done"] == reported and state["running"] > 0:
                    cond.wait(0.5)
                done, running = state["done"], state["running"]
            while reported < done:
                reported += 1
                report(reported)
            if running == 0 or stop.is_set():
                break
    finally:
        stop.set()
        for t in threads:
            t.join()
    if errors:
        raise errors[0]


class _Stopped(Exception):
    """A worker thread stops because another one failed or the job was cancelled."""


def _estimate_main_person(video: Video, estimator, est_name: str, analysis_side: int, pose_every: int, report):
    """The most visible person per analysed frame (the estimator's own choice), made consistent by
    `track_main_person` and interpolated to every frame. The embedded estimator runs on the two
    halves of the clip at once (one tracking graph each), which uses both cores; when the second
    half's graph starts on another person than the one the first half's was following (several
    people), the second half is analysed again by the first half's graph, as one pass would have.
    Returns (track, estimator class name, frames analysed again)."""
    n = len(video)
    analysed = sorted(set(range(0, n, pose_every)) | {n - 1})
    per_frame: list = [None] * len(analysed)
    retried = []
    own = isinstance(estimator, str)
    parts = [list(range(len(analysed)))]
    if own and est_name == "mediapipe" and len(analysed) >= 16:
        k = workers()
        parts = [list(range(len(analysed) * i // k, len(analysed) * (i + 1) // k)) for i in range(k)]
    used = [type(estimator).__name__ if not own else None]
    graphs: dict = {}  # part index -> (estimator, retry), closed at the end

    def run(part, tick, est, retry):
        for j in part:
            frame = video.frames[analysed[j]]
            people = [p for p in est(frame) if p.has_body()]
            if not people and retry is not None:
                retried.append(j)
                people = [p for p in retry(frame) if p.has_body()]
            per_frame[j] = people
            tick()

    def work(part, tick):
        est = estimator if not own else _make_estimator(est_name, video=True, analysis_side=analysis_side)
        used[0] = type(est).__name__
        # Video-mode (tracking) estimators sometimes lose a person they would find from scratch: a
        # frame where tracking finds nobody is analysed again by a fresh single-image estimator.
        retry = _make_estimator(est_name, video=False, analysis_side=analysis_side) if own and est_name == "mediapipe" else None
        graphs[parts.index(part)] = (est, retry)
        _reset(est)
        run(part, tick, est, retry)

    try:
        _in_parallel(parts, work, lambda done: report(done, len(analysed),
                                                       f"finding the pose: frame {analysed[min(done, len(analysed)) - 1] + 1}/{n}"))
        for k in range(1, len(parts)):
            if not _same_person(per_frame[parts[k - 1][-1]], per_frame[parts[k][0]]):
                est, retry = graphs[k - 1]  # it is where the previous part ended: carry on from there
                run(parts[k], lambda: None, est, retry)
                graphs[k] = graphs[k - 1]
    finally:
        for est, retry in graphs.values():
            _reset(est)
            if retry is not None:
                _reset(retry)
    track = _interpolate_track(analysed, track_main_person(per_frame), n)
    return track, used[0], len(retried)


def _same_person(before: list, after: list) -> bool:
    """Whether the main person of two neighbouring frames is one person (their body boxes overlap or
    lie within half a box diagonal); True when either frame has nobody."""
    boxes = [max((p.bbox(MIN_CONFIDENCE, "body") for p in people if p.bbox(MIN_CONFIDENCE, "body")),
                 key=lambda b: (b[2] - b[0]) * (b[3] - b[1]), default=None) for people in (before or [], after or [])]
    a, b = boxes
    if a is None or b is None:
        return True
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    diag = float(np.hypot(a[2] - a[0], a[3] - a[1]))
    centre = float(np.hypot((a[0] + a[2] - b[0] - b[2]) / 2, (a[1] + a[3] - b[1] - b[3]) / 2))
    return ix > 0 and centre <= 0.5 * diag


def _follow_chosen_dancer(driving_video, video: Video, person: int, estimator, est_name: str, fps, max_frames, report):
    """Keypoints of dancer `person` in every frame (None where not seen): the dancers are counted
    exactly as `people.find_dancers` counts them for the user, then followed (people.py)."""
    source = driving_video if not isinstance(driving_video, Video) else video
    dancers = find_dancers(source, fps=fps, max_frames=max_frames)
    if dancers.count == 0:
        raise InputError("no person found in the first seconds of the driving video, so there is no dancer to choose; "
                         "leave the dancer unset or use a clip where the dancers are clearly visible")
    if person > dancers.count:
        choices = "1" if dancers.count == 1 else f"1 to {dancers.count}" if dancers.count > 2 else "1 or 2"
        what = "1 dancer" if dancers.count == 1 else f"{dancers.count} dancers"
        raise InputError(f"the clip shows {what}; choose {choices} (dancer {person} does not exist)")
    start = int(np.argmin(np.abs(np.asarray(video.timestamps) - video.timestamps[0] - dancers.time)))
    progress = lambda done, total: report(done, total, f"following dancer {person}: frame {done}/{total}")  # noqa: E731
    if isinstance(estimator, str) and est_name == "mediapipe":
        return follow_dancer(video.frames, dancers, person, start, progress=progress)
    # other estimators see several people themselves: follow the dancer among what they find
    est = estimator if not isinstance(estimator, str) else _make_estimator(est_name, video=True, analysis_side=DEFAULT_ANALYSIS_SIDE)
    _reset(est)
    per_frame = []
    for i in range(len(video)):
        per_frame.append([p for p in est(video.frames[i]) if p.has_body()])
        progress(i + 1, len(video))
    _reset(est)
    return follow_among(video.frames, per_frame, dancers, person, start)


def _seconds(video: Video, i: int) -> float:
    return float(video.timestamps[i] - video.timestamps[0])


def _trim_leading_gap(video: Video, track: list, person: Optional[int]):
    """Start the clip at the first frame with the person when nobody is seen during the first
    LEAD_GAP_S seconds or more (a blank stretch the animation would only stand still in)."""
    first = next(i for i, k in enumerate(track) if k is not None)
    if first == 0 or _seconds(video, first) < LEAD_GAP_S:
        return video, track, None
    who = "nobody is" if person is None else f"dancer {person} is not"
    msg = (f"{who} seen in the first {_seconds(video, first):.1f} s of the clip; the motion starts at "
           f"{_seconds(video, first):.1f} s (frame {first + 1}), where {'a person' if person is None else 'the dancer'} "
           "first appears")
    video = dataclasses.replace(video, frames=video.frames[first:], timestamps=np.asarray(video.timestamps)[first:])
    return video, track[first:], msg


def _check_dancer_stays(video: Video, track: list, person: int) -> None:
    """A chosen dancer not seen during the last LEAD_GAP_S seconds or more has left for good."""
    last = max(i for i, k in enumerate(track) if k is not None)
    n = len(track)
    if last == n - 1:
        return
    gone = _seconds(video, last + 1)
    if _seconds(video, n - 1) + 1.0 / video.fps - gone >= LEAD_GAP_S:
        raise InputError(
            f"dancer {person} leaves the frame at {gone:.1f} s and does not come back; choose another dancer, or "
            f"extract only the part before: at most {last + 1} frames (max frames {last + 1}"
            f"{'' if video.fps is None else f' at {video.fps:g} fps'})")


def _frames_off_canvas(kp: np.ndarray, height: int, width: int, min_conf: float = 0.3) -> int:
    """Frames ([T,128,3] keypoints) with most of their confident body joints off the canvas."""
    body = kp[:, :18]
    ok = body[..., 2] >= min_conf
    out = ok & ((body[..., 0] < 0) | (body[..., 0] >= width) | (body[..., 1] < 0) | (body[..., 1] >= height))
    return int(((out.sum(1) * 2 > ok.sum(1)) & (ok.sum(1) > 0)).sum())


def _interpolate_track(analysed: list, track: list, n: int) -> list:
    """Keypoints for all n frames from those of the analysed frames: linear interpolation between
    the two nearest analysed frames; a point missing in either, or a person missing in either,
    stays missing (confidence: the smaller of the two)."""
    if len(analysed) == n:
        return list(track)

    out = [None] * n
    for (i0, k0), (i1, k1) in zip(zip(analysed, track), zip(analysed[1:], track[1:])):
        out[i0] = k0
        if k0 is None or k1 is None:
            continue
        a0, a1 = k0.to_array(), k1.to_array()
        both = (a0[:, 2] > 0) & (a1[:, 2] > 0)
        for i in range(i0 + 1, i1):
            w = (i - i0) / (i1 - i0)
            a = np.zeros_like(a0)
            a[both, :2] = (1 - w) * a0[both, :2] + w * a1[both, :2]
            a[both, 2] = np.minimum(a0[both, 2], a1[both, 2])
            out[i] = Keypoints.from_array(a)
    out[analysed[-1]] = track[-1]
    return out


def _visible_box(kp, height: int, width: int):
    """The person's keypoint box cut to the image: estimators extrapolate joints outside the frame
    (legs of a half-body shot), which must not make the framing zoom out onto empty padding."""
    b = kp.bbox()
    if b is None:
        return None
    x0, y0, x1, y1 = max(b[0], 0.0), max(b[1], 0.0), min(b[2], float(width)), min(b[3], float(height))
    if x1 <= x0 or y1 <= y0:
        return None
    return x0, y0, x1, y1


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    return obj


def _reset(est) -> None:
    reset = getattr(est, "reset", None)
    if callable(reset):
        reset()


# --------------------------------------------------------------------------------------
# Previews (uint8 RGB arrays; write them with io.write_video / io.save_image)
# --------------------------------------------------------------------------------------


def skeleton_video(motion: Motion) -> np.ndarray:
    """The skeleton images the pose ControlNet sees: uint8 [T,H,W,3]."""
    return motion.pose_images


def face_patch_video(motion: Motion) -> np.ndarray:
    """The 6-channel S-Face control made viewable: [global patch | local patch], uint8 [T,H,2W,3]."""
    return np.concatenate([motion.face_images[..., 3:6], motion.face_images[..., 0:3]], axis=2)


def preview_side_by_side(driving_frames=None, motion: Optional[Motion] = None, labels: bool = True) -> np.ndarray:
    """[driving | skeleton | face patches] for checking the extraction before generating.

    driving_frames: the clip's frames (any size; resized to the canvas height), default the
    framed frames stored in the motion (extract with keep_frames=True)."""

    if motion is None:
        raise InputError("preview_side_by_side needs a Motion")
    clips, names = [], []
    frames = driving_frames if driving_frames is not None else motion.driving_frames
    if frames is not None:
        clips.append(np.asarray(frames))
        names.append("driving")
    clips += [motion.pose_images, motion.face_images[..., 3:6], motion.face_images[..., 0:3]]
    names += [f"skeleton ({motion.retarget})", "face (global)", "face (local)"]
    return side_by_side(*clips, labels=names if labels else None, height=motion.height, length="shortest")


def retarget_overlay(photo=None, motion: Optional[Motion] = None, alpha: float = 0.75) -> np.ndarray:
    """The first retargeted skeleton drawn over the framed photo (uint8 [H,W,3]): shows at a glance
    whether size and position fit the person. `photo` defaults to `motion.reference_image`."""

    if motion is None:
        raise InputError("retarget_overlay needs a Motion")
    base = motion.reference_image if photo is None else np.asarray(photo)
    if base is None:
        raise InputError("this motion was extracted without a photo; pass the photo")
    if base.shape[:2] != motion.size:
        base = cv2.resize(base, (motion.width, motion.height), interpolation=cv2.INTER_AREA)
    found = np.flatnonzero(motion.person_found)
    if len(found) == 0:
        return base.copy()
    return overlay(base, motion.pose_images[found[0]], alpha=alpha)
