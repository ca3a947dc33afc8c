"""Motion-extraction speed of the embedded estimator on this CPU; prints JSON.

    python benchmarks/extract_speed.py [--frames 60] [--width 512] [--height 896] [--analysis 512,384]

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
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path


def make_clip(path: Path, frames: int, width: int, height: int, fps: float = 30.0) -> None:
    import cv2
    import numpy as np
    import skimage.data

    from xdyna_core.io import write_video

    photo = skimage.data.astronaut()
    s = width / photo.shape[1]
    photo = cv2.resize(photo, (width, round(photo.shape[0] * s)), interpolation=cv2.INTER_AREA)
    canvas = np.full((height, width, 3), 30, np.uint8)
    top = (height - photo.shape[0]) // 3
    canvas[top:top + photo.shape[0]] = photo
    out = []
    for t in range(frames):
        m = cv2.getRotationMatrix2D((width / 2, height / 2), 6 * np.sin(t / 9), 1.0 + 0.12 * np.sin(t / 13))
        m[:, 2] += (20 * np.sin(t / 7), 14 * np.cos(t / 11))
        out.append(cv2.warpAffine(canvas, m, (width, height), borderValue=(30, 30, 30)))
    write_video(path, np.stack(out), fps=fps)


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
    ap.add_argument("--analysis", default="512,384,256", help="analysis sizes (longest side) to compare")
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
        result["pose"] = [pose_speed(video, int(a)) for a in args.analysis.split(",")]

        side = int(args.analysis.split(",")[0])
        for every in (1, 2):
            t0, c0 = time.perf_counter(), time.process_time()
            m = extract_motion(clip, photo, size=(896, 512), fps=None, max_frames=None, analysis_side=side,
                               pose_every=every, cache_dir=False)
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            result.setdefault("extract", []).append({
                "analysis_side": side, "pose_every": every, "frames": len(m), "seconds": round(wall, 2),
                "extract_fps": round(len(m) / wall, 2), "extract_cpu_fps": round(len(m) / cpu, 2),
                "frames_without_person": int((~m.person_found).sum()),
                "frames_without_face": int((~m.face_found).sum()),
                "frames_reanalysed": m.settings.get("frames_reanalysed"),
            })
        cache = Path(tmp) / "cache"
        extract_motion(clip, photo, size=(896, 512), fps=None, max_frames=None, cache_dir=cache)
        t0 = time.perf_counter()
        extract_motion(clip, photo, size=(896, 512), fps=None, max_frames=None, cache_dir=cache)
        result["cached_s"] = round(time.perf_counter() - t0, 3)
    result["load_avg_after"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
