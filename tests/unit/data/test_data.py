"""Pair sampling, rank sharding, mid-epoch resume and the batch schema of data=synthetic."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from swaplab.data import SwapDataModule, SyntheticSwapDataset
from swaplab.data.loader import ResumableSampler


def test_ranks_get_disjoint_shards_covering_the_data():
    shards = [list(ResumableSampler(20, seed=3, rank=r, world_size=2)) for r in range(2)]
    assert not set(shards[0]) & set(shards[1])
    assert sorted(shards[0] + shards[1]) == list(range(20))


def test_permutation_depends_on_epoch_and_seed_only():
    a, b = ResumableSampler(50, seed=1), ResumableSampler(50, seed=1)
    assert list(a) == list(b)
    first = list(a)
    a.set_epoch(1)
    assert list(a) != first and sorted(a) == list(range(50))


def test_sampler_keeps_its_place_and_resumes_exactly_after_the_consumed_samples():
    full = list(ResumableSampler(30, seed=7))
    sampler = ResumableSampler(30, seed=7)
    sampler.set_epoch(0)
    sampler.advance(8)  # training took two batches of 4
    sampler.advance(4)
    assert sampler.state_dict() == {"epoch": 0, "consumed": 12}
    restored = ResumableSampler(30, seed=7)
    restored.load_state_dict(sampler.state_dict())
    assert list(restored) == full[12:]
    restored.set_epoch(0)  # the same epoch keeps the place
    assert list(restored) == full[12:]
    restored.set_epoch(1)  # another epoch starts from its beginning
    assert restored.state_dict() == {"epoch": 1, "consumed": 0} and len(list(restored)) == 30
    restored.advance(100)
    assert restored.consumed == 30 and list(restored) == []


def small_dataset(**kwargs) -> SyntheticSwapDataset:
    return SyntheticSwapDataset(resolution=32, num_identities=50, images_per_identity=40, **kwargs)


def test_batch_schema_and_ranges():
    batch = small_dataset().__getitems__(list(range(6)))
    assert batch["source"].shape == batch["target"].shape == (6, 3, 32, 32)
    assert batch["source"].min() >= -1 and batch["source"].max() <= 1
    assert batch["same"].dtype == torch.bool and batch["same_image"].dtype == torch.bool
    for side in ("source", "target"):
        assert batch[f"{side}_landmarks"].shape == (6, 68, 2)
        assert batch[f"{side}_mask"].shape == (6, 32, 32)
        assert batch[f"{side}_pose"].shape == (6, 3)
        assert batch[f"{side}_identity"].shape == (6,)


def test_same_pair_rates_and_consistency():
    data = small_dataset(same_identity_rate=0.3, same_image_rate=0.5)
    pairs = data.pairs(torch.arange(len(data)))
    assert abs(pairs["same"].float().mean().item() - 0.3) < 0.03
    assert abs(pairs["same_image"][pairs["same"]].float().mean().item() - 0.5) < 0.06
    assert torch.equal(pairs["source_id"] == pairs["target_id"], pairs["same"])
    other_image = pairs["same"] & ~pairs["same_image"]
    assert (pairs["source_img"][other_image] != pairs["target_img"][other_image]).all()
    batch = data.__getitems__(torch.nonzero(pairs["same_image"])[:4, 0].tolist())
    assert torch.equal(batch["source"], batch["target"])


def test_samples_are_deterministic_and_batch_independent():
    data = small_dataset()
    batch = data.__getitems__([5, 17, 3])
    single = data[17]
    assert torch.equal(single["target"], batch["target"][1]) and torch.equal(single["source"], batch["source"][1])
    assert torch.equal(small_dataset().__getitems__([5])["source"], batch["source"][:1])


def test_identity_offset_separates_people():
    train = small_dataset().pairs(torch.arange(2000))
    val = small_dataset(identity_offset=10_000).pairs(torch.arange(2000))
    assert set(train["target_id"].tolist()).isdisjoint(val["target_id"].tolist())


def fake_trainer(world_size: int, rank: int = 0):
    return SimpleNamespace(global_rank=rank, world_size=world_size)


def test_datamodule_splits_the_global_batch_over_processes():
    dm = SwapDataModule(train=small_dataset(), batch_size=8, resolution=32)
    dm.trainer = fake_trainer(2, rank=1)
    loader = dm.train_dataloader()
    batch = next(iter(loader))
    assert loader.batch_size == 4 and batch["source"].shape[0] == 4
    dm.trainer = fake_trainer(3)
    with pytest.raises(ValueError, match="not divisible"):
        dm.train_dataloader()


def test_datamodule_rejects_wrong_resolution_and_tiny_sets():
    with pytest.raises(ValueError, match="produces 32px faces but data.resolution is 64"):
        SwapDataModule(train=small_dataset(), resolution=64)
    with pytest.raises(ValueError, match="fewer than one batch"):
        SwapDataModule(train=SyntheticSwapDataset(32, num_identities=2, images_per_identity=1), batch_size=4)


def test_workers_yield_the_same_batches():
    data = small_dataset()
    loaders = []
    for workers in (0, 2):
        dm = SwapDataModule(train=data, batch_size=4, num_workers=workers, persistent_workers=False)
        loaders.append([b["index"] for _, b in zip(range(3), dm.train_dataloader(), strict=False)])
    assert all(torch.equal(a, b) for a, b in zip(*loaders, strict=True))


def test_datamodule_checkpoints_the_batches_training_took_not_those_the_workers_prefetched():
    data = small_dataset()
    straight = [b["index"] for _, b in zip(range(5), SwapDataModule(train=data, batch_size=4).train_dataloader(),
                                           strict=False)]
    dm = SwapDataModule(train=data, batch_size=4, num_workers=2, prefetch_factor=2, persistent_workers=False)
    dm.trainer = SimpleNamespace(global_rank=0, world_size=1, training=True)
    batches = iter(dm.train_dataloader())
    for _ in range(3):  # the training loop takes 3 batches; the 2 workers have drawn more by now
        dm.on_before_batch_transfer(next(batches), 0)
    dm.trainer.training = False  # validation batches do not move the training sampler
    dm.on_before_batch_transfer(straight[0], 0)
    state = dm.state_dict()
    assert state == {"epoch": 0, "consumed": 12}
    resumed = SwapDataModule(train=data, batch_size=4)
    resumed.load_state_dict(state)
    assert torch.equal(next(iter(resumed.train_dataloader()))["index"], straight[3])
