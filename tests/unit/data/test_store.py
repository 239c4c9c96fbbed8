"""The preprocessed face store: codecs round trip, labels, incomplete shards, start-up errors, and the pair
dataset it feeds (batch schema, masks, identity subsets, DataLoader workers)."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from swaplab.data.datamodule import collate_swaps
from swaplab.data.pairs import CORE_KEYS
from swaplab.data.prepare import prepare_batch
from swaplab.data.store import (
    FaceStore,
    PreprocessedFacePairs,
    ShardWriter,
    complete_shards,
    shard_prefix,
    write_json,
)
from swaplab.errors import DataNotFoundError
from swaplab.faces.parsing import CELEBAMASK_CLASSES

SIZE = 32


def smooth_faces(n: int, seed: int = 0) -> np.ndarray:
    """n x 32 x 32 x 3 uint8 smooth colour fields (JPEG keeps them close)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE] / SIZE
    coef = rng.uniform(-1, 1, (n, 3, 3))
    field = coef[..., 0, None, None] * xx + coef[..., 1, None, None] * yy + coef[..., 2, None, None] * xx * yy
    return ((np.moveaxis(field, 1, -1) + 1.5) * 80).clip(0, 255).astype(np.uint8)


def random_labels(n: int, seed: int = 0) -> np.ndarray:
    """n x 32 x 32 class maps: blocks of random CelebAMask-HQ classes."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, len(CELEBAMASK_CLASSES), (n, 4, 4)).astype(np.uint8)
    return blocks.repeat(8, 1).repeat(8, 2)


def write_store(root: Path, codec: str, identities: list[str | None], labels: bool = False,
                shard_size: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """A store as preprocess writes it, faces split into shards of `shard_size`; returns (images, labels)."""
    n = len(identities)
    images, maps = smooth_faces(n), random_labels(n)
    meta = {"format": "swaplab-faces", "version": 1, "template": "faceshifter_256", "size": SIZE,
            "image_codec": codec, "jpeg_quality": 95, "labels": labels,
            "label_classes": list(CELEBAMASK_CLASSES) if labels else []}
    root.mkdir(parents=True, exist_ok=True)
    write_json(root / "dataset.json", meta)
    for number, start in enumerate(range(0, n, shard_size)):
        writer = ShardWriter(root, number, meta)
        for i in range(start, min(start + shard_size, n)):
            row = {"source": f"{identities[i] or 'loose'}/{i}.jpg", "frame": i % 3 - 1, "identity": identities[i],
                   "box": [0, 0, 10, 10], "landmarks": np.zeros((5, 2)).tolist(), "score": 0.99,
                   "template": "faceshifter_256", "matrix": np.eye(2, 3).tolist()}
            writer.add(images[i], row, maps[i] if labels else None)
            writer.record({"source": row["source"], "status": "ok", "faces": 1})
        writer.close()
    return images, maps


IDS = ["ann", "ann", "bob", "bob", "bob", "cy", "cy", None, None, "dee"]


@pytest.mark.parametrize("codec", ["raw", "png", "jpeg"])
def test_codecs_round_trip(tmp_path, codec):
    images, _ = write_store(tmp_path, codec, IDS)
    store = FaceStore(tmp_path)
    assert len(store) == len(IDS) and complete_shards(tmp_path) == [0, 1, 2]
    order = np.array([9, 0, 4, 4, 7, 3])  # across shards, unsorted, repeated
    out = store.read_images(order)
    assert out.dtype == torch.uint8 and out.shape == (len(order), SIZE, SIZE, 3)
    diff = np.abs(out.numpy().astype(int) - images[order])
    if codec == "jpeg":
        assert diff.mean() < 2.0 and diff.max() < 24, (diff.mean(), diff.max())
    else:
        assert diff.max() == 0
    assert store.read_labels(order) is None
    raw = np.load(f"{shard_prefix(tmp_path, 0)}.images.npy", mmap_mode="r")
    assert raw.shape == ((4, SIZE, SIZE, 3) if codec == "raw" else (np.load(
        f"{shard_prefix(tmp_path, 0)}.images.offsets.npy")[-1],))


def test_manifest_columns_identities_and_labels(tmp_path):
    images, maps = write_store(tmp_path, "png", IDS, labels=True)
    store = FaceStore(tmp_path)
    assert store.identity_names == ["ann", "bob", "cy", "dee"]
    assert store.identities.tolist() == [0, 0, 1, 1, 1, 2, 2, -1, -1, 3]
    assert store.frames.tolist() == [i % 3 - 1 for i in range(10)]
    assert store.sources[7] == "loose/7.jpg" and store.rows[2]["identity"] == "bob"
    assert store.matrices().shape == (10, 2, 3) and store.landmarks().shape == (10, 5, 2)
    labels = store.read_labels(np.array([8, 1]))
    assert labels.dtype == torch.uint8 and np.array_equal(labels.numpy(), maps[[8, 1]])


def test_incomplete_shards_are_ignored_and_missing_data_fails_clearly(tmp_path):
    write_store(tmp_path / "store", "jpeg", IDS)
    Path(f"{shard_prefix(tmp_path / 'store', 1)}.done.json").unlink()  # an interrupted shard
    store = FaceStore(tmp_path / "store")
    assert len(store) == 6
    assert [s.split("/")[1] for s in store.sources] == ["0.jpg", "1.jpg", "2.jpg", "3.jpg", "8.jpg", "9.jpg"]

    cases = {tmp_path / "nowhere": "does not exist", tmp_path / "empty": "no dataset.json",
             tmp_path / "unfinished": "no complete shard"}
    (tmp_path / "empty").mkdir()
    (tmp_path / "unfinished" / "shards").mkdir(parents=True)
    write_json(tmp_path / "unfinished" / "dataset.json", json.loads((tmp_path / "store" / "dataset.json").read_text()))
    for root, expected in cases.items():
        with pytest.raises(DataNotFoundError) as err:
            FaceStore(root)
        message = str(err.value)
        assert expected in message and str(root) in message and "preprocess.py" in message
        assert "\n" not in message


def test_store_pickles_without_its_memory_maps(tmp_path):
    write_store(tmp_path, "raw", IDS)
    store = FaceStore(tmp_path)
    first = store.read_images([0, 9])  # opens memory maps
    blob = pickle.dumps(store)
    assert len(blob) < 20_000  # manifest only: no pixel data travels to workers
    clone = pickle.loads(blob)
    assert torch.equal(clone.read_images([0, 9]), first)


def test_pairs_from_the_store_yield_the_batch_schema_with_masks(tmp_path):
    _, maps = write_store(tmp_path, "png", IDS, labels=True)
    pairs = PreprocessedFacePairs(tmp_path, resolution=SIZE, same_identity_rate=0.5, seed=3)
    batch = prepare_batch(pairs.__getitems__(list(range(16))))
    assert set(CORE_KEYS) | {"source_mask", "target_mask"} == set(batch)
    assert batch["source"].shape == (16, 3, SIZE, SIZE) and batch["source"].abs().max() <= 1
    # same template and size: masks are the stored labels grouped to background / face / hair
    from swaplab.faces.parsing import DEFAULT_GROUPS

    group_of = {c: g for g, members in enumerate(DEFAULT_GROUPS.values()) for c in members}
    lut = np.array([group_of[name] for name in CELEBAMASK_CLASSES])
    target = batch["index"].numpy() % len(IDS)
    assert np.array_equal(batch["target_mask"].numpy(), lut[maps[target]])
    assert batch["target_mask"].dtype == torch.int64
    ids = batch["target_identity"].numpy()
    assert np.array_equal(ids, np.array([-1 if IDS[t] is None else sorted(set(IDS) - {None}).index(IDS[t])
                                         for t in target]))
    same = batch["same"].numpy()
    assert np.all(batch["source_identity"].numpy()[same] == ids[same])
    assert not np.any((batch["source_identity"].numpy() == ids)[~same] & (ids[~same] >= 0))

    no_masks = PreprocessedFacePairs(tmp_path, resolution=16, template="arcface_112", masks=False)
    batch = prepare_batch(no_masks.__getitems__([0, 1]))
    assert set(batch) == set(CORE_KEYS) and batch["target"].shape == (2, 3, 16, 16)


def test_identity_subsets_and_dataloader_workers(tmp_path):
    write_store(tmp_path, "jpeg", IDS)
    subset = PreprocessedFacePairs(tmp_path, resolution=SIZE, identities=["bob", "cy"], same_identity_rate=0.0)
    assert len(subset) == 5
    batch = prepare_batch(subset.__getitems__(list(range(10))))
    assert set(batch["target_identity"].tolist()) <= {1, 2} and set(batch["source_identity"].tolist()) <= {1, 2}
    assert torch.all(batch["source_identity"] != batch["target_identity"])  # rate 0: always another identity
    with pytest.raises(ValueError, match="zed"):
        PreprocessedFacePairs(tmp_path, resolution=SIZE, identities=["bob", "zed"])

    everything = PreprocessedFacePairs(tmp_path, resolution=SIZE)
    loader = DataLoader(everything, batch_size=5, num_workers=2, collate_fn=collate_swaps)
    batches = list(loader)  # what crossed from the workers: uint8 crops
    assert len(batches) == 2 and batches[1]["target"].dtype == torch.uint8
    batch = prepare_batch(batches[1])
    assert batch["target"].shape == (5, 3, SIZE, SIZE)
    assert torch.equal(batch["target"], prepare_batch(everything.__getitems__(list(range(5, 10))))["target"])
