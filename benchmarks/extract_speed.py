"""Motion-extraction speed and skeleton accuracy of the embedded estimator on this CPU; prints JSON.

    python benchmarks/extract_speed.py [--frames 60] [--width 512] [--height 896] [--analysis 1024,512,384]

The clip is made from a real photo (scikit-image's astronaut, placed on a width×height portrait
canvas) that pans, zooms and turns, encoded as H.264 at 30 fps. Measured:

- `pose_fps`: the pose estimator alone in video mode on the decoded frames (graph creation and the
  first, detecting frame excluded);
- `extract_fps`: `extract_motion` end to end with the cache off (decode, pose, tracking, smoothing,
  framing, retargeting, skeleton drawing, face patches) at the generation size 896×512, with the
  pose estimated on every frame (`pose_every` 1) and on every other frame (2, interpolated);
- `cached_s`: the same call again with the cache on (the second run);
- `*_cpu_fps`: frames per CPU-second of this process (all threads), which does not depend on
  what else the machine runs; wall-clock numbers do. `load_avg` is reported for that reason.
- `accuracy` of every extraction: the clip is the photo moved by a known transform per frame, so
  the right keypoints of frame t are the photo's own keypoints (the estimator on the unmoved photo
  at full size, single-image mode) moved by that transform. `pck`: the share of the photo's
  confident points (body, hands, face) that the finished Motion (smoothed, mapped back to clip
  pixels) puts within 5 % of the person's box size (its longer side) of where they belong, over
  all frames; `body_px` / `face_px`: the median error in pixels; `found`: frames with a person.
- `person: 1`: the same clip extracted with `person=1` (the dancer follower of people.py, which
  the studio's dancer choice uses) instead of the most visible person.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# the checkout this file belongs to, not another installed copy of the package
sys.path.insert(0, os.environ.get("XDYNA_BENCH_ROOT") or str(Path(__file__).resolve().parents[1]))


def _canvas(width: int, height: int):
    import cv2
    import numpy as np
    import skimage.data

    photo = skimage.data.astronaut()
    s = width / photo.shape[1]
    photo = cv2.resize(photo, (width, round(photo.shape[0] * s)), interpolation=cv2.INTER_AREA)
    canvas = np.full((height, width, 3), 30, np.uint8)
    top = (height - photo.shape[0]) // 3
    canvas[top:top + photo.shape[0]] = photo
    return canvas


def _transform(t: int, width: int, height: int):
    import cv2
    import numpy as np

    m = cv2.getRotationMatrix2D((width / 2, height / 2), 6 * np.sin(t / 9), 1.0 + 0.12 * np.sin(t / 13))
    m[:, 2] += (20 * np.sin(t / 7), 14 * np.cos(t / 11))
    return m


def make_clip(path: Path, frames: int, width: int, height: int, fps: float = 30.0) -> None:
    import cv2
    import numpy as np

    from xdyna_core.io import write_video

    canvas = _canvas(width, height)
    out = [cv2.warpAffine(canvas, _transform(t, width, height), (width, height), borderValue=(30, 30, 30))
           for t in range(frames)]
    write_video(path, np.stack(out), fps=fps)


def reference_keypoints(width: int, height: int):
    """The photo's keypoints on the unmoved canvas (single-image mode, full size): [128, 3]."""
    from xdyna_core.preprocess.pose import get_estimator

    est = get_estimator("mediapipe", static_image_mode=True, max_side=max(width, height))
    return est(_canvas(width, height))[0].to_array()


def accuracy(motion, ref, width: int, height: int) -> dict:
    """PCK@0.05 and mean errors of the Motion's driving keypoints against the moved reference."""
    import numpy as np

    from xdyna_core.preprocess.framing import Framing

    framing = Framing.from_dict(motion.framing["driving"])
    ok_ref = ref[:, 2] >= 0.3
    box = ref[ok_ref, :2]
    size = float(max(np.ptp(box[:, 0]), np.ptp(box[:, 1])))
    hits, total, body_err, face_err = 0, 0, [], []
    start = int(round(float(motion.timestamps[0]) * 30))
    for i in range(len(motion)):
        t = start + i
        m = _transform(t, width, height)
        # continuous coordinates: x' + 0.5 = M (x + 0.5)
        want = (ref[:, :2] + 0.5) @ m[:, :2].T + m[:, 2] - 0.5
        if not motion.person_found[i]:
            total += int(ok_ref.sum())
            continue
        got_kp = motion.driving_keypoints[i]
        got = framing.inverse_points(got_kp[:, :2])
        err = np.linalg.norm(got - want, axis=1)
        seen = ok_ref & (got_kp[:, 2] >= 0.3)
        hits += int((seen & (err <= 0.05 * size)).sum())
        total += int(ok_ref.sum())
        body_err += list(err[:18][seen[:18]])
        face_err += list(err[60:][seen[60:]])
    return {"pck": round(hits / max(total, 1), 4),
            "body_px": round(float(np.median(body_err)), 2) if body_err else None,
            "face_px": round(float(np.median(face_err)), 2) if face_err else None,
            "found": f"{int(motion.person_found.sum())}/{len(motion)}", "points": int(ok_ref.sum())}


def pose_speed(video, analysis_side: int) -> dict:
    from xdyna_core.preprocess.pose import get_estimator

    est = get_estimator("mediapipe", static_image_mode=False, max_side=analysis_side)
    est(video.frames[0])  # graph creation + first detection
    t0, c0 = time.perf_counter(), time.process_time()
    found = sum(bool(est(f)) for f in video.frames[1:])
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    est.reset()
    n = len(video) - 1
    return {"analysis_side": analysis_side, "pose_fps": round(n / wall, 2), "pose_cpu_fps": round(n / cpu, 2),
            "found": f"{found}/{n}"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--width", type=int, default=512)
    ap.add_argument("--height", type=int, default=896)
    ap.add_argument("--analysis", default="1024,512,384", help="analysis sizes (longest side) to compare; the "
                    "first is the one extract_motion runs with")
    ap.add_argument("--only-extract", action="store_true", help="skip the pose-alone and cache measurements")
    ap.add_argument("--repeats", type=int, default=3, help="extractions per setting: the median is reported, and "
                    "the first one (a fresh process pays one-off costs there) separately")
    args = ap.parse_args()

    from xdyna_core.io import read_video
    from xdyna_core.preprocess.motion import extract_motion

    result = {
        "machine": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "load_avg_before": [round(x, 2) for x in os.getloadavg()],
        "clip": f"{args.frames} frames, {args.width}x{args.height} (WxH), 30 fps, astronaut photo panning/zooming/turning",
    }
    with tempfile.TemporaryDirectory() as tmp:
        clip = Path(tmp) / "clip.mp4"
        make_clip(clip, args.frames, args.width, args.height)
        photo = Path(tmp) / "photo.png"
        from PIL import Image
        import skimage.data

        Image.fromarray(skimage.data.astronaut()).save(photo)

        t0 = time.perf_counter()
        video = read_video(clip, max_side=max(args.width, args.height))
        result["decode_fps"] = round(len(video) / (time.perf_counter() - t0), 1)
        if not args.only_extract:
            result["pose"] = [pose_speed(video, int(a)) for a in args.analysis.split(",")]

        side = int(args.analysis.split(",")[0])
        ref = reference_keypoints(args.width, args.height)
        runs = [{"pose_every": 1}, {"pose_every": 2}]
        if "person" in inspect.signature(extract_motion).parameters:
            runs.append({"person": 1})
        for run in runs:
            walls, cpus = [], []
            for _ in range(max(1, args.repeats)):
                t0, c0 = time.perf_counter(), time.process_time()
                m = extract_motion(clip, photo, size=(896, 512), fps=None, max_frames=None, analysis_side=side,
                                   cache_dir=False, **run)
                walls.append(time.perf_counter() - t0)
                cpus.append(time.process_time() - c0)
            wall, cpu = float(np.median(walls)), float(np.median(cpus))
            result.setdefault("extract", []).append({
                "analysis_side": side, **run, "frames": len(m), "seconds": round(wall, 2),
                "runs_s": [round(w, 2) for w in walls],
                "extract_fps": round(len(m) / wall, 2), "extract_cpu_fps": round(len(m) / cpu, 2),
                "first_run_fps": round(len(m) / walls[0], 2),
                "frames_without_person": int((~m.person_found).sum()),
                "frames_without_face": int((~m.face_found).sum()),
                "frames_reanalysed": m.settings.get("frames_reanalysed"),
                "accuracy": accuracy(m, ref, args.width, args.height),
            })
        if not args.only_extract:
            cache = Path(tmp) / "cache"
            extract_motion(clip, photo, size=(896, 512), fps=None, max_frames=None, cache_dir=cache)
            t0 = time.perf_counter()
            extract_motion(clip, photo, size=(896, 512), fps=None, max_frames=None, cache_dir=cache)
            result["cached_s"] = round(time.perf_counter() - t0, 3)
    result["load_avg_after"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
