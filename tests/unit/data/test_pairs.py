"""FacePairs: pair sampling over identity labels, per-epoch pairs, the served schema and template."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from swaplab.data import SwapDataModule, SyntheticSwapDataset
from swaplab.data.loader import ResumableSampler
from swaplab.data.pairs import CORE_KEYS, FacePairs
from swaplab.data.prepare import prepare_batch


class StoredCrops(FacePairs):
    """Random uint8 crops in memory, labelled by `identities`."""

    def __init__(self, identities: np.ndarray, size: int = 48, **kwargs) -> None:
        kwargs.setdefault("resolution", 32)
        super().__init__(identities, stored_template="faceshifter_256", **kwargs)
        self.crops = torch.randint(0, 256, (len(identities), size, size, 3), dtype=torch.uint8,
                                   generator=torch.Generator().manual_seed(0))

    def read(self, indices: np.ndarray) -> tuple[torch.Tensor, None]:
        return self.crops[torch.as_tensor(indices)], None


def labels(known: int = 30, per: int = 4, unknown: int = 20) -> np.ndarray:
    return np.concatenate([np.repeat(np.arange(known), per), np.full(unknown, -1)])


def test_pair_rates_and_identity_consistency():
    data = StoredCrops(labels(), same_identity_rate=0.3, same_image_rate=0.4)
    p = data.pairs(torch.arange(20000))
    assert abs(p["same"].float().mean().item() - 0.3) < 0.02
    known = data.identities[p["target"]] >= 0
    share = p["same_image"][p["same"] & known].float().mean().item()
    assert abs(share - 0.4) < 0.04
    assert p["same_image"][p["same"] & ~known].all()  # an unknown identity can only pair with its own crop
    assert torch.equal(p["source"] == p["target"], p["same_image"])
    group_equal = data.group_of[p["source"]] == data.group_of[p["target"]]
    assert torch.equal(group_equal, p["same"])
    others = p["source"][~p["same"]]
    assert len(torch.unique(others)) > 0.9 * len(data)  # different-identity sources cover the data


def test_keys_beyond_the_length_draw_new_pairs_for_the_same_targets():
    data = StoredCrops(labels(), same_identity_rate=0.2)
    keys = torch.arange(len(data))
    first, second = data.pairs(keys), data.pairs(keys + len(data))
    assert torch.equal(first["target"], second["target"])
    assert (first["source"] != second["source"]).float().mean() > 0.7
    sampler = ResumableSampler(len(data), seed=0, offset_by_epoch=True)
    sampler.set_epoch(2)
    epoch2 = list(sampler)
    assert min(epoch2) == 2 * len(data) and sorted(k % len(data) for k in epoch2) == list(range(len(data)))


def test_batch_schema_matches_the_synthetic_faces():
    data = StoredCrops(labels(), size=64, resolution=32)
    batch = prepare_batch(data.__getitems__([0, 5, 130, 7]))
    synthetic = SyntheticSwapDataset(resolution=32, num_identities=4, images_per_identity=2).__getitems__([0, 1])
    for key in CORE_KEYS:
        assert batch[key].dtype == synthetic[key].dtype and batch[key].shape[1:] == synthetic[key].shape[1:], key
    assert batch["target"].min() >= -1 and batch["target"].max() <= 1
    expected = data.crops[[0, 5, 130, 7]].permute(0, 3, 1, 2).float()
    resized = torch.nn.functional.interpolate(expected, size=(32, 32), mode="bilinear", antialias=True)
    assert torch.allclose((batch["target"] + 1) * 127.5, resized, atol=1e-3)
    assert torch.equal(batch["target_identity"], data.identities[[0, 5, 130, 7]])


def test_bad_values_fail_clearly():
    with pytest.raises(ValueError, match="same_identity_rate"):
        StoredCrops(labels(), same_identity_rate=1.5)
    with pytest.raises(ValueError, match="at least 2 identities"):
        StoredCrops(np.zeros(10, np.int64))
    with pytest.raises(ValueError, match="unknown augmentation"):
        StoredCrops(labels(), augment={"rotate": 0.5})


def test_datamodule_checks_the_template_of_its_datasets():
    data = StoredCrops(labels(), template="arcface_112")
    assert SwapDataModule(data, template="arcface_112", batch_size=4).template == "arcface_112"
    with pytest.raises(ValueError, match="produces arcface_112 crops but data.template is faceshifter_256"):
        SwapDataModule(data, batch_size=4)
