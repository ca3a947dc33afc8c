"""`xdyna animate`: a photo + a driving clip (or its saved motion, or official-style pose videos) -> mp4.

    xdyna animate --image photo.jpg --video dance.mp4 -o out.mp4            # extract + animate
    xdyna animate --image photo.jpg --motion motion.npz -o out.mp4          # from `xdyna extract`
    xdyna animate --image photo.jpg --pose-video pose.mp4 [--face-video face.mp4] \\
        --preset official --model official -o out.mp4                       # official-style inputs

Several GPUs or processes: start it with torchrun (or accelerate launch); the windows of every
denoising step are shared out, the output is the one of a single process:

    torchrun --standalone --nproc_per_node 2 -m xdyna_core.cli animate --image photo.jpg --video dance.mp4 -o out.mp4

Many jobs: `--batch jobs.csv`, one row per job (columns below), shared out between the processes
(job i on rank i % N) or run one after another in one process; outputs that exist are skipped
(--overwrite redoes them), a failed job is reported in the final summary (exit code 1):

    xdyna animate --batch jobs.csv --preset tiny-offline --steps 8

    image,video,output,seed,size
    photos/ann.jpg,clips/dance.mp4,out/ann.mp4,1,
    photos/bob.png,clips/walk.mp4,out/bob.mp4,,512x896

Columns: image, video (or motion: a .npz from `xdyna extract`) and output are required per row;
optional: side_by_side and the settings preset, model, size, fps, max_frames, retarget,
estimator, pose_every, steps, guidance, seed, strength, adapter_scale, pose_scale, face_scale,
window_size, window_overlap, window_schedule, prompt, negative_prompt (named and meaning as the
flags; an empty cell takes the command line's value). Relative paths are relative to the CSV file.

Pose videos are what the official repo ships (skeletons on black); the face input is either one
video whose frames hold the local and the global patch side by side ([local | global]), or two
videos (`--face-local-video`, `--face-global-video`). Settings: the preset (default: tiny-offline
for the tiny model, official otherwise) < explicit flags. Sizes are WIDTHxHEIGHT. Output: H.264
mp4 at the motion's frame rate with the clip's sound cut to the animated part (--no-audio: silent),
written atomically (nothing is left behind when cancelled or failing). Same inputs + settings + seed = the same file, also through the studio and Python.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
import warnings
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import Dict, List, Optional

from tqdm import tqdm

from xdyna_core import distributed
from xdyna_core.animation import animate, motion_from_videos, resolve_settings, save_side_by_side, save_video
from xdyna_core.audio import SoundWarning
from xdyna_core.errors import InputError, XDynaError
from xdyna_core.io import load_image
from xdyna_core.preprocess.motion import Motion
from xdyna_core.sizes import format_size

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".m4v")


def add_motion_arguments(group) -> None:
    """The flags `xdyna animate` and `xdyna extract` share, with one meaning."""
    group.add_argument("--size", metavar="WxH", help="frame size WIDTHxHEIGHT, multiples of 64, e.g. 512x896 "
                       "(default: the preset's, else the model's own size)")
    group.add_argument("--fps", type=float, help="frames per second to sample the clip at (default: the clip's own)")
    group.add_argument("--max-frames", type=int, dest="max_frames", help="at most this many frames from the start")
    group.add_argument("--retarget", choices=("global", "limbs", "none"), help="fit the driving skeleton to the "
                       "photo's person: whole body (default), limb by limb, or off")
    group.add_argument("--estimator", choices=("auto", "mediapipe", "dwpose"), help="pose estimator (default auto: "
                       "DWPose when its weights are on disk, else the embedded mediapipe)")
    group.add_argument("--pose-every", type=int, dest="pose_every", help="estimate every k-th frame and "
                       "interpolate between (k times faster; default 1)")
    group.add_argument("--person", type=int, metavar="N", help="the dancer to follow when the clip shows several: "
                       "1 = the leftmost where they are all seen, 2 the next, ... (see `xdyna extract --list-dancers`; "
                       "default: the most visible person)")
    group.add_argument("--cache-dir", help="motion cache folder (default $XDYNA_CACHE_DIR/motion or ~/.cache/xdyna/motion)")
    group.add_argument("--no-cache", action="store_true", help="neither read nor write the motion cache")


def add_model_arguments(group) -> None:
    group.add_argument("--preset", help="preset name (official, fast-preview, tiny-offline, ...) or .yaml path")
    group.add_argument("--model", help="tiny (embedded, default), official (download), or a model folder "
                       "(xdyna convert); default: the preset's")


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("animate", help="animate a photo with a driving clip", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    io = p.add_argument_group("inputs and output")
    io.add_argument("--image", help="photo of the person to animate (required without --batch)")
    io.add_argument("--video", help="driving clip (mp4, mov, webm, mkv, gif): its motion is extracted first")
    io.add_argument("--motion", help="motion file (.npz) written by `xdyna extract`")
    io.add_argument("--pose-video", help="pre-rendered DWPose-style skeleton video (black background)")
    io.add_argument("--face-video", help="S-Face patches: frames with [local | global] patches side by side")
    io.add_argument("--face-local-video", help="S-Face local (eyes+mouth) patch video; with --face-global-video")
    io.add_argument("--face-global-video", help="S-Face global face patch video; with --face-local-video")
    io.add_argument("-o", "--output", help="output video (.mp4; required without --batch)")
    io.add_argument("--side-by-side", help="also write driving | skeleton | result side by side (.mp4)")
    io.add_argument("--no-audio", action="store_true", dest="no_audio",
                    help="leave out the driving clip's sound (default: kept, cut to the animated part)")
    io.add_argument("--batch", metavar="JOBS.CSV", help="run every job (row) of a CSV file instead (see above)")
    io.add_argument("--overwrite", action="store_true", help="with --batch: redo jobs whose output exists")

    m = p.add_argument_group("motion (same flags as `xdyna extract`)")
    add_motion_arguments(m)

    g = p.add_argument_group("generation (default: the preset's values)")
    add_model_arguments(g)
    g.add_argument("--steps", type=int, dest="num_inference_steps", help="denoising steps")
    g.add_argument("--guidance", type=float, dest="guidance_scale", help="classifier-free guidance scale")
    g.add_argument("--seed", type=int, help="random seed (same seed + inputs = same video)")
    g.add_argument("--strength", type=float, help="fraction of the denoising schedule to run, (0, 1] "
                   "(1 = official: start from noise; lower keeps more of the photo, SDEdit)")
    g.add_argument("--adapter-scale", type=float, dest="adapter_scale", help="Dynamics-Adapter strength (1 = paper)")
    g.add_argument("--pose-scale", type=float, dest="pose_conditioning_scale", help="pose ControlNet scale")
    g.add_argument("--face-scale", type=float, dest="face_conditioning_scale", help="S-Face ControlNet scale")
    g.add_argument("--window-size", type=int, dest="window_size", help="frames per temporal window (16)")
    g.add_argument("--window-overlap", type=int, dest="window_overlap", help="overlap of windows (4)")
    g.add_argument("--window-schedule", choices=("blend", "official"), dest="window_schedule",
                   help="blend: non-looping smooth windows; official: closed-loop windows")
    g.add_argument("--prompt", help="text prompt (official: empty)")
    g.add_argument("--negative-prompt", dest="negative_prompt", help="negative prompt (official: empty)")
    g.add_argument("--decode-chunk-size", type=int, dest="decode_chunk_size", help="frames per VAE decode")

    d = p.add_argument_group("device")
    d.add_argument("--device", help="auto (default), cpu, cuda, cuda:1, ...")
    d.add_argument("--dtype", choices=("auto", "float32", "float16", "bfloat16"),
                   help="auto: float32 on the CPU; on a GPU the preset's, else bfloat16 where supported")
    d.add_argument("--cpu-offload", action="store_true", help="keep models on the CPU until used (small GPUs)")
    d.add_argument("--quiet", "-q", action="store_true", help="no progress bars")
    p.set_defaults(func=run)
    return p


SETTING_FLAGS = ("size", "fps", "max_frames", "retarget", "estimator", "pose_every", "person", "num_inference_steps",
                 "guidance_scale", "seed", "strength", "adapter_scale", "pose_conditioning_scale",
                 "face_conditioning_scale", "window_size", "window_overlap", "window_schedule", "prompt",
                 "negative_prompt", "decode_chunk_size", "dtype", "device")


def settings_from_args(args):
    """The flags given (not None) over the preset, through the engine's one resolver."""
    return resolve_settings(model=args.model, preset=args.preset,
                            **{k: getattr(args, k, None) for k in SETTING_FLAGS})


def check_paths(args) -> None:
    """Input combinations and files, checked before anything is loaded."""
    sources = [name for name in ("video", "motion", "pose_video") if getattr(args, name)]
    if len(sources) != 1:
        raise InputError("give exactly one driving input: --video (a clip), --motion (from `xdyna extract`) "
                         "or --pose-video (a skeleton video)")
    faces = [args.face_video, args.face_local_video, args.face_global_video]
    if any(faces) and not args.pose_video:
        raise InputError("--face-video / --face-local-video / --face-global-video go with --pose-video")
    if bool(args.face_local_video) != bool(args.face_global_video):
        raise InputError("--face-local-video and --face-global-video go together")
    if args.face_video and args.face_local_video:
        raise InputError("give either --face-video (side by side) or --face-local-video + --face-global-video, not both")
    for name in ("image", "video", "motion", "pose_video", "face_video", "face_local_video", "face_global_video"):
        path = getattr(args, name)
        if path and not Path(path).is_file():
            raise InputError(f"--{name.replace('_', '-')}: file not found: {path}")
    for name in ("output", "side_by_side"):
        path = getattr(args, name)
        if path and Path(path).suffix.lower() not in VIDEO_SUFFIXES:
            raise InputError(f"--{name.replace('_', '-')} must be a video file name such as out.mp4, got {Path(path).name}")


class StageBars:
    """One tqdm bar per stage of the job (extracting, loading, denoising, decoding)."""

    UNITS = {"extract": "‰", "load": "model", "denoise": "window", "decode": "chunk"}
    NAMES = {"extract": "extracting motion", "load": "loading the model", "denoise": "denoising", "decode": "decoding"}

    def __init__(self, quiet: bool):
        self.quiet, self.stage, self.bar = quiet, None, None

    def __call__(self, event) -> None:
        if self.quiet:
            return
        if event.stage != self.stage:
            self.close()
            self.stage = event.stage
            self.bar = tqdm(total=event.total, desc=self.NAMES[event.stage], unit=self.UNITS[event.stage],
                            file=sys.stderr, leave=True)
        if event.stage == "denoise":
            self.bar.set_postfix_str(f"step {event.step}/{event.num_steps} window {event.window}/{event.num_windows}",
                                     refresh=False)
        self.bar.n = event.done
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def driving_input(args, settings):
    """The clip path, or the `Motion` from --motion / --pose-video."""
    if args.video:
        return args.video
    if args.motion:
        return Motion.load(args.motion)
    return motion_from_videos(args.pose_video, args.face_video, args.face_local_video, args.face_global_video,
                              fps=settings.motion.fps, max_frames=settings.motion.max_frames)


def prepare(args):
    """Check the inputs and resolve the settings: (settings, the driving clip path or `Motion`)."""
    check_paths(args)
    settings = settings_from_args(args)
    if not settings.model.trained:
        raise InputError("the shipped tiny model is missing (assets/tiny-xdyna). Reinstall the package, or pass "
                         "--model FOLDER (a folder written by `xdyna convert`) or --model official")
    load_image(args.image)  # an unreadable photo is refused before any clip is decoded
    driving = driving_input(args, settings)
    if args.pose_video and settings.motion.size is None:
        # pose videos are drawn for any canvas: generate at the preset's / model's size
        height, width = settings.default_size
        settings = replace(settings, motion=replace(settings.motion, height=height, width=width))
    return settings, driving


def animate_and_save(args, settings, driving, world=None, bars: bool = True):
    """Generate (`world`: the processes sharing this clip's windows) and write the output(s);
    with several processes only rank 0 writes, and a failed write ends every rank."""
    progress = StageBars(args.quiet or not bars)
    try:
        result = animate(args.image, driving, settings, cache_dir=False if args.no_cache else args.cache_dir,
                         keep_frames=bool(args.side_by_side), offload=args.cpu_offload, progress=progress,
                         world=world)
    finally:
        progress.close()
    if world is None:
        _write(args, result)
    else:
        with world.together():
            if world.is_main:
                _write(args, result)
    return result


def _write(args, result) -> None:
    with warnings.catch_warnings():  # sound problems are printed once, below
        warnings.simplefilter("ignore", SoundWarning)
        save_video(result, args.output, keep_audio=not args.no_audio)
        if args.side_by_side:
            save_side_by_side(result, args.side_by_side, keep_audio=not args.no_audio)
    for text in result.warnings:
        print(f"warning: {text}", file=sys.stderr)


def run(args) -> int:
    if args.batch:
        return run_batch(args)
    if not args.image or not args.output:
        raise InputError("give --image and -o/--output (or --batch JOBS.CSV for many jobs)")
    with distributed.session(quiet=args.quiet) as world:
        kept = {}

        def inputs():  # on rank 0 only under torchrun: the others get the settings, rank 0 keeps the rest
            settings, kept["driving"] = prepare(args)
            return settings

        settings = inputs() if world is None else world.from_main(inputs)
        result = animate_and_save(args, settings, kept.get("driving"), world, bars=world is None or world.is_main)
        if not args.quiet and (world is None or world.is_main):
            t = result.timings
            print(f"wrote {args.output} ({result.num_frames} frames, {format_size(result.height, result.width)}, "
                  f"{result.fps:g} fps, seed {result.seed}; extract {t['extract']:.1f} s, load {t['load']:.1f} s, "
                  f"generate {t['generate']:.1f} s)")
    return 0


# --------------------------------------------------------------------------------------------
# --batch jobs.csv
# --------------------------------------------------------------------------------------------

BATCH_PATHS = ("image", "video", "motion", "output", "side_by_side")  # relative to the CSV's folder
# column -> (the flag's dest, type): the columns are the flags' names without "--", "-" -> "_"
BATCH_SETTINGS = {
    "preset": ("preset", str), "model": ("model", str),
    "size": ("size", str), "fps": ("fps", float), "max_frames": ("max_frames", int), "retarget": ("retarget", str),
    "estimator": ("estimator", str), "pose_every": ("pose_every", int),
    "steps": ("num_inference_steps", int), "guidance": ("guidance_scale", float), "seed": ("seed", int),
    "strength": ("strength", float), "adapter_scale": ("adapter_scale", float),
    "pose_scale": ("pose_conditioning_scale", float), "face_scale": ("face_conditioning_scale", float),
    "window_size": ("window_size", int), "window_overlap": ("window_overlap", int),
    "window_schedule": ("window_schedule", str), "prompt": ("prompt", str), "negative_prompt": ("negative_prompt", str),
}
SINGLE_JOB_FLAGS = ("image", "video", "motion", "pose_video", "face_video", "face_local_video", "face_global_video",
                    "output", "side_by_side")


@dataclass
class BatchJob:
    """One row of a jobs CSV: paths (resolved) and the flag values it sets; `problem` when the
    row itself is wrong (the job then fails with it, the others run)."""

    row: int  # 1-based data row, as a spreadsheet shows it below the header
    output: str
    paths: Dict[str, Optional[str]] = field(default_factory=dict)
    flags: Dict[str, object] = field(default_factory=dict)
    problem: str = ""


@dataclass
class JobResult:
    row: int
    output: str
    status: str  # ok / skipped / failed
    seconds: float = 0.0
    reason: str = ""


def read_jobs(path) -> List[BatchJob]:
    """The jobs of a CSV file (header row + one row per job); a wrong header is an `InputError`,
    a wrong row a job that fails with its reason."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"--batch: file not found: {path}")
    with open(path, newline="", encoding="utf-8-sig") as fh:
        rows = list(csv.reader(fh))
    rows = [r for r in rows if any(cell.strip() for cell in r)]
    if not rows:
        raise InputError(f"--batch: {path.name} is empty; it needs a header row (image,video,output,...) and a row per job")
    header = [h.strip().lower().replace("-", "_") for h in rows[0]]
    unknown = [h for h in header if h not in BATCH_PATHS and h not in BATCH_SETTINGS]
    if unknown:
        raise InputError(f"--batch: unknown column(s) {', '.join(unknown)} in {path.name}; columns: "
                         f"{', '.join(BATCH_PATHS)}, {', '.join(BATCH_SETTINGS)}")
    missing = [h for h in ("image", "output") if h not in header]
    if missing or not ({"video", "motion"} & set(header)):
        raise InputError(f"--batch: {path.name} needs the columns image, video (or motion) and output")
    jobs, outputs = [], {}
    for number, cells in enumerate(rows[1:], 1):
        values = {h: c.strip() for h, c in zip(header, cells) if c.strip()}
        job = BatchJob(row=number, output=values.get("output", ""))
        for name in BATCH_PATHS:
            value = values.get(name)
            job.paths[name] = None if value is None else str(path.parent / Path(value).expanduser())
        job.output = job.paths["output"] or ""
        problems = []
        if not job.paths["image"] or not job.output:
            problems.append("image and output are required")
        if bool(job.paths["video"]) == bool(job.paths["motion"]):
            problems.append("give a video or a motion (not both)")
        if job.output:  # two processes writing one file: the second row is refused
            first = outputs.setdefault(str(Path(job.output).resolve()), number)
            if first != number:
                problems.append(f"same output as row {first}")
        for column, (dest, kind) in BATCH_SETTINGS.items():
            if column in values:
                try:
                    job.flags[dest] = kind(values[column])
                except ValueError:
                    problems.append(f"{column} must be {'a whole number' if kind is int else 'a number'}, "
                                    f"got {values[column]!r}")
        job.problem = "; ".join(problems)
        jobs.append(job)
    return jobs


def run_job(args, job: BatchJob, world=None) -> JobResult:
    """One job in this process (the windows are not shared: each process runs whole jobs, on its
    own GPU under torchrun)."""
    if job.problem:
        return JobResult(job.row, job.output, "failed", reason=f"row {job.row}: {job.problem}")
    if Path(job.output).exists() and not args.overwrite:
        return JobResult(job.row, job.output, "skipped", reason="output exists (--overwrite redoes it)")
    job_args = argparse.Namespace(**{**vars(args), **{k: None for k in SINGLE_JOB_FLAGS}, **job.flags,
                                     **job.paths})
    started = time.monotonic()
    try:
        settings, driving = prepare(job_args)
        if world is not None:
            settings = replace(settings, device=world.device(settings.device))
        animate_and_save(job_args, settings, driving, world=None)
    except XDynaError as err:
        return JobResult(job.row, job.output, "failed", time.monotonic() - started, str(err))
    except Exception as err:  # noqa: BLE001 - a bug or a broken file in one job: report it, run the others
        return JobResult(job.row, job.output, "failed", time.monotonic() - started, f"{type(err).__name__}: {err}")
    return JobResult(job.row, job.output, "ok", time.monotonic() - started)


def run_batch(args) -> int:
    given = [f"--{name.replace('_', '-')}" for name in SINGLE_JOB_FLAGS if getattr(args, name, None)]
    if given:
        raise InputError(f"--batch takes each job's files from the CSV's columns; leave out {', '.join(given)}")
    jobs = read_jobs(args.batch)
    # The ranks meet only at the end, to share their results: one may wait there for hours.
    with distributed.session(quiet=args.quiet, wait=timedelta(days=30)) as world:
        rank, size = (world.rank, world.size) if world is not None else (0, 1)
        mine = [job for i, job in enumerate(jobs) if i % size == rank]
        if world is not None:
            world.log(f"jobs {', '.join(str(j.row) for j in mine) or 'none'} of {len(jobs)}")
        results = []
        for job in mine:
            results.append(run_job(args, job, world))
            if world is not None:
                world.log(f"job {job.row} {results[-1].status}")
        if world is not None:  # every rank learns every result, so all exit alike
            results = [r for part in world.all_gather_object(results) for r in part]
        results.sort(key=lambda r: r.row)
        if rank == 0:
            print_summary(results)
    return 1 if any(r.status == "failed" for r in results) else 0


def print_summary(results: List[JobResult]) -> None:
    counts = {s: sum(r.status == s for r in results) for s in ("ok", "skipped", "failed")}
    print(f"batch: {len(results)} jobs: {counts['ok']} ok, {counts['skipped']} skipped, {counts['failed']} failed")
    width = max([len(r.output) for r in results] + [6])
    print(f"{'row':>4}  {'status':<8}{'output':<{width}}  {'seconds':>7}  reason")
    for r in results:
        seconds = f"{r.seconds:.1f}" if r.status != "skipped" else ""
        print(f"{r.row:>4}  {r.status:<8}{r.output:<{width}}  {seconds:>7}  {r.reason}".rstrip())
