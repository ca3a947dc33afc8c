"""Embedded, offline pose estimator: mediapipe 0.10.21 legacy Holistic, mapped to our format.

Holistic runs BlazePose (33 body landmarks, the "full" model that ships in the wheel: model
complexity 1; the lite/heavy models would need a download), the hand landmark model on crops
around both wrists and Face Mesh (468 points) on the face crop, in one graph. In video mode it
tracks (re-detects only when tracking is lost), which is what makes it fast enough (>= 10 frames/s
at 512 px wide on 2 CPU cores). It sees ONE person per frame (the most prominent); several people
need the DWPose estimator.

Mapping to ``Keypoints``:
- body: OpenPose-18 from BlazePose-33 (``POSE33_TO_BODY18``), neck = mid-point of the shoulders;
  confidence = BlazePose visibility (neck: the smaller shoulder visibility). Points outside the
  frame keep their (extrapolated) position; their visibility is usually low.
- hands: Holistic's left/right hands are the person's left/right (they come from the pose wrists),
  21 points in the standard order; confidence 1 for a tracked hand (the solution gives no score).
- face: 468 mesh points → iBUG-68 with ``MESH_TO_68`` (mean of one or two mesh points per iBUG
  point; a left/right symmetric table built from the mesh topology, cf. the commonly used
  mediapipe→dlib correspondences); confidence 1 when a face mesh was found.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import threading
import time
from dataclasses import dataclass

import cv2
import numpy as np
import skimage.data

from .pose import BODY, Keypoints, check_image

# BlazePose index per OpenPose-18 joint (neck is computed).
POSE33_TO_BODY18 = {
    "nose": 0, "r_shoulder": 12, "r_elbow": 14, "r_wrist": 16, "l_shoulder": 11, "l_elbow": 13, "l_wrist": 15,
    "r_hip": 24, "r_knee": 26, "r_ankle": 28, "l_hip": 23, "l_knee": 25, "l_ankle": 27,
    "r_eye": 5, "l_eye": 2, "r_ear": 8, "l_ear": 7,
}

# Face-mesh indices per iBUG-68 point (0-based iBUG order; mean when two). Person's right = image left.
MESH_TO_68 = (
    # jaw 0-16, from the right temple round the chin to the left temple
    (127,), (234,), (93,), (132, 58), (58, 172), (136,), (150,), (176,), (152,),
    (400,), (379,), (365,), (397, 288), (288, 361), (323,), (454,), (356,),
    # right brow 17-21, left brow 22-26
    (70,), (63,), (105,), (66,), (107,), (336,), (296,), (334,), (293,), (300,),
    # nose bridge 27-30, nostrils 31-35
    (168,), (197,), (5,), (4,), (75,), (97,), (2,), (326,), (305,),
    # right eye 36-41 (outer corner, upper lid, inner corner, lower lid), left eye 42-47
    (33,), (160,), (158,), (133,), (153,), (144,), (362,), (385,), (387,), (263,), (373,), (380,),
    # outer lips 48-59 (right corner, upper lip, left corner, lower lip)
    (61,), (39,), (37,), (0,), (267,), (269,), (291,), (405,), (314,), (17,), (84,), (181,),
    # inner lips 60-67
    (78,), (82,), (13,), (312,), (308,), (317,), (14,), (87,),
)
assert len(MESH_TO_68) == 68


_MESH_A = np.array([ix[0] for ix in MESH_TO_68])
_MESH_B = np.array([ix[-1] for ix in MESH_TO_68])  # the same point where there is one


def mesh_to_68(mesh_xy: np.ndarray) -> np.ndarray:
    """[468+, 2] mesh points → [68, 2] iBUG-68 points."""
    mesh_xy = np.asarray(mesh_xy, np.float32)
    return (mesh_xy[_MESH_A] + mesh_xy[_MESH_B]) * np.float32(0.5)


_SILENCE_LOCK = threading.Lock()
_silenced = {"depth": 0, "saved": None}


@contextlib.contextmanager
def _native_logs_silenced():
    """MediaPipe's C++ (absl) logging writes "W0000 ..." lines straight to file descriptor 2 while
    a graph starts and runs its first frame; GLOG_minloglevel does not reach it. Send descriptor 2
    to /dev/null for that moment only, so the CLI and the server log stay readable. Graphs start
    on several threads at once: the first one in redirects, the last one out restores."""
    with _SILENCE_LOCK:
        if _silenced["depth"] == 0:
            sys.stderr.flush()
            saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 2)
            os.close(devnull)
            _silenced["saved"] = saved
        _silenced["depth"] += 1
    try:
        yield
    finally:
        with _SILENCE_LOCK:
            _silenced["depth"] -= 1
            if _silenced["depth"] == 0:
                os.dup2(_silenced["saved"], 2)
                os.close(_silenced["saved"])
                _silenced["saved"] = None


def _quiet_mediapipe():
    # glog / TFLite chatter on stderr at graph creation is noise for users.
    os.environ.setdefault("GLOG_minloglevel", "2")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import mediapipe as mp  # heavy: loaded only when the embedded estimator runs

    return mp


def _landmarks_xy(lms, w, h):
    return np.array([(p.x, p.y) for p in lms.landmark], np.float32) * np.array([w, h], np.float32)


def holistic_to_keypoints(result, width: int, height: int, scale: float = 1.0) -> Keypoints | None:
    """Convert a Holistic result (normalised coordinates) to Keypoints in pixels of the image
    whose size was (width, height) × (1/scale)."""
    if result.pose_landmarks is None and result.face_landmarks is None:
        return None
    kp = Keypoints()
    w, h = width / scale, height / scale
    if result.pose_landmarks is not None:
        lm = result.pose_landmarks.landmark
        for name, i in POSE33_TO_BODY18.items():
            kp.body[BODY[name]] = (lm[i].x * w, lm[i].y * h, np.clip(lm[i].visibility, 0, 1))
        ls, rs = kp.body[BODY["l_shoulder"]], kp.body[BODY["r_shoulder"]]
        kp.body[BODY["neck"]] = ((ls[0] + rs[0]) / 2, (ls[1] + rs[1]) / 2, min(ls[2], rs[2]))
    for side, lms in ((0, result.left_hand_landmarks), (1, result.right_hand_landmarks)):
        if lms is not None:
            kp.hands[side, :, :2] = _landmarks_xy(lms, w, h)
            kp.hands[side, :, 2] = 1.0
    if result.face_landmarks is not None:
        kp.face[:, :2] = mesh_to_68(_landmarks_xy(result.face_landmarks, w, h))
        kp.face[:, 2] = 1.0
    return kp


def _analysis_image(image_rgb, max_side):
    h, w = image_rgb.shape[:2]
    s = 1.0
    if max_side and max(h, w) > max_side:
        s = max_side / max(h, w)
        image_rgb = cv2.resize(image_rgb, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
    return image_rgb, s


class MediaPipeEstimator:
    """``PoseEstimator`` on mediapipe Holistic. Call ``reset()`` before each new clip or photo.

    Args:
        static_image_mode: False = tracking across consecutive frames (videos, fast);
            True = full detection on every call (unrelated photos).
        max_side: frames larger than this are downscaled for analysis (coordinates are returned
            in the input's pixels).
        min_detection_confidence / min_tracking_confidence: mediapipe thresholds.
        smooth_landmarks: mediapipe's own temporal filter (video mode only).
    """

    def __init__(self, static_image_mode: bool = False, max_side: int = 1024, min_detection_confidence: float = 0.5,
                 min_tracking_confidence: float = 0.5, smooth_landmarks: bool = True):
        self.kw = dict(static_image_mode=static_image_mode, model_complexity=1, smooth_landmarks=smooth_landmarks,
                       refine_face_landmarks=False, min_detection_confidence=min_detection_confidence,
                       min_tracking_confidence=min_tracking_confidence)
        self.max_side = max_side
        self._graph = None

    def _process(self, img):
        if self._graph is not None:
            return self._graph.process(img)
        with _native_logs_silenced():  # start-up chatter of a new graph
            self._graph = _quiet_mediapipe().solutions.holistic.Holistic(**self.kw)
            return self._graph.process(img)

    def reset(self):
        if self._graph is not None:
            self._graph.close()
            self._graph = None

    def close(self):
        self.reset()

    def __call__(self, image_rgb: np.ndarray) -> list[Keypoints]:
        img, s = _analysis_image(check_image(image_rgb), self.max_side)
        res = self._process(img)
        kp = holistic_to_keypoints(res, img.shape[1], img.shape[0], s)
        return [] if kp is None else [kp]


class MediaPipeFace:
    """Face Mesh alone → [68, 3] iBUG landmarks of the biggest face, or None."""

    def __init__(self, static_image_mode: bool = True, max_num_faces: int = 4, min_detection_confidence: float = 0.5,
                 max_side: int = 1024):
        self.kw = dict(static_image_mode=static_image_mode, max_num_faces=max_num_faces, refine_landmarks=False,
                       min_detection_confidence=min_detection_confidence)
        self.max_side = max_side
        self._graph = None

    def reset(self):
        if self._graph is not None:
            self._graph.close()
            self._graph = None

    def __call__(self, image_rgb: np.ndarray):
        img, s = _analysis_image(check_image(image_rgb), self.max_side)
        if self._graph is None:
            with _native_logs_silenced():  # start-up chatter of a new graph
                self._graph = _quiet_mediapipe().solutions.face_mesh.FaceMesh(**self.kw)
                res = self._graph.process(img)
        else:
            res = self._graph.process(img)
        if not res.multi_face_landmarks:
            return None
        h, w = img.shape[0] / s, img.shape[1] / s
        faces = [mesh_to_68(_landmarks_xy(f, w, h)) for f in res.multi_face_landmarks]
        f = max(faces, key=lambda p: np.ptp(p[:, 0]) * np.ptp(p[:, 1]))
        return np.concatenate([f, np.ones((68, 1), np.float32)], 1)


# ---- several people: the BlazePose person detector and the whole-body models on one person ------
#
# Holistic follows whoever its own detector finds first. To follow a chosen person among several,
# the same models run as two small graphs of mediapipe's registered subgraphs:
# - PoseDetectionCpu (pose_detection.tflite): every person it sees, as the hip centre and a point
#   above the head (the BlazePose detector's alignment keypoints 0 and 1);
# - PoseLandmarkByRoiCpu + HandLandmarksLeftAndRightCpu + FaceLandmarksFromPoseCpu: Holistic's
#   body, hands and face models on the region of interest we give (one person), which also
#   returns the region for the next frame (PoseLandmarksToRoi), so we track the person ourselves.

_DETECTOR_GRAPH = """
input_stream: "image"
output_stream: "detections"
node { calculator: "PoseDetectionCpu" input_stream: "IMAGE:image" output_stream: "DETECTIONS:detections" }
"""

_WHOLE_BODY_GRAPH = """
input_stream: "image"
input_stream: "roi"
output_stream: "pose_landmarks"
output_stream: "next_roi"
output_stream: "left_hand_landmarks"
output_stream: "right_hand_landmarks"
output_stream: "face_landmarks"
node { calculator: "ImagePropertiesCalculator" input_stream: "IMAGE_CPU:image" output_stream: "SIZE:image_size" }
node { calculator: "PoseLandmarkByRoiCpu" input_stream: "IMAGE:image" input_stream: "ROI:roi"
  output_stream: "LANDMARKS:pose_landmarks" output_stream: "AUXILIARY_LANDMARKS:aux_landmarks"
  input_side_packet: "MODEL_COMPLEXITY:model_complexity" input_side_packet: "ENABLE_SEGMENTATION:enable_segmentation" }
node { calculator: "PoseLandmarksToRoi" input_stream: "LANDMARKS:aux_landmarks" input_stream: "IMAGE_SIZE:image_size"
  output_stream: "ROI:next_roi" }
node { calculator: "HandLandmarksLeftAndRightCpu" input_stream: "IMAGE:image" input_stream: "POSE_LANDMARKS:pose_landmarks"
  output_stream: "LEFT_HAND_LANDMARKS:left_hand_landmarks" output_stream: "RIGHT_HAND_LANDMARKS:right_hand_landmarks" }
node { calculator: "SplitNormalizedLandmarkListCalculator" input_stream: "pose_landmarks" output_stream: "face_from_pose"
  options { [mediapipe.SplitVectorCalculatorOptions.ext] { ranges { begin: 0 end: 11 } } } }
node { calculator: "FaceLandmarksFromPoseCpu" input_stream: "IMAGE:image" input_stream: "FACE_LANDMARKS_FROM_POSE:face_from_pose"
  output_stream: "FACE_LANDMARKS:face_landmarks" input_side_packet: "REFINE_LANDMARKS:refine_face_landmarks" }
"""


def _solution(graph: str, outputs: list, side_inputs=None):
    _quiet_mediapipe()
    from google.protobuf import text_format
    from mediapipe.framework import calculator_pb2
    from mediapipe.python.solution_base import SolutionBase

    config = text_format.Parse(graph, calculator_pb2.CalculatorGraphConfig())
    return SolutionBase(graph_config=config, side_inputs=side_inputs, outputs=outputs)


@dataclass(frozen=True)
class Roi:
    """A square region around one person, in pixels: centre, side, rotation (radians, as mediapipe's
    NormalizedRect: the angle that turns the person upright)."""

    cx: float
    cy: float
    size: float
    rotation: float = 0.0

    def box(self) -> tuple:
        h = self.size / 2
        return self.cx - h, self.cy - h, self.cx + h, self.cy + h


@dataclass(frozen=True)
class PersonDetection:
    """One person found by the BlazePose detector, in pixels: `hip` (mid-hip centre) and `top`
    (a point above the head; |top - hip| is about half the body height); `score` in 0..1."""

    hip: tuple
    top: tuple
    score: float

    @property
    def radius(self) -> float:
        return float(math.hypot(self.top[0] - self.hip[0], self.top[1] - self.hip[1]))

    def roi(self) -> Roi:
        """The region mediapipe's PoseDetectionToRoi makes of it (2x the radius, scaled 1.25)."""
        dx, dy = self.top[0] - self.hip[0], self.top[1] - self.hip[1]
        rotation = math.pi / 2 - math.atan2(-dy, dx)
        rotation = rotation - 2 * math.pi * math.floor((rotation + math.pi) / (2 * math.pi))
        return Roi(self.hip[0], self.hip[1], 2.5 * self.radius, rotation)

    def box(self) -> tuple:
        """A rough body box (head top to feet, shoulder width), for display and matching."""
        r = self.radius
        return self.hip[0] - 0.5 * r, self.hip[1] - 1.1 * r, self.hip[0] + 0.5 * r, self.hip[1] + r


class PersonDetector:
    """Every person in an image (BlazePose detector). The detector sees a 224×224 letterboxed
    copy, so people that fill only a small part of the frame are missed: `tiles` = k also runs it
    on overlapping squares of the frame (sides: the frame's shorter side, its half, ... k sizes;
    stride half a square) and merges what they find."""

    def __init__(self):
        self._graph = None

    def _detect(self, img: np.ndarray, x0: int = 0, y0: int = 0) -> list:
        if self._graph is None:
            with _native_logs_silenced():  # start-up and first-frame chatter
                self._graph = _solution(_DETECTOR_GRAPH, ["detections"])
                res = self._graph.process({"image": img})
        else:
            res = self._graph.process({"image": img})
        h, w = img.shape[:2]
        out = []
        for d in res.detections or []:
            k = d.location_data.relative_keypoints
            out.append(PersonDetection((k[0].x * w + x0, k[0].y * h + y0), (k[1].x * w + x0, k[1].y * h + y0),
                                       float(d.score[0])))
        return out

    def __call__(self, image_rgb: np.ndarray, tiles: int = 0) -> list:
        img = check_image(image_rgb)
        found = self._detect(img)
        h, w = img.shape[:2]
        for side in [min(h, w) // 2 ** k for k in range(tiles)]:
            if side < 96:
                break
            xs = sorted(set(list(range(0, w - side + 1, side // 2)) + [w - side]))
            ys = sorted(set(list(range(0, h - side + 1, side // 2)) + [h - side]))
            if len(xs) * len(ys) == 1:
                continue  # the whole frame again
            for y in ys:
                for x in xs:
                    found += self._detect(np.ascontiguousarray(img[y:y + side, x:x + side]), x, y)
        return merge_detections(found)

    def close(self):
        if self._graph is not None:
            self._graph.close()
            self._graph = None

    reset = close


@dataclass
class _BodyOnlyResult:
    pose_landmarks: object
    next_roi: object = None
    left_hand_landmarks: object = None
    right_hand_landmarks: object = None
    face_landmarks: object = None


def merge_detections(found: list) -> list:
    """One detection per person: detections whose hip centres lie within 0.4 radius of a better
    one are the same person (tiles overlap), and so are ones with nearly the same head point."""
    kept = []
    for d in sorted(found, key=lambda d: -d.score):
        same = False
        for k in kept:
            r = max(min(k.radius, d.radius), 1.0)
            if (math.hypot(d.hip[0] - k.hip[0], d.hip[1] - k.hip[1]) < 0.4 * r
                    or math.hypot(d.top[0] - k.top[0], d.top[1] - k.top[1]) < 0.25 * r):
                same = True
                break
        if not same and d.radius > 4:
            kept.append(d)
    return kept


_BODY_GRAPH = """
input_stream: "image"
input_stream: "roi"
output_stream: "pose_landmarks"
output_stream: "next_roi"
node { calculator: "ImagePropertiesCalculator" input_stream: "IMAGE_CPU:image" output_stream: "SIZE:image_size" }
node { calculator: "PoseLandmarkByRoiCpu" input_stream: "IMAGE:image" input_stream: "ROI:roi"
  output_stream: "LANDMARKS:pose_landmarks" output_stream: "AUXILIARY_LANDMARKS:aux_landmarks"
  input_side_packet: "MODEL_COMPLEXITY:model_complexity" input_side_packet: "ENABLE_SEGMENTATION:enable_segmentation" }
node { calculator: "PoseLandmarksToRoi" input_stream: "LANDMARKS:aux_landmarks" input_stream: "IMAGE_SIZE:image_size"
  output_stream: "ROI:next_roi" }
"""


class WholeBodyByRoi:
    """Holistic's body, hand and face models on one person given by a `Roi` (full-frame pixels).
    `__call__(image, roi) -> (Keypoints or None, next Roi or None)`: None when the body model finds
    no person in the region; the next region is where the person will be tracked in the next frame.
    body_only=True runs the body model alone (a third of the cost: checking who is where)."""

    def __init__(self, body_only: bool = False):
        self.body_only = body_only
        self._graph = None

    def __call__(self, image_rgb: np.ndarray, roi: Roi):
        from mediapipe.framework.formats import rect_pb2

        img = check_image(image_rgb)
        h, w = img.shape[:2]
        rect = rect_pb2.NormalizedRect(x_center=roi.cx / w, y_center=roi.cy / h, width=roi.size / w,
                                       height=roi.size / h, rotation=roi.rotation)
        if self._graph is not None:
            res = self._graph.process({"image": img, "roi": rect})
        else:
            with _native_logs_silenced():  # start-up and first-frame chatter
                if self.body_only:
                    self._graph = _solution(_BODY_GRAPH, ["pose_landmarks", "next_roi"],
                                            {"model_complexity": 1, "enable_segmentation": False})
                else:
                    self._graph = _solution(_WHOLE_BODY_GRAPH, ["pose_landmarks", "next_roi", "left_hand_landmarks",
                                                                "right_hand_landmarks", "face_landmarks"],
                                            {"model_complexity": 1, "enable_segmentation": False,
                                             "refine_face_landmarks": False})
                res = self._graph.process({"image": img, "roi": rect})
        if res.pose_landmarks is None:
            return None, None
        if self.body_only:
            res = _BodyOnlyResult(res.pose_landmarks, res.next_roi)
        kp = holistic_to_keypoints(res, w, h)
        nr = res.next_roi
        nxt = None if nr is None else Roi(nr.x_center * w, nr.y_center * h, max(nr.width * w, nr.height * h), nr.rotation)
        return kp, nxt

    def close(self):
        if self._graph is not None:
            self._graph.close()
            self._graph = None

    reset = close


def benchmark(frames: int = 60, width: int = 512, height: int = 896) -> dict:
    """Frames per second of the embedded estimator in video mode on a clip made by moving the
    scikit-image astronaut photo (pan/zoom/rotation) on a width×height canvas; graph creation and
    the first (detection) frame are excluded. ``python -m xdyna_core.preprocess.mediapipe_estimator``."""

    photo = skimage.data.astronaut()
    s = width / photo.shape[1]
    photo = cv2.resize(photo, (width, round(photo.shape[0] * s)), interpolation=cv2.INTER_AREA)
    canvas = np.zeros((height, width, 3), np.uint8)
    top = (height - photo.shape[0]) // 2
    canvas[top:top + photo.shape[0]] = photo
    clip = []
    for t in range(frames + 1):
        M = cv2.getRotationMatrix2D((width / 2, height / 2), 5 * np.sin(t / 5), 1.0 + 0.1 * np.sin(t / 7))
        M[:, 2] += (15 * np.sin(t / 4), 10 * np.cos(t / 6))
        clip.append(cv2.warpAffine(canvas, M, (width, height)))
    est = MediaPipeEstimator(static_image_mode=False)
    est(clip[0])
    t0, c0 = time.perf_counter(), time.process_time()
    found = sum(bool(est(f)) for f in clip[1:])
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    est.close()
    # cpu_s_per_frame: CPU seconds (all threads) per frame, a load-independent cost measure
    return {"frames": frames, "size": f"{width}x{height}", "fps": round(frames / dt, 1), "found": found,
            "cpu_s_per_frame": round(cpu / frames, 4), "cpu_count": os.cpu_count()}


if __name__ == "__main__":
    print(benchmark())
