"""Several people in the driving clip: count them, show them numbered, follow the chosen one.

    dancers = find_dancers("dance.mp4")            # a few frames of the first 10 s
    image = draw_dancers(dancers)                   # "Dancer 1", "Dancer 2", ... left to right
    n = dancer_at(dancers, x, y)                    # a click on that image -> 1-based number
    extract_motion("dance.mp4", photo, person=n)    # follows dancer n through the clip

Counting (`find_dancers`): up to `SAMPLES` frames evenly spread over the first `WINDOW_S` seconds
of the part of the clip that is extracted (`fps`, `max_frames` as for the extraction, so the
numbers the user sees are the ones the extraction uses). On each, the BlazePose person detector
runs on the whole frame and on squares of the frame's shorter side (it misses people that fill
only a small part of a letterboxed 224×224 copy); each detection is checked with the body
landmark model (a person, not a poster or a shadow), and people found twice are merged. The
frame with the most people (the earliest of those) is the counting frame; dancers are numbered
by the centre of their body box from left to right.

Following (`follow_dancer`, used by `extract_motion(person=N)`): starting on the counting frame,
forwards to the end and backwards to the start (threads; a long forward part in two halves, the
second one starting by finding the dancer by its look as after an exit), the chosen dancer's region is
tracked from frame to frame by the body landmark model itself (the region the landmarks give for
the next frame). Every frame is checked against the dancers' looks on the counting frame (a colour
histogram of the torso): when the tracked torso looks more like another dancer than like the
chosen one (a crossing where the other passes in front), or the model finds nobody, the dancer
counts as lost for that frame, and on the next frames the detector looks for people again; the
first one that looks like the chosen dancer (closer to its histogram than to any other dancer's,
and not too far from it) is followed again. Body, hands and face all come from the same region,
so the face patches are the chosen dancer's.
"""

from __future__ import annotations

import math
import os
import threading
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import cv2
import numpy as np

from ..errors import Cancelled, InputError
from ..io import Video, probe_video, read_video
from .mediapipe_estimator import PersonDetector, Roi, WholeBodyByRoi
from .pose import BODY, MIN_CONFIDENCE, Keypoints, box_iou

WINDOW_S = 10.0  # dancers are counted in the first seconds of the clip
SAMPLES = 8  # frames looked at for counting
COUNT_SIDE = 640  # longest side of the frames used for counting
MAX_LOOK_DISTANCE = 0.6  # Bhattacharyya distance above which a torso is nobody we know
SPLIT_MIN_FRAMES = 24  # a forward part at least twice this long is followed in two halves at once
LABEL_COLOURS = ((255, 80, 80), (80, 200, 255), (120, 230, 80), (255, 200, 40), (220, 120, 255), (255, 140, 200))


@dataclass
class Dancers:
    """The people of a clip, counted on one frame.

    count: how many; frame_index: index of the counting frame among the clip's frames at the
    extraction's frame rate (`time` its time in seconds); frame: that frame (uint8 RGB);
    boxes: their body boxes (x0, y0, x1, y1) in pixels of `frame`, left to right (dancer n is
    boxes[n - 1]); scores: the detector's confidence per dancer."""

    count: int
    frame_index: int
    time: float
    frame: np.ndarray
    boxes: list = field(default_factory=list)
    scores: list = field(default_factory=list)
    rois: list = field(default_factory=list)  # the body model's region per dancer (mediapipe_estimator.Roi)

    def label(self, n: int) -> str:
        return f"Dancer {n}"


def _body_box(kp: Keypoints, height: int, width: int):
    b = kp.bbox(MIN_CONFIDENCE, "body")
    if b is None:
        return None
    x0, y0, x1, y1 = max(b[0], 0.0), max(b[1], 0.0), min(b[2], float(width)), min(b[3], float(height))
    if x1 - x0 < 2 or y1 - y0 < 2:
        return None
    return x0, y0, x1, y1


def people_in_frame(frame: np.ndarray, detector: PersonDetector, body: WholeBodyByRoi) -> list:
    """[(Keypoints, Roi for the next frame, body box, score)] of every person found in the frame
    (detector on the frame and its squares, each detection checked by the body model)."""
    h, w = frame.shape[:2]
    found = []
    for det in detector(frame, tiles=1):
        kp, nxt = body(frame, det.roi())
        if kp is not None and nxt is not None:  # once more on the region the landmarks give: settled
            kp, nxt = body(frame, nxt)
        if kp is None or not kp.has_body():
            continue
        box = _body_box(kp, h, w)
        if box is None:
            continue
        # the body model looked at the detection's region: its nose must be there too
        if math.hypot(kp.body[0, 0] - det.top[0], kp.body[0, 1] - det.top[1]) > 1.2 * det.radius:
            continue
        found.append((kp, nxt, box, det.score))
    kept = []
    for p in sorted(found, key=lambda p: -p[3]):
        if not any(_same_person(p[0], k[0]) for k in kept):
            kept.append(p)
    return kept


def _same_person(a: Keypoints, b: Keypoints) -> bool:
    """Two results of the body model on one person (tiles overlap): their shoulders nearly coincide
    (within a third of the shoulder width)."""
    idx = [BODY["r_shoulder"], BODY["l_shoulder"]]
    pa, pb = a.body[idx], b.body[idx]
    width = max(float(np.linalg.norm(pa[0, :2] - pa[1, :2])), 1.0)
    return float(np.abs(pa[:, :2] - pb[:, :2]).sum(1).max()) < width / 3


def _sample_times(duration: float, fps: Optional[float], max_frames: Optional[int]) -> list:
    window = min(WINDOW_S, duration)
    if max_frames is not None and fps:
        window = min(window, max_frames / fps)
    step = window / SAMPLES
    return [k * step for k in range(SAMPLES)] if step > 0 else [0.0]


def find_dancers(video, fps: Optional[float] = None, max_frames: Optional[int] = None,
                 max_side: int = COUNT_SIDE) -> Dancers:
    """Count the people of a clip (a path or a decoded `io.Video`) on a few frames of its first
    seconds; see the module docstring. `fps` / `max_frames`: those of the extraction (the part of
    the clip it uses; None as in `extract_motion`). Cheap: a few frames, no hands or face."""
    if isinstance(video, Video):
        times = np.asarray(video.timestamps, np.float64)
        duration = float(times[-1] - times[0]) + 1.0 / video.fps
        wanted = _sample_times(duration, None, None)
        idx = sorted({int(np.argmin(np.abs(times - times[0] - t))) for t in wanted})
        frames = [video.frames[i] for i in idx]
        frame_times = [float(times[i] - times[0]) for i in idx]
        scale = 1.0
        if max(frames[0].shape[:2]) > max_side:
            scale = max_side / max(frames[0].shape[:2])
            size = (round(frames[0].shape[1] * scale), round(frames[0].shape[0] * scale))
            frames = [cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in frames]
        rate = video.fps
    else:
        info = probe_video(video)
        duration = info.duration or 0.0
        rate = fps or info.fps or 25.0
        wanted = _sample_times(duration, rate, max_frames)
        step = wanted[1] - wanted[0] if len(wanted) > 1 else 1.0
        clip = read_video(video, fps=min(1.0 / step, 240.0), max_frames=len(wanted), max_side=max_side)
        frames = list(clip.frames)
        frame_times = [float(t) for t in clip.timestamps]

    detector, body = PersonDetector(), WholeBodyByRoi(body_only=True)
    try:
        best = None
        for i, frame in enumerate(frames):
            people = people_in_frame(frame, detector, body)
            if best is None or len(people) > len(best[1]):
                best = (i, people)
    finally:
        detector.close()
        body.close()
    i, people = best
    people.sort(key=lambda p: (p[2][0] + p[2][2]) / 2)
    return Dancers(count=len(people), frame_index=int(round(frame_times[i] * rate)), time=frame_times[i],
                   frame=np.ascontiguousarray(frames[i]), boxes=[tuple(float(v) for v in p[2]) for p in people],
                   scores=[round(float(p[3]), 3) for p in people], rois=[p[1] for p in people])


def draw_dancers(dancers: Dancers) -> np.ndarray:
    """The counting frame with every dancer's box and "Dancer n" (uint8 RGB, the frame's size)."""
    img = dancers.frame.copy()
    h, w = img.shape[:2]
    thick = max(2, round(max(h, w) / 300))
    font = max(0.45, max(h, w) / 900)
    for n, box in enumerate(dancers.boxes, 1):
        colour = LABEL_COLOURS[(n - 1) % len(LABEL_COLOURS)]
        x0, y0, x1, y1 = (int(round(v)) for v in box)
        cv2.rectangle(img, (x0, y0), (x1, y1), colour, thick)
        text = dancers.label(n)
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font, thick)
        tx = min(max(0, x0), max(0, w - tw - 4))
        ty = max(th + base + 4, y0)
        cv2.rectangle(img, (tx, ty - th - base - 4), (tx + tw + 4, ty), colour, -1)
        cv2.putText(img, text, (tx + 2, ty - base - 2), cv2.FONT_HERSHEY_SIMPLEX, font, (0, 0, 0), thick, cv2.LINE_AA)
    return img


def dancer_at(dancers: Dancers, x: float, y: float) -> Optional[int]:
    """The dancer (1-based) under a click at (x, y) in pixels of `dancers.frame`; where boxes
    overlap, the one whose centre is nearest; None outside every box."""
    hits = []
    for n, (x0, y0, x1, y1) in enumerate(dancers.boxes, 1):
        if x0 <= x <= x1 and y0 <= y <= y1:
            hits.append((math.hypot(x - (x0 + x1) / 2, y - (y0 + y1) / 2), n))
    return min(hits)[1] if hits else None


# ---- looks: a colour histogram of the torso ---------------------------------------------------

_TORSO = [BODY[n] for n in ("r_shoulder", "l_shoulder", "l_hip", "r_hip")]


def torso_look(frame: np.ndarray, kp: Keypoints) -> Optional[np.ndarray]:
    """Normalised 6×6×6 RGB histogram of the upper torso: the quad below the shoulder line, one
    shoulder width deep (hips are often guessed outside the frame, the chest is seen); None
    without both shoulders."""
    b = kp.body
    sh = b[[BODY["r_shoulder"], BODY["l_shoulder"]]]
    if (sh[:, 2] < MIN_CONFIDENCE).any():
        return None
    a, c = sh[0, :2].astype(np.float64), sh[1, :2].astype(np.float64)
    across = c - a
    width = float(np.linalg.norm(across))
    if width < 4:
        return None
    down = np.array([-across[1], across[0]]) / width  # perpendicular to the shoulders
    if down[1] < 0:
        down = -down
    inset = 0.15 * across  # keep the arms out
    quad = np.stack([a + inset, c - inset, c - inset + 0.9 * width * down, a + inset + 0.9 * width * down])
    h, w = frame.shape[:2]
    mask = np.zeros((h, w), np.uint8)
    cv2.fillConvexPoly(mask, np.round(quad).astype(np.int32), 255)
    if int(mask.sum()) < 255 * 30:
        return None
    hist = cv2.calcHist([frame], [0, 1, 2], mask, [6, 6, 6], [0, 256, 0, 256, 0, 256])
    return (hist / max(float(hist.sum()), 1.0)).astype(np.float32)


def look_distance(a: Optional[np.ndarray], b: Optional[np.ndarray]) -> float:
    """Bhattacharyya distance of two looks (0 same colours, 1 nothing in common); 1 if unknown."""
    if a is None or b is None:
        return 1.0
    return float(cv2.compareHist(a, b, cv2.HISTCMP_BHATTACHARYYA))


# ---- following one dancer ----------------------------------------------------------------------


@dataclass
class _Start:
    """A dancer on the starting frame: its body region and look."""

    roi: Roi
    look: Optional[np.ndarray]
    box: tuple


def _is_dancer(look, chosen: int, looks: Sequence) -> bool:
    """A torso is the chosen dancer's when it looks more like it than like any other dancer, and
    at all like it."""
    d = look_distance(look, looks[chosen])
    if look is None or d > MAX_LOOK_DISTANCE:
        return False
    return all(d <= look_distance(look, other) for k, other in enumerate(looks) if k != chosen)


class _Follower:
    """Follows the chosen dancer frame by frame in one direction (its own graphs and state)."""

    def __init__(self, start: Optional[Roi], last: Roi, chosen: int, looks: Sequence):
        self.whole, self.body, self.detector = WholeBodyByRoi(), WholeBodyByRoi(body_only=True), PersonDetector()
        self.roi, self.last = start, last  # region for the next frame (None: lost), where last seen
        self.chosen, self.looks = chosen, looks

    def step(self, frame: np.ndarray) -> Optional[Keypoints]:
        chosen, looks = self.chosen, self.looks
        kp = None
        if self.roi is not None:
            kp, nxt = self.whole(frame, self.roi)
            if kp is not None and kp.has_body() and _is_dancer(torso_look(frame, kp), chosen, looks):
                self.roi = nxt
            else:
                kp, self.roi = None, None
        if kp is None:
            # lost: look for people again, nearest to where the dancer was last seen first
            last = self.last
            cands = sorted(self.detector(frame, tiles=1),
                           key=lambda d: math.hypot(d.hip[0] - last.cx, d.hip[1] - last.cy))[:4]
            for det in cands:
                bkp, _ = self.body(frame, det.roi())
                if bkp is not None and bkp.has_body() and _is_dancer(torso_look(frame, bkp), chosen, looks):
                    kp, roi = self.whole(frame, det.roi())
                    if kp is not None and kp.has_body():
                        self.roi = roi
                        break
                    kp = None
        if kp is not None and self.roi is not None:
            self.last = self.roi
        return kp if kp is not None and kp.has_body() else None

    def close(self) -> None:
        self.whole.close()
        self.body.close()
        self.detector.close()


def follow_dancer(frames: np.ndarray, dancers: Dancers, person: int, start_index: int,
                  progress: Optional[Callable[[int, int], Optional[bool]]] = None) -> list:
    """Keypoints of dancer `person` (1-based) in every frame (None where not seen), frames
    uint8 [T,H,W,3]. `start_index`: the frame of `frames` that shows the counting frame."""
    n = len(frames)
    h, w = frames.shape[1:3]
    sx, sy = w / dancers.frame.shape[1], h / dancers.frame.shape[0]
    frame = frames[start_index]
    body = WholeBodyByRoi(body_only=True)
    starts = []
    try:
        for (x0, y0, x1, y1), r in zip(dancers.boxes, dancers.rois):
            box = (x0 * sx, y0 * sy, x1 * sx, y1 * sy)
            roi = Roi(r.cx * sx, r.cy * sy, r.size * max(sx, sy), r.rotation)
            kp, nxt = body(frame, roi)
            look = torso_look(frame, kp) if kp is not None else None
            starts.append(_Start(nxt if nxt is not None else roi, look, box))
    finally:
        body.close()
    looks = [s.look for s in starts]
    chosen = person - 1
    if looks[chosen] is None:
        raise InputError(f"dancer {person}'s body is not clearly visible on the frame where the dancers are counted "
                         f"({dancers.time:.1f} s); choose another dancer")
    out: list = [None] * n
    stop = threading.Event()
    errors: list = []
    roi = starts[chosen].roi
    # (frames, region on the first one): forwards and backwards from the counting frame; a long
    # forward part is cut in two, the second half finding the dancer by its look first, so both
    # cores work; frames it does not find the dancer in before it does are then followed on from
    # where the first half ended, as one pass would have
    parts = [(range(start_index, n), roi), (range(start_index - 1, -1, -1), roi)]
    if n - start_index >= 2 * SPLIT_MIN_FRAMES and workers() > 1:
        mid = start_index + (n - start_index) // 2
        parts[0:1] = [(range(start_index, mid), roi), (range(mid, n), None)]
    followers = [_Follower(first, roi, chosen, looks) for _, first in parts]
    done = [0] * len(parts)

    def run(slot, order):
        try:
            for i in order:
                if stop.is_set():
                    return
                out[i] = followers[slot].step(frames[i])
                done[slot] += 1
        except BaseException as err:  # noqa: BLE001 - handed to the caller's thread
            errors.append(err)
            stop.set()

    threads = [threading.Thread(target=run, args=(k, order), daemon=True) for k, (order, _) in enumerate(parts) if len(order)]
    try:
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads):
            next((t for t in threads if t.is_alive()), threads[0]).join(0.1)
            if progress is not None and progress(sum(done), n) is False:
                stop.set()
                raise Cancelled("motion extraction stopped by the user")
        for t in threads:
            t.join()
        if len(parts) == 3 and not errors and followers[0].roi is not None:
            second = parts[1][0]
            for i in second:
                if out[i] is not None:
                    break
                out[i] = followers[0].step(frames[i])
    finally:
        stop.set()
        for t in threads:
            t.join()
        for f in followers:
            f.close()
    if errors:
        raise errors[0]
    return out


def follow_among(frames: np.ndarray, per_frame: Sequence[Sequence[Keypoints]], dancers: Dancers, person: int,
                 start_index: int) -> list:
    """`follow_dancer` for estimators that find everybody in every frame (DWPose): on the counting
    frame each dancer is the found person whose body box overlaps its box most; then, frame by
    frame forwards and backwards, the chosen dancer is the person who looks like it (see
    `_is_dancer`), the nearest to where it was last seen when several do."""
    h, w = frames.shape[1:3]
    sx, sy = w / dancers.frame.shape[1], h / dancers.frame.shape[0]
    start_people = list(per_frame[start_index])
    looks = []
    chosen_kp = None
    for k, (x0, y0, x1, y1) in enumerate(dancers.boxes):
        box = (x0 * sx, y0 * sy, x1 * sx, y1 * sy)
        best = max(start_people, key=lambda p: box_iou(_body_box(p, h, w) or (0, 0, 0, 0), box), default=None)
        if best is None or box_iou(_body_box(best, h, w) or (0, 0, 0, 0), box) < 0.2:
            looks.append(None)
            continue
        looks.append(torso_look(frames[start_index], best))
        if k == person - 1:
            chosen_kp = best
    chosen = person - 1
    if chosen_kp is None or looks[chosen] is None:
        raise InputError(f"dancer {person}'s body is not clearly visible on the frame where the dancers are counted "
                         f"({dancers.time:.1f} s); choose another dancer")
    out: list = [None] * len(frames)
    out[start_index] = chosen_kp
    for order in (range(start_index + 1, len(frames)), range(start_index - 1, -1, -1)):
        last = chosen_kp.bbox(MIN_CONFIDENCE, "body")
        for i in order:
            cands = [p for p in per_frame[i] if _is_dancer(torso_look(frames[i], p), chosen, looks)]
            if not cands:
                continue

            def dist(p):
                b = p.bbox(MIN_CONFIDENCE, "body")
                return math.hypot((b[0] + b[2] - last[0] - last[2]) / 2, (b[1] + b[3] - last[1] - last[3]) / 2)

            best = min(cands, key=dist)
            out[i] = best
            last = best.bbox(MIN_CONFIDENCE, "body")
    return out


def workers() -> int:
    """Threads for per-frame work: the machine's cores, at most 2 (mediapipe graphs use threads of
    their own)."""
    return max(1, min(2, os.cpu_count() or 1))
