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

Real photos (public domain / CC0, shipped inside installed packages, nothing downloaded):

- ``astronaut``    scikit-image ``skimage.data.astronaut()``: Eileen Collins, NASA, public
                   domain; half body (head to waist).
- ``camera``       scikit-image ``skimage.data.camera()``: a man with a camera on a tripod,
                   grayscale, CC0 by the photographer (Lav Varshney); head to thighs.
- ``grace_hopper`` matplotlib sample data ``grace_hopper.jpg``: Rear Admiral Grace Hopper,
                   official US Navy portrait, public domain; head and shoulders.

No installed package (nor one found on PyPI with a clear licence) ships a full-body photo of a
real person, so none of these shows legs: the model has to invent them, as it does for any
half-body photo.

    python benchmarks/real_photo_eval.py [--model tiny] [--preset tiny-offline] [--frames 16]
        [--photos astronaut,camera,grace_hopper] [--clips assets/examples/dance_1.mp4]
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
        ok_drv = [j for j in JOINTS if body[j, 2] > 0]
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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tiny", help="tiny, official or a model folder")
    ap.add_argument("--preset", default=None, help="default: tiny-offline for the tiny model, else official")
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--photos", default=",".join(PHOTOS))
    ap.add_argument("--clips", default=str(ROOT / "assets" / "examples" / "dance_1.mp4"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="JSON (default benchmarks/results/real_photo_eval_<model>.json)")
    ap.add_argument("--save-strips", default=None, help="folder: a PNG per pair (result row over skeleton row)")
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
        load, source = PHOTOS[name]
        photo = load()
        for clip in clips:
            t0 = time.perf_counter()
            anim = animate(photo, clip, settings, cache_dir=False)
            seconds = time.perf_counter() - t0
            driving = anim.motion.keypoints
            model = score_frames(anim.frames, driving, estimator)
            repeat = score_frames(np.repeat(anim.motion.reference_image[None], len(driving), 0), driving, estimator)
            rows.append({"photo": name, "photo_source": source, "clip": os.path.relpath(clip, ROOT),
                         "size": [anim.height, anim.width], "seconds": round(seconds, 1),
                         "model": model, "repeat_photo": repeat})
            print(f"{name} x {Path(clip).name}: model {model}, repeat photo {repeat} ({seconds:.0f} s)", flush=True)
            if args.save_strips:
                from xdyna_core.io import save_image

                Path(args.save_strips).mkdir(parents=True, exist_ok=True)
                k = np.linspace(0, len(driving) - 1, min(8, len(driving))).astype(int)
                strip = np.concatenate([np.concatenate(list(anim.frames[k]), 1),
                                        np.concatenate(list(anim.motion.pose_images[k]), 1)], 0)
                save_image(Path(args.save_strips) / f"{name}_{Path(clip).stem}.png", enlarge(strip, 2))

    def mean(key, metric):
        vals = [r[key][metric] for r in rows if r[key][metric] is not None]
        return float(np.mean(vals)) if vals else None

    summary = {key: {m: mean(key, m) for m in ("found", "follows", "pck", "dist")} for key in ("model", "repeat_photo")}
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
    print(f"\n{'':27s} | {'model':^31s} | {'repeat photo':^31s}")
    print(f"{'photo':14s} {'clip':12s} | {head} | {head}")

    def line(label, m, b):
        print(f"{label:27s} | " + " ".join(f"{fmt(m[c]):>7s}" for c in cols) + " | "
              + " ".join(f"{fmt(b[c]):>7s}" for c in cols))
    for r in rows:
        line(f"{r['photo']:14s} {Path(r['clip']).stem:12s}", r["model"], r["repeat_photo"])
    line("mean", summary["model"], summary["repeat_photo"])
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
