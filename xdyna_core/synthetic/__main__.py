"""``python -m xdyna_core.synthetic``: preview a synthetic clip or time the generator."""

from __future__ import annotations

import argparse
import time

import numpy as np

from . import SPLITS, STYLES, render_clip
from ..io import frame_strip, save_image


def main(argv=None):
    """``python -m xdyna_core.synthetic``: look at the data (a frame strip PNG of a clip with
    its skeleton, face patches and mask) or measure the generator's speed (``--bench``)."""

    ap = argparse.ArgumentParser(description="Synthetic dancers: preview a clip or benchmark the generator.")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--split", default="train", choices=SPLITS)
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--height", type=int, default=256)
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--fps", type=float, default=8.0)
    ap.add_argument("--scene-only", action="store_true")
    ap.add_argument("--style", default="default", choices=STYLES, help="photo: lit bodies, photographic backdrops, "
                    "varied framing, camera grain (issue #17)")
    ap.add_argument("--out", default="synthetic_preview.png", help="PNG: rows = frames | skeleton | face patches | mask")
    ap.add_argument("--bench", type=int, default=0, metavar="N", help="time N clips instead (CPU seconds, one core)")
    args = ap.parse_args(argv)
    kw = dict(num_frames=args.frames, height=args.height, width=args.width, fps=args.fps, person=not args.scene_only,
              split=args.split, style=args.style)
    if args.bench:
        render_clip(args.seed, **dict(kw, num_frames=1))  # imports, caches
        t0, w0 = time.process_time(), time.perf_counter()
        for i in range(args.bench):
            render_clip(args.seed + i, **kw)
        cpu, wall = (time.process_time() - t0) / args.bench, (time.perf_counter() - w0) / args.bench
        print(f"{args.frames} frames {args.height}x{args.width}: {cpu:.3f} s CPU / clip ({1 / cpu:.2f} clips/s), "
              f"{wall:.3f} s wall / clip")
        return

    c = render_clip(args.seed, **kw)
    masks = np.repeat(c.masks[..., None], 3, -1).astype(np.uint8) * 255
    rows = [frame_strip(x, num=6) for x in (c.frames, c.pose_images, c.face_images[..., 3:], c.face_images[..., :3], masks)]
    save_image(args.out, np.concatenate(rows, 0))
    who = "no person" if c.character is None else f"{c.character.hair_style} hair, {c.character.top}, {c.character.bottom}"
    print(f"{args.out}: seed {args.seed} ({args.split}), {who}, {c.scene.kind} scene, face found in "
          f"{int(c.face_found.sum())}/{len(c)} frames")


if __name__ == "__main__":
    main()
