"""Video and image input/output.

Everything that decodes or encodes media lives here, so the pipeline and the app
only ever see uint8 RGB arrays:

- `read_video` decodes any common upload (mp4/mov/webm/mkv/gif; H.264, H.265, VP9, AV1
  where FFmpeg has a decoder) with PyAV, by presentation timestamps: variable frame rate
  is handled, rotation metadata (display matrix) is applied, huge frames are downscaled by
  the FFmpeg reformatter while decoding so a 4K frame is never held in RAM at full size.
  With `fps` set, frames are resampled by their timestamps (nearest source frame at
  t = k / fps), so the clip keeps its real speed. (The official code takes every
  `stride`-th frame and writes at a fixed fps, which plays clips at the wrong speed.)
- `write_video` writes H.264 yuv420p mp4 atomically: a temporary file in the same folder,
  renamed over the target only when complete (never a half-written output, also on errors
  and cancellation); it runs imageio-ffmpeg's ffmpeg program with deterministic settings, so
  identical frames give a byte-identical file.
- `load_image` reads photos with EXIF orientation, alpha (composited on white), grayscale,
  palette, CMYK and 16-bit inputs.
- `side_by_side` / `frame_strip` build previews.

Sizes are given as (height, width), like the generation size 896×512 (H×W).
"""

from __future__ import annotations

import hashlib
import math
import os
import subprocess
import tempfile
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence, Union

import av
import cv2
import imageio_ffmpeg
import numpy as np
from PIL import Image, ImageOps

from xdyna_core.errors import Cancelled, InputError, XDynaError

# Limits (all overridable per call). They keep one upload from exhausting memory or time.
DEFAULT_MAX_SIDE = 1280  # longest side of decoded frames; larger videos are downscaled while decoding
DEFAULT_MAX_DURATION = 600.0  # seconds of video that may be processed in one call
DEFAULT_FRAME_LIMIT = 3000  # output frames one call may return
DEFAULT_MAX_BYTES = 4 * 1024**3  # memory the decoded frames may take
MIN_VIDEO_SIDE = 32  # smaller frames carry no usable pose
MIN_IMAGE_SIDE = 64  # smaller photos carry no usable person
MAX_SOURCE_PIXELS = 8192 * 8192  # decoders refuse or crawl beyond this

VIDEO_SUFFIXES = (".mp4", ".mov", ".m4v", ".webm", ".mkv", ".avi", ".gif")
_IMAGE_CONTAINERS = ("image2", "png_pipe", "jpeg_pipe", "webp_pipe", "bmp_pipe", "tiff_pipe", "gif_pipe_still")

ProgressFn = Callable[[int, Optional[int]], Optional[bool]]


def _report(progress: Optional[ProgressFn], done: int, total: Optional[int]) -> None:
    """Call a progress callback; a callback that returns False (or raises Cancelled) stops the job."""
    if progress is not None and progress(done, total) is False:
        raise Cancelled("stopped by the user")


# --------------------------------------------------------------------------------------
# Reading video
# --------------------------------------------------------------------------------------


@dataclass
class VideoInfo:
    """Cheap metadata of a video file (see `probe_video`). Width/height are as displayed,
    i.e. after rotation metadata is applied."""

    path: str
    width: int
    height: int
    fps: float
    duration: Optional[float]
    num_frames: Optional[int]
    rotation: int
    codec: str
    container: str


@dataclass
class Video:
    """Decoded frames of a video.

    frames: uint8 [T, H, W, 3] RGB, evenly spaced at `fps` (after resampling).
    timestamps: seconds [T], the source time each output frame was taken from (relative to the
        first frame); with resampling these are the times of the chosen source frames.
    """

    frames: np.ndarray
    fps: float
    timestamps: np.ndarray
    source_fps: float
    source_width: int
    source_height: int
    source_duration: float
    source_frames: int  # frames decoded from the file (up to where decoding stopped)
    rotation: int = 0  # degrees counter-clockwise applied to the decoded frames
    codec: str = ""
    container: str = ""
    path: str = ""
    truncated: bool = False  # True when max_frames cut the clip short
    warnings: list = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def height(self) -> int:
        return int(self.frames.shape[1])

    @property
    def width(self) -> int:
        return int(self.frames.shape[2])

    @property
    def duration(self) -> float:
        return len(self.frames) / self.fps

    def meta(self) -> dict:
        """JSON-friendly description of the source and the decoding."""
        return {
            "path": self.path,
            "fps": float(self.fps),
            "num_frames": len(self.frames),
            "width": self.width,
            "height": self.height,
            "source_fps": float(self.source_fps),
            "source_width": int(self.source_width),
            "source_height": int(self.source_height),
            "source_duration": float(self.source_duration),
            "source_frames": int(self.source_frames),
            "rotation": int(self.rotation),
            "codec": self.codec,
            "container": self.container,
            "truncated": bool(self.truncated),
            "warnings": list(self.warnings),
        }


def _open_video(path):
    path = os.fspath(path)
    if not os.path.exists(path):
        raise InputError(f"video not found: {path}")
    if os.path.isdir(path):
        raise InputError(f"{path} is a folder, not a video file")
    if os.path.getsize(path) == 0:
        raise InputError(f"{os.path.basename(path)} is empty (0 bytes); upload the video again")
    try:
        container = av.open(path, metadata_errors="ignore")
    except av.EOFError:
        raise InputError(f"{Path(path).name} contains no video frames, or was cut short while uploading; use another file") from None
    except (av.FFmpegError, UnicodeDecodeError, ValueError) as err:
        raise InputError(
            f"could not read {Path(path).name} as a video ({_ffmpeg_reason(err)}): the file is not a video, "
            "is damaged or was cut short while uploading; use an mp4, mov, webm, mkv or gif file"
        ) from None
    if not container.streams.video:
        audio_only = bool(container.streams.audio)
        container.close()
        if audio_only:
            raise InputError(f"{Path(path).name} has no video stream: it is an audio-only file (sound, no pictures); "
                             "use a video of someone moving as the driving clip")
        raise InputError(f"{Path(path).name} contains no video frames (no video track: an empty or audio-only file); use a video file")
    if container.format.name in _IMAGE_CONTAINERS:
        container.close()
        raise InputError(f"{Path(path).name} is a still image, not a video; pass it as the photo, and a video as the driving clip")
    return container


def _ffmpeg_reason(err) -> str:
    text = getattr(err, "strerror", None) or str(err)
    return text.split(":")[-1].strip() if text else type(err).__name__


def _stream_fps(stream) -> Optional[float]:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate and 0 < float(rate) < 1000:
            return float(rate)
    return None


def _stream_duration(container, stream) -> Optional[float]:
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration:
        return container.duration / 1_000_000  # AV_TIME_BASE
    return None


def _scaled_size(width: int, height: int, max_side: Optional[int]) -> tuple:
    """Size after downscaling so the longest side is <= max_side (never upscaled)."""
    if max_side and max(width, height) > max_side:
        s = max_side / max(width, height)
        return max(1, round(width * s)), max(1, round(height * s))
    return width, height


def probe_video(path) -> VideoInfo:
    """Metadata of a video without decoding it all (decodes the first frame for rotation)."""
    container = _open_video(path)
    try:
        stream = container.streams.video[0]
        rotation = 0
        width, height = stream.codec_context.width, stream.codec_context.height
        try:
            for frame in container.decode(stream):
                rotation = _frame_rotation(frame)
                width, height = frame.width, frame.height
                break
        except Exception:  # noqa: BLE001 - damaged files are reported by read_video
            pass
        if rotation % 180:
            width, height = height, width
        fps = _stream_fps(stream) or 0.0
        duration = _stream_duration(container, stream)
        frames = stream.frames or (round(duration * fps) if duration and fps else None)
        return VideoInfo(os.fspath(path), int(width), int(height), fps, duration, frames, rotation,
                         stream.codec_context.name, container.format.name)
    finally:
        container.close()


def _frame_rotation(frame) -> int:
    """Counter-clockwise rotation (multiple of 90) the display matrix asks for."""
    try:
        rot = frame.rotation
    except Exception:  # noqa: BLE001 - no display matrix
        return 0
    if not rot:
        return 0
    return int(round(rot / 90.0)) * 90 % 360


def read_video(
    path,
    fps: Optional[float] = None,
    max_frames: Optional[int] = None,
    max_duration: Optional[float] = DEFAULT_MAX_DURATION,
    max_side: Optional[int] = DEFAULT_MAX_SIDE,
    frame_limit: Optional[int] = DEFAULT_FRAME_LIMIT,
    max_bytes: Optional[int] = DEFAULT_MAX_BYTES,
    allow_truncated: bool = False,
    progress: Optional[ProgressFn] = None,
) -> Video:
    """Decode a video into RGB frames, resampled by timestamps.

    Args:
        path: video file (any container/codec FFmpeg decodes).
        fps: output frame rate. Frame k is the source frame whose timestamp is nearest to
            k / fps, so the clip keeps its real speed whatever the rate. None keeps the source's
            average rate (variable-frame-rate sources are still resampled to even spacing).
        max_frames: keep only the first `max_frames` output frames (the rest is not decoded);
            `Video.truncated` tells whether this cut the clip.
        max_duration: refuse (InputError) when the part to process is longer than this (seconds).
        max_side: downscale (while decoding, keeping the aspect) so the longest side is at most this.
        frame_limit / max_bytes: refuse when the output would have more frames / take more memory.
        allow_truncated: a damaged or cut-short file (decoding fails midway, or ends well before
            the duration its header states) raises InputError unless this is True; then the
            frames that decoded are returned and `Video.warnings` says what happened.
        progress: `progress(done, total)`; returning False stops with `Cancelled`.

    Raises:
        InputError: not a video, damaged, no frames, too long, too many frames, too small.
    """

    if fps is not None and not (0 < fps <= 240):
        raise InputError(f"fps must be between 0 and 240, got {fps}")
    if max_frames is not None and max_frames < 1:
        raise InputError(f"max_frames must be at least 1, got {max_frames}")
    name = Path(os.fspath(path)).name
    container = _open_video(path)
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        src_fps = _stream_fps(stream)
        duration = _stream_duration(container, stream)
        out_fps = float(fps) if fps else (src_fps or 25.0)
        cw, ch = stream.codec_context.width, stream.codec_context.height
        if cw and ch and cw * ch > MAX_SOURCE_PIXELS:
            raise InputError(f"{name} is {cw}×{ch} pixels, more than this app decodes (8192×8192); downscale it first")

        # Refuse early from metadata when it already shows the clip is too long.
        span = duration
        if span is not None and max_frames is not None:
            span = min(span, max_frames / out_fps)
        if span is not None and max_duration is not None and span > max_duration + 0.5:
            raise InputError(
                f"{name} is {span:.0f} s long; the limit is {max_duration:.0f} s: trim the video or set a maximum number of frames"
            )
        expected = None
        if duration is not None:
            expected = max(1, int(math.ceil(duration * out_fps - 1e-6)))
            if max_frames is not None:
                expected = min(expected, max_frames)
            if frame_limit is not None and expected > frame_limit:
                raise InputError(
                    f"{name} would give {expected} frames at {out_fps:g} fps; the limit is {frame_limit}: "
                    "trim the video, lower the fps or set a maximum number of frames"
                )

        decoder = _TimestampResampler(out_fps, max_frames)
        size = None  # (w, h) decode size before rotation
        rotation = 0
        decoded = 0
        warnings = []
        t0 = None
        gaps = []  # intervals between frames, for the duration of the last one
        frame_bytes = None
        try:
            for frame in container.decode(stream):
                if size is None:
                    rotation = _frame_rotation(frame)
                    if frame.width * frame.height > MAX_SOURCE_PIXELS:
                        raise InputError(f"{name} is {frame.width}×{frame.height} pixels, more than this app decodes (8192×8192)")
                    size = _scaled_size(frame.width, frame.height, max_side)
                    if min(size) < MIN_VIDEO_SIDE:
                        raise InputError(
                            f"{name} is only {frame.width}×{frame.height} pixels; use a video at least {MIN_VIDEO_SIDE} pixels on each side"
                        )
                    frame_bytes = size[0] * size[1] * 3
                    decoder.convert = _frame_converter(size, rotation)
                    if max_bytes is not None and expected is not None and expected * frame_bytes > max_bytes:
                        raise InputError(
                            f"{name} would need {expected * frame_bytes / 1024**3:.1f} GiB of memory as {expected} frames of "
                            f"{size[0]}×{size[1]}; lower the resolution, the fps or the number of frames"
                        )
                t = frame.time
                if t is None:  # no timestamps (rare raw streams): assume the nominal rate
                    t = decoded / (src_fps or out_fps)
                if t0 is None:
                    t0 = t
                t = t - t0
                decoded += 1
                if max_duration is not None and t > max_duration + 0.5:
                    raise InputError(
                        f"{name} is longer than the limit of {max_duration:.0f} s; trim the video or set a maximum number of frames"
                    )
                if decoder.last_time is not None and t > decoder.last_time and len(gaps) < 10000:
                    gaps.append(t - decoder.last_time)
                decoder.push(frame, t)
                n = len(decoder.out)
                if frame_limit is not None and n > frame_limit:
                    raise InputError(
                        f"{name} gives more than {frame_limit} frames at {out_fps:g} fps; trim the video, lower the fps "
                        "or set a maximum number of frames"
                    )
                if max_bytes is not None and frame_bytes and n * frame_bytes > max_bytes:
                    raise InputError(
                        f"{name} needs more than {max_bytes / 1024**3:.1f} GiB of memory as frames; lower the resolution, "
                        "the fps or the number of frames"
                    )
                _report(progress, n, expected)
                if decoder.done:
                    break
        except av.FFmpegError as err:
            if not decoder.has_frames or not allow_truncated:
                raise InputError(
                    f"could not decode {name} ({_ffmpeg_reason(err)}): the file is damaged or was cut short; upload it again"
                ) from None
            warnings.append(f"decoding stopped early at {decoder.last_time:.2f} s ({_ffmpeg_reason(err)}); the rest of the file is damaged")

        if not decoder.has_frames:
            raise InputError(f"{name} contains no video frames; upload a video with at least one frame")
        # The last frame lasts one typical frame interval (the median gap: robust to variable rates).
        frame_dur = float(np.median(gaps)) if gaps else 1.0 / (src_fps or out_fps)
        decoded_span = decoder.last_time + frame_dur
        stated = duration  # the video stream's duration, else the container's
        stated_frames = stream.frames or 0  # frames the header lists (mp4/mov); 0 when unknown
        cut_short = bool(stated) and (
            (decoded_span < 0.75 * stated and stated - decoded_span > 0.5)
            # short clips: the 0.5 s margin cannot see 1 of 8 frames at 15 fps; the header's count can
            or (stated_frames >= 4 and decoded < 0.75 * stated_frames))
        if not decoder.done and cut_short:
            # Ran out of data long before the end the header announces: a cut-short upload.
            if not allow_truncated:
                raise InputError(
                    f"{name} seems cut short: its header says {stated:.1f} s but only {decoded_span:.1f} s could be decoded; "
                    "upload the complete file again"
                )
            warnings.append(f"the file seems cut short: {decoded_span:.1f} s of {stated:.1f} s decoded")
        decoder.finish(decoded_span, frame_dur)

        times = decoder.out_times
        frames = decoder.stacked()
        src_w, src_h = decoder.first_size
        if rotation % 180:
            src_w, src_h = src_h, src_w
        src_duration = duration if duration is not None else decoder.last_time + frame_dur
        return Video(
            frames=frames,
            fps=out_fps,
            timestamps=np.asarray(times, dtype=np.float64),
            source_fps=src_fps or (decoded / src_duration if src_duration else out_fps),
            source_width=int(src_w),
            source_height=int(src_h),
            source_duration=float(src_duration),
            source_frames=decoded,
            rotation=rotation,
            codec=stream.codec_context.name,
            container=container.format.name,
            path=os.fspath(path),
            truncated=decoder.done and not decoder.finished_naturally,
            warnings=warnings,
        )
    finally:
        container.close()


class _TimestampResampler:
    """Nearest-timestamp resampling of a frame stream to an even rate.

    Output frame k is the source frame whose timestamp is nearest to k / fps (ties to the later
    one). A chosen frame is converted (downscaled RGB) the moment it is chosen, so only one
    decoded full-size frame is alive at a time, and frames that are dropped (e.g. 60 -> 15 fps)
    cost no colour conversion. `convert(av_frame) -> array` is set once the size is known.
    """

    def __init__(self, fps: float, max_frames: Optional[int]):
        self.fps = fps
        self.max_frames = max_frames
        self.convert = None
        self.prev = None
        self.prev_time = None
        self.out = []  # converted frames (the same array repeats when upsampling)
        self.out_times = []
        self.first_size = None
        self.done = False
        self.finished_naturally = False
        self._last_src = None
        self._last_arr = None

    @property
    def has_frames(self) -> bool:
        return self.prev is not None

    @property
    def last_time(self):
        return self.prev_time

    def _target(self) -> float:
        return len(self.out) / self.fps

    def _emit(self, frame, t) -> None:
        if frame is not self._last_src:
            self._last_src, self._last_arr = frame, self.convert(frame)
        self.out.append(self._last_arr)
        self.out_times.append(t)
        if self.max_frames is not None and len(self.out) >= self.max_frames:
            self.done = True

    def push(self, frame, t: float) -> None:
        if self.first_size is None:
            self.first_size = (frame.width, frame.height)
        if self.prev_time is not None and t <= self.prev_time:
            return  # duplicate or out-of-order timestamp: keep the first
        eps = 1e-6
        while not self.done and self._target() <= t + eps:
            target = self._target()
            if self.prev is None or (t - target) <= (target - self.prev_time) + eps:
                self._emit(frame, t)
            else:
                self._emit(self.prev, self.prev_time)
        self.prev, self.prev_time = frame, t

    def finish(self, end_time: float, frame_dur: float) -> None:
        """Fill the targets up to the end of the last frame with it. A target in the last quarter
        of the last frame's interval is left out: container timestamps are rounded (to 1 ms in
        Matroska), which would otherwise add a frame to clips of exactly k/fps seconds."""
        if self.done:
            return
        while not self.done and self._target() < end_time - 0.25 * min(frame_dur, 1.0 / self.fps):
            self._emit(self.prev, self.prev_time)
        self.finished_naturally = True
        self.done = True

    def stacked(self) -> np.ndarray:
        """The output frames as one [T,H,W,3] array; each list entry is released once copied,
        so the peak memory stays near one copy of the clip."""
        first = self.out[0]
        out = np.empty((len(self.out),) + first.shape, np.uint8)
        for i in range(len(self.out)):
            out[i] = self.out[i]
            self.out[i] = None
        self._last_arr = None
        return out


def _frame_converter(size, rotation):
    """av frame -> uint8 [H,W,3] RGB at `size` (w, h before rotation), rotated for display."""
    w, h = size

    def convert(fr) -> np.ndarray:
        interp = "AREA" if (fr.width > w or fr.height > h) else "BILINEAR"
        arr = fr.reformat(width=w, height=h, format="rgb24", interpolation=interp).to_ndarray()
        if rotation:
            arr = np.ascontiguousarray(np.rot90(arr, k=rotation // 90))
        return arr

    return convert


# --------------------------------------------------------------------------------------
# Writing video and images
# --------------------------------------------------------------------------------------


def _temp_path_for(path: Path) -> Path:
    """A fresh temporary file next to `path` (same folder, so the final rename is atomic)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    return Path(tmp)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def replace_atomically(tmp, path) -> None:
    """Give a finished temporary file the usual permissions (mkstemp makes it 0600) and rename it
    over `path`."""
    os.chmod(tmp, 0o666 & ~_umask())
    os.replace(tmp, path)


# Encoding settings. Why:
# - The ffmpeg program shipped with imageio-ffmpeg, not PyAV: PyAV's libx264 encoder gave
#   different pixels (up to ±30 levels) for the same frames from one call to the next, even in one
#   process; the program with the settings below writes byte-identical files for identical frames
#   (same seed + same settings = the same video). PyAV still decodes everything.
# - Deterministic settings: one x264 thread (x264's output depends on its thread count, which
#   "auto" takes from the machine's cores), bit-exact colour conversion (swscale's SIMD paths may
#   round differently per CPU), and no varying metadata (no encoder/creation-time tags, fixed
#   Matroska ids): -fflags/-flags:v +bitexact, -map_metadata -1.
# - yuv420p H.264 (High profile) plays in every browser; its half-resolution colour is what limits
#   tiny frames (64x128: up to ~60-100 levels at sharp colour edges, mean ~2, even losslessly).
#   On top of that, crf 18 added coding errors of up to 42 levels (mean 2.0) at 64x128; small
#   frames (at most 256x256 pixels) therefore get crf 10 and -tune psnr (faithful pixels rather
#   than psycho-visual detail: coding error max ~11, mean ~1.1; ~1.7 KiB per frame at 64x128).
#   Measured on assets/examples/dance_1.mp4 resized and synthetic clips; see the io tests.
DEFAULT_CRF = 18
SMALL_FRAME_PIXELS = 256 * 256
SMALL_FRAME_CRF = 10
_SWS_FLAGS = "bicubic+accurate_rnd+bitexact"
_CONTAINERS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska", ".webm": "webm"}


def _encode_command(tmp: Path, fmt: str, width: int, height: int, fps: float, crf: Optional[int], preset: str) -> list:
    """The ffmpeg command that reads raw rgb24 frames of width x height from stdin and writes `tmp`."""

    small = width * height <= SMALL_FRAME_PIXELS
    if crf is None:
        crf = SMALL_FRAME_CRF if small else DEFAULT_CRF
    rate = Fraction(fps).limit_denominator(1001)
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error",
           "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-framerate", f"{rate.numerator}/{rate.denominator}",
           "-i", "pipe:0", "-an", "-sws_flags", _SWS_FLAGS, "-pix_fmt", "yuv420p",
           # BT.601 limited range is what the RGB -> YUV conversion uses; tagged so players need not guess
           "-colorspace", "smpte170m", "-color_primaries", "smpte170m", "-color_trc", "smpte170m", "-color_range", "tv"]
    if fmt == "webm":
        cmd += ["-c:v", "libvpx-vp9", "-crf", str(crf + 14), "-b:v", "0"]
    else:
        cmd += ["-c:v", "libx264", "-preset", preset, "-crf", str(crf)] + (["-tune", "psnr"] if small else [])
    cmd += ["-threads", "1", "-map_metadata", "-1", "-metadata:s:v:0", "encoder=", "-fflags", "+bitexact", "-flags:v", "+bitexact"]
    if fmt in ("mp4", "mov"):
        cmd += ["-movflags", "+faststart"]
    return cmd + ["-f", fmt, "-y", str(tmp)]


def write_video(
    path,
    frames: Union[np.ndarray, Iterable[np.ndarray]],
    fps: float,
    crf: Optional[int] = None,
    preset: str = "fast",
    progress: Optional[ProgressFn] = None,
) -> Path:
    """Write RGB frames as an H.264 (yuv420p) mp4, atomically and reproducibly.

    frames: uint8 [T,H,W,3] (or an iterable of [H,W,3] frames; float frames in [0,1] are
    scaled). Odd sizes are padded to even by repeating the last row/column (yuv420p needs even
    dimensions). crf: x264 quality (lower = more faithful, larger); None picks 10 for frames of
    at most 256x256 pixels (which are also encoded with -tune psnr) and 18 for larger ones (see
    the settings above); 0 is lossless but needs the High 4:4:4 profile, which browsers do not
    play. Identical frames and
    settings give a byte-identical file. The file is written next to `path` under a temporary
    name and renamed over `path` only when complete; on any error or `Cancelled` the temporary
    file is removed. `.webm` paths get VP9 instead of H.264; `.mov`/`.mkv` keep H.264.
    """

    path = Path(os.fspath(path))
    suffix = path.suffix.lower()
    if suffix not in _CONTAINERS:
        raise InputError(f"cannot write video to {path.name}: use a .mp4 (or .mov, .mkv, .webm) file name")
    if not fps or fps <= 0:
        raise InputError(f"fps must be positive, got {fps}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_path_for(path)
    total = len(frames) if hasattr(frames, "__len__") else None
    encoder = None
    try:
        with tempfile.TemporaryFile() as log:
            n = 0
            for frame in frames:
                frame = _as_uint8_rgb(frame)
                if encoder is None:
                    h, w = frame.shape[:2]
                    eh, ew = h + h % 2, w + w % 2
                    # Own session: a Ctrl-C reaches only Python, which then stops ffmpeg below.
                    encoder = subprocess.Popen(_encode_command(tmp, _CONTAINERS[suffix], ew, eh, fps, crf, preset),
                                               stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=log,
                                               start_new_session=True)
                if frame.shape[:2] != (h, w):
                    raise InputError(f"all frames must have the same size: frame {n} is {frame.shape[1]}×{frame.shape[0]}, the first {w}×{h}")
                if (eh, ew) != (h, w):
                    frame = np.pad(frame, ((0, eh - h), (0, ew - w), (0, 0)), mode="edge")
                try:
                    encoder.stdin.write(np.ascontiguousarray(frame).data)
                except BrokenPipeError:
                    break  # ffmpeg stopped; its message is reported below
                n += 1
                _report(progress, n, total)
            if encoder is None:
                raise InputError("no frames to write")
            try:
                encoder.stdin.close()
            except BrokenPipeError:
                pass
            if encoder.wait() != 0:
                log.seek(0)
                reason = log.read().decode(errors="replace").strip().splitlines()[:2]  # the cause comes first
                raise XDynaError(f"could not write {path.name}: ffmpeg stopped ({' / '.join(reason) or f'exit code {encoder.returncode}'})")
        replace_atomically(tmp, path)
    except BaseException:
        if encoder is not None and encoder.poll() is None:
            encoder.kill()
            encoder.wait()
        tmp.unlink(missing_ok=True)
        raise
    return path


def save_image(path, image: np.ndarray) -> Path:
    """Write an RGB image (png/jpg/webp by suffix) atomically."""

    path = Path(os.fspath(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_path_for(path)
    try:
        Image.fromarray(_as_uint8_rgb(image)).save(tmp, format=Image.registered_extensions().get(path.suffix.lower(), "PNG"))
        replace_atomically(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def _as_uint8_rgb(frame) -> np.ndarray:
    frame = np.asarray(frame)
    if frame.dtype != np.uint8:
        if np.issubdtype(frame.dtype, np.floating):
            frame = (np.clip(frame, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
        else:
            frame = np.clip(frame, 0, 255).astype(np.uint8)
    if frame.ndim == 2:
        frame = np.repeat(frame[..., None], 3, axis=2)
    if frame.ndim != 3 or frame.shape[2] not in (1, 3, 4):
        raise InputError(f"expected an RGB frame [H,W,3], got shape {frame.shape}")
    if frame.shape[2] == 1:
        frame = np.repeat(frame, 3, axis=2)
    elif frame.shape[2] == 4:
        frame = frame[..., :3]
    return frame


# --------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------

BACKGROUND_RGB = (255, 255, 255)  # transparent pixels of a photo are composited on white


def file_digest(path, algorithm: str = "sha256") -> str:
    """Hex digest of a file's bytes (read in 1 MiB blocks): its identity for caches and keys."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def probe_image(path) -> tuple:
    """(width, height) of an image file from its header, without decoding it: refuses empty
    files, files that are not images, and images above 8192×8192 pixels (a 450 KB PNG can hold
    12000×12000 pixels, 1.7 GB decoded)."""
    path = Path(os.fspath(path))
    if path.stat().st_size == 0:
        raise InputError(f"{path.name} is empty (0 bytes); upload the photo again")
    try:
        with Image.open(path) as im:
            width, height = im.size
    except Image.DecompressionBombError:
        raise InputError(f"{path.name} is too large to open safely; downscale it first") from None
    except (OSError, SyntaxError, ValueError) as err:
        raise InputError(f"could not read {path.name} as an image ({err}); use a jpg, png or webp photo") from None
    if width * height > MAX_SOURCE_PIXELS:
        raise InputError(f"{path.name} is {width}×{height} pixels, more than this app opens (8192×8192); "
                         "downscale it first")
    return width, height


def load_image(image, max_side: Optional[int] = None, min_side: int = MIN_IMAGE_SIDE) -> np.ndarray:
    """Read a photo into uint8 [H,W,3] RGB.

    Accepts a path, a PIL image or an array. EXIF orientation is applied; transparency
    (RGBA, LA, palette with a transparent colour) is composited on white (`BACKGROUND_RGB`),
    the background the model sees instead of a black or random one; grayscale is repeated to
    RGB; CMYK is converted; 16-bit and float images are scaled to 8 bits. `max_side`
    downscales (area filter) so the longest side is at most that.

    Raises InputError for files that are not images, damaged images and images smaller than
    `min_side` on either side.
    """

    if isinstance(image, (str, os.PathLike)):
        path = Path(os.fspath(image))
        if not path.exists():
            raise InputError(f"image not found: {path}")
        if path.is_dir():
            raise InputError(f"{path} is a folder, not an image")
        probe_image(path)
        try:
            with Image.open(path) as im:
                im.load()
                pil = ImageOps.exif_transpose(im)
                pil.load()
        except Image.DecompressionBombError:
            raise InputError(f"{path.name} is too large to open safely; downscale it first") from None
        except (OSError, SyntaxError, ValueError) as err:
            raise InputError(
                f"could not read {path.name} as an image ({err}); use a jpg, png or webp photo"
            ) from None
        arr = _pil_to_rgb(pil)
        label = path.name
    elif isinstance(image, Image.Image):
        try:
            arr = _pil_to_rgb(ImageOps.exif_transpose(image))
        except (OSError, ValueError) as err:
            raise InputError(f"could not read the image ({err})") from None
        label = "the image"
    else:
        arr = _array_to_rgb(np.asarray(image))
        label = "the image"
    h, w = arr.shape[:2]
    if min(h, w) < min_side:
        raise InputError(f"{label} is only {w}×{h} pixels; use a photo at least {min_side} pixels on each side (512 or more is best)")
    if max_side and max(h, w) > max_side:
        nw, nh = _scaled_size(w, h, max_side)
        arr = cv2.resize(arr, (nw, nh), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(arr)


def _pil_to_rgb(pil) -> np.ndarray:
    mode = pil.mode
    if mode == "P":
        pil = pil.convert("RGBA" if "transparency" in pil.info else "RGB")
        mode = pil.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        return _array_to_rgb(np.asarray(pil))
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = pil.convert("RGBA")
        background = Image.new("RGBA", rgba.size, BACKGROUND_RGB + (255,))
        return np.asarray(Image.alpha_composite(background, rgba).convert("RGB"))
    if mode != "RGB":
        pil = pil.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV
    return np.asarray(pil)


def _array_to_rgb(arr: np.ndarray) -> np.ndarray:
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)):
        raise InputError(f"expected an image array [H,W], [H,W,3] or [H,W,4], got shape {arr.shape}")
    if arr.dtype == np.uint8:
        pass
    elif arr.dtype == np.uint16 or (np.issubdtype(arr.dtype, np.integer) and arr.max(initial=0) > 255):
        arr = (arr.astype(np.float64) / (65535.0 if arr.max(initial=0) <= 65535 else float(arr.max())) * 255.0 + 0.5).astype(np.uint8)
    elif np.issubdtype(arr.dtype, np.floating):
        arr = (np.clip(np.nan_to_num(arr), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    elif arr.dtype == bool:
        arr = arr.astype(np.uint8) * 255
    else:
        arr = np.clip(arr, 0, 255).astype(np.uint8)
    if arr.ndim == 2:
        return np.repeat(arr[..., None], 3, axis=2)
    if arr.shape[2] == 4:
        alpha = arr[..., 3:4].astype(np.float32) / 255.0
        bg = np.array(BACKGROUND_RGB, np.float32)
        return (arr[..., :3].astype(np.float32) * alpha + bg * (1.0 - alpha) + 0.5).astype(np.uint8)
    return arr


# --------------------------------------------------------------------------------------
# Previews
# --------------------------------------------------------------------------------------


def _as_clip(v) -> np.ndarray:
    v = np.asarray(v)
    if v.ndim == 3:  # a still image shown for the whole clip
        v = v[None]
    if v.ndim != 4:
        raise InputError(f"expected frames [T,H,W,C] or an image [H,W,C], got shape {v.shape}")
    if v.shape[-1] != 3:
        v = np.stack([_as_uint8_rgb(f) for f in v])
    return _as_uint8_rgb_clip(v)


def _as_uint8_rgb_clip(v: np.ndarray) -> np.ndarray:
    if v.dtype == np.uint8:
        return v
    return np.stack([_as_uint8_rgb(f) for f in v])


def _resize_to_height(frames: np.ndarray, height: int) -> np.ndarray:
    t, h, w = frames.shape[:3]
    if h == height:
        return frames
    nw = max(1, round(w * height / h))
    interp = cv2.INTER_AREA if height < h else cv2.INTER_LINEAR
    return np.stack([cv2.resize(f, (nw, height), interpolation=interp) for f in frames])


def _label_bar(text: str, width: int, height: int) -> np.ndarray:
    bar = np.zeros((height, width, 3), np.uint8)
    scale = height / 40.0
    (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    x = max(2, (width - tw) // 2)
    cv2.putText(bar, text, (x, (height + th) // 2), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return bar


def side_by_side(*videos, labels: Optional[Sequence[str]] = None, height: Optional[int] = None, length: str = "longest") -> np.ndarray:
    """Put clips (or still images) next to each other: uint8 [T, H, W_total, 3].

    Every clip is resized to the same height (`height`, default the first clip's), keeping its
    aspect. Lengths: "longest" (default) plays to the end of the longest clip, shorter ones
    hold their last frame; "shortest" cuts all to the shortest clip. A still image [H,W,3] is
    shown for the whole clip. `labels` adds a caption bar above each clip. 6-channel face
    patches should go through `preprocess.motion.face_patch_video` first.
    """
    if not videos:
        raise InputError("side_by_side needs at least one clip")
    clips = [_as_clip(v) for v in videos]
    height = int(height or clips[0].shape[1])
    clips = [_resize_to_height(c, height) for c in clips]
    lengths = [len(c) for c in clips if len(c) > 1] or [1]
    if length == "longest":
        t = max(lengths)
    elif length == "shortest":
        t = min(lengths)
    else:
        raise ValueError(f"length must be 'longest' or 'shortest', got {length!r}")
    parts = []
    for i, c in enumerate(clips):
        idx = np.minimum(np.arange(t), len(c) - 1)
        part = c[idx]
        if labels is not None and i < len(labels) and labels[i]:
            bar_h = max(16, height // 16)
            bar = _label_bar(str(labels[i]), part.shape[2], bar_h)
            part = np.concatenate([np.broadcast_to(bar, (t,) + bar.shape), part], axis=1)
        parts.append(part)
    return np.ascontiguousarray(np.concatenate(parts, axis=2))


def frame_strip(frames, num: int = 6, height: Optional[int] = None, gap: int = 4) -> np.ndarray:
    """`num` evenly spaced frames of a clip in one row (uint8 [H, W, 3]) for a PNG preview."""
    clip = _as_clip(frames)
    idx = np.unique(np.linspace(0, len(clip) - 1, num=min(num, len(clip))).round().astype(int))
    chosen = clip[idx]
    if height:
        chosen = _resize_to_height(chosen, int(height))
    h, w = chosen.shape[1:3]
    out = np.zeros((h, len(chosen) * w + (len(chosen) - 1) * gap, 3), np.uint8)
    for i, f in enumerate(chosen):
        out[:, i * (w + gap): i * (w + gap) + w] = f
    return out
