"""The driving clip's sound on the result.

The animated frames cover one stretch of the driving clip: it starts at the source time of the
motion's first frame and lasts as long as the output video (num_frames / fps). Resampling the
frame rate picks, for each output frame, the source frame nearest in time (`io.read_video`), so
the frames keep real time and that stretch of sound plays in sync with them; the sound itself is
never resampled in time, so its speed and pitch stay.

The stretch of the clip's first audio stream goes into the output in one of two ways:
- copied as it is (no quality loss) when it is already AAC, starts exactly where the animated
  stretch starts, lasts at least as long, and its packets are shorter than one video frame (a copy
  can only be cut at a packet, so the sound then overruns the video by less than one frame);
  the written file is checked, and anything else falls back to
- decoded (PyAV), cut to the sample (silence where the clip has none), and encoded to AAC
  (Opus for .webm, which cannot hold AAC): start and duration then match the video exactly.

Both run imageio-ffmpeg's ffmpeg program with fixed settings, so the same inputs give the same
bytes. A clip without sound gives a silent video; a sound track that cannot be read or written
gives a silent video and a warning (`SoundWarning`), never a failed generation.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple

import av
import imageio_ffmpeg
import numpy as np

from xdyna_core import io

AAC_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350)
AAC_BITRATE = "128k"
OPUS_BITRATE = "96k"
START_TOLERANCE = 0.0005  # seconds: a copy must start this close to the animated stretch
MUX_TIMEOUT = 600  # seconds for one ffmpeg run (minutes of sound take seconds)


class SoundWarning(UserWarning):
    """The clip's sound could not be kept; the video was written without it."""


class SoundError(Exception):
    """The sound track could not be read or written (becomes a `SoundWarning`)."""


@dataclass(frozen=True)
class Sound:
    """The stretch of a clip's sound that goes with a result: `duration` seconds of `clip` from
    `start` (seconds on the clip's own timeline, where its first video frame is at
    `first_frame_time(clip)`)."""

    clip: str
    start: float
    duration: float
    fps: float  # of the result: a copy may overrun its end by less than one frame of it


def first_frame_time(path) -> float:
    """Time of the clip's first decoded video frame: the zero of `io.read_video`'s timestamps."""
    try:
        with av.open(os.fspath(path), metadata_errors="ignore") as container:
            stream = container.streams.video[0]
            for frame in container.decode(stream):
                return float(frame.time or 0.0)
    except (av.FFmpegError, IndexError, OSError, UnicodeDecodeError, ValueError) as err:
        raise SoundError(f"could not read {Path(path).name} again ({_reason(err)})") from None
    raise SoundError(f"{Path(path).name} has no video frames any more")


def sound_for(clip, timestamps, num_frames: int, fps: float) -> Sound:
    """The stretch of `clip` that frames with these source `timestamps` (seconds from the clip's
    first frame; None: k / fps) cover at `fps`."""
    offset = float(timestamps[0]) if timestamps is not None and len(timestamps) else 0.0
    return Sound(os.fspath(clip), first_frame_time(clip) + offset, num_frames / float(fps), float(fps))


def left_out(err) -> str:
    """The warning when the sound could not be kept."""
    return f"the driving clip's sound was left out ({err}); the video is silent"


def _reason(err) -> str:
    text = getattr(err, "strerror", None) or str(err)
    return text.split(":")[-1].strip() if text else type(err).__name__


# --------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------


@dataclass
class Track:
    """The stretch of sound, decoded: float32 samples [N, C] (C = 1 or 2) at `sample_rate`."""

    samples: np.ndarray
    sample_rate: int
    codec: str
    copyable: bool  # a plain packet copy would be exact enough (see the module notes)


def read_sound(sound: Sound) -> Optional[Track]:
    """Decode `sound`'s stretch of its clip's first audio stream; None when the clip has no audio
    stream. Raises SoundError when the stream cannot be decoded (any decoding error counts: a
    partly readable track would play with holes)."""
    name = Path(sound.clip).name
    try:
        container = av.open(sound.clip, metadata_errors="ignore")
    except (av.FFmpegError, OSError, UnicodeDecodeError, ValueError) as err:
        raise SoundError(f"could not open {name} ({_reason(err)})") from None
    with container:
        if not container.streams.audio:
            return None
        stream = container.streams.audio[0]
        try:
            ctx = stream.codec_context
            rate, channels, codec = int(ctx.sample_rate or 0), int(ctx.channels or 0), ctx.name
        except (av.FFmpegError, AttributeError) as err:
            raise SoundError(f"the sound of {name} has no decoder ({_reason(err)})") from None
        if rate <= 0 or channels <= 0:
            raise SoundError(f"the sound of {name} states no sample rate or channels")
        width = 1 if channels == 1 else 2  # more channels are mixed down to stereo
        total = int(round(sound.duration * rate))
        samples = np.zeros((total, width), np.float32)  # silence where the clip has no sound
        resampler = av.AudioResampler(format="flt", layout="mono" if width == 1 else "stereo", rate=rate)
        end = sound.start + sound.duration
        first = None  # time of the first decoded sample
        reach = None  # end time of the last decoded sample
        longest = 0  # samples in the longest frame: a copy is cut at frame boundaries
        try:
            for packet in container.demux(stream):
                for frame in packet.decode():
                    t = frame.time if frame.time is not None else (reach if reach is not None else 0.0)
                    first = t if first is None else first
                    reach = t + frame.samples / rate
                    longest = max(longest, frame.samples)
                    if t >= end:
                        break
                    pos = int(round((t - sound.start) * rate))
                    for out in resampler.resample(frame):
                        data = out.to_ndarray().reshape(-1, width)
                        lo, hi = max(pos, 0), min(pos + len(data), total)
                        if hi > lo:
                            samples[lo:hi] = data[lo - pos: hi - pos]
                        pos += len(data)
                else:
                    continue
                break
        except av.FFmpegError as err:
            raise SoundError(f"the sound of {name} is damaged ({_reason(err)})") from None
        if first is None:
            return None  # an audio stream without a single frame: nothing to keep
        copyable = (codec == "aac" and channels <= 2 and abs(first - sound.start) <= START_TOLERANCE
                    and reach >= end and longest / rate <= 1.0 / sound.fps)
        return Track(samples, rate, codec, copyable)


# --------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------


def _mux_flags(fmt: str) -> list:
    """Settings that keep the muxed file the same from run to run (see `io._encode_command`)."""
    flags = ["-map_metadata", "-1", "-map_chapters", "-1", "-fflags", "+bitexact", "-flags:a", "+bitexact"]
    if fmt in ("mp4", "mov"):
        flags += ["-movflags", "+faststart"]
    return flags


def _run(cmd: list, data: Optional[bytes] = None) -> None:
    # Own session: a Ctrl-C reaches only Python; subprocess.run then stops ffmpeg.
    done = subprocess.run(cmd, input=data, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=MUX_TIMEOUT,
                          start_new_session=True)
    if done.returncode != 0:
        lines = done.stderr.decode(errors="replace").strip().splitlines()[:2]
        raise SoundError(f"ffmpeg stopped ({' / '.join(lines) or f'exit code {done.returncode}'})")


def _copy(silent: Path, sound: Sound, out: Path, fmt: str) -> bool:
    """Mux the clip's audio packets as they are; False when that did not give a file in sync (then
    the sound is encoded instead)."""
    try:
        _run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error",
              "-i", str(silent), "-i", sound.clip, "-map", "0:v:0", "-map", "1:a:0", "-c", "copy",
              "-t", f"{sound.duration:.6f}", *_mux_flags(fmt), "-f", fmt, "-y", str(out)])
    except SoundError:
        return False
    return _copy_is_in_sync(out, sound)


def _encode(silent: Path, track: Track, out: Path, fmt: str) -> None:
    rate = track.sample_rate
    if fmt == "webm":
        codec = ["-c:a", "libopus", "-b:a", OPUS_BITRATE]  # ffmpeg picks a rate Opus takes (48 kHz)
    else:
        codec = ["-c:a", "aac", "-b:a", AAC_BITRATE] + ([] if rate in AAC_RATES else ["-ar", "48000"])
    _run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error",
          "-i", str(silent), "-f", "f32le", "-ar", str(rate), "-ac", str(track.samples.shape[1]), "-i", "pipe:0",
          "-map", "0:v:0", "-map", "1:a:0", "-c:v", "copy", *codec, "-threads", "1", *_mux_flags(fmt),
          "-f", fmt, "-y", str(out)], data=np.ascontiguousarray(track.samples, "<f4").tobytes())


def audio_span(path) -> Optional[Tuple[float, float]]:
    """(start, duration) in seconds of the decoded first audio stream of a file; None without one."""
    with av.open(os.fspath(path)) as container:
        if not container.streams.audio:
            return None
        stream = container.streams.audio[0]
        first, count = None, 0
        for frame in container.decode(stream):
            first = frame.time if first is None else first
            count += frame.samples
        return (None if first is None else (float(first), count / stream.codec_context.sample_rate))


def _copy_is_in_sync(path: Path, sound: Sound) -> bool:
    """The copied sound starts with the video and ends within one frame after it."""
    try:
        span = audio_span(path)
    except av.FFmpegError:
        return False
    return (span is not None and abs(span[0]) <= START_TOLERANCE
            and 0 <= span[1] - sound.duration < 1.0 / sound.fps)


def write_with_sound(path, frames, fps: float, sound: Optional[Sound]) -> Tuple[Path, Optional[str]]:
    """`io.write_video` with `sound` muxed in: returns the path and a warning (None when all went
    well; otherwise the video was written without sound). The file appears at `path` once, complete
    (written under temporary names in its folder and renamed)."""
    if sound is None:
        return io.write_video(path, frames, fps), None
    path = Path(os.fspath(path))
    fmt = io._CONTAINERS.get(path.suffix.lower())
    if fmt is None:
        return io.write_video(path, frames, fps), None  # write_video says what is wrong with the name
    path.parent.mkdir(parents=True, exist_ok=True)
    silent = io._temp_path_for(path)
    muxed = io._temp_path_for(path)
    try:
        io.write_video(silent, frames, fps)
        try:
            track = read_sound(sound)
            if track is None:  # no sound in the clip: a silent video, nothing to say
                io.replace_atomically(silent, path)
                return path, None
            if track.copyable and fmt != "webm" and _copy(silent, sound, muxed, fmt):
                io.replace_atomically(muxed, path)
                return path, None
            _encode(silent, track, muxed, fmt)
            io.replace_atomically(muxed, path)
            return path, None
        except Exception as err:  # noqa: BLE001 - the sound is optional: any failure gives a silent video
            io.replace_atomically(silent, path)
            return path, left_out(err if isinstance(err, SoundError) else f"{type(err).__name__}: {err}")
    finally:
        silent.unlink(missing_ok=True)
        muxed.unlink(missing_ok=True)
