"""Landmark sets and conversions: iBUG 68 points, dlib's 5 points and the ArcFace five-point order (left eye,
right eye, nose tip, left mouth corner, right mouth corner; "left" = the viewer's left)."""

from __future__ import annotations

import numpy as np

# 68-point (iBUG / dlib) indices the FFHQ recipe reads.
LEFT_EYE_68, RIGHT_EYE_68, MOUTH_CORNERS_68 = slice(36, 42), slice(42, 48), (48, 54)
# ArcFace's 5 points on dlib's mean face (interpolation.h, get_face_chip_details: mean positions of the 68
# points 17-67 in [0, 1] face units): eye centres = mean of points 36-41 / 42-47, nose tip 30, mouth 48 / 54.
DLIB_MEAN_FACE_ARCFACE5 = np.array([[0.2254918, 0.2159903], [0.7547613, 0.2159903], [0.490127, 0.515625],
                                    [0.254149, 0.780233], [0.726104, 0.780233]])


def five_points(landmarks: np.ndarray) -> np.ndarray:
    """ArcFace-order five points from ... x 5 x 2 (returned as is) or iBUG 68-point landmarks (eye centres,
    nose tip 30, mouth corners 48 / 54)."""
    landmarks = np.asarray(landmarks, np.float64)
    if landmarks.shape[-2] == 5:
        return landmarks
    if landmarks.shape[-2] != 68:
        raise ValueError(f"landmarks must be ... x 5 x 2 or ... x 68 x 2, got {landmarks.shape}")
    return np.stack([landmarks[..., LEFT_EYE_68, :].mean(-2), landmarks[..., RIGHT_EYE_68, :].mean(-2),
                     landmarks[..., 30, :], landmarks[..., 48, :], landmarks[..., 54, :]], -2)


def landmarks68_to_arcface(points: np.ndarray) -> np.ndarray:
    """N x 68 x 2 iBUG points -> N x 5 x 2 ArcFace-order points (eye centres = mean of each eye's 6 points,
    nose tip 30, mouth corners 48 and 54; "left" = the viewer's left)."""
    return five_points(points).astype(np.float32)


def dlib5_to_arcface(points: np.ndarray) -> np.ndarray:
    """N x 5 x 2 dlib 5-point shapes -> N x 3 x 2: the first three ArcFace points as far as they exist.

    dlib's order: 0, 1 = outer, inner corner of the viewer's right eye; 2, 3 = outer, inner corner of the
    left eye; 4 = nose base (68-point index 33, a little below ArcFace's nose tip). No mouth corners, so
    returned: left eye centre, right eye centre, nose base."""
    p = np.asarray(points, np.float32)
    return np.stack([p[:, 2:4].mean(1), p[:, 0:2].mean(1), p[:, 4]], 1)
