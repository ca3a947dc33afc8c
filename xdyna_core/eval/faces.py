"""Face-Det and Face-Cos.

- Face detection: MediaPipe's BlazeFace short+full-range detector from the legacy
  `mp.solutions.face_detection` API (the model ships inside the mediapipe wheel, so it
  works offline). `model_selection=1` is the full-range model (faces up to ~5 m), which
  suits full-body dance videos; a face counts when its score is >= 0.5.
- Face alignment: the detector's eye, nose-tip and mouth-centre keypoints are mapped by a
  similarity transform onto the standard ArcFace 112x112 template (eyes, nose, and the
  midpoint of its two mouth corners).
- Face identity: any ONNX face-recognition network taking [N, 3, 112, 112] RGB in
  [-1, 1] and returning an embedding. The default is insightface's ArcFace IResNet-50
  trained on WebFace600K (`w600k_r50.onnx` of the buffalo_l pack), run with onnxruntime.
  The paper used AdaFace IR-101; AdaFace's weights ship only as a PyTorch-Lightning
  pickle, which this project does not unpickle, so ArcFace is the strongest
  face-recognition model with a safe loading path. Numbers are therefore comparable
  between runs of this tool, not to the paper's column digit for digit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import cv2
import numpy as np

from xdyna_core.errors import MissingWeightsError
from xdyna_core.eval.weights import resolve_weights

__all__ = ["Face", "FaceDetector", "OnnxFaceEmbedder", "align_face", "ARCFACE_TEMPLATE", "load_face_embedder"]

# insightface's 5-point template for 112x112 crops: left eye, right eye (as seen in the
# image), nose tip, left and right mouth corners.
ARCFACE_TEMPLATE = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]], dtype=np.float32
)


@dataclass
class Face:
    score: float
    box: tuple  # x0, y0, x1, y1 in pixels
    keypoints: np.ndarray  # [6, 2] pixels: right eye, left eye, nose tip, mouth centre, right ear, left ear (subject's sides)


class FaceDetector:
    """MediaPipe face detection; `detect(frame)` returns faces sorted by score."""

    def __init__(self, min_confidence: float = 0.5, full_range: bool = True):
        import mediapipe as mp  # heavy: only the face metrics load MediaPipe

        self.min_confidence = min_confidence
        self._det = mp.solutions.face_detection.FaceDetection(model_selection=1 if full_range else 0, min_detection_confidence=min_confidence)

    def detect(self, frame: np.ndarray) -> list:
        h, w = frame.shape[:2]
        result = self._det.process(np.ascontiguousarray(frame))
        faces = []
        for det in result.detections or []:
            box = det.location_data.relative_bounding_box
            kps = np.array([[k.x * w, k.y * h] for k in det.location_data.relative_keypoints], dtype=np.float32)
            x0, y0 = box.xmin * w, box.ymin * h
            faces.append(Face(float(det.score[0]), (x0, y0, x0 + box.width * w, y0 + box.height * h), kps))
        return sorted(faces, key=lambda f: -f.score)

    def close(self):
        self._det.close()


def align_face(frame: np.ndarray, face: Face, size: int = 112) -> np.ndarray:
    """Crop `face` to the ArcFace template: uint8 [size, size, 3]."""

    src = face.keypoints[:4]  # subject's right eye is on the image's left
    dst = np.concatenate([ARCFACE_TEMPLATE[:3], ARCFACE_TEMPLATE[3:].mean(axis=0, keepdims=True)]) * (size / 112.0)
    matrix, _ = cv2.estimateAffinePartial2D(src, dst, method=cv2.LMEDS)
    if matrix is None:  # degenerate keypoints: fall back to the box
        x0, y0, x1, y1 = face.box
        scale = size / max(x1 - x0, y1 - y0, 1.0)
        matrix = np.array([[scale, 0, -x0 * scale], [0, scale, -y0 * scale]], dtype=np.float32)
    return cv2.warpAffine(frame, matrix, (size, size), borderValue=0)


class OnnxFaceEmbedder:
    """Face-recognition embeddings from an ONNX model (ArcFace layout: [N,3,112,112] RGB
    scaled to [-1, 1] -> [N, D]); embeddings are L2-normalised."""

    def __init__(self, path, providers: Optional[list] = None):
        import onnxruntime as ort  # heavy: only the face-identity metric loads ONNX Runtime

        self.path = str(path)
        if providers is None:
            providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in ort.get_available_providers()]
        try:
            self.session = ort.InferenceSession(self.path, providers=providers)
        except Exception as err:  # onnxruntime raises its own types for bad files
            raise MissingWeightsError(f"{self.path} is not a usable ONNX face-recognition model ({err}); replace it with w600k_r50.onnx") from err
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.input_size = int(inp.shape[2]) if isinstance(inp.shape[2], int) else 112

    def embed(self, crops: np.ndarray) -> np.ndarray:
        """uint8 [N, S, S, 3] aligned faces -> unit vectors [N, D] (float64)."""
        if len(crops) == 0:
            return np.zeros((0, 0))
        x = (np.asarray(crops, dtype=np.float32) - 127.5) / 127.5
        out = self.session.run(None, {self.input_name: np.ascontiguousarray(x.transpose(0, 3, 1, 2))})[0]
        out = out.reshape(len(crops), -1).astype(np.float64)
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


def load_face_embedder(weights_dir=None, path=None, download=False) -> OnnxFaceEmbedder:
    return OnnxFaceEmbedder(resolve_weights("arcface-r50", weights_dir, path, download))


def face_embeddings(frames: np.ndarray, detector: FaceDetector, embedder: Optional[OnnxFaceEmbedder]) -> tuple:
    """Detect the best face of each frame and embed it.

    Returns (found [T] bool, embeddings [T, D] with NaN rows where no face, or None
    without an embedder).
    """
    faces = [detector.detect(f) for f in frames]
    found = np.array([len(f) > 0 for f in faces], dtype=bool)
    if embedder is None:
        return found, None
    crops = [align_face(fr, fs[0], embedder.input_size) for fr, fs in zip(frames, faces) if fs]
    emb = embedder.embed(np.stack(crops)) if crops else np.zeros((0, 1))
    out = np.full((len(frames), emb.shape[1]), np.nan)
    out[found] = emb
    return found, out


def cosine_per_frame(emb_a: np.ndarray, emb_b: np.ndarray) -> np.ndarray:
    """Cosine similarity of unit embeddings frame by frame; NaN where either side has no face."""
    return np.sum(emb_a * emb_b, axis=1)

