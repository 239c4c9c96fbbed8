"""FaceForensics++ swap pairs (`FaceForensicsPairs`): the fixed (target video, source video) pairs of an
official split file or of the manipulated videos of one method, on evenly spaced frames of each target.

Layout under `root` (https://github.com/ondyari/FaceForensics, download script after the access form):
`original_sequences/youtube/<compression>/videos/NNN.mp4` or extracted frames
`original_sequences/youtube/<compression>/images/NNN/<frame>.png`, and manipulated videos
`manipulated_sequences/<method>/<compression>/videos/<target>_<source>.mp4`.

Samples, in order: for each swap (target t, source s), for each of the `frames_per_video` evenly spaced
frames of t (`evenly_spaced` over t's frame count; rank r): target = frame r of t, source = the frame of
the same evenly spaced rank r in s (s's own count; a shorter s uses proportional ranks). FF++ frames are
full frames: crops come from a preprocessed store of the original videos (`faces`, looked up by video id
and frame index; samples whose target or source frame has no face there are dropped and counted) or, for
already cropped frames (`aligned: true`), from the videos / frame folders resized to `stored_size`.

`fakes`: a folder of swap videos `<target>_<source>` (FF++'s manipulated videos, to score them as a method's
swaps): the pairs are its videos, and each sample also carries `fake`, the swap video's frame of the target
frame's index, cropped as the target. `FaceForensicsFrames`: every face of every original video (ID retrieval's
gallery).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from collections.abc import Mapping
from pathlib import Path

import cv2
import numpy as np
import torch

from swaplab.data.pairs import FacePairs, pair_flags
from swaplab.data.prepare import GEOMETRY, MATRIX
from swaplab.data.store import FaceStore
from swaplab.errors import DataNotFoundError
from swaplab.faces.parsing import DEFAULT_GROUPS, group_matrix
from swaplab.faces.templates import CANONICAL, warp_image
from swaplab.io.files import IMAGE_SUFFIXES
from swaplab.io.video import (
    VIDEO_SUFFIXES,
    VideoReadError,
    evenly_spaced,
    read_video_frames,
    video_frame_count,
)
from swaplab.runtime import get_logger

log = get_logger(__name__)

SPLITS_DIR = Path(__file__).with_name("ffpp_splits")
FFPP_URL = "https://github.com/ondyari/FaceForensics"
METHODS = ("Deepfakes", "Face2Face", "FaceSwap", "NeuralTextures", "FaceShifter")


def load_split(split: str | os.PathLike) -> list[tuple[str, str]]:
    """Pairs [a, b] of a packaged split ('train' | 'val' | 'test') or of a JSON file in that format."""
    path = SPLITS_DIR / f"{split}.json" if str(split) in ("train", "val", "test") else Path(split)
    if not path.is_file():
        raise DataNotFoundError(f"FF++ split file {path} does not exist: expected a JSON list of "
                                f"[video id, video id] pairs as in {FFPP_URL} (dataset/splits)")
    pairs = json.loads(path.read_text())
    if not all(isinstance(p, list) and len(p) == 2 for p in pairs):
        raise ValueError(f"{path}: expected a JSON list of [video id, video id] pairs")
    return [(str(a), str(b)) for a, b in pairs]


def split_swaps(pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """(target, source) swaps of split pairs: [a, b] means a_b and b_a."""
    return [swap for a, b in pairs for swap in ((a, b), (b, a))]


def manipulated_swaps(root: Path, method: str, compression: str,
                      videos: Path | None = None) -> list[tuple[str, str]]:
    """(target, source) from the sorted names `<target>_<source>` of one method's videos or frame folders (or of
    the videos in the folder `videos`)."""
    base = root / "manipulated_sequences" / method / compression
    folders = {"videos": videos} if videos is not None else {kind: base / kind for kind in ("videos", "images")}
    names = set()
    for kind, folder in folders.items():
        if folder.is_dir():
            names |= {p.stem for p in folder.iterdir()
                      if (p.is_dir() if kind == "images" else p.suffix.lower() in VIDEO_SUFFIXES)}
    swaps = sorted(tuple(n.split("_")) for n in names if n.count("_") == 1)
    if not swaps:
        raise DataNotFoundError(f"no manipulated videos <target>_<source> under {folders.get('videos')}: download "
                                f"FF++ '{method}' ({compression}) from {FFPP_URL}")
    return swaps


class FaceForensicsPairs(FacePairs):
    """FF++ evaluation pairs (fixed, in file order). Batches add `frame` / `source_frame` (frame indices),
    `target_video` / `source_video` (int video ids, also the identity labels); `same` is always False.
    `faceless`: the (target video, frame, source video, source frame) samples dropped because the store has no
    face in one of their frames."""

    pairs_vary_by_epoch = False

    def __init__(
        self,
        root: str | os.PathLike,
        resolution: int,
        split: str | os.PathLike | None = "test",  # train | val | test (packaged) or a split JSON path
        pairs: str = "split",  # split: 2 swaps per split pair | manipulated: names of `method`'s videos
        method: str = "Deepfakes",
        compression: str = "c23",
        frames_per_video: int = 10,
        faces: str | os.PathLike | None = None,  # preprocessed store of the original videos
        aligned: bool = False,  # frames are already face crops in `stored_template` (no store needed)
        stored_template: str = CANONICAL,
        stored_size: int | None = None,  # aligned frames are resized to this (default: resolution)
        template: str = CANONICAL,
        masks: bool = True,
        seed: int = 0,
        augment: Mapping[str, float] | None = None,
        fakes: str | os.PathLike | None = None,  # a folder of <target>_<source> swap videos to read as `fake`
    ) -> None:
        if pairs not in ("split", "manipulated"):
            raise ValueError(f"pairs must be 'split' or 'manipulated', got {pairs!r}")
        if frames_per_video < 1:
            raise ValueError(f"frames_per_video must be >= 1, got {frames_per_video}")
        self.root, self.frames_per_video = Path(root), int(frames_per_video)
        self.fakes = Path(fakes) if fakes is not None else None
        self.originals = self.root / "original_sequences" / "youtube" / compression
        self.skipped: Counter = Counter()
        self.faceless: list[tuple[int, int, int, int]] = []  # samples dropped for a frame without a face
        if faces is None and not aligned:
            raise ValueError("FF++ frames are full frames: set faces=<store dir> (python preprocess.py "
                             f"input={self.originals}/videos output=<dir> frames={frames_per_video} "
                             "identity=file) or aligned=true for frames that are already face crops")
        self.store = None
        if faces is not None:
            if not (Path(faces) / "dataset.json").is_file():
                raise DataNotFoundError(
                    f"FF++ face store {faces} does not exist: build it with python preprocess.py "
                    f"input={self.originals}/videos output={faces} frames={frames_per_video} identity=file")
            self.store = FaceStore(faces)
            stored_template, stored_size = self.store.meta["template"], int(self.store.meta["size"])
            self._rows = {(Path(str(src)).stem, int(f)): i for i, (src, f) in
                          reversed(list(enumerate(zip(self.store.sources, self.store.frames, strict=True))))}
        elif not self.root.is_dir():
            raise DataNotFoundError(f"FF++ root {self.root} does not exist: expected original_sequences/youtube/"
                                    f"{compression}/videos/NNN.mp4 (or images/NNN/*.png) there; see {FFPP_URL}")
        self.masks = masks and self.store is not None and bool(self.store.meta.get("labels"))
        self.stored_size = int(stored_size or resolution)

        self._media: dict[str, Path | list[Path] | None] = {}
        self.swaps = swaps = self._swaps(pairs, split, method, compression)
        samples = self._samples(swaps)  # rows: target video, target frame, source video, source frame
        if not len(samples):
            raise DataNotFoundError(f"no FF++ samples left for {self.root} (skipped: {dict(self.skipped)})")
        if self.skipped.total():
            log.warning("FF++ %s: dropped %s", split, dict(self.skipped))
        keys, inverse = np.unique(np.concatenate([samples[:, :2], samples[:, 2:]]), axis=0, return_inverse=True)
        self.crop_keys = keys  # (video id, frame) of every crop read
        n = len(samples)
        self.sample_target = torch.from_numpy(inverse.reshape(-1)[:n].astype(np.int64))
        self.sample_source = torch.from_numpy(inverse.reshape(-1)[n:].astype(np.int64))
        super().__init__(keys[:, 0], resolution, stored_template, template, 0.0, 0.0, seed, augment)

    def _swaps(self, pairs: str, split: str | os.PathLike | None, method: str,
               compression: str) -> list[tuple[str, str]]:
        if pairs == "split" and self.fakes is None:
            return split_swaps(load_split(split))
        swaps = manipulated_swaps(self.root, method, compression, self.fakes)
        if split is not None:
            allowed = set(split_swaps(load_split(split)))
            swaps = [s for s in swaps if s in allowed]
        return swaps

    def fingerprint(self) -> str:
        """sha256 naming the crops this dataset reads: their (video, frame) keys and the files they come from
        (the face store's files, or the originals' videos / frames), by path, size and modification time."""
        digest = hashlib.sha256(np.ascontiguousarray(self.crop_keys).tobytes())
        digest.update(f"{self.stored_template.name}:{self.stored_size}:{self.template.name}".encode())
        if self.store is not None:
            files = sorted(p for p in self.store.root.rglob("*") if p.is_file())
        else:
            files = []
            for video in np.unique(self.crop_keys[:, 0]).tolist():
                media = self.media(self._video_name(video))
                files += media if isinstance(media, list) else [media]
        for file in files:
            stat = file.stat()
            digest.update(f"{file.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode())
        return digest.hexdigest()

    def _video_name(self, video: int | str) -> str:
        return f"{int(video):03d}" if str(video).isdigit() else str(video)

    def media(self, video: str) -> Path | list[Path] | None:
        """The original video file of `video`, or its sorted extracted frame files; None when absent."""
        if video not in self._media:
            found: Path | list[Path] | None = None
            for suffix in VIDEO_SUFFIXES:
                if (path := self.originals / "videos" / f"{video}{suffix}").is_file():
                    found = path
                    break
            if found is None and (folder := self.originals / "images" / video).is_dir():
                found = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) or None
            self._media[video] = found
        return self._media[video]

    def _frames(self, video: str) -> np.ndarray | None:
        """The evenly spaced frames of `video` (None: no frames to be had)."""
        media = self.media(video)
        if isinstance(media, list):
            count = len(media)
        elif media is not None:
            try:
                count = video_frame_count(media)
            except VideoReadError:
                count = 0
        elif self.store is not None:  # store only: its frames of the video were the evenly spaced ones
            stored = np.array(sorted(f for v, f in self._rows if v == video), np.int64)
            return stored[evenly_spaced(len(stored), self.frames_per_video)] if len(stored) else None
        else:
            raise DataNotFoundError(f"FF++ video {video} not found under {self.originals}/videos (or images/"
                                    f"{video}/): download the originals ({FFPP_URL})")
        return evenly_spaced(count, self.frames_per_video) if count > 0 else None

    def _samples(self, swaps: list[tuple[str, str]]) -> np.ndarray:
        frames = {v: self._frames(v) for v in sorted({v for swap in swaps for v in swap})}
        rows = []
        for target, source in swaps:
            tf, sf = frames[target], frames[source]
            if tf is None or sf is None:
                self.skipped["unreadable or empty video"] += len(tf) if tf is not None else self.frames_per_video
                continue
            for rank, frame in enumerate(tf.tolist()):
                source_frame = int(sf[rank * len(sf) // len(tf)])
                if self.store is not None and ((target, frame) not in self._rows
                                               or (source, source_frame) not in self._rows):
                    self.skipped["no face in the store"] += 1
                    self.faceless.append((int(target), frame, int(source), source_frame))
                    continue
                rows.append((int(target), frame, int(source), source_frame))
        return np.array(rows, np.int64).reshape(-1, 4)

    def __len__(self) -> int:
        return len(self.sample_target)

    def pairs(self, keys: torch.Tensor) -> dict[str, torch.Tensor]:
        if keys.numel() and keys.max() >= len(self):
            raise IndexError(f"sample index out of range [0, {len(self)})")
        never = torch.zeros(len(keys), dtype=torch.bool)
        return {"target": self.sample_target[keys], "source": self.sample_source[keys], **pair_flags(never, never)}

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        batch = super().__getitems__(indices)
        keys = torch.from_numpy(self.crop_keys)
        target, source = keys[self.sample_target[batch["index"]]], keys[self.sample_source[batch["index"]]]
        batch["target_video"], batch["frame"] = target[:, 0], target[:, 1]
        batch["source_video"], batch["source_frame"] = source[:, 0], source[:, 1]
        if self.fakes is not None:
            batch["fake"] = self.read_fakes(batch["target_video"].numpy(), batch["frame"].numpy(),
                                            batch["source_video"].numpy())
        return batch

    def read_fakes(self, targets: np.ndarray, frames: np.ndarray, sources: np.ndarray) -> torch.Tensor:
        """The frame `frames` of each swap video `<target>_<source>` in `fakes`, cropped as that frame of the
        target is (manipulated videos keep the original's geometry): with the store's transform of the target
        frame, or, for aligned frames, resized alike. uint8 B x 3 x S x S at the stored size and template, as the
        target crops (prepare_batch finishes both alike)."""
        size = self.store.size if self.store is not None else self.stored_size
        out = np.empty((len(frames), size, size, 3), np.uint8)
        names = np.array([f"{self._video_name(t)}_{self._video_name(s)}"
                          for t, s in zip(targets, sources, strict=True)])
        for name in np.unique(names).tolist():
            at = np.flatnonzero(names == name)
            wanted, inverse = np.unique(frames[at], return_inverse=True)
            path = next((p for suffix in VIDEO_SUFFIXES if (p := self.fakes / f"{name}{suffix}").is_file()), None)
            if path is None:
                raise DataNotFoundError(f"no swap video {name} in {self.fakes}")
            images = read_video_frames(path, wanted, check_end=False)[0]
            for row, k in zip(at, inverse.reshape(-1).tolist(), strict=True):
                out[row] = self._crop_like(images[k], self._video_name(targets[row]), int(frames[row]), size)
        return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()

    def _crop_like(self, image: np.ndarray, video: str, frame: int, size: int) -> np.ndarray:
        """`image` (a full frame of `video`'s geometry) cropped as the stored crop of (video, frame)."""
        if self.store is None:
            return self._resize(image, size)
        if not hasattr(self, "_matrices"):
            self._matrices = self.store.matrices()
        return warp_image(image, self._matrices[self._rows[(video, frame)]], size)

    @staticmethod
    def _resize(image: np.ndarray, size: int) -> np.ndarray:
        return cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA if image.shape[0] > size
                          else cv2.INTER_LINEAR)

    def read(self, indices: np.ndarray) -> tuple[torch.Tensor, torch.Tensor | None]:
        keys = self.crop_keys[np.asarray(indices, np.int64)]
        if self.store is not None:
            rows = np.array([self._rows[(self._video_name(v), int(f))] for v, f in keys], np.int64)
            images = self.store.read_images(rows)
            labels = self.store.read_labels(rows) if self.masks else None
            if labels is not None:
                labels = self._three_classes(labels)
            return images, labels
        s = self.stored_size
        out = np.empty((len(keys), s, s, 3), np.uint8)
        for video in np.unique(keys[:, 0]).tolist():
            at = np.flatnonzero(keys[:, 0] == video)
            for row, image in zip(at, self._read_frames(self._video_name(video), keys[at, 1]), strict=True):
                out[row] = self._resize(image, s)
        return torch.from_numpy(out), None

    def _read_frames(self, video: str, frames: np.ndarray) -> list[np.ndarray]:
        media = self.media(video)
        if isinstance(media, list):
            images = [cv2.imread(str(media[f]), cv2.IMREAD_COLOR) for f in frames.tolist()]
            if any(image is None for image in images):
                raise OSError(f"cannot decode frames {frames.tolist()} of {self.originals / 'images' / video}")
            return [cv2.cvtColor(image, cv2.COLOR_BGR2RGB) for image in images]
        return read_video_frames(media, frames, check_end=False)[0]

    def _three_classes(self, labels: torch.Tensor) -> torch.Tensor:
        _, matrix = group_matrix(DEFAULT_GROUPS)  # groups background, face, hair: the class index
        return matrix.argmax(0)[labels.long()]


class FaceForensicsFrames(FaceForensicsPairs):
    """Every face of every original FF++ video, for ID retrieval's gallery (FaceShifter, Li et al. 2020: the
    nearest frame among all frames of the original videos). Items: `image` (the crop), `video` (int id, the
    label) and `frame`. With a face store (`faces`), the frames it holds of each video (those with a face; a
    store built with `frames=all` holds every frame); from videos of face crops (`aligned: true`), each
    video's frames. `frames_per_video`: that many evenly spaced frames of each instead of all of them."""

    def __init__(self, root: str | os.PathLike, resolution: int, compression: str = "c23",
                 frames_per_video: int | None = None, faces: str | os.PathLike | None = None, aligned: bool = False,
                 stored_template: str = CANONICAL, stored_size: int | None = None, template: str = CANONICAL) -> None:
        self.every_frame = frames_per_video is None
        super().__init__(root, resolution, split=None, compression=compression,
                         frames_per_video=frames_per_video or 1, faces=faces, aligned=aligned,
                         stored_template=stored_template, stored_size=stored_size, template=template, masks=False)

    def _swaps(self, pairs: str, split: str | os.PathLike | None, method: str,
               compression: str) -> list[tuple[str, str]]:
        """Each original video paired with itself (target = source: one crop per frame)."""
        names = {Path(str(source)).stem for source in self.store.sources} if self.store is not None else set()
        for kind in ("videos", "images"):
            if (self.originals / kind).is_dir():
                names |= {p.stem for p in (self.originals / kind).iterdir()
                          if (p.is_dir() if kind == "images" else p.suffix.lower() in VIDEO_SUFFIXES)}
        videos = sorted(n for n in names if n.isdigit())
        if not videos:
            raise DataNotFoundError(f"no original FF++ videos under {self.originals} or in the face store")
        return [(v, v) for v in videos]

    def _frames(self, video: str) -> np.ndarray | None:
        if self.store is not None:
            if not hasattr(self, "_stored_frames"):
                self._stored_frames: dict[str, list[int]] = {}
                for v, f in sorted(self._rows):
                    self._stored_frames.setdefault(v, []).append(f)
            frames = np.array(self._stored_frames.get(video, []), np.int64)
        elif (media := self.media(video)) is None:
            return None
        else:
            try:
                frames = np.arange(len(media) if isinstance(media, list) else video_frame_count(media))
            except VideoReadError:
                return None
        if not len(frames):
            return None
        return frames if self.every_frame else frames[evenly_spaced(len(frames), self.frames_per_video)]

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        batch = super().__getitems__(indices)
        return {"image": batch["target"], "video": batch["target_video"], "frame": batch["frame"],
                **{k: batch[k] for k in (GEOMETRY, MATRIX)}}
