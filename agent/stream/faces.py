"""Faces: 5-point alignment to the standard 112x112 template, and the quality gates a face crop
must pass before it is embedded (size, sharpness, how far the head is turned)."""

from __future__ import annotations

import cv2
import numpy as np

# ArcFace / InsightFace template for a 112x112 crop: the eye on the image's left, the eye on
# the image's right, the nose tip, the left and the right mouth corner.
TEMPLATE_112 = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    np.float32,
)
SIDE = 112


def alignment(landmarks: np.ndarray) -> np.ndarray | None:
    """The 2x3 similarity transform (rotation, uniform scale, shift) taking the five landmarks
    (frame pixels) onto the template, or None for degenerate points. Fitted robustly (RANSAC,
    3 px in the template, then least squares on the points that agree), so that points off the
    template's neutral face (a smile moves the mouth corners) do not pull the eyes away."""
    src = np.asarray(landmarks, np.float32).reshape(5, 2)
    matrix, _ = cv2.estimateAffinePartial2D(src, TEMPLATE_112, method=cv2.RANSAC,
                                            ransacReprojThreshold=3.0)  # fmt: skip
    return matrix


def align(frame: np.ndarray, landmarks: np.ndarray) -> np.ndarray | None:
    """The 112x112 face crop whose landmarks sit on the template (None: cannot be aligned)."""
    matrix = alignment(landmarks)
    if matrix is None:
        return None
    return cv2.warpAffine(frame, matrix, (SIDE, SIDE), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)  # fmt: skip


def sharpness(face: np.ndarray) -> float:
    """Variance of the Laplacian of the grey crop: low for blurred faces."""
    grey = cv2.cvtColor(face, cv2.COLOR_BGR2GRAY) if face.ndim == 3 else face
    return float(cv2.Laplacian(grey, cv2.CV_64F).var())


def yaw(landmarks: np.ndarray) -> float:
    """How far the head is turned, from the landmarks: the nose tip's offset from the middle of
    the eyes, over half the distance between the eyes (0 frontal, about +-1 in profile)."""
    points = np.asarray(landmarks, np.float64).reshape(5, 2)
    left, right, nose = points[0], points[1], points[2]
    axis = right - left
    half = float(np.linalg.norm(axis)) / 2
    if half < 1e-6:
        return 1.0
    along = float(np.dot(nose - (left + right) / 2, axis / (2 * half)))
    return along / half
