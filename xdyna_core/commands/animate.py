"""`xdyna animate`: photo + pre-rendered pose video (+ optional S-Face video) -> mp4.

    xdyna animate --image photo.jpg --pose-video pose.mp4 -o out.mp4
    xdyna animate --image photo.jpg --pose-video pose.mp4 --face-video face.mp4 \\
        --preset official --model official -o out.mp4
    xdyna animate --image photo.jpg --motion clip.npz -o out.mp4    # from `xdyna extract`

Inputs are what the official repo ships (skeleton videos on black); the face
input is either one video whose frames are the local patch and the global patch
side by side ([local | global], each half the output's aspect), or two videos
(`--face-local-video`, `--face-global-video`). Settings: built-in defaults <
`--preset` < explicit flags. Output: H.264 mp4 at the driving clip's frame
rate, written atomically (nothing is left behind when cancelled or failing).
"""

from __future__ import annotations

import argparse
from pathlib import Path

TINY_MODEL_DIR = Path(__file__).resolve().parents[2] / "assets" / "tiny-xdyna"


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "animate",
        help="animate a photo with a pose video",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    io = p.add_argument_group("inputs and output")
    io.add_argument("--image", required=True, help="reference photo of the person")
    io.add_argument("--pose-video", help="pre-rendered DWPose-style skeleton video (black background)")
    io.add_argument("--face-video", help="S-Face patches: frames with [local | global] patches side by side")
    io.add_argument("--face-local-video", help="S-Face local (eyes+mouth) patch video; use with --face-global-video")
    io.add_argument("--face-global-video", help="S-Face global face patch video; use with --face-local-video")
    io.add_argument("--motion", help="motion file (.npz) written by `xdyna extract`, instead of the videos")
    io.add_argument("-o", "--output", required=True, help="output .mp4")
    io.add_argument("--fps", type=float, help="read the driving videos at this rate (default: their own); the output uses it too")
    io.add_argument("--max-frames", type=int, help="animate at most this many frames")

    g = p.add_argument_group("generation (default: the preset's values)")
    g.add_argument("--preset", help="preset name (official, fast-preview, tiny-offline) or .yaml path")
    g.add_argument("--model", help="diffusers folder (xdyna convert) or 'official' (download); default: the preset's, else assets/tiny-xdyna")
    g.add_argument("--steps", type=int, dest="num_inference_steps", help="denoising steps")
    g.add_argument("--guidance", type=float, dest="guidance_scale", help="classifier-free guidance scale")
    g.add_argument("--seed", type=int, help="random seed (same seed + inputs = same video)")
    g.add_argument("--strength", type=float, help="fraction of the denoising schedule to run, (0, 1] "
                   "(1 = official: start from noise; lower keeps more of the photo, SDEdit)")
    g.add_argument("--adapter-scale", type=float, dest="adapter_scale", help="Dynamics-Adapter strength (1 = paper)")
    g.add_argument("--pose-scale", type=float, dest="pose_conditioning_scale", help="pose ControlNet scale")
    g.add_argument("--face-scale", type=float, dest="face_conditioning_scale", help="S-Face ControlNet scale")
    g.add_argument("--height", type=int, help="output height (default: preset, else the model's native size)")
    g.add_argument("--width", type=int, help="output width")
    g.add_argument("--window-size", type=int, dest="window_size", help="frames per temporal window (16)")
    g.add_argument("--window-overlap", type=int, dest="window_overlap", help="overlap of windows (4)")
    g.add_argument("--window-schedule", choices=("blend", "official"), dest="window_schedule",
                   help="blend: non-looping smooth windows; official: closed-loop windows")
    g.add_argument("--prompt", help="text prompt (official: empty)")
    g.add_argument("--negative-prompt", dest="negative_prompt", help="negative prompt (official: empty)")
    g.add_argument("--decode-chunk-size", type=int, dest="decode_chunk_size", help="frames per VAE decode")

    d = p.add_argument_group("device")
    d.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    d.add_argument("--dtype", choices=("auto", "float32", "float16", "bfloat16"), default="auto",
                   help="auto: the preset's on CUDA (float16 officially), float32 on CPU")
    d.add_argument("--cpu-offload", action="store_true", help="keep models on the CPU until used (small GPUs)")
    d.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
    return p


GEN_FLAGS = (
    "num_inference_steps", "guidance_scale", "adapter_scale", "pose_conditioning_scale", "face_conditioning_scale",
    "height", "width", "window_size", "window_overlap", "window_schedule", "prompt", "negative_prompt",
    "decode_chunk_size", "strength",
)


def resolve_model_and_preset(model_arg, preset_arg):
    """(model, preset dict). Default model: the preset's, else the shipped tiny
    model; default preset: tiny-offline for the tiny model, else official."""
    from xdyna_core.errors import MissingWeightsError
    from xdyna_core.presets import load_preset

    preset = load_preset(preset_arg) if preset_arg else None
    model = model_arg or (preset or {}).get("model")
    if model is None:
        if not (TINY_MODEL_DIR / "model_index.json").exists():
            raise MissingWeightsError(
                f"no model given and the shipped tiny model is missing ({TINY_MODEL_DIR}/model_index.json). "
                "Pass --model FOLDER (a folder written by `xdyna convert`), or --model official to download the "
                "official X-Dyna weights, or restore assets/tiny-xdyna from the repository."
            )
        model = str(TINY_MODEL_DIR)
    if model != "official" and not Path(model).is_absolute() and not Path(model).exists():
        # preset paths like assets/tiny-xdyna are relative to the project root
        candidate = Path(__file__).resolve().parents[2] / model
        if candidate.exists():
            model = str(candidate)
    if preset is None:
        tiny = model != "official" and Path(model).resolve() == TINY_MODEL_DIR.resolve()
        preset = load_preset("tiny-offline" if tiny else "official")
    return model, preset


def load_pipeline(model: str, dtype):
    """`XDynaPipeline` from a diffusers folder or the official weights."""
    from xdyna_core.errors import MissingWeightsError
    from xdyna_core.pipeline import XDynaPipeline

    if model == "official":
        pipe = XDynaPipeline.from_official(torch_dtype=dtype)
    else:
        folder = Path(model)
        if not (folder / "model_index.json").is_file():
            raise MissingWeightsError(
                f"{folder} is not a model folder (no model_index.json). Create one with `xdyna convert` "
                "or pass --model official."
            )
        pipe = XDynaPipeline.from_pretrained(str(folder), dtype=dtype)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _fit(frames, height: int, width: int):
    """Bring control frames [T, h, w, C] to height×width: crop to the aspect the
    way the official S-Face mode does (`crop2ratio`: centred horizontally, a
    quarter of the excess from the top) — a no-op when the aspect already
    matches, as for the official pose videos — then resize with INTER_AREA
    (the official pose-video filter)."""
    import cv2
    import numpy as np

    t, h, w, c = frames.shape
    if (h, w) == (height, width):
        return frames
    if w / h < width / height:
        tw, th = w, int(w / width * height)
    else:
        th, tw = h, int(h / height * width)
    y0, x0 = (h - th) // 4, (w - tw) // 2
    out = np.empty((t, height, width, c), np.uint8)
    for i in range(t):
        crop = np.ascontiguousarray(frames[i, y0 : y0 + th, x0 : x0 + tw])
        if c <= 4:
            out[i] = cv2.resize(crop, (width, height), interpolation=cv2.INTER_AREA).reshape(height, width, c)
        else:  # cv2 resizes at most 4 channels at once
            out[i] = np.concatenate(
                [cv2.resize(np.ascontiguousarray(crop[..., k : k + 3]), (width, height), interpolation=cv2.INTER_AREA)
                 for k in range(0, c, 3)], axis=-1)
    return out


def load_controls(args, height, width, motion=None):
    """(pose uint8 [T,H,W,3], face uint8 [T,H,W,6] or None, fps, framed photo or None).
    `motion`: the loaded `--motion` file."""
    import numpy as np

    from xdyna_core import io
    from xdyna_core.errors import InputError

    if motion is not None:
        m = motion
        pose, face = m.pose_images, m.face_images
        if args.max_frames:
            pose, face = pose[: args.max_frames], face[: args.max_frames]
        framed = m.reference_image
        if (m.height, m.width) != (height, width):
            pose, face = _fit(pose, height, width), _fit(face, height, width)
            framed = None if framed is None else _fit(framed[None], height, width)[0]
        return pose, face, float(m.fps), framed

    pose_clip = io.read_video(args.pose_video, fps=args.fps, max_frames=args.max_frames)
    fps, n = float(pose_clip.fps), len(pose_clip.frames)
    pose = _fit(pose_clip.frames, height, width)

    def read_same(path, what):
        clip = io.read_video(path, fps=fps, max_frames=n)
        if len(clip.frames) < n:
            raise InputError(f"{what} {Path(path).name} has {len(clip.frames)} frames at {fps:g} fps but the pose video has {n}; they must cover the same frames")
        return clip.frames

    face = None
    if args.face_video:
        sbs = read_same(args.face_video, "--face-video")
        half = sbs.shape[2] // 2
        if half == 0 or sbs.shape[2] % 2:
            raise InputError(f"--face-video must hold [local | global] patches side by side (even width); it is {sbs.shape[2]} pixels wide")
        face = np.concatenate([_fit(sbs[:, :, :half], height, width), _fit(sbs[:, :, half:], height, width)], axis=-1)
    elif args.face_local_video:
        local = _fit(read_same(args.face_local_video, "--face-local-video"), height, width)
        glob = _fit(read_same(args.face_global_video, "--face-global-video"), height, width)
        face = np.concatenate([local, glob], axis=-1)
    return pose, face, fps, None


def check_args(args) -> None:
    """Input combinations, checked before any model is loaded."""
    from xdyna_core.errors import InputError

    if args.motion and (args.pose_video or args.face_video or args.face_local_video or args.face_global_video):
        raise InputError("--motion already holds pose and face images; drop --pose-video/--face-*")
    if not args.motion and not args.pose_video:
        raise InputError("give --pose-video (a skeleton video) or --motion (from `xdyna extract`)")
    if bool(args.face_local_video) != bool(args.face_global_video):
        raise InputError("--face-local-video and --face-global-video go together")
    if args.face_video and args.face_local_video:
        raise InputError("give either --face-video (side by side) or --face-local-video + --face-global-video, not both")
    for name in ("image", "pose_video", "face_video", "face_local_video", "face_global_video", "motion"):
        path = getattr(args, name)
        if path and not Path(path).is_file():
            raise InputError(f"--{name.replace('_', '-')}: file not found: {path}")


class _Bar:
    """tqdm bar over steps × windows, then decoding."""

    def __init__(self, quiet: bool, steps: int):
        self.quiet, self.steps, self.bar = quiet, steps, None

    def __call__(self, info) -> None:
        if self.quiet:
            return
        from tqdm import tqdm

        if info.stage == "denoise":
            if self.bar is None:
                self.bar = tqdm(total=info.total_steps * info.num_windows, desc="denoising", unit="window")
            self.bar.set_postfix_str(f"step {info.step + 1}/{info.total_steps} window {info.window}/{info.num_windows}")
            self.bar.update(1)
        elif info.stage == "decode":
            if self.bar is not None and self.bar.desc != "decoding":
                self.bar.close()
                self.bar = tqdm(total=info.total_steps, desc="decoding", unit="chunk")
            if self.bar is not None:
                self.bar.update(1)

    def close(self):
        if self.bar is not None:
            self.bar.close()


def pick_device_dtype(device_arg: str, dtype_arg: str, preset: dict):
    import torch

    from xdyna_core.errors import InputError

    device = torch.device("cuda" if device_arg == "auto" and torch.cuda.is_available() else ("cpu" if device_arg == "auto" else device_arg))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda asked for but no CUDA GPU is available; use --device cpu")
    name = dtype_arg
    if name == "auto":
        name = preset.get("dtype", "float16") if device.type == "cuda" else "float32"
    return device, getattr(torch, name)


def run(args) -> int:
    import os
    import sys

    if "torch" not in sys.modules:
        # Idle OpenMP threads sleep instead of spinning: on a busy or shared CPU spinning
        # threads made CPU generation >10x slower (measured on 2 shared cores).
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch

    from xdyna_core import io
    from xdyna_core.errors import InputError
    from xdyna_core.presets import call_kwargs

    check_args(args)
    out = Path(args.output)
    if out.suffix.lower() not in (".mp4", ".mov", ".mkv", ".webm", ".m4v"):
        raise InputError(f"output must be a video file name such as out.mp4, got {out.name}")
    model, preset = resolve_model_and_preset(args.model, args.preset)
    settings = call_kwargs(preset)
    for key in GEN_FLAGS:
        value = getattr(args, key, None)
        if value is not None:
            settings[key] = value
    seed = args.seed if args.seed is not None else int(preset.get("seed", 0))
    device, dtype = pick_device_dtype(args.device, args.dtype, preset)

    photo = io.load_image(args.image)
    pipe = load_pipeline(model, dtype)
    if args.cpu_offload and device.type != "cpu":
        pipe.enable_model_cpu_offload(device=device)
    else:
        pipe.to(device)
    # sample_size is an int (square) or [h, w] (e.g. the portrait tiny model)
    native = pipe.unet.config.sample_size
    native_h, native_w = (native, native) if isinstance(native, int) else native
    height = settings.get("height") or native_h * pipe.vae_scale_factor
    width = settings.get("width") or native_w * pipe.vae_scale_factor
    motion = None
    if args.motion:
        from xdyna_core.preprocess.motion import Motion

        motion = Motion.load(args.motion)
        if args.height is None and args.width is None:
            height, width = motion.size  # rendered for its canvas: keep it unless a size is asked for
    settings["height"], settings["width"] = height, width

    pose, face, fps, framed = load_controls(args, height, width, motion)
    if face is not None and pipe.controlnet_face is None:
        print("note: this model has no S-Face ControlNet; the face input is ignored")
        face = None
    bar = _Bar(args.quiet, settings.get("num_inference_steps", 25))
    try:
        result = pipe(
            image=framed if framed is not None else photo,
            ip_adapter_image=photo,
            pose_images=pose,
            face_images=face,
            generator=torch.Generator("cpu").manual_seed(seed),
            output_type="uint8",
            progress=bar,
            **settings,
        )
    finally:
        bar.close()
    frames = result.frames
    io.write_video(out, frames, fps)
    if not args.quiet:
        print(f"wrote {out} ({len(frames)} frames, {width}x{height}, {fps:g} fps, seed {seed})")
    return 0
