"""Does the model make a recognisable person out of a *real* photo? (issue #17, item 3)

For each real photo x driving clip: animate with the engine (`xdyna_core.animation.animate`,
preset tiny-offline by default = the embedded model), enlarge every result frame (x4, bicubic),
run the project's pose estimator (mediapipe, each frame on its own) and compare what it finds
with the driving skeleton the model was given (`Motion.keypoints`, the skeleton drawn into the
pose images):

- ``found``   fraction of frames where a person (>= 3 confident body joints) is found;
- ``pck``     PCK@0.2: fraction of the driving skeleton's body joints (nose, neck, shoulders,
              elbows, wrists, hips, knees, ankles that lie on the canvas) that the estimator puts
              within 0.2 x the driving torso length (neck to mid-hip); a joint not found, or a
              frame without a person, counts as wrong;
- ``follows`` fraction of frames where at least half of those joints are within the threshold
              (a person is there *and* moves with the skeleton);
- ``dist``    mean distance of the found joints to the driving ones, in torso lengths (frames
              with a person only).

Baseline ``repeat photo``: the photo as framed for generation (`Motion.reference_image`)
repeated for every frame, scored the same way: a person is found, and the skeleton agrees only
as far as the photo's pose happens to match the dance. A model that follows the skeleton must
beat its PCK; one that paints a smear scores ``found`` near 0.

Baseline ``warp photo``: the photo *moved by the skeleton* without any model: a piecewise
warp of the person along the bones (each bone's pixels follow that bone's rotation and scale
from the photo's skeleton to the driving one, the torso an affine map of shoulders and hips),
pasted over the photo with the person inpainted away. This is the "start from the warped photo"
route of issue #17: what a model would only have to refine. Limbs the photo does not show
(legs of a half-body photo) cannot be warped and stay missing.

Real photos (public domain / CC0, shipped inside installed packages, nothing downloaded):

- ``astronaut``    scikit-image ``skimage.data.astronaut()``: Eileen Collins, NASA, public
                   domain; half body (head to waist).
- ``camera``       scikit-image ``skimage.data.camera()``: a man with a camera on a tripod,
                   grayscale, CC0 by the photographer (Lav Varshney); head to thighs.
- ``grace_hopper`` matplotlib sample data ``grace_hopper.jpg``: Rear Admiral Grace Hopper,
                   official US Navy portrait, public domain; head and shoulders.

Sanity check of the measurement itself: ``synth:SEED`` / ``synth-photo:SEED`` use a frame of the
project's own generator (held-out split, 896x512, default or photo style) as the photo: the
tiny model was trained on the default style, so there it should find and follow the person;
if it did not, the real-photo numbers would say nothing.

No installed package (nor one found on PyPI with a clear licence) ships a full-body photo of a
real person, so none of these shows legs: the model has to invent them, as it does for any
half-body photo.

    python benchmarks/real_photo_eval.py [--model tiny] [--preset tiny-offline] [--frames 16]
        [--photos astronaut,camera,grace_hopper,my_photo.jpg] [--clips assets/examples/dance_1.mp4,...]
        [--out benchmarks/results/real_photo_eval_tiny.json] [--save-strips DIR]

Prints a table; writes the numbers (and the command) to ``--out``. A 16-frame clip takes
~1-1.5 min of CPU for the tiny model, so the default run (3 photos, 1 clip) is a few minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # runnable from a checkout without installing
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

JOINTS = list(range(14))  # OpenPose body-18 without eyes and ears: nose, neck, arms, hips, legs
PCK_THRESHOLD = 0.2
ENLARGE = 4
MIN_JOINT_CONF = 0.3


def _grace_hopper() -> np.ndarray:
    import matplotlib.cbook as cbook
    from PIL import Image

    with Image.open(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)) as im:
        return np.asarray(im.convert("RGB"))


def _skimage(name: str):
    def load() -> np.ndarray:
        import skimage.data

        img = getattr(skimage.data, name)()
        return np.repeat(img[..., None], 3, -1) if img.ndim == 2 else img[..., :3]
    return load


PHOTOS = {
    "astronaut": (_skimage("astronaut"), "scikit-image skimage.data.astronaut(): Eileen Collins, NASA, public domain; half body"),
    "camera": (_skimage("camera"), "scikit-image skimage.data.camera(): CC0 (photographer Lav Varshney), grayscale; head to thighs"),
    "grace_hopper": (_grace_hopper, "matplotlib sample_data/grace_hopper.jpg: US Navy official portrait, public domain; head and shoulders"),
}


def _synthetic_photo(name: str):
    """A held-out frame of the generator as the photo: ``synth:SEED`` (default style, what the
    tiny model was trained on) or ``synth-photo:SEED`` (style="photo")."""
    from xdyna_core.synthetic import render_clip

    kind, seed = name.split(":", 1)
    style = "photo" if kind == "synth-photo" else "default"
    c = render_clip(int(seed), num_frames=1, height=896, width=512, split="heldout", style=style, with_controls=False)
    framing = c.look.framing if c.look is not None else "full"
    return c.frames[0], f"synthetic generator, held-out seed {seed}, style {style}, {framing} framing"


def enlarge(frame: np.ndarray, factor: int = ENLARGE) -> np.ndarray:
    import cv2

    return cv2.resize(frame, None, fx=factor, fy=factor, interpolation=cv2.INTER_CUBIC)


def torso_length(kp: np.ndarray) -> float:
    """Neck to mid-hip of a body-18 array [18, 3] (pixels); 0 when a point is missing."""
    if kp[1, 2] <= 0 or kp[8, 2] <= 0 or kp[11, 2] <= 0:
        return 0.0
    return float(np.linalg.norm(kp[1, :2] - (kp[8, :2] + kp[11, :2]) / 2))


def score_frames(frames: np.ndarray, driving: np.ndarray, estimator, factor: int = ENLARGE) -> dict:
    """Pose-estimate each frame (enlarged x``factor``) and compare with the driving body
    keypoints ``driving`` [T, 128, 3] (canvas pixels)."""
    found, follows, hits, total, dists = [], [], 0, 0, []
    for frame, drv in zip(frames, driving):
        body = drv[:18]
        torso = torso_length(body)
        people = estimator(enlarge(frame, factor))
        person = people[0] if people and people[0].has_body() else None
        found.append(person is not None)
        if torso <= 0:
            continue
        h, w = frame.shape[:2]
        ok_drv = [j for j in JOINTS if body[j, 2] > 0 and 0 <= body[j, 0] < w and 0 <= body[j, 1] < h]
        total += len(ok_drv)
        frame_hits = 0
        if person is not None:
            est = person.body.copy()
            est[:, :2] /= factor
            for j in ok_drv:
                if est[j, 2] >= MIN_JOINT_CONF:
                    d = float(np.linalg.norm(est[j, :2] - body[j, :2])) / torso
                    dists.append(d)
                    frame_hits += d <= PCK_THRESHOLD
        hits += frame_hits
        follows.append(bool(ok_drv) and frame_hits >= 0.5 * len(ok_drv))
    return {"frames": int(len(frames)), "found": float(np.mean(found)) if found else 0.0,
            "follows": float(np.mean(follows)) if follows else 0.0,
            "pck": float(hits / total) if total else 0.0,
            "dist": float(np.mean(dists)) if dists else None, "joints_compared": int(total)}


# Pieces of the body warp, back to front: (joint a, joint b, radius in driving torso lengths).
# Joints are body-18: 0 nose, 1 neck, 2-4 right arm, 5-7 left arm, 8-10 right leg, 11-13 left leg.
LEGS = [(8, 9, 0.16), (9, 10, 0.13), (11, 12, 0.16), (12, 13, 0.13)]
ARMS = [(2, 3, 0.13), (3, 4, 0.11), (5, 6, 0.13), (6, 7, 0.11)]


def _segment_distance(px, py, a, b):
    d = b - a
    t = np.clip(((px - a[0]) * d[0] + (py - a[1]) * d[1]) / max(float(d @ d), 1e-6), 0.0, 1.0)
    return np.hypot(px - a[0] - t * d[0], py - a[1] - t * d[1])


def _pieces(kp: np.ndarray):
    """(name, a [2], b [2], radius px) of the warp pieces present in body keypoints kp [18, 3]."""
    torso = torso_length(kp) or 1.0
    out = []
    ok = kp[:, 2] > 0
    for a, b, r in LEGS:
        if ok[a] and ok[b]:
            out.append(((a, b), kp[a, :2], kp[b, :2], r * torso))
    if ok[[1, 2, 5, 8, 11]].all():
        mid_hip = (kp[8, :2] + kp[11, :2]) / 2
        half = 0.55 * np.linalg.norm(kp[2, :2] - kp[5, :2])
        out.append(("torso", kp[1, :2], mid_hip, max(half, 0.2 * torso)))
    if ok[0] and ok[1]:
        top = kp[0, :2] + 0.8 * (kp[0, :2] - kp[1, :2])
        out.append(((1, 0), kp[1, :2], top, 0.3 * torso))
    for a, b, r in ARMS:
        if ok[a] and ok[b]:
            out.append(((a, b), kp[a, :2], kp[b, :2], r * torso))
    return out


def warp_photo(photo: np.ndarray, ref_kp: np.ndarray, drv_kp: np.ndarray) -> np.ndarray:
    """The framed photo [H, W, 3] with its person (body keypoints ``ref_kp`` [>=18, 3]) moved to
    the driving pose ``drv_kp`` [>=18, 3]: each piece's pixels are pulled back through that
    piece's similarity (bones) or affine (torso) map; the photo's own person is inpainted away."""
    import cv2

    H, W = photo.shape[:2]
    ref, drv = ref_kp[:18], drv_kp[:18]
    py, px = np.mgrid[0:H, 0:W].astype(np.float32)
    map_x, map_y = px.copy(), py.copy()
    alpha = np.zeros((H, W), np.float32)
    src_mask = np.zeros((H, W), np.float32)
    ref_pieces = {p[0]: p for p in _pieces(ref)}
    for name, da, db, rad in _pieces(drv):
        if name not in ref_pieces:
            continue  # the photo does not show this part: nothing to move
        _, ra, rb, rrad = ref_pieces[name]
        src_mask = np.maximum(src_mask, np.clip(rrad + 1.5 - _segment_distance(px, py, ra, rb), 0, 1))
        inside = np.clip(rad + 0.5 - _segment_distance(px, py, da, db), 0.0, 1.0)
        if name == "torso":  # affine map of neck, shoulders and hips
            j = [1, 2, 5, 8, 11]
            A = np.c_[drv[j, :2], np.ones(len(j))]
            M, *_ = np.linalg.lstsq(A, ref[j, :2], rcond=None)
            sx = px * M[0, 0] + py * M[1, 0] + M[2, 0]
            sy = px * M[0, 1] + py * M[1, 1] + M[2, 1]
        else:  # similarity along the bone
            vd, vr = db - da, rb - ra
            z = complex(*vr) / complex(*vd) if np.hypot(*vd) > 1e-3 else 1.0
            qx, qy = px - da[0], py - da[1]
            sx = ra[0] + z.real * qx - z.imag * qy
            sy = ra[1] + z.imag * qx + z.real * qy
        sel = inside > 0
        map_x[sel], map_y[sel] = sx[sel], sy[sel]
        alpha = np.maximum(alpha, inside)
    hole = (cv2.dilate(src_mask, np.ones((5, 5), np.uint8)) > 0).astype(np.uint8)
    background = cv2.inpaint(photo, hole, 5, cv2.INPAINT_TELEA) if hole.any() else photo
    moved = cv2.remap(photo, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    a = cv2.GaussianBlur(alpha, (0, 0), 0.8)[..., None]
    return (background * (1 - a) + moved * a + 0.5).astype(np.uint8)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tiny", help="tiny, official or a model folder")
    ap.add_argument("--preset", default=None, help="default: tiny-offline for the tiny model, else official")
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--photos", default=",".join(PHOTOS), help="names above and/or paths of your own photos")
    ap.add_argument("--clips", default=str(ROOT / "assets" / "examples" / "dance_1.mp4"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="JSON (default benchmarks/results/real_photo_eval_<model>.json)")
    ap.add_argument("--save-strips", default=None, help="folder: a PNG per pair (rows: result, warped photo, skeleton)")
    args = ap.parse_args(argv)

    from diffusers.utils import logging as diffusers_logging

    from xdyna_core.animation import animate, resolve_settings
    from xdyna_core.preprocess.pose import get_estimator

    diffusers_logging.disable_progress_bar()
    settings = resolve_settings(model=args.model, preset=args.preset, max_frames=args.frames, seed=args.seed)
    estimator = get_estimator("mediapipe", static_image_mode=True)  # every frame on its own: no tracking
    photos = [p.strip() for p in args.photos.split(",") if p.strip()]
    clips = [c.strip() for c in args.clips.split(",") if c.strip()]
    rows = []
    for name in photos:
        if name in PHOTOS:
            load, source = PHOTOS[name]
            photo = load()
        elif name.startswith(("synth:", "synth-photo:")):
            photo, source = _synthetic_photo(name)
        elif Path(name).is_file():  # your own photo (a path)
            from xdyna_core.io import load_image

            photo, source = load_image(name), f"file {name}"
            name = Path(name).stem
        else:
            raise SystemExit(f"--photos: {name!r} is neither one of {', '.join(PHOTOS)} nor a file")
        for clip in clips:
            t0 = time.perf_counter()
            anim = animate(photo, clip, settings, cache_dir=False)
            seconds = time.perf_counter() - t0
            driving = anim.motion.keypoints
            model = score_frames(anim.frames, driving, estimator)
            framed = anim.motion.reference_image
            repeat = score_frames(np.repeat(framed[None], len(driving), 0), driving, estimator)
            warped = np.stack([warp_photo(framed, anim.motion.reference_keypoints, k) for k in driving])
            warp = score_frames(warped, driving, estimator)
            rows.append({"photo": name, "photo_source": source, "clip": os.path.relpath(clip, ROOT),
                         "size": [anim.height, anim.width], "seconds": round(seconds, 1),
                         "model": model, "repeat_photo": repeat, "warp_photo": warp})
            print(f"{name} x {Path(clip).name}: model {model}, repeat photo {repeat}, warp photo {warp} "
                  f"({seconds:.0f} s)", flush=True)
            if args.save_strips:
                from xdyna_core.io import save_image

                Path(args.save_strips).mkdir(parents=True, exist_ok=True)
                k = np.linspace(0, len(driving) - 1, min(8, len(driving))).astype(int)
                strip = np.concatenate([np.concatenate(list(anim.frames[k]), 1), np.concatenate(list(warped[k]), 1),
                                        np.concatenate(list(anim.motion.pose_images[k]), 1)], 0)
                save_image(Path(args.save_strips) / f"{name.replace(':', '_')}_{Path(clip).stem}.png", enlarge(strip, 2))

    def mean(key, metric):
        vals = [r[key][metric] for r in rows if r[key][metric] is not None]
        return float(np.mean(vals)) if vals else None

    summary = {key: {m: mean(key, m) for m in ("found", "follows", "pck", "dist")} for key in ("model", "repeat_photo", "warp_photo")}
    out = Path(args.out or ROOT / "benchmarks" / "results" / f"real_photo_eval_{Path(str(args.model)).name}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    result = {"command": "python benchmarks/real_photo_eval.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "model": str(args.model), "preset": settings.preset, "frames": args.frames, "seed": args.seed,
              "enlarge": ENLARGE, "estimator": "mediapipe (static_image_mode)",
              "metric": f"PCK@{PCK_THRESHOLD} of the driving torso length over body joints 0-13; found = >= 3 joints",
              "machine": platform.processor() or platform.machine(), "summary": summary, "pairs": rows}
    out.write_text(json.dumps(result, indent=2))

    def fmt(x):
        return "  -  " if x is None else f"{x:5.2f}"

    cols = ("found", "follows", "pck", "dist")
    head = " ".join(f"{c:>7s}" for c in cols)
    keys = ("model", "repeat_photo", "warp_photo")
    print(f"\n{'':27s} | " + " | ".join(f"{k.replace('_', ' '):^31s}" for k in keys))
    print(f"{'photo':14s} {'clip':12s} | " + " | ".join(head for _ in keys))

    def line(label, r):
        print(f"{label:27s} | " + " | ".join(" ".join(f"{fmt(r[k][c]):>7s}" for c in cols) for k in keys))
    for r in rows:
        line(f"{r['photo']:14s} {Path(r['clip']).stem:12s}", r)
    line("mean", summary)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
