"""`xdyna extract`: driving video (+ photo) -> motion.npz (skeletons + face patches), with previews.

    xdyna extract --video dance.mp4 --image photo.jpg -o motion.npz --preview preview.mp4
    xdyna extract --video group.mp4 --list-dancers dancers.png     # who is who: Dancer 1, 2, ...
    xdyna extract --video group.mp4 --image photo.jpg --person 2 -o motion.npz

The motion file is what `xdyna animate --motion motion.npz` (and the studio) consume; extracting
once and generating many times saves the preprocessing. Results are cached by content, so running
the same command twice is instant. The motion flags (--size WxH, --fps, --max-frames, --retarget,
...) mean exactly what they mean for `xdyna animate --video`, and the default size is the one
`xdyna animate` would use with the same --model / --preset.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from xdyna_core.animation import extract, resolve_settings
from xdyna_core.commands.animate import StageBars, add_model_arguments, add_motion_arguments
from xdyna_core.errors import InputError
from xdyna_core.io import save_image, write_video
from xdyna_core.preprocess.motion import preview_side_by_side, retarget_overlay
from xdyna_core.preprocess.people import draw_dancers, find_dancers


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "extract",
        help="extract skeletons and face patches from a driving video (fitted to a photo)",
        description="Extract the motion of a driving video: DWPose-style skeletons retargeted to the photo's "
        "person and S-Face patches, saved as a .npz for `xdyna animate` and the studio.",
    )
    p.add_argument("--video", required=True, help="driving video (mp4, mov, webm, mkv, gif)")
    p.add_argument("--image", help="photo of the person to animate (omit to extract the clip alone, e.g. for training)")
    p.add_argument("-o", "--output", help="motion file to write (.npz)")
    p.add_argument("--list-dancers", metavar="PNG", dest="list_dancers",
                   help="count the people of the clip, write the frame where they are all seen with their numbers "
                   "(Dancer 1 = leftmost; what --person takes) to this image, and stop")
    p.add_argument("--preview", help="also write a preview video: driving | skeleton | face patches (.mp4)")
    p.add_argument("--overlay", help="also write the first retargeted skeleton over the framed photo (.png)")
    add_motion_arguments(p)
    p.add_argument("--no-smooth", action="store_true", help="turn off One-Euro smoothing of the keypoints")
    add_model_arguments(p.add_argument_group("model (decides the default --size)"))
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
    return p


def _check_output(path: str, suffixes, what: str) -> Path:
    out = Path(path)
    if out.suffix.lower() not in suffixes:
        raise InputError(f"{what} {out.name} must end in {' or '.join(suffixes)}")
    if out.exists() and out.is_dir():
        raise InputError(f"{what} {out} is a folder")
    return out


def list_dancers(args) -> int:
    image = _check_output(args.list_dancers, (".png", ".jpg", ".jpeg", ".webp"), "--list-dancers image")
    if not Path(args.video).is_file():
        raise InputError(f"--video: file not found: {args.video}")
    dancers = find_dancers(args.video, fps=args.fps, max_frames=args.max_frames)
    save_image(image, draw_dancers(dancers))
    if dancers.count == 0:
        print(f"nobody found in the first seconds of {Path(args.video).name}")
    else:
        print(f"{Path(args.video).name} shows {dancers.count} dancer{'s' if dancers.count > 1 else ''} "
              f"(counted at {dancers.time:.1f} s), numbered from left to right for --person:")
        for n, (x0, y0, x1, y1) in enumerate(dancers.boxes, 1):
            print(f"  Dancer {n}: x {x0:.0f}-{x1:.0f}, y {y0:.0f}-{y1:.0f}")
    print(f"wrote {image}")
    return 0


def run(args) -> int:
    if args.list_dancers:
        return list_dancers(args)
    if not args.output:
        raise InputError("give -o/--output (the motion file to write), or --list-dancers")
    out = _check_output(args.output, (".npz",), "output")
    preview = _check_output(args.preview, (".mp4", ".webm", ".mov", ".mkv"), "preview") if args.preview else None
    overlay = _check_output(args.overlay, (".png", ".jpg", ".jpeg", ".webp"), "overlay") if args.overlay else None
    if overlay is not None and not args.image:
        raise InputError("--overlay needs --image (the skeleton is drawn over the photo)")
    settings = resolve_settings(model=args.model, preset=args.preset, size=args.size, fps=args.fps,
                                max_frames=args.max_frames, retarget=args.retarget, estimator=args.estimator,
                                pose_every=args.pose_every, smooth=False if args.no_smooth else None,
                                person=args.person)
    bars = StageBars(args.quiet)
    started = time.perf_counter()
    try:
        motion = extract(args.image, args.video, settings.motion, size=settings.default_size,
                         keep_frames=preview is not None, cache_dir=False if args.no_cache else args.cache_dir,
                         progress=bars)
    finally:
        bars.close()

    written = []
    try:
        if preview is not None:
            write_video(preview, preview_side_by_side(motion.driving_frames, motion), fps=motion.fps)
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
