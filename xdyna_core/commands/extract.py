"""`xdyna extract`: driving video (+ photo) -> motion.npz (skeletons + face patches), with previews.

    xdyna extract --video dance.mp4 --image photo.jpg -o motion.npz --preview preview.mp4

The motion file is what `xdyna animate --motion motion.npz` (and the app) consume; extracting once
and generating many times saves the preprocessing. Results are cached by content, so running the
same command twice is instant.
"""

import argparse
import sys
from pathlib import Path


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "extract",
        help="extract skeletons and face patches from a driving video (fitted to a photo)",
        description="Extract the motion of a driving video: DWPose-style skeletons retargeted to the photo's "
        "person and S-Face patches, saved as a .npz for `xdyna animate` and the app.",
    )
    p.add_argument("--video", required=True, help="driving video (mp4, mov, webm, mkv, gif)")
    p.add_argument("--image", help="photo of the person to animate (omit to extract the clip alone, e.g. for training)")
    p.add_argument("-o", "--output", required=True, help="motion file to write (.npz)")
    p.add_argument("--preview", help="also write a preview video: driving | skeleton | face patches (.mp4)")
    p.add_argument("--overlay", help="also write the first retargeted skeleton over the framed photo (.png)")
    p.add_argument("--size", default="896x512", help="generation size HEIGHTxWIDTH, multiples of 64 (default 896x512)")
    p.add_argument("--fps", type=float, default=15.0, help="frames per second to sample the clip at (default 15; 0 = the clip's own)")
    p.add_argument("--retarget", choices=("global", "limbs", "none"), default="global",
                   help="fit the driving skeleton to the photo's person (default global)")
    p.add_argument("--estimator", choices=("auto", "mediapipe", "dwpose"), default="auto",
                   help="pose estimator: auto = DWPose when its weights are on disk, else the embedded mediapipe")
    p.add_argument("--max-frames", type=int, default=600, help="at most this many frames from the start (default 600)")
    p.add_argument("--no-smooth", action="store_true", help="turn off One-Euro smoothing of the keypoints")
    p.add_argument("--pose-every", type=int, default=1,
                   help="estimate the pose on every k-th frame and interpolate between (k times faster; default 1)")
    p.add_argument("--cache-dir", help="cache folder (default $XDYNA_CACHE/motion or ~/.cache/xdyna/motion)")
    p.add_argument("--no-cache", action="store_true", help="neither read nor write the cache")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
    return p


def _check_output(path: str, suffixes, what: str) -> Path:
    from xdyna_core.errors import InputError

    out = Path(path)
    if out.suffix.lower() not in suffixes:
        raise InputError(f"{what} {out.name} must end in {' or '.join(suffixes)}")
    if out.exists() and out.is_dir():
        raise InputError(f"{what} {out} is a folder")
    return out


def run(args) -> int:
    import time

    from tqdm import tqdm

    from xdyna_core.errors import InputError
    from xdyna_core.io import save_image, write_video
    from xdyna_core.preprocess.framing import check_size
    from xdyna_core.preprocess.motion import extract_motion, preview_side_by_side, retarget_overlay

    out = _check_output(args.output, (".npz",), "output")
    preview = _check_output(args.preview, (".mp4", ".webm", ".mov", ".mkv"), "preview") if args.preview else None
    overlay = _check_output(args.overlay, (".png", ".jpg", ".jpeg", ".webp"), "overlay") if args.overlay else None
    if overlay is not None and not args.image:
        raise InputError("--overlay needs --image (the skeleton is drawn over the photo)")
    size = check_size(args.size)
    if args.max_frames is not None and args.max_frames < 1:
        raise InputError("--max-frames must be at least 1")

    bar = None if args.quiet else tqdm(total=1000, unit="‰", desc="extracting", file=sys.stderr,
                                       bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed}<{remaining}")

    def progress(fraction, desc=None):
        if bar is not None:
            bar.n = int(round(1000 * min(max(fraction, 0.0), 1.0)))
            if desc:
                bar.set_description_str(desc[:48], refresh=False)
            bar.refresh()

    started = time.perf_counter()
    try:
        motion = extract_motion(
            args.video,
            args.image,
            size=size,
            fps=args.fps or None,
            max_frames=args.max_frames,
            retarget=args.retarget,
            estimator=args.estimator,
            smooth=not args.no_smooth,
            pose_every=args.pose_every,
            keep_frames=preview is not None,
            cache_dir=False if args.no_cache else (args.cache_dir or None),
            progress=progress,
        )
    finally:
        if bar is not None:
            bar.close()

    written = []
    try:
        if preview is not None:
            frames = motion.driving_frames
            write_video(preview, preview_side_by_side(frames, motion), fps=motion.fps)
            written.append(preview)
        if overlay is not None:
            save_image(overlay, retarget_overlay(None, motion))
            written.append(overlay)
        motion.save(out, frames=False)  # the preview has them; the motion file stays small
    except BaseException:
        for p in written:  # all outputs or none
            p.unlink(missing_ok=True)
        raise

    s = motion.summary()
    print(f"wrote {out}: {s['frames']} frames at {s['fps']:g} fps ({s['duration_s']:.1f} s), {s['size']}, "
          f"retarget {s['retarget']}, estimator {s['estimator']}, cache {motion.settings.get('cache')}, "
          f"{time.perf_counter() - started:.1f} s")
    if s["frames_without_person"]:
        print(f"  {s['frames_without_person']} frames without a person (blank skeleton)")
    if s["frames_without_face"]:
        print(f"  {s['frames_without_face']} frames without a face (blank face patches)")
    for w in motion.warnings:
        print(f"  note: {w}")
    for p in written:
        print(f"wrote {p}")
    return 0
