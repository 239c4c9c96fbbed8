"""Swap pairs from stored face crops: pair sampling, template conversion and augmentation shared by every
real-face dataset (folders, the preprocessed store, FaceForensics++).

Every dataset yields, after `swaplab.data.prepare.prepare_batch` (run on the training device), the batch schema
of `data=synthetic` (CORE_KEYS): `source`, `target` (B x 3 x R x R in [-1, 1], crops in the dataset's output
`template`), the pair flags (PAIR_FLAGS), `index`, and `source_identity` / `target_identity` (int64, -1 when
unknown); with parsing labels also `source_mask` / `target_mask` (B x R x R int64: 0 background, 1 face, 2
hair, as the synthetic faces). What the datasets themselves return (in DataLoader workers) is compact: uint8
crops at the stored size and template, uint8 masks, and the small `_geometry` / `_matrix` / `_augment` keys
that tell `prepare_batch` how to finish them (see swaplab.data.prepare).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch.utils.data import Dataset

from swaplab.data.prepare import (
    AUGMENT,
    GEOMETRY,
    IMAGE_KEYS,
    KEEP,
    MASK_KEYS,
    MATRIX,
    RESIZE,
    WARP,
    finish_geometry,
    make_plan,
)
from swaplab.data.synthetic_faces import hash_uniform
from swaplab.faces.templates import CANONICAL, conversion_matrix, get_template

# The pair vocabulary of every swap dataset, method and config:
#   same_image:    X_s is X_t (the very same crop; its augmentation too, see check_augment)
#   same_identity: X_s and X_t show one person (the same image or another one); same_image implies it
# A dataset draws same_identity with `same_identity_rate` and, of those, same_image with `same_image_rate`; a
# method's config states the rates its paper trains with (model.pair_rates) and each loss term is gated on the
# flag its paper defines (SwapModule.pair_terms). `same` is an alias of `same_identity` kept for FSGAN's code.
PAIR_FLAGS = ("same_image", "same_identity")
CORE_KEYS = ("source", "target", *PAIR_FLAGS, "same", "index", "source_identity", "target_identity")
_PAIR_STREAM, _AUGMENT_STREAM = 0x9A1E, 0xA06E
AUGMENTATIONS = ("hflip", "brightness", "contrast", "saturation", "same_for_pair")


SPLITS = ("all", "train", "val")


def check_pair_rates(same_identity_rate: float, same_image_rate: float) -> tuple[float, float]:
    """The two pair rates, validated (each a probability)."""
    for name, rate in (("same_identity_rate", same_identity_rate), ("same_image_rate", same_image_rate)):
        if not 0.0 <= float(rate) <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {rate}")
    return float(same_identity_rate), float(same_image_rate)


def flag_rate(flag: str, same_identity_rate: float, same_image_rate: float) -> float:
    """The share of pairs that carry `flag` (a lower bound for same_image: an identity with a single image can
    only pair with that image)."""
    if flag not in PAIR_FLAGS:
        raise ValueError(f"unknown pair flag {flag!r}; the pair vocabulary is {list(PAIR_FLAGS)}")
    return same_identity_rate * (same_image_rate if flag == "same_image" else 1.0)


def dataset_pair_rates(dataset: object) -> list[tuple[float, float]]:
    """(same_identity_rate, same_image_rate) of a pair dataset, one per part of a MixedPairs; [] when it draws no
    pairs by rate (FaceForensics++'s fixed swaps, a method's wrapper without them)."""
    if isinstance(dataset, MixedPairs):
        return [r for part in dataset.parts for r in dataset_pair_rates(part)]
    if hasattr(dataset, "same_identity_rate") and hasattr(dataset, "same_image_rate"):
        return [(float(dataset.same_identity_rate), float(dataset.same_image_rate))]
    return []


def pair_flags(same_identity: torch.Tensor, same_image: torch.Tensor) -> dict[str, torch.Tensor]:
    """The batch keys of the pair vocabulary (with `same`, FSGAN's alias of same_identity)."""
    return {"same_image": same_image, "same_identity": same_identity, "same": same_identity}


def identity_split(groups: np.ndarray, chosen: np.ndarray, split: str, val_identities: int, where: str) -> np.ndarray:
    """`chosen` (bool per crop) narrowed to a split by identity: the last `val_identities` groups (sorted) of the
    chosen crops are `val`, the others `train`; `all` keeps everything."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if split == "all":
        return chosen
    if val_identities < 1:
        raise ValueError(f"split={split!r} needs val_identities >= 1, got {val_identities}")
    remaining = np.unique(groups[chosen])
    if val_identities >= len(remaining):
        raise ValueError(f"val_identities={val_identities} leaves no training identities ({len(remaining)} in {where})")
    held_out = remaining[len(remaining) - val_identities:]
    return chosen & (np.isin(groups, held_out) == (split == "val"))


class FacePairs(Dataset):
    """Base of the real-face pair datasets. A subclass passes one identity label per stored crop (-1:
    unknown, e.g. FFHQ: then each crop is its own identity) and implements `read(indices)`.

    Pair k (any k >= 0; the sampler adds epoch * len so every epoch draws new pairs): target = crop
    k % len; source = another crop of the same identity with probability `same_identity_rate` (of those,
    the very same crop with probability `same_image_rate`), else a crop of another identity. Deterministic
    by (seed, k).
    """

    pairs_vary_by_epoch = True

    def __init__(self, identities: np.ndarray, resolution: int, stored_template: str, template: str = CANONICAL,
                 same_identity_rate: float = 0.2, same_image_rate: float = 1.0, seed: int = 0,
                 augment: Mapping[str, float] | None = None) -> None:
        same_identity_rate, same_image_rate = check_pair_rates(same_identity_rate, same_image_rate)
        if resolution < 8:
            raise ValueError(f"resolution must be >= 8, got {resolution}")
        self.augment = check_augment(augment)
        self.resolution, self.seed = int(resolution), seed
        self.stored_template, self.template = get_template(stored_template), get_template(template, resolution)
        self.geometry_in_worker = False  # set by MixedPairs when its parts store crops at different sizes
        self._matrix: tuple[int, torch.Tensor] | None = None
        self.same_identity_rate, self.same_image_rate = same_identity_rate, same_image_rate
        labels = np.asarray(identities, np.int64)
        if labels.ndim != 1 or len(labels) < 2:
            raise ValueError(f"a pair dataset needs at least 2 faces, got {len(labels)}")
        self.identities = torch.from_numpy(labels)
        # unknown identities become singleton groups; groups are contiguous runs of `order`
        groups = labels.copy()
        unknown = groups < 0
        groups[unknown] = groups.max(initial=-1) + 1 + np.arange(unknown.sum())
        self.order = torch.from_numpy(np.argsort(groups, kind="stable"))
        _, first, counts = np.unique(groups[self.order.numpy()], return_index=True, return_counts=True)
        group_of = np.empty(len(groups), np.int64)
        group_of[self.order.numpy()] = np.repeat(np.arange(len(counts)), counts)
        self.group_of, self.group_start, self.group_size = (torch.from_numpy(a) for a in (group_of, first, counts))
        self.position = torch.empty(len(groups), dtype=torch.long)  # place of each crop within its group
        self.position[self.order] = torch.arange(len(groups)) - self.group_start[self.group_of[self.order]]
        if len(counts) < 2:
            raise ValueError("a pair dataset needs faces of at least 2 identities")

    def __len__(self) -> int:
        return len(self.identities)

    def read(self, indices: np.ndarray) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Stored crops `indices` as B x S x S x 3 uint8 (stored template) and their B x S x S 3-class labels
        (0 background, 1 face, 2 hair) or None."""
        raise NotImplementedError

    def pairs(self, keys: torch.Tensor) -> dict[str, torch.Tensor]:
        """Target and source crop indices of pair keys (B,)."""
        n = len(self)
        target = keys % n
        u = hash_uniform(self.seed, [keys, _PAIR_STREAM], 3, keys)
        group = self.group_of[target]
        size, start = self.group_size[group], self.group_start[group]
        same = u[:, 0] < self.same_identity_rate  # an identity with one crop can only pair with itself
        same_image = same & ((u[:, 1] < self.same_image_rate) | (size == 1))
        sibling = self.order[start + (self.position[target] + 1 + (u[:, 2] * (size - 1)).long()) % size]
        other = (u[:, 2] * (n - size)).long()  # a crop outside the target's group, uniformly
        other = self.order[torch.where(other >= start, other + size, other)]
        source = torch.where(same_image, target, torch.where(same, sibling, other))
        return {"target": target, "source": source, **pair_flags(same, same_image)}

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        keys = torch.as_tensor(indices, dtype=torch.long)
        if keys.numel() and keys.min() < 0:
            raise IndexError("pair keys must be >= 0")
        p = self.pairs(keys)
        crops, inverse = torch.unique(torch.cat([p["target"], p["source"]]), return_inverse=True)
        images, labels = self.read(crops.numpy())
        images = images.permute(0, 3, 1, 2).contiguous()  # uint8 B x 3 x S x S: converted on the device
        labels = None if labels is None else labels.to(torch.uint8)
        b = len(keys)
        batch = {"index": keys, **{k: p[k] for k in pair_flags(p["same"], p["same_image"])},
                 "target": images[inverse[:b]], "source": images[inverse[b:]],
                 "target_identity": self.identities[p["target"]], "source_identity": self.identities[p["source"]]}
        if labels is not None:
            batch["target_mask"], batch["source_mask"] = labels[inverse[:b]], labels[inverse[b:]]
        batch[GEOMETRY], batch[MATRIX] = self.geometry(images.shape[-1], b)
        if self.geometry_in_worker:
            self.settle_geometry(batch)
        batch[AUGMENT] = augment_params(self.augment, self.seed, keys, p["same_image"])
        return batch

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {k: v[0] for k, v in self.__getitems__([i]).items()}

    def geometry(self, size: int, b: int) -> tuple[torch.Tensor, torch.Tensor]:
        """`_geometry` and `_matrix` of B crops stored at S = `size`: a resize for crops of the output template
        (none at the output size), else the warp from the stored template at S to the output template."""
        if self.stored_template.name == self.template.name:
            mode, matrix = (KEEP if size == self.resolution else RESIZE), torch.eye(2, 3)
        else:
            mode = WARP
            if self._matrix is None or self._matrix[0] != size:
                m = conversion_matrix(self.stored_template.at(size), self.template)
                self._matrix = (size, torch.as_tensor(np.array(m), dtype=torch.float32))
            matrix = self._matrix[1]
        geometry = torch.tensor([[mode, self.resolution]], dtype=torch.int32).expand(b, 2).clone()
        return geometry, matrix.expand(b, 2, 3).clone()

    def settle_geometry(self, batch: dict[str, torch.Tensor]) -> None:
        """In place: crops (and masks) brought to the output template here, still uint8 (a MixedPairs of parts
        stored at different sizes: one batch can only carry one crop size)."""
        geometry, matrix = batch[GEOMETRY], batch[MATRIX]
        plan = make_plan(geometry)
        for key in IMAGE_KEYS:
            if key in batch:
                batch[key] = finish_geometry(batch[key], plan, matrix, False).round().clamp(0, 255).to(torch.uint8)
        for key in MASK_KEYS:
            if key in batch:
                batch[key] = finish_geometry(batch[key][:, None], plan, matrix, True)[:, 0].to(torch.uint8)
        batch[GEOMETRY] = torch.tensor([KEEP, self.resolution], dtype=torch.int32).expand_as(geometry).clone()

    @property
    def transfer_size(self) -> int:
        """S: the size of the crops `read` returns."""
        return int(getattr(self, "stored_size", None) or self.stored_template.size)


def check_augment(augment: Mapping[str, float] | None) -> dict[str, float]:
    """Validated augmentation options: hflip probability, brightness / contrast / saturation strengths
    (factors drawn from [1 - s, 1 + s]), and same_for_pair (1: source and target of every pair get the same
    transform; 0: only same-image pairs do, which keeps their reconstruction target exact)."""
    augment = dict(augment or {})
    unknown = sorted(set(augment) - set(AUGMENTATIONS))
    if unknown:
        raise ValueError(f"unknown augmentation {unknown}; known: {list(AUGMENTATIONS)}")
    for name, value in augment.items():
        if not 0.0 <= float(value) <= 1.0:
            raise ValueError(f"augment.{name} must be in [0, 1], got {value}")
    return {k: float(v) for k, v in augment.items() if v}


def augment_params(augment: Mapping[str, float], seed: int, keys: torch.Tensor,
                   same_image: torch.Tensor) -> torch.Tensor:
    """`_augment` of pairs `keys` (B x 2 x 4 float32; rows target, source): the flip flag and the brightness /
    contrast / saturation factors (drawn from [1 - s, 1 + s]), from the pair key by hash; the source copies the
    target's draws where same_for_pair is set and for same-image pairs. Applied on the device
    (swaplab.data.prepare.apply_augment)."""
    b = len(keys)
    shared = torch.full((b,), bool(augment.get("same_for_pair")), dtype=torch.bool) | same_image
    sides = []
    for stream in (0, 1):  # target, source
        u = hash_uniform(seed, [keys, _AUGMENT_STREAM, stream], 4, keys)
        if stream == 0:
            target_u = u
        else:
            u = torch.where(shared[:, None], target_u, u)
        flip = (u[:, 0] < augment.get("hflip", 0.0)).float()
        factors = [1 + augment.get(name, 0.0) * (2 * u[:, k] - 1)
                   for k, name in enumerate(("brightness", "contrast", "saturation"), start=1)]
        sides.append(torch.stack([flip, *factors], 1))
    return torch.stack(sides, 1)


class MixedPairs(Dataset):
    """Several pair datasets served as one (FaceShifter's CelebA-HQ + FFHQ + VGGFace2): pair k comes from the
    part holding position k % len, with that part's own pair sampling (new pairs every epoch where the part
    draws them by key); each batch is read with one `__getitems__` call per part. Batches keep the keys all
    parts have."""

    def __init__(self, datasets: list[Dataset]) -> None:
        if not datasets:
            raise ValueError("MixedPairs needs at least one dataset")
        self.parts = list(datasets)
        templates = {getattr(getattr(d, "template", None), "name", None) for d in self.parts}
        sizes = {getattr(d, "resolution", None) for d in self.parts}
        if len(templates) > 1 or len(sizes) > 1:
            raise ValueError(f"mixed datasets must serve one template and resolution, got {templates} / {sizes}")
        self.template, self.resolution = self.parts[0].template, self.parts[0].resolution
        crop_sizes = {getattr(d, "transfer_size", None) for d in self.parts}
        if len(crop_sizes) > 1:  # one batch carries one crop size: the parts finish their geometry in the worker
            for d in self.parts:
                d.geometry_in_worker = True
        self.ends = torch.tensor([len(d) for d in self.parts]).cumsum(0)
        self.pairs_vary_by_epoch = any(getattr(d, "pairs_vary_by_epoch", False) for d in self.parts)

    def __len__(self) -> int:
        return int(self.ends[-1])

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        keys = torch.as_tensor(indices, dtype=torch.long)
        epoch, position = keys // len(self), keys % len(self)
        part = torch.searchsorted(self.ends, position, right=True)
        starts = torch.cat([self.ends.new_zeros(1), self.ends[:-1]])
        batches, rows = [], []
        for p in part.unique().tolist():
            chosen = (part == p).nonzero()[:, 0]
            dataset = self.parts[p]
            local = position[chosen] - starts[p]
            if getattr(dataset, "pairs_vary_by_epoch", False):
                local = local + epoch[chosen] * len(dataset)
            batches.append(dataset.__getitems__(local.tolist()))
            rows.append(chosen)
        common = set.intersection(*(set(b) for b in batches))
        order = torch.argsort(torch.cat(rows))
        batch = {k: torch.cat([b[k] for b in batches])[order] for k in batches[0] if k in common}
        batch["index"] = keys
        return batch

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {k: v[0] for k, v in self.__getitems__([i]).items()}
