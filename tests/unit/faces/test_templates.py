"""Alignment templates: known answers, exact conversion between crops, experts fed non-canonical crops."""

from __future__ import annotations

import itertools

import cv2
import numpy as np
import pytest
import torch

from swaplab.experts import Experts, FaceParser, IdentityEncoder
from swaplab.faces.templates import (
    ARCFACE_112,
    CANONICAL,
    FRONTAL,
    FRONTAL_68,
    TEMPLATES,
    conversion_matrix,
    convert_crops,
    ffhq_quad,
    get_template,
    similarity_transform,
)

SIMILARITY = [n for n, t in TEMPLATES.items() if t.method == "similarity"]


def homogeneous(m: np.ndarray) -> np.ndarray:
    return np.concatenate([m, np.broadcast_to([0.0, 0.0, 1.0], (*m.shape[:-2], 1, 3))], -2)


def random_faces(n: int, seed: int = 0) -> np.ndarray:
    """n five-point faces: the ArcFace template rotated, scaled, moved and jittered (image pixels)."""
    rng = np.random.default_rng(seed)
    angle, scale = rng.uniform(-0.5, 0.5, n), rng.uniform(1.0, 4.0, n)
    rot = np.stack([np.stack([np.cos(angle), -np.sin(angle)], -1), np.stack([np.sin(angle), np.cos(angle)], -1)], -2)
    faces = scale[:, None, None] * (ARCFACE_112 - 56) @ np.swapaxes(rot, -1, -2) + rng.uniform(150, 350, (n, 1, 2))
    return faces + rng.normal(0, 2.0, faces.shape)


def test_similarity_transform_recovers_a_known_transform_batched():
    src = random_faces(4)
    angle = np.array([0.3, -0.2, 1.0, 0.0])
    rot = 1.7 * np.stack([np.stack([np.cos(angle), -np.sin(angle)], -1), np.stack([np.sin(angle), np.cos(angle)], -1)], -2)
    shift = np.array([[10.0, -4.0], [0.0, 3.0], [-7.0, 1.0], [2.0, 2.0]])
    dst = src @ np.swapaxes(rot, -1, -2) + shift[:, None]
    np.testing.assert_allclose(similarity_transform(src, dst), np.concatenate([rot, shift[..., None]], -1), atol=1e-9)


def test_known_template_answers():
    np.testing.assert_allclose(get_template("arcface_112").points, ARCFACE_112)
    np.testing.assert_allclose(get_template("arcface_128").points, ARCFACE_112 + [8, 0])  # InsightFace norm_crop(128)
    fs = get_template(CANONICAL)
    # identity input of FaceShifter = crop[19:237] resized to 112: the template lies in that box within 0.1 px
    np.testing.assert_allclose((fs.points - 19.2) * 112 / 217.6, ARCFACE_112, atol=0.1)
    np.testing.assert_allclose(get_template("mtcnn_512").points, ARCFACE_112 * 512 / 112)
    np.testing.assert_allclose(get_template("ffhq_512").points, (get_template("ffhq_1024").points + 0.5) / 2 - 0.5)
    np.testing.assert_allclose(get_template("ffhq_1024", 512).points, get_template("ffhq_512").points)
    np.testing.assert_allclose(get_template("faceshifter_256", 64).points, fs.points / 4)


def test_ffhq_quad_known_answer():
    # upright face: eyes at (-a, 0) and (a, 0), mouth corners at (+-b, d); the mouth term wins (1.8 d > 4 a)
    a, b, d = 10.0, 8.0, 30.0
    pts = np.array([[-a, 0], [a, 0], [0, 12], [-b, d], [b, d]]) + [100, 50]
    half = 1.8 * d
    centre = np.array([100, 50 + 0.1 * d])
    expected = centre + half * np.array([[-1, -1], [-1, 1], [1, 1], [1, -1]])
    np.testing.assert_allclose(ffhq_quad(pts), expected, atol=1e-9)
    # the 68-point form uses the eye-contour means, nose 30 and mouth corners 48 / 54
    pts68 = np.zeros((68, 2))
    pts68[36:42], pts68[42:48], pts68[30], pts68[48], pts68[54] = pts[0], pts[1], pts[2], pts[3], pts[4]
    np.testing.assert_allclose(ffhq_quad(pts68), expected, atol=1e-9)


@pytest.mark.parametrize("source,target", list(itertools.permutations(SIMILARITY, 2)))
def test_similarity_templates_convert_exactly_for_every_face(source, target):
    faces = random_faces(16)
    direct = get_template(target).matrix(faces)
    via = homogeneous(conversion_matrix(source, target)) @ homogeneous(get_template(source).matrix(faces))
    np.testing.assert_allclose(via[:, :2], direct, atol=1e-8)


def test_ffhq_conversion_is_exact_per_face_and_close_on_average():
    faces = random_faces(16, seed=1)
    arc, ffhq = get_template("arcface_112"), get_template("ffhq_256")
    in_arc = np.einsum("nij,nkj->nki", arc.matrix(faces), np.concatenate([faces, np.ones((16, 5, 1))], -1))
    per_face = homogeneous(conversion_matrix(arc, ffhq, landmarks=in_arc)) @ homogeneous(arc.matrix(faces))
    np.testing.assert_allclose(per_face[:, :2], ffhq.matrix(faces), atol=1e-8)
    mean_face = homogeneous(conversion_matrix(arc, ffhq)) @ homogeneous(arc.matrix(faces))
    corners = np.array([[0, 0, 1], [255, 0, 1], [0, 255, 1], [255, 255, 1]], float).T
    gap = np.abs(np.linalg.inv(mean_face) @ corners - np.linalg.inv(homogeneous(ffhq.matrix(faces))) @ corners)
    assert 0 < gap.max() < 15  # the fixed conversion is the mean face's: a few pixels off for others


def test_kornia_conversion_matches_cropping_directly():
    rng = np.random.default_rng(0)
    image = cv2.GaussianBlur((rng.random((480, 640, 3)) * 255).astype(np.uint8), (0, 0), 4)
    face = random_faces(1, seed=3)[0] * 0.7 + [60, 20]
    for source, target in (("faceshifter_256", "arcface_112"), ("ffhq_512", "faceshifter_256"),
                           ("mtcnn_512", "arcface_128")):
        src_t, dst_t = get_template(source), get_template(target)
        src_crop = torch.from_numpy(src_t.crop(image, face[None])).permute(0, 3, 1, 2).float()
        in_src = (src_t.matrix(face) @ np.c_[face, np.ones(5)].T).T
        landmarks = in_src[None] if dst_t.method == "ffhq" or src_t.method == "ffhq" else None
        converted = convert_crops(src_crop, src_t, dst_t, landmarks=landmarks)[0].permute(1, 2, 0).numpy()
        direct = dst_t.crop(image, face[None])[0].astype(np.float32)
        inner = slice(8, dst_t.size - 8)
        assert np.abs(converted[inner, inner] - direct[inner, inner]).mean() < 2.0, (source, target)


def test_unknown_template_names_the_known_ones():
    with pytest.raises(ValueError, match="unknown alignment template 'ffhq_2048'.*arcface_112"):
        get_template("ffhq_2048")


def test_experts_take_crops_of_another_template():
    rng = np.random.default_rng(1)
    image = cv2.GaussianBlur((rng.random((300, 300, 3)) * 255).astype(np.uint8), (0, 0), 3)
    face = (ARCFACE_112 - 56) * 1.2 + 150
    canonical = torch.from_numpy(get_template(CANONICAL, 64).crop(image, face[None])).permute(0, 3, 1, 2)
    ffhq = torch.from_numpy(get_template("ffhq_256", 64).crop(image, face[None])).permute(0, 3, 1, 2)
    canonical, ffhq = canonical.float() / 127.5 - 1, ffhq.float() / 127.5 - 1
    identity = IdentityEncoder.build(weights="random", depth=18, widths=[8, 16, 16, 16], input_size=32)
    parser = FaceParser.build(weights="random", input_size=32)
    experts = Experts(identity=identity, parsing=parser)
    reference, reference_logits = identity(canonical), parser(canonical)
    experts.set_input_template("ffhq_256")
    adapted = experts.identity(ffhq)
    assert torch.nn.functional.cosine_similarity(adapted, reference).item() > 0.99
    logits = experts.parsing(ffhq)
    assert logits.shape == (1, 19, 64, 64)
    back = convert_crops(logits, get_template("ffhq_256", 64), get_template(CANONICAL, 64))
    inner = slice(12, 52)
    assert (back[..., inner, inner] - reference_logits[..., inner, inner]).abs().mean() < 0.05 * reference_logits.abs().mean()
    experts.set_input_template(None)
    assert torch.allclose(experts.identity(canonical), reference)


def test_frontal68_template_undoes_any_affine_map_of_its_68_points():
    template = get_template(FRONTAL, 64)
    assert np.allclose(template.reference, FRONTAL_68 * 64 - 0.5) and template.landmarks == 68
    sheared = np.array([[1.3, 0.2, 40.0], [-0.1, 0.9, 25.0]])  # no similarity undoes the shear
    in_image = template.reference @ sheared[:, :2].T + sheared[:, 2]
    matrix = template.matrix(in_image)
    assert np.allclose(in_image @ matrix[:, :2].T + matrix[:, 2], template.reference, atol=1e-6)
    with pytest.raises(ValueError, match="by 68 landmarks"):
        template.matrix(np.zeros((1, 5, 2)))
