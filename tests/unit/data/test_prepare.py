"""Compact batches: what the datasets hand across the worker boundary (uint8 crops, uint8 masks, small vectors)
and `prepare_batch`, the device-side step that makes the float batches training and evaluation see."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from swaplab.data import SwapDataModule
from swaplab.data.pairs import FacePairs, MixedPairs
from swaplab.data.prepare import PLAN, RESIZE, plan_batch, prepare_batch
from swaplab.data.synthetic_faces import hash_uniform
from swaplab.faces.templates import CANONICAL, convert_crops

AUGMENT = {"hflip": 0.5, "brightness": 0.3, "contrast": 0.3, "saturation": 0.3}


class StoredCrops(FacePairs):
    """Random uint8 crops and 3-class masks in memory, 4 per identity."""

    def __init__(self, n: int = 40, size: int = 48, **kwargs) -> None:
        kwargs.setdefault("resolution", 32)
        kwargs.setdefault("stored_template", CANONICAL)
        super().__init__(np.arange(n) // 4, **kwargs)
        g = torch.Generator().manual_seed(size)
        self.stored_size = size
        self.crops = torch.randint(0, 256, (n, size, size, 3), dtype=torch.uint8, generator=g)
        self.masks = torch.randint(0, 3, (n, size, size), dtype=torch.uint8, generator=g)

    def read(self, indices: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        i = torch.as_tensor(indices)
        return self.crops[i], self.masks[i].long()


def reference(data: FacePairs, keys: list[int]) -> dict[str, torch.Tensor]:
    """The float batch as the datasets made it on the CPU before crops crossed as uint8 (the code of
    FacePairs.to_template and augment_pairs as they were): the known answer."""
    k = torch.as_tensor(keys)
    p = data.pairs(k)
    out = {}
    for side in ("target", "source"):
        images, labels = data.read(p[side].numpy())
        x, y = images.permute(0, 3, 1, 2).float(), labels[:, None].float()
        if data.stored_template.name == data.template.name:
            x = F.interpolate(x, size=(data.resolution,) * 2, mode="bilinear", align_corners=False,
                              antialias=x.shape[-1] > data.resolution)
            y = F.interpolate(y, size=(data.resolution,) * 2, mode="nearest")
        else:
            x = convert_crops(x, data.stored_template.at(x.shape[-1]), data.template)
            y = convert_crops(y, data.stored_template.at(y.shape[-1]), data.template, padding_mode="zeros",
                              mode="nearest")
        out[side], out[f"{side}_mask"] = (x / 127.5 - 1).clamp(-1, 1), y[:, 0].round().long()
    augment, b = data.augment, len(k)
    shared = torch.full((b,), bool(augment.get("same_for_pair")), dtype=torch.bool) | p["same_image"]
    for side, stream in (("target", 0), ("source", 1)):
        u = hash_uniform(data.seed, [k, 0xA06E, stream], 4, k)
        if side == "target":
            target_u = u
        else:
            u = torch.where(shared[:, None], target_u, u)
        flip = u[:, 0] < augment.get("hflip", 0.0)
        x = torch.where(flip[:, None, None, None], out[side].flip(-1), out[side])
        out[f"{side}_mask"] = torch.where(flip[:, None, None], out[f"{side}_mask"].flip(-1), out[f"{side}_mask"])
        f = [1 + augment.get(n, 0.0) * (2 * u[:, j] - 1) for j, n in enumerate(("brightness", "contrast",
                                                                                   "saturation"), start=1)]
        if any(augment.get(n) for n in ("brightness", "contrast", "saturation")):
            rgb = (x + 1) / 2 * f[0].view(b, 1, 1, 1)
            mean = rgb.mean((1, 2, 3), keepdim=True)
            rgb = (rgb - mean) * f[1].view(b, 1, 1, 1) + mean
            gray = (rgb * rgb.new_tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
            x = ((rgb - gray) * f[2].view(b, 1, 1, 1) + gray).clamp(0, 1) * 2 - 1
        out[side] = x
    return out


def assert_compact(batch: dict[str, torch.Tensor]) -> None:
    """No float tensor of image size: crops and masks are uint8, the rest small."""
    for key, value in batch.items():
        per_item = value[0].numel()
        assert value.dtype == torch.uint8 or per_item <= 16, (key, value.dtype, tuple(value.shape))
    assert batch["source"].dtype == batch["target"].dtype == batch["target_mask"].dtype == torch.uint8


@pytest.mark.parametrize("stored", [CANONICAL, "ffhq_256"])  # a resize; a template warp
def test_items_are_uint8_and_prepare_gives_the_old_cpu_batch(stored):
    data = StoredCrops(stored_template=stored, augment=AUGMENT, same_identity_rate=0.5, same_image_rate=0.5)
    keys = list(range(0, 80, 3))
    raw = data.__getitems__(keys)
    assert_compact(raw)
    assert raw["target"].shape[-1] == 48  # the stored size: the resize / warp waits for the device
    assert_compact({k: v[None] for k, v in data[5].items()})  # __getitem__ too
    batch, expected = prepare_batch(raw), reference(data, keys)
    assert not any(k.startswith("_") for k in batch)
    for key, value in expected.items():
        assert value.dtype == batch[key].dtype and value.shape == batch[key].shape, key
        torch.testing.assert_close(batch[key], value, atol=2e-6, rtol=0, msg=key)
    flips = raw["_augment"][:, :, 0]
    assert 0 < int(flips.sum()) < flips.numel()  # some flipped, some not


@pytest.mark.parametrize("stored", [CANONICAL, "ffhq_256"])  # a resize; a template warp
def test_a_planned_batch_is_prepared_from_shapes_alone(stored):
    """On a GPU, reading a device tensor's value (bool(), .item(), .tolist(), nonzero()) waits for the device.
    Meta tensors have shapes and no values, so any such read raises on them: with the `_plan` made on the CPU
    (the datamodule's on_before_batch_transfer), the batch is prepared without one, and as without the plan."""
    data = StoredCrops(stored_template=stored, augment=AUGMENT, same_identity_rate=0.5, same_image_rate=0.5)
    raw = data.__getitems__(list(range(0, 80, 3)))
    planned = plan_batch(raw)
    assert PLAN in planned and planned[PLAN]["target_flip"] and planned[PLAN]["target_jitter"]
    expected = prepare_batch(raw)
    on_cpu = prepare_batch(planned)
    assert on_cpu.keys() == expected.keys() and all(torch.equal(on_cpu[k], v) for k, v in expected.items())
    meta = {k: v.to("meta") if torch.is_tensor(v) else v for k, v in planned.items()}
    on_meta = prepare_batch(meta)
    assert {k: (v.shape, v.dtype) for k, v in on_meta.items()} == {k: (v.shape, v.dtype) for k, v in expected.items()}
    with pytest.raises((RuntimeError, NotImplementedError)):  # unplanned, the choices are read off the tensors
        prepare_batch({k: v for k, v in meta.items() if k != PLAN})
    loader = SwapDataModule(train=data, batch_size=4)  # the datamodule plans each batch before its transfer
    assert PLAN in loader.on_before_batch_transfer(next(iter(loader.train_dataloader())), 0)


def test_rows_in_different_modes_are_each_finished_as_they_are_alone():
    data = StoredCrops(stored_template="ffhq_256", augment=AUGMENT)
    raw = data.__getitems__(list(range(6)))
    raw["_geometry"][::2, 0] = RESIZE  # rows 0, 2, 4 resized, 1, 3, 5 warped
    batch = prepare_batch(plan_batch(raw))
    for i in range(6):
        alone = prepare_batch({k: v[i : i + 1] for k, v in raw.items()})
        for key, value in alone.items():
            torch.testing.assert_close(batch[key][i : i + 1], value, atol=1e-6, rtol=0, msg=f"{key} row {i}")
    resized = prepare_batch({k: v[:1] for k, v in raw.items()} | {"_geometry": raw["_geometry"][1:2]})
    assert not torch.equal(resized["target"], batch["target"][:1])  # the two modes differ on these crops


def test_mixed_parts_of_different_sizes_settle_geometry_in_the_worker():
    parts = [StoredCrops(size=48, augment={"hflip": 0.5}), StoredCrops(size=40, stored_template="ffhq_256",
                                                                       augment={"hflip": 0.5}, seed=1)]
    mixed = MixedPairs(parts)
    raw = mixed.__getitems__(list(range(0, 80, 2)))
    assert_compact(raw)
    assert raw["target"].dtype == torch.uint8 and raw["target"].shape[-1] == 32  # settled, still uint8
    batch = prepare_batch(raw)
    for part in parts:  # each part's pairs as that part alone makes them, to the uint8 rounding
        alone = [k for k in range(0, 80, 2) if (k < 40) == (part is parts[0])]
        rows = torch.tensor([i for i, k in enumerate(range(0, 80, 2)) if k in alone])
        expected = reference(part, [k if k < 40 else k - 40 for k in alone])
        assert (batch["target"][rows] - expected["target"]).abs().max() <= 1 / 127.5 + 1e-6


def test_augmentation_varies_by_epoch_and_is_the_same_in_any_process():
    data = StoredCrops(augment=AUGMENT)
    first, again = prepare_batch(data.__getitems__(list(range(8)))), prepare_batch(data.__getitems__(list(range(8))))
    assert torch.equal(first["target"], again["target"])  # reproducible
    epoch1 = data.__getitems__(list(range(40, 48)))  # the same targets in the next epoch: new draws
    assert torch.equal(epoch1["target"], data.__getitems__(list(range(8)))["target"])  # same uint8 crops
    assert not torch.equal(prepare_batch(epoch1)["target"], first["target"])
    other_seed = StoredCrops(augment=AUGMENT, seed=5).__getitems__(list(range(8)))
    assert not torch.equal(other_seed["_augment"], data.__getitems__(list(range(8)))["_augment"])

    def epoch(workers: int) -> list[dict[str, torch.Tensor]]:
        module = SwapDataModule(train=data, batch_size=8, num_workers=workers, persistent_workers=False, seed=3)
        loader = module.train_dataloader()
        loader.sampler.set_epoch(1)
        return [prepare_batch(b) for b in loader]

    main, workers = epoch(0), epoch(2)
    assert len(main) == 5 and all(torch.equal(a["source"], b["source"]) for a, b in zip(main, workers, strict=True))


def test_float_batches_pass_through():
    batch = {"source": torch.rand(2, 3, 8, 8), "target": torch.rand(2, 3, 8, 8)}
    assert prepare_batch(batch) is batch
