"""Swap pairs from folders of already-aligned face crops: VGGFace2-style identity folders, CelebA-HQ with an
identity file, identity-free FFHQ (`FaceFolderPairs`).

The crops must already follow a known alignment template (`stored_template`, e.g. `ffhq_1024` for the
CelebA-HQ / FFHQ 1024 images); `FacePairs` converts them to the output template. Raw, unaligned photos
(e.g. VGGFace2 as downloaded) go through `python preprocess.py` and `PreprocessedFacePairs` instead.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

import cv2
import numpy as np
import torch

from swaplab.data.pairs import SPLITS, FacePairs, identity_split
from swaplab.errors import DataNotFoundError
from swaplab.faces.templates import CANONICAL, conversion_matrix
from swaplab.io.files import IMAGE_SUFFIXES
from swaplab.runtime import get_logger

log = get_logger(__name__)

LAYOUTS = ("identity_folders", "flat", "identity_file")
_REDUCED = ((8, cv2.IMREAD_REDUCED_COLOR_8), (4, cv2.IMREAD_REDUCED_COLOR_4), (2, cv2.IMREAD_REDUCED_COLOR_2))
_MAX_SUBSTITUTES = 64  # a stretch of this many unreadable crops means the data is broken, not a few files


def scan_images(root: Path) -> list[str]:
    """Sorted '/'-separated paths (relative to root) of every image under root, at any depth."""
    found: list[str] = []
    stack = [""]
    while stack:
        rel = stack.pop()
        with os.scandir(root / rel if rel else root) as entries:
            for entry in entries:
                name = f"{rel}/{entry.name}" if rel else entry.name
                if entry.is_dir(follow_symlinks=True):
                    stack.append(name)
                elif os.path.splitext(entry.name)[1].lower() in IMAGE_SUFFIXES:
                    found.append(name)
    return sorted(found)


def read_identity_file(path: Path) -> dict[str, str]:
    """{relative path or file name: identity} from lines '<relative path or file name> <identity>'."""
    table: dict[str, str] = {}
    with open(path) as f:
        for number, line in enumerate(f, 1):
            parts = line.split()
            if not parts or parts[0].startswith("#"):
                continue
            if len(parts) != 2:
                raise ValueError(f"{path}:{number}: expected '<file> <identity>', got {line.strip()!r}")
            table[parts[0]] = parts[1]
    return table


class FaceFolderPairs(FacePairs):
    """Pairs of aligned face crops stored as image files under `root`.

    Layouts: `identity_folders` (root/<identity>/**/<image>, VGGFace2 / CelebA-HQ arranged by person),
    `flat` (every image under root at any depth, identities unknown: FFHQ with its 00000/ folders), or
    `identity_file` (images anywhere under root, identities from `identity_file` lines '<relative path or
    file name> <identity>'; images it does not list are left out). Identity labels are the positions of the
    identity names in their sorted list (before any filtering, so splits of one root share one numbering).

    Crops are decoded with OpenCV and resized to a common stored size S (`stored_size`, default: the size at
    which converting to the output template needs no upsampling, at most the files' own size); JPEGs far
    larger than S are decoded at 1/2, 1/4 or 1/8 scale directly. A file that cannot be decoded at read time
    is replaced by the next readable crop of the same identity (else of the next files), so pair labels
    stay right; each such file is logged once and counted in `unreadable`.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        resolution: int,
        layout: str = "identity_folders",
        stored_template: str = "ffhq_1024",
        template: str = CANONICAL,
        identity_file: str | os.PathLike | None = None,
        stored_size: int | None = None,
        same_identity_rate: float = 0.2,
        same_image_rate: float = 1.0,
        seed: int = 0,
        augment: Mapping[str, float] | None = None,
        min_images_per_identity: int = 1,
        identities: Sequence[str] | None = None,  # keep only these identity names
        split: str = "all",  # all | train | val: the last `val_identities` identities (sorted names) are val
        val_identities: int = 0,
        source: str = "",  # where to get the data, appended to not-found errors
    ) -> None:
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        self.root, self.layout = Path(root), layout
        hint = f"; get it from {source}" if source else ""
        expected = {"identity_folders": "<identity>/<image>.jpg folders",
                    "flat": "aligned face images (any depth)",
                    "identity_file": f"aligned face images listed in {identity_file}"}[layout]
        if not self.root.is_dir():
            raise DataNotFoundError(f"data root {self.root} does not exist: expected {expected} there{hint}")
        files = scan_images(self.root)
        self.skipped: Counter = Counter()
        names = self._identity_names(files, identity_file)
        keep = names != ""
        self.skipped.update({"not in an identity folder" if layout == "identity_folders"
                             else "not in the identity file": int((~keep).sum())})
        files, names = [f for f, k in zip(files, keep, strict=True) if k], names[keep]
        if not files:
            raise DataNotFoundError(f"data root {self.root} contains no images: expected {expected} there{hint}")

        all_names, labels = np.unique(names, return_inverse=True)
        if layout == "flat":  # each image its own (unknown) identity
            self.identity_names: list[str] = []
            labels, groups = np.full(len(files), -1, np.int64), np.arange(len(files))
        else:
            self.identity_names = all_names.tolist()
            groups = labels
        chosen = np.ones(len(files), bool)
        if identities is not None:
            wanted = {str(i) for i in identities}
            chosen &= np.isin(names, list(wanted)) if layout != "flat" else np.isin(files, list(wanted))
        group_ids, counts = np.unique(groups[chosen], return_counts=True)
        few = group_ids[counts < min_images_per_identity] if layout != "flat" else group_ids[:0]
        if len(few):
            self.skipped["identity with < min_images_per_identity images"] += int(np.isin(groups[chosen], few).sum())
            chosen &= ~np.isin(groups, few)
        chosen = identity_split(groups, chosen, split, val_identities, str(self.root))
        if self.skipped.total():
            log.info("%s: left out %s", self.root, dict(+self.skipped))
        index = np.flatnonzero(chosen)
        # one fixed-width bytes array: compact and shared copy-free by forked DataLoader workers
        self.files = np.array([files[i].encode() for i in index], dtype=np.bytes_)
        if len(self.files) < 2:
            raise DataNotFoundError(f"data root {self.root} has {len(self.files)} usable images after "
                                    f"filtering (split={split}, identities, min_images_per_identity)")

        super().__init__(labels[index], resolution, stored_template, template, same_identity_rate,
                         same_image_rate, seed, augment)
        self.file_size = self._first_size()
        self.stored_size = int(stored_size) if stored_size else self._auto_stored_size()
        self.unreadable: Counter = Counter()

    def _identity_names(self, files: list[str], identity_file: str | os.PathLike | None) -> np.ndarray:
        """One identity name per file ('' = leave the file out; file names themselves for `flat`)."""
        if self.layout == "flat":
            return np.array(files, dtype=object).astype(str)
        if self.layout == "identity_folders":
            return np.array([f.split("/", 1)[0] if "/" in f else "" for f in files], dtype=object).astype(str)
        if identity_file is None:
            raise ValueError("layout=identity_file needs identity_file=<file of '<image> <identity>' lines>")
        path = Path(identity_file)
        if not path.is_absolute() and not path.exists():
            path = self.root / path
        if not path.is_file():
            raise DataNotFoundError(f"identity_file {identity_file} does not exist: expected lines "
                                    f"'<relative path or file name> <identity>' for the images in {self.root}")
        table = read_identity_file(path)
        return np.array([table.get(f, table.get(f.rsplit("/", 1)[-1], "")) for f in files],
                        dtype=object).astype(str)

    def _first_size(self) -> int:
        for i in range(min(len(self.files), _MAX_SUBSTITUTES)):
            image = cv2.imread(str(self.root / self.files[i].decode()), cv2.IMREAD_COLOR)
            if image is not None:
                return int(max(image.shape[:2]))
        raise DataNotFoundError(f"none of the first {_MAX_SUBSTITUTES} images under {self.root} can be decoded")

    def _auto_stored_size(self) -> int:
        """Smallest stored size at which the conversion to the output template does not upsample."""
        stored = self.stored_template
        if stored.name == self.template.name:
            needed = self.resolution
        else:
            m = conversion_matrix(stored, self.template)
            needed = math.sqrt(abs(np.linalg.det(m[:, :2]))) * stored.size
        return int(min(self.file_size, math.ceil(needed / 8) * 8))

    def _decode(self, path: Path) -> np.ndarray | None:
        flag = cv2.IMREAD_COLOR
        for factor, reduced in _REDUCED:
            if self.file_size // factor >= self.stored_size:
                flag = reduced
                break
        image = cv2.imread(str(path), flag)
        if image is None or image.ndim != 3:
            return None
        s = self.stored_size
        if image.shape[:2] != (s, s):
            shrink = image.shape[0] > s
            image = cv2.resize(image, (s, s), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)

    def _substitutes(self, i: int):
        """Deterministic stand-ins for crop i: the rest of its identity group, then the following crops."""
        start, size = int(self.group_start[self.group_of[i]]), int(self.group_size[self.group_of[i]])
        pos = int(self.position[i])
        for k in range(1, size):
            yield int(self.order[start + (pos + k) % size])
        for k in range(1, _MAX_SUBSTITUTES):
            yield (i + k) % len(self.files)

    def read(self, indices: np.ndarray) -> tuple[torch.Tensor, None]:
        s = self.stored_size
        out = np.empty((len(indices), s, s, 3), np.uint8)
        for row, i in enumerate(np.asarray(indices, np.int64).tolist()):
            image = self._decode(self.root / self.files[i].decode())
            if image is None:
                image = self._replace(i)
            out[row] = image
        return torch.from_numpy(out), None

    def _replace(self, i: int) -> np.ndarray:
        name = self.files[i].decode()
        if name not in self.unreadable:
            log.warning("cannot decode %s; using another crop of the same identity in its place",
                        self.root / name)
        self.unreadable[name] += 1
        for j in self._substitutes(i):
            image = self._decode(self.root / self.files[j].decode())
            if image is not None:
                return image
        raise RuntimeError(f"{_MAX_SUBSTITUTES} consecutive images from {self.root / name} on cannot be decoded")
