"""FaceForensics++ pairs on a miniature FF++ tree: the split / manipulated pairs, 10 evenly spaced target
frames, source frames of the source video, in-order validation batches, and the packaged split files."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from swaplab.data import SwapDataModule
from swaplab.data.ffpp import SPLITS_DIR, FaceForensicsPairs, load_split
from swaplab.data.prepare import prepare_batch
from swaplab.errors import DataNotFoundError

# video id -> frame count; ids and pair format of the real test split (its first two pairs)
VIDEOS = {"953": 23, "974": 37, "012": 50, "026": 31}
PAIRS = [["953", "974"], ["012", "026"]]
CELL = 16  # stamp cells of the 64 x 64 frames


def stamp(video: int, frame: int) -> np.ndarray:
    """A 64 x 64 RGB frame whose grey cells spell its frame index and video id (one decimal digit each)."""
    image = np.zeros((64, 64, 3), np.uint8)
    digits = [frame // 10, frame % 10, video // 100, video // 10 % 10, video % 10]
    for k, digit in enumerate(digits):
        y, x = divmod(k, 4)
        image[y * CELL:(y + 1) * CELL, x * CELL:(x + 1) * CELL] = 10 + 25 * digit
    return image


def read_stamps(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(video id, frame index) stamped in B x 3 x R x R crops in [-1, 1] (stored and output: same template)."""
    c = x.shape[-1] // 4
    grey = (x.mean(1) + 1) * 127.5
    digits = [((grey[:, y * c + c // 4:(y + 1) * c - c // 4, x * c + c // 4:(x + 1) * c - c // 4].mean((1, 2))
                - 10) / 25).round().long() for y, x in (divmod(k, 4) for k in range(5))]
    return digits[2] * 100 + digits[3] * 10 + digits[4], digits[0] * 10 + digits[1]


def write_video(path: Path, video: int, frames: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25, (64, 64))
    assert writer.isOpened()
    for f in range(frames):
        writer.write(stamp(video, f))
    writer.release()


@pytest.fixture(scope="module")
def ffpp(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ffpp")
    for video, frames in VIDEOS.items():
        write_video(root / "original_sequences/youtube/c23/videos" / f"{video}.mp4", int(video), frames)
    fakes = root / "manipulated_sequences/Deepfakes/c23/videos"
    fakes.mkdir(parents=True)
    for name in ("974_953", "953_974", "012_026", "026_974"):
        (fakes / f"{name}.mp4").write_bytes(b"")  # only the names matter
    (root / "split.json").write_text(json.dumps(PAIRS, indent=2))
    return root


def dataset(root: Path, **kwargs) -> FaceForensicsPairs:
    options = {"resolution": 32, "split": root / "split.json", "aligned": True, **kwargs}
    return FaceForensicsPairs(root, **options)


def spaced(n: int, k: int = 10) -> list[int]:
    return np.linspace(0, n - 1, k).round().astype(int).tolist()


def expected_samples(swaps: list[tuple[str, str]]) -> list[tuple[int, int, int, int]]:
    return [(int(t), f, int(s), spaced(VIDEOS[s])[r]) for t, s in swaps for r, f in enumerate(spaced(VIDEOS[t]))]


def samples_of(batch: dict) -> list[tuple[int, int, int, int]]:
    return list(zip(*(batch[k].tolist() for k in ("target_video", "frame", "source_video", "source_frame")),
                    strict=True))


def test_split_pairs_ten_evenly_spaced_frames_from_the_right_videos(ffpp):
    data = dataset(ffpp)
    swaps = [("953", "974"), ("974", "953"), ("012", "026"), ("026", "012")]  # a_b and b_a per split pair
    assert data.swaps == swaps and len(data) == 40
    batch = prepare_batch(data.__getitems__(list(range(len(data)))))
    assert samples_of(batch) == expected_samples(swaps)
    assert torch.equal(batch["target_identity"], batch["target_video"])
    assert not batch["same"].any() and not batch["same_image"].any()
    assert batch["target"].shape == batch["source"].shape == (40, 3, 32, 32)
    for side, frame in (("target", "frame"), ("source", "source_frame")):  # the pixels are those frames
        video, index = read_stamps(batch[side])
        assert torch.equal(video, batch[f"{side}_video"]) and torch.equal(index, batch[frame])


def test_manipulated_names_give_the_pairs(ffpp):
    data = dataset(ffpp, pairs="manipulated", split=None, method="Deepfakes")
    swaps = [("012", "026"), ("026", "974"), ("953", "974"), ("974", "953")]
    assert data.swaps == swaps
    assert samples_of(data.__getitems__(list(range(len(data))))) == expected_samples(swaps)
    in_split = dataset(ffpp, pairs="manipulated", method="Deepfakes")  # restricted to the split's swaps
    assert in_split.swaps == [("012", "026"), ("953", "974"), ("974", "953")]


def test_extracted_frames_layout(ffpp, tmp_path):
    for video, frames in VIDEOS.items():
        for f in range(frames):
            path = tmp_path / "original_sequences/youtube/c23/images" / video / f"{f:04d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(path), stamp(int(video), f))
    (tmp_path / "split.json").write_text(json.dumps(PAIRS))
    batch = prepare_batch(dataset(tmp_path).__getitems__(list(range(40))))
    assert samples_of(batch) == samples_of(dataset(ffpp).__getitems__(list(range(40))))
    video, index = read_stamps(batch["source"])
    assert torch.equal(video, batch["source_video"]) and torch.equal(index, batch["source_frame"])


def test_validation_batches_come_in_order(ffpp):
    data = dataset(ffpp)
    module = SwapDataModule(train=data, val=data, batch_size=8, val_batch_size=6)
    batches = list(module.val_dataloader())
    assert [len(b["index"]) for b in batches] == [6] * 6 + [4]
    assert torch.cat([b["index"] for b in batches]).tolist() == list(range(40))
    assert sum((samples_of(b) for b in batches), []) == samples_of(data.__getitems__(list(range(40))))
    train = next(iter(module.train_dataloader()))
    assert train["index"].max() < 40 and not FaceForensicsPairs.pairs_vary_by_epoch


def test_unreadable_video_drops_its_pairs(ffpp, tmp_path):
    root = tmp_path / "broken"
    for video, frames in VIDEOS.items():
        path = root / "original_sequences/youtube/c23/videos" / f"{video}.mp4"
        if video == "026":
            path.write_bytes(b"not a video")
        else:
            write_video(path, int(video), frames)
    (root / "split.json").write_text(json.dumps(PAIRS))
    data = dataset(root)
    assert data.swaps == [("953", "974"), ("974", "953"), ("012", "026"), ("026", "012")]
    assert len(data) == 20 and data.skipped["unreadable or empty video"] == 20


def test_missing_data_errors_name_the_fix(ffpp, tmp_path):
    with pytest.raises(DataNotFoundError, match="does not exist") as err:
        dataset(tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in str(err.value) and "\n" not in str(err.value)
    (tmp_path / "split.json").write_text(json.dumps([["953", "111"]]))
    with pytest.raises(DataNotFoundError, match="video 111 not found"):
        FaceForensicsPairs(ffpp, 32, split=tmp_path / "split.json", aligned=True)
    with pytest.raises(DataNotFoundError, match="python preprocess.py input=.*original_sequences"):
        dataset(ffpp, faces=tmp_path / "no_store", aligned=False)
    with pytest.raises(ValueError, match="full frames"):
        dataset(ffpp, aligned=False)


def test_packaged_splits_are_the_official_ones():
    shared = Path("/work/shared/data/ffpp_splits")
    sizes = {name: len(load_split(name)) for name in ("train", "val", "test")}
    assert sizes == {"train": 360, "val": 70, "test": 70}
    videos = [{v for pair in load_split(name) for v in pair} for name in ("train", "val", "test")]
    assert sum(map(len, videos)) == 1000 and len(set.union(*videos)) == 1000  # disjoint, 2 per pair
    for name in ("train", "val", "test"):
        assert (SPLITS_DIR / f"{name}.json").is_file()
        if shared.is_dir():
            assert json.loads((SPLITS_DIR / f"{name}.json").read_text()) == json.loads(
                (shared / f"{name}.json").read_text())


def write_store(root: Path, crops: list[tuple[dict, np.ndarray]], codec: str = "png") -> Path:
    """A preprocessed store (the store.py format) of S x S x 3 RGB crops with their manifest fields
    (source, frame, identity)."""
    from swaplab.data.store import ShardWriter, write_json

    meta = {"format": "swaplab-faces", "version": 1, "template": "faceshifter_256", "size": crops[0][1].shape[0],
            "image_codec": codec, "jpeg_quality": 95, "labels": False, "label_classes": []}
    root.mkdir(parents=True)
    write_json(root / "dataset.json", meta)
    writer = ShardWriter(root, 0, meta)
    for fields, crop in crops:
        writer.add(crop, {"frame": -1, "identity": None, "box": [0, 0, 1, 1], "landmarks": [[0, 0]] * 5,
                          "score": 1.0, "template": "faceshifter_256", "matrix": [[1, 0, 0], [0, 1, 0]], **fields})
    writer.close()
    return root


def video_store(root: Path, crops: dict[tuple[str, int], np.ndarray]) -> Path:
    """A store of FF++ frames {(video id, frame): crop}, as preprocess.py ... identity=file writes it."""
    return write_store(root, [({"source": f"{v}.mp4", "frame": f, "identity": f"{v}.mp4"}, crop)
                              for (v, f), crop in crops.items()])


def test_store_faces_by_video_and_frame_missing_faces_dropped(ffpp, tmp_path):
    crops = {(v, f): cv2.resize(stamp(int(v), f), (48, 48), interpolation=cv2.INTER_AREA)
             for v, n in VIDEOS.items() for f in spaced(n)}
    del crops[("974", spaced(37)[3])]  # no face found in that frame
    store = video_store(tmp_path / "faces", crops)
    data = dataset(ffpp, faces=store, aligned=False)
    expected = [s for s in expected_samples([("953", "974"), ("974", "953"), ("012", "026"), ("026", "012")])
                if s[2:] != (974, spaced(37)[3]) and s[:2] != (974, spaced(37)[3])]
    assert len(data) == 38 and data.skipped["no face in the store"] == 2
    batch = prepare_batch(data.__getitems__(list(range(len(data)))))
    assert samples_of(batch) == expected and batch["target"].shape == (38, 3, 32, 32)
    for side, frame in (("target", "frame"), ("source", "source_frame")):
        video, index = read_stamps(batch[side])
        assert torch.equal(video, batch[f"{side}_video"]) and torch.equal(index, batch[frame])
    # without the original videos: the store's frames of each video (the evenly spaced ones it kept)
    only_store = dataset(tmp_path / "no_videos", faces=store, aligned=False, split=ffpp / "split.json")
    kept = {v: sorted(f for w, f in crops if w == v) for v in VIDEOS}
    assert len(kept["974"]) == 9
    assert samples_of(only_store.__getitems__(list(range(len(only_store))))) == [
        (int(t), f, int(s), kept[s][r * len(kept[s]) // len(kept[t])])
        for t, s in only_store.swaps for r, f in enumerate(kept[t])]
