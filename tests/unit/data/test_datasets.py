"""Folder datasets (identity folders, identity file, flat FFHQ-style), template conversion, augmentation,
splits, missing data, and one FaceShifter training step through every data config."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from helpers import CONF, TINY, compose_config
from test_ffpp import video_store, write_store

from swaplab.data.folders import FaceFolderPairs
from swaplab.data.pairs import CORE_KEYS, FacePairs
from swaplab.data.prepare import prepare_batch
from swaplab.errors import DataNotFoundError
from swaplab.faces.templates import get_template

SIZE = 24  # stored crop size of the colour-coded trees


def colour(identity: int, image: int) -> tuple[int, int, int]:
    """RGB of image `image` of identity `identity` (flat colours survive JPEG and resizing)."""
    return (30 + 40 * identity, 30 + 50 * image, 128)


def write_crop(path: Path, rgb: tuple[int, int, int], size: int = SIZE) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = np.empty((size, size, 3), np.uint8)
    image[:] = rgb[::-1]  # cv2 writes BGR
    assert cv2.imwrite(str(path), image)


def identity_tree(root: Path, identities: int = 4, images: int = 3, suffix: str = ".png") -> Path:
    for i in range(identities):
        for j in range(images):
            write_crop(root / f"id{i:02d}" / f"{j:04d}{suffix}", colour(i, j))
    return root


def decode_colour(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(identity, image) of B x 3 x R x R colour-coded crops in [-1, 1]."""
    rgb = ((x.mean((2, 3)) + 1) * 127.5).round()
    return ((rgb[:, 0] - 30) / 40).round().long(), ((rgb[:, 1] - 30) / 50).round().long()


def folders(root: Path, **kwargs) -> FaceFolderPairs:
    options = {"resolution": 16, "stored_template": "faceshifter_256", "template": "faceshifter_256", **kwargs}
    return FaceFolderPairs(root, **options)


def check_schema(batch: dict, b: int, r: int) -> None:
    assert set(CORE_KEYS) <= set(batch)
    for side in ("source", "target"):
        assert batch[side].shape == (b, 3, r, r) and batch[side].dtype == torch.float32
        assert batch[side].min() >= -1 and batch[side].max() <= 1
        assert batch[f"{side}_identity"].shape == (b,) and batch[f"{side}_identity"].dtype == torch.int64
    for key in ("same", "same_image"):
        assert batch[key].shape == (b,) and batch[key].dtype == torch.bool
    assert batch["index"].dtype == torch.int64


def test_identity_folders_label_pairs_by_folder(tmp_path):
    data = folders(identity_tree(tmp_path / "vgg"), same_identity_rate=0.5, same_image_rate=0.3)
    assert len(data) == 12 and data.identity_names == ["id00", "id01", "id02", "id03"]
    batch = prepare_batch(data.__getitems__(list(range(48))))
    check_schema(batch, 48, 16)
    for side in ("source", "target"):
        identity, _ = decode_colour(batch[side])
        assert torch.equal(identity, batch[f"{side}_identity"])  # the label is the image's folder
    same = batch["same"]
    assert 0 < same.sum() < 48
    assert torch.equal(same, batch["source_identity"] == batch["target_identity"])
    _, src_img = decode_colour(batch["source"])
    _, tgt_img = decode_colour(batch["target"])
    assert torch.equal(batch["same_image"], same & (src_img == tgt_img))


def test_identity_file_layout(tmp_path):
    root = tmp_path / "celebahq"
    for n in range(6):
        write_crop(root / f"{n}.jpg", colour(n % 2, n // 2))
    write_crop(root / "unlisted.jpg", colour(3, 3))
    lines = [f"{n}.jpg person{n % 2}" for n in range(5)] + ["5.jpg person1"]  # by name
    (tmp_path / "ids.txt").write_text("\n".join(lines) + "\n")
    data = folders(root, layout="identity_file", identity_file=tmp_path / "ids.txt", same_identity_rate=1.0,
                   same_image_rate=0.0)
    assert len(data) == 6 and data.skipped["not in the identity file"] == 1
    batch = prepare_batch(data.__getitems__(list(range(6))))
    check_schema(batch, 6, 16)
    identity, _ = decode_colour(batch["source"])
    assert torch.equal(identity, batch["target_identity"]) and not batch["same_image"].any()


def test_flat_layout_has_unknown_identities(tmp_path):
    root = tmp_path / "ffhq"
    for n in range(8):
        write_crop(root / f"{n // 4:05d}" / f"{n:05d}.png", colour(n % 4, n // 4))  # FFHQ's nested folders
    data = folders(root, layout="flat", same_identity_rate=0.5, same_image_rate=0.0)
    assert len(data) == 8 and (data.identities == -1).all()
    batch = prepare_batch(data.__getitems__(list(range(64))))
    check_schema(batch, 64, 16)
    assert (batch["source_identity"] == -1).all()
    assert 0 < batch["same"].sum() < 64 and torch.equal(batch["same"], batch["same_image"])
    assert torch.equal(batch["source"][batch["same"]], batch["target"][batch["same"]])


def test_ffhq_crops_convert_to_the_output_template(tmp_path):
    stored = get_template("ffhq_256", 128)
    image = np.zeros((128, 128, 3), np.uint8)
    for x, y in stored.points:
        cv2.circle(image, (round(x * 16), round(y * 16)), 48, (255, 255, 255), -1, cv2.LINE_AA, shift=4)
    for name in ("a/0.png", "b/0.png"):
        (tmp_path / name).parent.mkdir(parents=True)
        cv2.imwrite(str(tmp_path / name), image)
    data = FaceFolderPairs(tmp_path, resolution=64, stored_template="ffhq_256", template="faceshifter_256")
    assert data.stored_size < 128  # decoded smaller: no upsampling needed at 64
    crop = prepare_batch(data.__getitems__([0]))["target"][0].mean(0)
    weight = (crop + 1).clamp(min=0)
    ys, xs = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    for x, y in get_template("faceshifter_256", 64).points:
        near = ((xs - x) ** 2 + (ys - y) ** 2 < 3.5**2).float() * weight
        centre = torch.stack([(near * xs).sum(), (near * ys).sum()]) / near.sum()
        assert torch.dist(centre, torch.tensor([x, y], dtype=torch.float32)) < 1.0, (x, y, centre)


class _MaskedCrops(FacePairs):
    """Left-right asymmetric crops whose mask is 1 exactly where the image is bright."""

    def __init__(self, **kwargs) -> None:
        super().__init__(np.repeat(np.arange(4), 2), 16, "faceshifter_256", "faceshifter_256", **kwargs)

    def read(self, indices):
        images = torch.zeros(len(indices), 16, 16, 3, dtype=torch.uint8)
        for row, i in enumerate(indices):
            images[row, : 2 + int(i), : 3 + int(i)] = 200
        return images, (images[..., 0] > 100).to(torch.uint8)


def test_augmentation_is_consistent():
    augment = {"hflip": 0.5, "brightness": 0.3, "contrast": 0.3, "saturation": 0.3}
    data = _MaskedCrops(same_identity_rate=0.6, same_image_rate=0.7, augment=augment)
    batch = prepare_batch(data.__getitems__(list(range(40))))
    same = batch["same_image"]
    assert same.any() and torch.equal(batch["source"][same], batch["target"][same])
    flipped = batch["target_mask"][:, 0, -1] == 1  # bright corner moved to the right
    assert 0 < flipped.sum() < 40
    for side in ("source", "target"):
        bright = batch[side].mean(1) > batch[side].mean((1, 2, 3))[:, None, None]
        assert torch.equal(bright, batch[f"{side}_mask"] == 1)  # masks flipped with their images


def test_validation_split_holds_out_whole_identities(tmp_path):
    root = identity_tree(tmp_path / "vgg", identities=5, images=2)
    write_crop(root / "id99" / "only.png", colour(0, 0))
    train = folders(root, split="train", val_identities=2, min_images_per_identity=2)
    val = folders(root, split="val", val_identities=2, min_images_per_identity=2)
    assert train.skipped["identity with < min_images_per_identity images"] == 1
    assert set(train.identities.tolist()) == {0, 1, 2} and set(val.identities.tolist()) == {3, 4}
    assert [val.identity_names[i] for i in sorted(set(val.identities.tolist()))] == ["id03", "id04"]
    subset = folders(root, identities=["id01", "id02"])
    assert set(subset.identities.tolist()) == {1, 2}


def test_missing_or_empty_root_is_one_clear_line(tmp_path):
    with pytest.raises(DataNotFoundError, match="does not exist") as missing:
        folders(tmp_path / "nowhere", source="https://github.com/NVlabs/ffhq-dataset")
    (tmp_path / "empty" / "id0").mkdir(parents=True)
    with pytest.raises(DataNotFoundError, match="contains no images") as empty:
        folders(tmp_path / "empty")
    for err, path in ((missing, tmp_path / "nowhere"), (empty, tmp_path / "empty")):
        message = str(err.value)
        assert "\n" not in message and str(path) in message and "<identity>" in message
    assert "ffhq-dataset" in str(missing.value)


def test_unreadable_file_at_read_time_is_replaced_and_counted(tmp_path):
    root = identity_tree(tmp_path / "vgg", suffix=".jpg")
    data = folders(root, same_identity_rate=0.0)
    broken = root / "id01" / "0001.jpg"
    broken.write_bytes(broken.read_bytes()[:10])  # truncated after listing
    (root / "id02" / "0000.jpg").write_bytes(b"")
    index = data.files.tolist().index(b"id01/0001.jpg")
    batch = prepare_batch(data.__getitems__(list(range(len(data)))))
    identity, image = decode_colour(batch["target"])
    assert identity[index] == 1 and image[index] != 1  # another crop of the same person stands in
    assert torch.equal(identity, batch["target_identity"])
    assert data.unreadable == {"id01/0001.jpg": 1, "id02/0000.jpg": 1}


def synthetic_crops(n: int, identities: int, size: int = 32) -> list[tuple[int, np.ndarray]]:
    """(identity, uint8 RGB face) pairs rendered by the procedural face model."""
    from swaplab.data.synthetic_faces import SyntheticFaces

    ids = torch.arange(n) % identities
    images = SyntheticFaces(resolution=size, supersample=1)(ids, torch.arange(n))["image"]
    rgb = ((images.permute(0, 2, 3, 1) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()
    return list(zip(ids.tolist(), rgb, strict=True))


def image_folder(root: Path, n: int = 8, nested: bool = False) -> None:
    for k, (_, face) in enumerate(synthetic_crops(n, n)):
        path = root / (f"{k // 4:05d}/{k:05d}.png" if nested else f"{k}.jpg")
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), cv2.cvtColor(face, cv2.COLOR_RGB2BGR))


def face_store(root: Path, n: int = 12, identities: int = 4) -> None:
    write_store(root, [({"source": f"id{i}/{k}.jpg", "identity": f"id{i}"}, face)
                       for k, (i, face) in enumerate(synthetic_crops(n, identities))], codec="jpeg")


def ffpp_store(root: Path, split: Path) -> None:
    faces = synthetic_crops(16, 4)
    video_store(root, {(v, f): faces[4 * k + f // 10][1] for k, v in enumerate(("953", "974", "012", "026"))
                       for f in (0, 10, 20, 30)})
    split.write_text(json.dumps([["953", "974"], ["012", "026"]]))  # the official split-file format


def data_trees(option: str, data: Path) -> list[str]:
    """Writes the tiny data `option` reads under `data`; returns the overrides pointing at it."""
    if option in ("celebahq", "faceshifter_mix"):
        image_folder(data / "celebahq")
    if option in ("ffhq", "faceshifter_mix"):
        image_folder(data / "ffhq", nested=True)
    if option in ("vggface2", "faceshifter_mix"):
        face_store(data / "vggface2_faces")
    if option == "faces":
        face_store(data / "faces")
    if option == "ffpp":
        ffpp_store(data / "ffpp_faces", data / "split.json")
        return [f"data.train.split={data / 'split.json'}", f"data.val.split={data / 'split.json'}"]
    if option in ("celebahq", "ffhq"):
        return ["data.train.val_identities=2"]
    if option in ("faces", "vggface2"):
        return ["data.train.val_identities=2"]
    if option == "faceshifter_mix":
        return ["data.train.datasets.0.val_identities=2", "data.train.datasets.1.val_identities=2",
                "data.train.datasets.2.val_identities=2"]
    return []


# Extended Yale B serves lighting pairs, not swap pairs: tested with the lighting network (test_configs.py)
DATA_OPTIONS = sorted(p.stem for p in (CONF / "data").glob("*.yaml") if p.stem not in ("yaleb", "synthetic_people"))


def test_every_face_dataset_has_a_config():
    assert {"vggface2", "celebahq", "ffhq", "faces", "ffpp", "faceshifter_mix", "synthetic"} <= set(DATA_OPTIONS)


@pytest.mark.parametrize("option", DATA_OPTIONS)
def test_data_config_trains_one_faceshifter_step(option, tmp_path):
    from swaplab.tasks.train import train

    tiny = TINY if option == "synthetic" else [o for o in TINY if not o.startswith(("data.train.", "data.val."))]
    overrides = [*tiny, f"data={option}", "model=faceshifter", f"paths.data_dir={tmp_path / 'data'}",
                 *data_trees(option, tmp_path / "data"), "logger=none", "callbacks=none", "trainer.max_steps=1",
                 "trainer.val_check_interval=1", "data.persistent_workers=false"]
    cfg = compose_config("train", tmp_path / "run", overrides)
    metrics, objects = train(cfg)
    assert objects["trainer"].global_step == 1
    batch = prepare_batch(next(iter(objects["datamodule"].train_dataloader())))
    assert set(CORE_KEYS) <= set(batch)
    assert batch["source"].shape == batch["target"].shape == (4, 3, 32, 32)
    assert batch["same"].dtype == torch.bool and batch["target_identity"].dtype == torch.int64
    assert np.isfinite(metrics["train/g/total"]) and "val/g/id" in metrics  # trained, then validated
