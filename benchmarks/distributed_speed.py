"""One long clip over two processes: `torchrun --nproc_per_node 2 ... xdyna animate` (one thread
each) against one process with one thread, on a 56-frame job with the shipped tiny model (its
native 64x128 canvas, the `tiny-offline` preset: 8 denoising steps, 5 windows of 16 frames).

    python benchmarks/distributed_speed.py [--frames 56] [--runs 2] [--out benchmarks/results/distributed_speed.json]

The motion is extracted once beforehand (`xdyna extract`), so both sides time the same work: start
the processes, load the model, generate, write. Prints JSON: the wall time of each command and
the "generate" seconds each reports, their ratios (two processes / one; medians over the runs),
whether both wrote the same file (they must), the window count and the load average before and
after every run (the machine may be shared: a busy machine slows the two-process side most).
"""

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def make_clip(folder: Path, frames: int) -> tuple:
    """A real photograph (scikit-image's astronaut) and a clip made by moving it."""
    import cv2
    import numpy as np
    import skimage.data
    from PIL import Image

    sys.path.insert(0, str(ROOT))
    from xdyna_core.io import write_video

    img = cv2.resize(skimage.data.astronaut(), (256, 256), interpolation=cv2.INTER_AREA)
    Image.fromarray(img).save(folder / "astronaut.png")
    clip = []
    for t in range(frames):
        m = cv2.getRotationMatrix2D((128, 128), 6 * np.sin(t / 4), 1 + 0.05 * np.sin(t / 6))
        m[0, 2] += 6 * np.sin(t / 3)
        clip.append(cv2.warpAffine(img, m, (256, 256), borderMode=cv2.BORDER_REFLECT))
    write_video(folder / "dance.mp4", np.stack(clip), 15)
    return folder / "astronaut.png", folder / "dance.mp4"


def run(cmd, env) -> tuple:
    load = os.getloadavg()[0]
    start = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"failed: {' '.join(map(str, cmd))}\n{done.stderr[-3000:]}")
    generate = float(re.search(r"generate ([\d.]+) s", done.stdout).group(1))
    return wall, generate, load, os.getloadavg()[0]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=56)
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--out", help="also write the JSON here")
    args = ap.parse_args(argv)

    env = dict(os.environ, OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE", HF_HUB_OFFLINE="1")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        env["XDYNA_CACHE_DIR"] = str(tmp / "cache")
        photo, clip = make_clip(tmp, args.frames)
        common = ["--preset", "tiny-offline", "--max-frames", str(args.frames)]
        subprocess.run([sys.executable, "-m", "xdyna_core.cli", "extract", "--image", str(photo), "--video",
                        str(clip), "-o", str(tmp / "motion.npz"), "-q", *common], env=env, check=True, cwd=ROOT,
                       capture_output=True)
        animate = ["-m", "xdyna_core.cli", "animate", "--image", str(photo), "--motion", str(tmp / "motion.npz"),
                   *common]
        one_cmd = [sys.executable, *animate, "-o", str(tmp / "one.mp4")]
        many_cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                    str(args.processes), *animate, "-o", str(tmp / "many.mp4")]
        one, many = [], []
        for _ in range(args.runs):  # alternate, so both sides see the same machine load
            one.append(run(one_cmd, env))
            many.append(run(many_cmd, env))
        same = (tmp / "one.mp4").read_bytes() == (tmp / "many.mp4").read_bytes()

    def median(rows, i):
        return round(statistics.median(r[i] for r in rows), 2)

    window, overlap = 16, 4
    result = {
        "job": f"{args.frames} frames, tiny model 64x128, tiny-offline preset (8 steps), one thread per process",
        "windows": max(1, -(-(args.frames - overlap) // (window - overlap))),
        "processes": args.processes,
        "one_process_wall_s": median(one, 0), "many_processes_wall_s": median(many, 0),
        "one_process_generate_s": median(one, 1), "many_processes_generate_s": median(many, 1),
        "ratio_wall": round(median(many, 0) / median(one, 0), 3),
        "ratio_generate": round(median(many, 1) / median(one, 1), 3),
        "same_file": same,
        "runs": {"one": [[round(x, 2) for x in r] for r in one], "many": [[round(x, 2) for x in r] for r in many],
                 "columns": ["wall_s", "generate_s", "load_before", "load_after"]},
        "cpu_count": os.cpu_count(),
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
