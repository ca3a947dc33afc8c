"""Person masks for the paper's foreground / background split.

The paper segments people with Segment Anything; that needs prompts and large weights,
so the default here is MediaPipe's selfie segmentation (the model ships in the mediapipe
wheel; offline), run on the *reference* (ground-truth) frames. The same mask is applied
to the generated and the reference frame, so both sides are compared on the same pixels.

Better masks, when you have them (SAM, the TikTok dataset's own `masks/`), are used
instead when given per video: a mask video `<stem>.mp4` (any format `read_video` reads)
or a folder `<stem>/` of mask images, white = person. They are resized to the frame
size with nearest-neighbour sampling and thresholded at 50%.

Foreground frames keep the person and set the rest to black; background frames black out
the person. Metrics on masked frames are the usual ones computed on those frames (as in
DisCo's foreground evaluation); the black area is identical in both clips.
"""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["PersonSegmenter", "apply_region", "resize_masks"]


class PersonSegmenter:
    """MediaPipe selfie segmentation: `__call__(frames [T,H,W,3]) -> bool masks [T,H,W]`."""

    name = "mediapipe selfie segmentation (general model)"

    def __init__(self, threshold: float = 0.5):
        import mediapipe as mp  # heavy: only the region metrics load MediaPipe

        self.threshold = threshold
        self._seg = mp.solutions.selfie_segmentation.SelfieSegmentation(model_selection=0)

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        out = np.zeros(frames.shape[:3], dtype=bool)
        for i, frame in enumerate(frames):
            prob = self._seg.process(np.ascontiguousarray(frame)).segmentation_mask
            out[i] = prob >= self.threshold
        return out

    def close(self):
        self._seg.close()


def resize_masks(masks: np.ndarray, height: int, width: int) -> np.ndarray:
    """Masks [T,h,w] or [T,h,w,C] (bool or 0..255) -> bool [T,height,width] (nearest, >= 50%)."""

    m = np.asarray(masks)
    if m.ndim == 4:
        m = m.max(axis=-1)
    if m.dtype == bool:
        m = m.astype(np.uint8) * 255
    if m.shape[1:] != (height, width):
        m = np.stack([cv2.resize(x, (width, height), interpolation=cv2.INTER_NEAREST) for x in m.astype(np.uint8)])
    return m >= 128


def apply_region(frames: np.ndarray, masks: np.ndarray, region: str) -> np.ndarray:
    """Keep the person ('fg') or the rest ('bg'); other pixels become black."""
    keep = masks if region == "fg" else ~masks
    return frames * keep[..., None].astype(frames.dtype)
