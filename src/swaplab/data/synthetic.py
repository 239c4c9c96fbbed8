"""Swap pairs of procedural faces (`data=synthetic`): the embedded default dataset and test bed."""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

from swaplab.data.pairs import pair_flags
from swaplab.data.synthetic_faces import (
    IDENTITY_FACTORS,
    SyntheticFaces,
    check_factors,
    hash_uniform,
    swap_factors,
)
from swaplab.faces.templates import CANONICAL

GROUND_TRUTH = ("identity", "pose", "landmarks", "mask", "shape", "expression", "light")
TRUE_SWAP = ("image", "mask", "landmarks")  # rendered for `true_swap=True` as true_swap, true_swap_mask, ...
_PAIR_STREAM = 0x5A17  # hash stream for pair choices, apart from the renderer's streams


class RenderedPairs(Dataset):
    """Base of the procedural pair datasets: index i = (identity i // images_per_identity, image
    i % images_per_identity); every batch is rendered in one vectorized `__getitems__` call."""

    def __init__(self, resolution: int, num_identities: int, images_per_identity: int, identity_offset: int,
                 seed: int, rates: dict[str, float], **renderer_kwargs) -> None:
        if num_identities < 2 or images_per_identity < 1:
            raise ValueError("need num_identities >= 2 and images_per_identity >= 1")
        for name, rate in rates.items():
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {rate}")
        self.resolution, self.seed = resolution, seed
        self.num_identities, self.images_per_identity = num_identities, images_per_identity
        self.identity_offset = identity_offset
        self.faces = SyntheticFaces(resolution=resolution, seed=seed, **renderer_kwargs)
        self.renderer_kwargs = dict(renderer_kwargs)  # kept for datasets re-drawn from these faces
        self.template = CANONICAL  # the renderer frames its heads like the canonical (FaceShifter) crop

    def __len__(self) -> int:
        return self.num_identities * self.images_per_identity

    def batch_index(self, indices: list[int]) -> torch.Tensor:
        index = torch.as_tensor(indices, dtype=torch.long)
        if index.numel() and (index.min() < 0 or index.max() >= len(self)):
            raise IndexError(f"pair index out of range [0, {len(self)})")
        return index


class SyntheticSwapDataset(RenderedPairs):
    """Pair i: target = image (i % images_per_identity) of identity (i // images_per_identity); source =
    another identity, or the same one with probability `same_identity_rate` (and then, with probability
    `same_image_rate`, the very same image). Deterministic by (seed, i).

    Samples carry `source`/`target` images, the pair flags (swaplab.data.pairs.PAIR_FLAGS), `index`, and ground
    truth for both sides as `source_<key>` / `target_<key>` for every key in GROUND_TRUTH. With `true_swap`
    also `true_swap` (the source's `identity_factors` rendered with the target's other factors: what a perfect
    swap looks like), `true_swap_mask` and `true_swap_landmarks`; for pairs of one identity it is the target.
    """

    def __init__(
        self,
        resolution: int = 64,
        num_identities: int = 1000,
        images_per_identity: int = 10,
        identity_offset: int = 0,  # first identity id (disjoint ranges give disjoint train/val people)
        same_identity_rate: float = 0.2,
        same_image_rate: float = 1.0,
        seed: int = 0,  # the dataset's seed (independent of the training seed)
        true_swap: bool = False,  # also render the true swap of every pair (one more render per other-identity pair)
        identity_factors: tuple[str, ...] | list[str] = IDENTITY_FACTORS,  # what the true swap takes from the source
        **renderer_kwargs,  # SyntheticFaces options: supersample, max_yaw, max_pitch, ...
    ) -> None:
        super().__init__(resolution, num_identities, images_per_identity, identity_offset, seed,
                         {"same_identity_rate": same_identity_rate, "same_image_rate": same_image_rate},
                         **renderer_kwargs)
        self.same_identity_rate, self.same_image_rate = same_identity_rate, same_image_rate
        self.true_swap, self.identity_factors = bool(true_swap), check_factors(list(identity_factors))

    def pairs(self, index: torch.Tensor) -> dict[str, torch.Tensor]:
        """Identity and image indices of target and source for pair indices `index` (B,)."""
        n, per = self.num_identities, self.images_per_identity
        u = hash_uniform(self.seed, [index, _PAIR_STREAM], 3, index)
        target_id, target_img = index // per, index % per
        same = u[:, 0] < self.same_identity_rate
        same_image = same & ((u[:, 1] < self.same_image_rate) | (per == 1))
        other_id = (target_id + 1 + (u[:, 2] * (n - 1)).long()) % n
        other_img_same_id = (target_img + 1 + (u[:, 2] * max(per - 1, 1)).long()) % per
        source_id = torch.where(same, target_id, other_id)
        source_img = torch.where(same_image, target_img,
                                 torch.where(same, other_img_same_id, (u[:, 2] * per).long() % per))
        return {"target_id": target_id + self.identity_offset, "target_img": target_img,
                "source_id": source_id + self.identity_offset, "source_img": source_img,
                **pair_flags(same, same_image)}

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        """A whole batch rendered in one vectorized call (the DataLoader uses this instead of __getitem__)."""
        index = self.batch_index(indices)
        p = self.pairs(index)
        b = len(index)
        other = ~p["same_image"]  # sources that are not the target image itself: the only ones rendered again
        params = self.faces.sample(torch.cat([p["target_id"], p["source_id"][other]]),
                                   torch.cat([p["target_img"], p["source_img"][other]]))
        swapped = ~p["same"]  # true swaps of one identity are the target itself (no render needed)
        if self.true_swap and swapped.any():
            target_params = {k: v[:b][swapped] for k, v in params.items()}
            source_rows = torch.zeros(b, dtype=torch.long)
            source_rows[other] = torch.arange(b, b + int(other.sum()))
            source_params = {k: v[source_rows[swapped]] for k, v in params.items()}
            swaps = swap_factors(source_params, target_params, self.identity_factors)
            params = {k: torch.cat([v, swaps[k]]) for k, v in params.items()}
        faces = self.faces.render(params)
        n_rendered = b + int(other.sum())

        def split(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            target = values[:b]
            source = target.clone()
            source[other] = values[b:n_rendered]
            return target, source

        batch = {"index": index, **pair_flags(p["same"], p["same_image"])}
        batch["target"], batch["source"] = split(faces["image"])
        for key in GROUND_TRUTH:
            batch[f"target_{key}"], batch[f"source_{key}"] = split(faces[key])
        if self.true_swap:
            for key in TRUE_SWAP:
                truth = faces[key][:b].clone()
                truth[swapped] = faces[key][n_rendered:]
                batch["true_swap" if key == "image" else f"true_swap_{key}"] = truth
        return batch

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {k: v[0] for k, v in self.__getitems__([i]).items()}
