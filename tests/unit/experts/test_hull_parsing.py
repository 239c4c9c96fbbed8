"""The landmark-hull face parser (experts=offline's parsing stand-in) on real photos: its regions sit where the
landmarks say, its face equals an independent drawing of the landmarks' convex hull, and it keeps FaceParser's
interface."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from fetched_files import aligned_photos

from swaplab.experts import LandmarkHullParser
from swaplab.experts.dlib_models import dlib_landmarks
from swaplab.faces.parsing import CELEBAMASK_CLASSES

pytestmark = pytest.mark.usefixtures("single_thread")
NAMES = ("obama", "obama2", "biden", "astronaut", "grace_hopper")
CLASS = {n: i for i, n in enumerate(CELEBAMASK_CLASSES)}


@pytest.fixture(scope="module")
def parsed():
    parser = LandmarkHullParser.build()
    faces = torch.cat([aligned_photos()[n] for n in NAMES])
    points = dlib_landmarks(parser.landmarks, faces, parser.box).numpy()
    with torch.no_grad():
        return parser, faces, points, parser.labels(faces)


def test_regions_sit_where_the_landmarks_are(parsed):
    _, _, points, labels = parsed

    def label_at(xy: np.ndarray) -> torch.Tensor:  # B x 2 pixel (x, y) -> B labels
        x, y = np.round(xy).astype(int).T
        return labels[torch.arange(len(labels)), torch.from_numpy(y), torch.from_numpy(x)]

    inner = torch.stack([label_at(points[:, k]) for k in range(27, 68)], 1)  # nose, eyes, mouth points
    assert (inner != CLASS["background"]).all(), inner
    assert (label_at(points[:, 36:42].mean(1)) == CLASS["l_eye"]).all()
    assert (label_at(points[:, 42:48].mean(1)) == CLASS["r_eye"]).all()
    assert (label_at(points[:, [30, 33]].mean(1)) == CLASS["nose"]).all()
    mouth = label_at(points[:, 60:68].mean(1))
    assert torch.isin(mouth, torch.tensor([CLASS["mouth"], CLASS["u_lip"], CLASS["l_lip"]])).all(), mouth
    assert (label_at(points[:, 19] + 0.1 * (points[:, 36:42].mean(1) - points[:, 19])) == CLASS["l_brow"]).all()
    # the cheeks (between an eye's outer corner and the jaw) are skin, the crop's corners background
    assert (label_at((points[:, 36] + points[:, 2]) / 2) == CLASS["skin"]).all()
    corners = labels[:, [0, 0, -1, -1], [0, -1, 0, -1]]
    assert (corners == CLASS["background"]).all()
    face = (labels != CLASS["background"]).float().mean((1, 2))
    print("face fraction of the crop:", [round(float(v), 3) for v in face])
    assert ((face > 0.2) & (face < 0.45)).all(), face
    # forehead > 0 raises the brows into the hull: above the brows is skin, background without it
    high = points[:, 17:27].mean(1) - [0, 0.2] * (points[:, 8] - points[:, 17:27].mean(1))
    forehead = LandmarkHullParser(parsed[0].landmarks, forehead=0.4).labels_from_points(torch.from_numpy(points), 256)
    x, y = np.round(high).astype(int).T
    index = torch.arange(len(labels)), torch.from_numpy(y), torch.from_numpy(x)
    assert (labels[index] == CLASS["background"]).all() and (forehead[index] == CLASS["skin"]).all()


def test_face_region_equals_an_independent_drawing_of_the_hull(parsed):
    parser, faces, points, labels = parsed
    size = faces.shape[-1]
    masks = parser.masks(faces)
    assert sorted(masks) == ["background", "face", "hair"] and not masks["hair"].any()
    assert torch.equal(sum(masks.values()), torch.ones_like(masks["face"]))
    ious = []
    for face, pts in zip(masks["face"][:, 0].bool().numpy(), points, strict=True):
        reference = np.zeros((size, size), np.uint8)
        cv2.fillConvexPoly(reference, np.round(cv2.convexHull(pts.astype(np.float32))[:, 0]).astype(np.int32), 1)
        ious.append((face & (reference > 0)).sum() / (face | (reference > 0)).sum())
    print("face mask vs cv2.fillConvexPoly of the hull, IoU:", [round(float(v), 4) for v in ious])
    assert min(ious) > 0.98, ious


def test_batched_and_the_parser_interface(parsed):
    parser, faces, _, labels = parsed
    with torch.no_grad():
        alone = parser.labels(faces[2:3])
        logits = parser(faces[:2])
        groups = parser.group_labels(faces[:2])
    assert torch.equal(alone, labels[2:3])
    assert logits.shape == (2, len(CELEBAMASK_CLASSES), *faces.shape[-2:])
    assert torch.equal(logits.softmax(1).argmax(1), labels[:2]) and torch.allclose(logits.softmax(1).amax(1), torch.ones(1))
    assert torch.equal(groups == 1, labels[:2] != CLASS["background"])  # ears / neck / hair never drawn
    assert parser.weights.startswith("no parsing network")  # recorded as what it is (Experts.describe)
