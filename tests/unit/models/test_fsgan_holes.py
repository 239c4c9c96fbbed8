"""FSGAN's inpainting holes (swaplab.models.fsgan.holes): the official hair-occlusion recipe, batched."""

from __future__ import annotations

import math

import cv2
import hydra
import numpy as np
import pytest
import torch
from helpers import compose_config

from swaplab.models.fsgan.generators import FACE
from swaplab.models.fsgan.holes import HOLE_DRAWS, hair_holes

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def faces(tmp_path_factory) -> torch.Tensor:
    """64 face masks (B x 1 x 64 x 64) of the synthetic faces."""
    cfg = compose_config("train", tmp_path_factory.mktemp("holes"), [
        "model=fsgan", "data.resolution=64", "data.num_workers=0", "data.batch_size=2", "experts=random",
        "data.train.num_identities=32", "data.train.images_per_identity=2"])
    datamodule = hydra.utils.instantiate(cfg.data, _convert_="all")
    datamodule.setup("fit")
    return (datamodule.train_set.__getitems__(list(range(64)))["target_mask"] == FACE).unsqueeze(1)


def official_recipe(face: np.ndarray, draws: np.ndarray) -> np.ndarray:
    """The official seg_utils.random_hair_inpainting_mask for one face (H x W bool), its random numbers taken
    from `draws` and drawn with cv2.ellipse as the official code draws it."""
    ys, xs = np.nonzero(face)
    rows = np.unique(ys)
    y = rows[min(int(draws[0] * len(rows)), len(rows) - 1)]
    line = xs[ys == y]
    x = line.min() if draws[1] > 0.5 else line.max()
    width = xs.max() - xs.min() + 1
    low, high = width // 4, width // 2
    axes = tuple(int(low + math.floor(d * (high - low))) for d in draws[2:4])
    hole = np.zeros(face.shape, np.uint8)
    cv2.ellipse(hole, (int(x), int(y)), axes, int(math.floor(draws[4] * 180)), 0, 360, 255, -1, 8)
    return (hole > 0) & face


def test_holes_follow_the_official_recipe_drawn_with_cv2(faces):
    draws = torch.rand(len(faces), HOLE_DRAWS, generator=torch.Generator().manual_seed(0))
    holes = hair_holes(faces, draws)
    ious = []
    for face, hole, d in zip(faces[:, 0].numpy(), holes[:, 0].numpy(), draws.numpy(), strict=True):
        reference = official_recipe(face, d)
        ious.append((hole & reference).sum() / (hole | reference).sum())
    # measured: mean IoU 0.94, min 0.91 (cv2 rasterises the ellipse as a polygon; the pixels on its outline differ)
    assert np.mean(ious) > 0.9 and np.min(ious) > 0.75, (np.mean(ious), np.min(ious))


def test_nearly_every_hole_is_in_the_face_on_its_border(faces):
    holes = hair_holes(faces, generator=torch.Generator().manual_seed(1))
    area = holes.flatten(1).sum(1).float()
    face_area = faces.flatten(1).sum(1).float()
    assert not (holes & ~faces).any()  # inside the face, always
    assert (area > 0).float().mean() >= 0.95  # measured: every one of the 64 (box holes: 80 % touch the face)
    share = area / face_area  # measured: mean 0.23, range 0.11-0.41 of the face
    assert 0.1 < float(share.mean()) < 0.4 and float(share.max()) < 0.6
    # centred on the face's border: each hole touches a pixel outside the face (a hole drawn anywhere in the
    # face would mostly not)
    grown = torch.nn.functional.max_pool2d(holes.float(), 3, stride=1, padding=1).bool()
    assert ((grown & ~faces).flatten(1).any(1) | (area == 0)).all()


def test_holes_are_fixed_by_the_step_generator_and_empty_for_tiny_faces(faces):
    def draw(seed: int) -> torch.Tensor:
        return hair_holes(faces, generator=torch.Generator().manual_seed(seed))

    assert torch.equal(draw(3), draw(3)) and not torch.equal(draw(3), draw(4))
    tiny = torch.zeros(2, 1, 64, 64, dtype=torch.bool)
    tiny[0, :, 10:12, 10:12] = True  # spans 2 px: no hole, as the official code; the empty mask: none
    assert not hair_holes(tiny).any()
    with pytest.raises(ValueError, match="hole draws must be 2 x 5"):
        hair_holes(tiny, torch.rand(2, 3))
