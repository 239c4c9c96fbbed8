"""The preprocessed face store: aligned crops in shards of memory-mapped arrays plus a JSON-lines manifest.

Layout of `<root>` (written by `preprocess.py`, read by `FaceStore` / `PreprocessedFacePairs`):

- `dataset.json`: {"format": "swaplab-faces", "version": 1, "template", "size", "image_codec" ("jpeg" | "png" |
  "raw"), "jpeg_quality", "labels" (19-class CelebAMask-HQ parsing labels stored), "label_classes"}.
- `shards/shard-NNNNN.images.npy`: jpeg / png: the encoded crops concatenated (1-D uint8) with
  `shard-NNNNN.images.offsets.npy` (int64, N + 1); raw: N x S x S x 3 uint8. Optional `.labels.npy` +
  `.labels.offsets.npy` (PNG-encoded S x S uint8 label maps). `.manifest.jsonl`: one row per crop, in shard
  order (source, frame, identity, box, landmarks, score, template, matrix, ...). `.done.json`: written last
  (every file goes through tmp + os.replace), lists the input units of the shard and their status. A shard
  without done.json is incomplete: readers ignore it and preprocessing redoes its units.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from swaplab.data.pairs import FacePairs, identity_split
from swaplab.errors import DataNotFoundError
from swaplab.faces.parsing import DEFAULT_GROUPS, group_matrix
from swaplab.faces.templates import CANONICAL

FORMAT, VERSION = "swaplab-faces", 1
CODECS = ("jpeg", "png", "raw")
SHARD_DIR = "shards"
_HEADER_BYTES = 128  # .npy v1 header of a uint8 array of up to 4 dimensions always fits (64-byte aligned)
_HOW_TO = "python preprocess.py input=<images or videos> output={root}"


def shard_prefix(root: str | Path, number: int) -> Path:
    return Path(root) / SHARD_DIR / f"shard-{number:05d}"


def complete_shards(root: str | Path) -> list[int]:
    """Numbers of the shards that have their done.json, sorted."""
    return sorted(int(p.name[6:11]) for p in (Path(root) / SHARD_DIR).glob("shard-?????.done.json"))


def incomplete_shard_files(root: str | Path) -> list[Path]:
    """Files (and leftover .tmp files) of shards without done.json."""
    done = set(complete_shards(root))
    return sorted(p for p in (Path(root) / SHARD_DIR).glob("shard-*")
                  if not (p.name[6:11].isdigit() and int(p.name[6:11]) in done and not p.name.endswith(".tmp")))


def read_done(root: str | Path, number: int) -> dict[str, Any]:
    return json.loads(Path(f"{shard_prefix(root, number)}.done.json").read_text())


def _replace_atomically(path: Path, write: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_json(path: str | Path, data: Any) -> None:
    """JSON written through a temporary file and os.replace: readers see the old file or the new one."""
    _replace_atomically(Path(path), lambda f: f.write((json.dumps(data, indent=1) + "\n").encode()))


def encode_image(image: np.ndarray, codec: str, jpeg_quality: int = 95) -> np.ndarray:
    """uint8 S x S x 3 RGB (or S x S labels) -> 1-D uint8 bytes (jpeg / png), or the array itself (raw)."""
    if codec == "raw":
        return np.ascontiguousarray(image)
    bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.ndim == 3 else image
    params = [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)] if codec == "jpeg" else []
    ok, buf = cv2.imencode(".jpg" if codec == "jpeg" else ".png", bgr, params)
    if not ok:
        raise ValueError(f"cv2 could not encode a {image.shape} crop as {codec}")
    return buf.reshape(-1)


def decode_image(buf: np.ndarray, color: bool = True) -> np.ndarray:
    image = cv2.imdecode(np.asarray(buf), cv2.IMREAD_COLOR if color else cv2.IMREAD_GRAYSCALE)
    if image is None:
        raise ValueError("a stored crop does not decode: the store is damaged")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB) if color else image


class _NpyAppender:
    """A uint8 .npy file filled by appending bytes: the 128-byte header is written once the shape is known."""

    def __init__(self, path: Path) -> None:
        self.path, self.tmp = path, path.with_name(path.name + ".tmp")
        self.file = open(self.tmp, "wb")  # noqa: SIM115 - closed in finish()
        self.file.write(b"\0" * _HEADER_BYTES)
        self.nbytes = 0

    def append(self, data: np.ndarray) -> None:
        self.file.write(np.ascontiguousarray(data, np.uint8).tobytes())
        self.nbytes += data.nbytes

    def finish(self, shape: tuple[int, ...]) -> None:
        if int(np.prod(shape)) != self.nbytes:
            raise ValueError(f"{self.path}: {self.nbytes} bytes written for shape {shape}")
        header = {"descr": "|u1", "fortran_order": False, "shape": tuple(int(s) for s in shape)}
        text = repr(header).encode("latin1")
        text += b" " * (_HEADER_BYTES - 10 - len(text) - 1) + b"\n"
        self.file.seek(0)
        self.file.write(b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text)
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        os.replace(self.tmp, self.path)


class ShardWriter:
    """Writes one shard: `add` crops (with their manifest rows), `record` input units, then `close`, which
    finishes every file and writes done.json last."""

    def __init__(self, root: str | Path, number: int, meta: dict[str, Any]) -> None:
        self.prefix, self.meta, self.number = shard_prefix(root, number), meta, number
        self.prefix.parent.mkdir(parents=True, exist_ok=True)
        self.codec, self.size = meta["image_codec"], int(meta["size"])
        self.images = _NpyAppender(Path(f"{self.prefix}.images.npy"))
        self.labels = _NpyAppender(Path(f"{self.prefix}.labels.npy")) if meta["labels"] else None
        self.offsets, self.label_offsets = [0], [0]
        self.manifest = open(f"{self.prefix}.manifest.jsonl.tmp", "w")  # noqa: SIM115 - closed in close()
        self.units: list[dict[str, Any]] = []

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def add(self, crop: np.ndarray, row: dict[str, Any], labels: np.ndarray | None = None) -> None:
        if crop.shape != (self.size, self.size, 3) or crop.dtype != np.uint8:
            raise ValueError(f"crops must be uint8 {self.size} x {self.size} x 3, got {crop.dtype} {crop.shape}")
        data = encode_image(crop, self.codec, self.meta.get("jpeg_quality", 95))
        self.images.append(data)
        self.offsets.append(self.offsets[-1] + data.size)
        if self.labels is not None:
            if labels is None:
                raise ValueError("this store keeps parsing labels: every crop needs its label map")
            encoded = encode_image(np.ascontiguousarray(labels, np.uint8), "png")
            self.labels.append(encoded)
            self.label_offsets.append(self.label_offsets[-1] + encoded.size)
        self.manifest.write(json.dumps(row) + "\n")

    def record(self, unit: dict[str, Any]) -> None:
        """One input unit (source, status "ok" or the skip reason, counts) for done.json."""
        self.units.append(unit)

    def close(self) -> None:
        n = len(self)
        if self.codec == "raw":
            self.images.finish((n, self.size, self.size, 3))
        else:
            self.images.finish((self.offsets[-1],))
            _replace_atomically(Path(f"{self.prefix}.images.offsets.npy"),
                                lambda f: np.save(f, np.asarray(self.offsets, np.int64)))
        if self.labels is not None:
            self.labels.finish((self.label_offsets[-1],))
            _replace_atomically(Path(f"{self.prefix}.labels.offsets.npy"),
                                lambda f: np.save(f, np.asarray(self.label_offsets, np.int64)))
        self.manifest.flush()
        os.fsync(self.manifest.fileno())
        self.manifest.close()
        os.replace(f"{self.prefix}.manifest.jsonl.tmp", f"{self.prefix}.manifest.jsonl")
        write_json(f"{self.prefix}.done.json", {"shard": self.number, "faces": n, "units": self.units})


class FaceStore:
    """Read access to a preprocessed store: manifest columns and batched crop / label decoding.

    Memory maps open lazily in each process (the store pickles without them, for DataLoader workers).
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataNotFoundError(f"data root {self.root} does not exist: expected a preprocessed face store "
                                    f"(dataset.json + shards/) made by `{_HOW_TO.format(root=self.root)}`")
        meta_path = self.root / "dataset.json"
        if not meta_path.is_file():
            raise DataNotFoundError(f"{self.root} is not a preprocessed face store (no dataset.json): make one "
                                    f"with `{_HOW_TO.format(root=self.root)}`")
        self.meta: dict[str, Any] = json.loads(meta_path.read_text())
        if self.meta.get("format") != FORMAT or self.meta.get("image_codec") not in CODECS:
            raise ValueError(f"{meta_path} is not a {FORMAT} dataset.json (format {self.meta.get('format')!r}, "
                             f"codec {self.meta.get('image_codec')!r})")
        self.shards = complete_shards(self.root)
        if not self.shards:
            raise DataNotFoundError(f"{self.root} has no complete shard (no shards/*.done.json): preprocessing "
                                    f"did not finish; run `{_HOW_TO.format(root=self.root)}` again to complete it")
        rows: list[dict[str, Any]] = []
        counts = []
        for number in self.shards:
            with open(f"{shard_prefix(self.root, number)}.manifest.jsonl") as f:
                shard_rows = [json.loads(line) for line in f if line.strip()]
            rows.extend(shard_rows)
            counts.append(len(shard_rows))
        if not rows:
            raise DataNotFoundError(f"{self.root} holds no faces: every input was skipped (see its summary.json)")
        self.rows = rows
        self.starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)  # first global index per shard
        self.size = int(self.meta["size"])
        self.template = str(self.meta["template"])
        self.has_labels = bool(self.meta.get("labels"))
        self.sources = [r["source"] for r in rows]
        self.frames = np.array([r.get("frame", -1) for r in rows], np.int64)
        self.scores = np.array([r.get("score", np.nan) for r in rows], np.float32)
        names = [r.get("identity") for r in rows]
        self.identity_names = sorted({n for n in names if n is not None})
        lookup = {n: i for i, n in enumerate(self.identity_names)}
        self.identities = np.array([lookup[n] if n is not None else -1 for n in names], np.int64)
        self._maps: dict[int, tuple[Any, ...]] = {}

    def __len__(self) -> int:
        return len(self.rows)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_maps": {}}

    def matrices(self) -> np.ndarray:
        """N x 2 x 3 image -> crop transforms."""
        return np.array([r["matrix"] for r in self.rows], np.float64).reshape(-1, 2, 3)

    def landmarks(self) -> np.ndarray:
        """N x 5 x 2 landmarks in source-image pixels."""
        return np.array([r["landmarks"] for r in self.rows], np.float64).reshape(-1, 5, 2)

    def _arrays(self, shard: int) -> tuple[Any, ...]:
        if shard not in self._maps:
            prefix = shard_prefix(self.root, self.shards[shard])
            images = np.load(f"{prefix}.images.npy", mmap_mode="r")
            offsets = None if self.meta["image_codec"] == "raw" else np.load(f"{prefix}.images.offsets.npy")
            labels = label_offsets = None
            if self.has_labels:
                labels = np.load(f"{prefix}.labels.npy", mmap_mode="r")
                label_offsets = np.load(f"{prefix}.labels.offsets.npy")
            n = int(self.starts[shard + 1] - self.starts[shard])
            stored = len(images) if offsets is None else len(offsets) - 1
            if stored != n:
                raise ValueError(f"{prefix}: {stored} crops stored but {n} manifest rows: the shard is damaged")
            self._maps[shard] = (images, offsets, labels, label_offsets)
        return self._maps[shard]

    def _locate(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        indices = np.asarray(indices, np.int64).reshape(-1)
        if len(indices) and (indices.min() < 0 or indices.max() >= len(self)):
            raise IndexError(f"face index out of range [0, {len(self)})")
        shard = np.searchsorted(self.starts, indices, side="right") - 1
        return shard, indices - self.starts[shard]

    def read_images(self, indices: np.ndarray | Sequence[int]) -> torch.Tensor:
        """Crops `indices` as uint8 B x S x S x 3 RGB."""
        shards, local = self._locate(np.asarray(indices))
        out = np.empty((len(local), self.size, self.size, 3), np.uint8)
        for shard in np.unique(shards):
            images, offsets, _, _ = self._arrays(int(shard))
            rows = np.flatnonzero(shards == shard)
            if offsets is None:
                order = np.argsort(local[rows])  # ascending reads from the memory map
                out[rows[order]] = images[local[rows][order]]
            else:
                for r in rows:
                    out[r] = decode_image(images[offsets[local[r]]: offsets[local[r] + 1]])
        return torch.from_numpy(out)

    def read_labels(self, indices: np.ndarray | Sequence[int]) -> torch.Tensor | None:
        """19-class parsing labels of crops `indices` as uint8 B x S x S, or None when the store has none."""
        if not self.has_labels:
            return None
        shards, local = self._locate(np.asarray(indices))
        out = np.empty((len(local), self.size, self.size), np.uint8)
        for shard in np.unique(shards):
            _, _, labels, offsets = self._arrays(int(shard))
            for r in np.flatnonzero(shards == shard):
                out[r] = decode_image(labels[offsets[local[r]]: offsets[local[r] + 1]], color=False)
        return torch.from_numpy(out)


class PreprocessedFacePairs(FacePairs):
    """Swap pairs from a preprocessed store (`preprocess.py`), optionally restricted to some identities (by
    name) and to a `split` holding out the last `val_identities` people; with stored parsing labels and
    `masks`, also 3-class masks. Faces without an identity count as one person each."""

    def __init__(self, root: str | Path, resolution: int, template: str = CANONICAL,
                 same_identity_rate: float = 0.2, same_image_rate: float = 1.0, seed: int = 0,
                 augment: dict[str, float] | None = None, identities: Sequence[str] | None = None,
                 masks: bool = True, split: str = "all", val_identities: int = 0) -> None:
        self.store = FaceStore(root)
        if identities is None:
            keep = np.ones(len(self.store), bool)
        else:
            wanted = [str(i) for i in identities]
            unknown = sorted(set(wanted) - set(self.store.identity_names))
            if unknown:
                raise ValueError(f"identities {unknown[:5]}{' ...' if len(unknown) > 5 else ''} are not in the "
                                 f"store {self.store.root} ({len(self.store.identity_names)} identities)")
            keep = np.isin(self.store.identities, [self.store.identity_names.index(n) for n in wanted])
        groups = np.where(self.store.identities >= 0, self.store.identities,
                          len(self.store.identity_names) + np.arange(len(self.store)))
        self.index = np.flatnonzero(identity_split(groups, keep, split, val_identities, str(self.store.root)))
        self.masks = bool(masks) and self.store.has_labels
        _, matrix = group_matrix(DEFAULT_GROUPS)
        self.class_to_group = matrix.argmax(0).to(torch.uint8)  # 19 classes -> 0 background, 1 face, 2 hair
        super().__init__(self.store.identities[self.index], resolution, self.store.template, template,
                         same_identity_rate, same_image_rate, seed, augment)
        self.stored_template = self.stored_template.at(self.store.size)
        self.stored_size = self.store.size

    def read(self, indices: np.ndarray) -> tuple[torch.Tensor, torch.Tensor | None]:
        rows = self.index[np.asarray(indices, np.int64)]
        images = self.store.read_images(rows)
        labels = self.store.read_labels(rows) if self.masks else None
        return images, None if labels is None else self.class_to_group[labels.long()]
