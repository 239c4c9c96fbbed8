"""Preprocessing inputs: listing images and videos, planning work items (one per image, one per chunk of a
video's selected frames) and decoding them in parallel DataLoader workers."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from swaplab.data.loader import fork_safe_opencv
from swaplab.io.files import IMAGE_SUFFIXES, read_rgb
from swaplab.io.video import (
    UNOPENABLE,
    VIDEO_SUFFIXES,
    VideoReadError,
    evenly_spaced,
    read_video_frames,
    video_frame_count,
)
from swaplab.preprocessing.options import PreprocessOptions

UNREADABLE = "unreadable image"


def list_inputs(path: str | Path) -> tuple[Path, list[str]]:
    """(input root, sorted relative paths of its images and videos); hidden files and folders are left out."""
    path = Path(path)
    suffixes = IMAGE_SUFFIXES | VIDEO_SUFFIXES
    if path.is_file():
        if path.suffix.lower() not in suffixes:
            raise ValueError(f"input {path} is neither an image nor a video ({sorted(suffixes)})")
        return path.parent, [path.name]
    if not path.is_dir():
        raise FileNotFoundError(f"input {path} does not exist: give an image, a video or a folder of them")
    units = [p.relative_to(path).as_posix() for p in path.rglob("*")
             if p.suffix.lower() in suffixes and p.is_file()]
    return path, sorted(u for u in units if not any(part.startswith(".") for part in u.split("/")))


def unit_identity(unit: str, mode: str) -> str | None:
    parts = unit.split("/")
    if mode == "folder":
        return parts[0] if len(parts) > 1 else None
    return Path(unit).stem if mode == "file" else None


def is_video(unit: str) -> bool:
    return Path(unit).suffix.lower() in VIDEO_SUFFIXES


@dataclass
class Item:
    unit: int  # index into the run's units
    frames: list[int] | None  # video frame numbers of this chunk; None: an image
    last: bool  # the unit's last item
    error: str | None = None  # a skip reason known while planning


class Decode(Dataset):
    """Work items -> decoded frames (uint8 tensors: shared memory between processes)."""

    def __init__(self, root: Path, units: list[str], items: list[Item]) -> None:
        self.root, self.units, self.items = root, units, items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = self.items[i]
        out: dict[str, Any] = {"item": item, "images": [], "frames": [], "error": item.error, "detail": ""}
        if item.error:
            return out
        path = self.root / self.units[item.unit]
        if item.frames is None:
            skipped: Counter = Counter()
            image = read_rgb(path, skipped)
            if image is None:
                out["error"], out["detail"] = UNREADABLE, next(iter(skipped))
            else:
                image = np.require(image, requirements=["C", "W"])  # PIL arrays are read-only
                out["images"], out["frames"] = [torch.from_numpy(image)], [-1]
            return out
        try:
            frames, _ = read_video_frames(path, item.frames, check_end=item.last)
        except VideoReadError as err:
            out["error"], out["detail"] = err.reason, str(err)
            return out
        out["images"], out["frames"] = [torch.from_numpy(f) for f in frames], list(item.frames)
        return out


class Probe(Dataset):
    """Video paths -> frame count, or the reason the video cannot be used."""

    def __init__(self, paths: list[Path]) -> None:
        self.paths = paths

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[int, str | None]:
        try:
            count = video_frame_count(self.paths[i])
        except VideoReadError as err:
            return 0, err.reason
        return count, None if count > 0 else UNOPENABLE


def _keep(sample: Any) -> Any:
    return sample


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)


def loader(dataset: Dataset, workers: int) -> DataLoader:
    if workers:
        fork_safe_opencv()
    return DataLoader(dataset, batch_size=None, shuffle=False, num_workers=workers, collate_fn=_keep,
                      worker_init_fn=_worker_init if workers else None)


def plan_items(root: Path, units: list[str], opts: PreprocessOptions) -> list[Item]:
    """One item per image, one per chunk of a video's selected frames (frame counts probed in parallel)."""
    videos = [i for i, u in enumerate(units) if is_video(u)]
    probe = loader(Probe([root / units[i] for i in videos]), min(opts.num_workers, len(videos)))
    probed = dict(zip(videos, probe, strict=True))
    items = []
    for i in range(len(units)):
        if i not in probed:
            items.append(Item(i, None, True))
            continue
        count, error = probed[i]
        if error:
            items.append(Item(i, [], True, error))
            continue
        wanted = np.arange(count) if opts.frames == "all" else evenly_spaced(count, int(opts.frames))
        chunks = [wanted[k: k + opts.chunk_frames].tolist() for k in range(0, len(wanted), opts.chunk_frames)]
        items.extend(Item(i, chunk, k == len(chunks) - 1) for k, chunk in enumerate(chunks))
    return items
