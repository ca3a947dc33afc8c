"""Sliding-window schedules for long videos, as plain functions.

The motion modules of X-Dyna see `window_size` (16) frames at a time, so a
longer clip is denoised window by window and the per-frame noise predictions of
overlapping windows are averaged at every step (AnimateDiff-style "context
windows"; X-Dyna paper §4 "long video generation" / official
`animatediff/utils/context.py`). Two schedules:

- `official_windows`: the official closed-loop `uniform` schedule (docs/official-behaviour.md
  §28). Windows wrap around the clip end, so the motion module sees the last
  frames followed directly by the first ones; predictions are averaged with
  equal weights.
- `blend_windows` + `window_weights`: our default. Non-looping windows, the
  last aligned to the clip end, blended with smooth weights that sum to 1 for
  every frame, so the end of a clip never leaks into its start.

All functions return plain Python lists so they are trivial to test.
"""

from __future__ import annotations

from typing import List, Sequence

WEIGHTINGS = ("linear", "pyramid", "uniform")


def _check(num_frames: int, window_size: int, overlap: int) -> None:
    if num_frames < 1:
        raise ValueError(f"num_frames must be at least 1, got {num_frames}")
    if window_size < 1:
        raise ValueError(f"window_size must be at least 1, got {window_size}")
    if not 0 <= overlap < window_size:
        raise ValueError(f"overlap must be in [0, window_size), got overlap={overlap}, window_size={window_size}")


def official_windows(num_frames: int, window_size: int = 16, overlap: int = 4, offset: int = 0) -> List[List[int]]:
    """Official X-Dyna closed-loop window schedule (docs/official-behaviour.md §28).

    The official pipeline calls `uniform(step=0, context_stride=1,
    closed_loop=True, offset)`: if `num_frames <= window_size` there is one
    window holding every frame (the offset is ignored). Otherwise windows start
    at 0, s, 2s, ... (s = window_size - overlap) while start < num_frames, and
    window j is `[(start + k + offset) % num_frames for k in range(window_size)]`:
    windows keep cyclic order and wrap around the clip end.

    Examples (offset 0): 20 frames -> [0..15], [12..19, 0..7];
    192 frames -> 16 windows, the last [180..191, 0..3].
    The official code draws `offset` uniformly from 0..window_size-1 anew at
    every denoising step.
    """
    _check(num_frames, window_size, overlap)
    if num_frames <= window_size:
        return [list(range(num_frames))]
    stride = window_size - overlap
    return [
        [(start + k + offset) % num_frames for k in range(window_size)]
        for start in range(0, num_frames, stride)
    ]


def blend_windows(num_frames: int, window_size: int = 16, overlap: int = 4) -> List[List[int]]:
    """Non-looping windows covering every frame once or more, no wrap-around.

    Windows start at 0, s, 2s, ... (s = window_size - overlap); the last window
    is aligned to the clip end (it may overlap its neighbour by more than
    `overlap`). A clip no longer than `window_size` is one window.
    Example: 40 frames, 16/4 -> starts 0, 12, 24.
    """
    _check(num_frames, window_size, overlap)
    if num_frames <= window_size:
        return [list(range(num_frames))]
    stride = window_size - overlap
    starts = list(range(0, num_frames - window_size, stride))
    starts.append(num_frames - window_size)  # last window ends exactly at the clip end
    return [list(range(s, s + window_size)) for s in starts]


def _raw_weight(position: int, length: int, overlap: int, weighting: str) -> float:
    """Un-normalised weight of a frame at `position` in a window of `length`."""
    edge = min(position + 1, length - position)  # 1 at both ends, growing inwards
    if weighting == "pyramid":
        return float(edge)
    if weighting == "linear":
        # trapezoid: ramps over the overlap, flat (= overlap + 1) in the middle,
        # so two windows overlapping by `overlap` frames cross-fade linearly.
        return float(min(edge, overlap + 1))
    if weighting == "uniform":
        return 1.0
    raise ValueError(f"unknown weighting {weighting!r}; choose one of {WEIGHTINGS}")


def window_weights(
    windows: Sequence[Sequence[int]],
    num_frames: int,
    overlap: int = 4,
    weighting: str = "linear",
) -> List[List[float]]:
    """Per-frame blend weights for `windows`, normalised so that for every frame
    the weights of the windows covering it sum to 1.

    `weighting`: "linear" (default; trapezoid that cross-fades linearly over
    the overlap and is flat elsewhere), "pyramid" (triangle over the whole
    window, AnimateDiff's pyramid context weights) or "uniform" (equal weights,
    i.e. the official plain average). Returns one list per window, aligned with
    the window's frame indices. Raises ValueError if a frame is not covered.
    """
    raw = [[_raw_weight(p, len(w), overlap, weighting) for p in range(len(w))] for w in windows]
    total = [0.0] * num_frames
    for frames, weights in zip(windows, raw):
        for f, wt in zip(frames, weights):
            total[f] += wt
    missing = [f for f, t in enumerate(total) if t <= 0]
    if missing:
        raise ValueError(f"frames {missing[:10]} are not covered by any window")
    return [[wt / total[f] for f, wt in zip(frames, weights)] for frames, weights in zip(windows, raw)]
