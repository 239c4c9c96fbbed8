"""Procedural people for training and testing face recognizers (`experiment=identity_synthetic`).

Image k of identity i renders i's identity factors (`synthetic_faces.IDENTITY_FACTORS`: face shape, skin, iris,
brows, lips, eye tilt) with every other factor (pose, expression, gaze, light, background, framing, hair and
clothing) from a donor drawn per image, so a recognizer can tell people apart only by what a face swap is
meant to move. Deterministic by (seed, index), like every procedural dataset here.
"""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

from swaplab.data.synthetic_faces import (
    IDENTITY_FACTORS,
    SyntheticFaces,
    check_factors,
    hash_uniform,
    swap_factors,
)

_DONOR_STREAM, _VERIFY_STREAM = 0xD0B0, 0x7E51
_DONOR_BASE = 1 << 40  # donor identities come from a range no dataset uses for people


class SyntheticIdentities(Dataset):
    """Item i: image (i % images_per_identity) of identity (i // images_per_identity) + identity_offset, as
    `image` (3 x R x R in [-1, 1], the canonical crop), `label` (0 .. num_identities - 1), `identity`, `pose`."""

    def __init__(self, resolution: int = 64, num_identities: int = 2000, images_per_identity: int = 64,
                 identity_offset: int = 0, seed: int = 0,
                 identity_factors: tuple[str, ...] | list[str] = IDENTITY_FACTORS, **renderer_kwargs) -> None:
        if num_identities < 2 or images_per_identity < 1:
            raise ValueError("need num_identities >= 2 and images_per_identity >= 1")
        self.num_identities, self.images_per_identity = int(num_identities), int(images_per_identity)
        self.identity_offset, self.seed = int(identity_offset), int(seed)
        self.identity_factors = check_factors(list(identity_factors))
        self.faces = SyntheticFaces(resolution=resolution, seed=seed, **renderer_kwargs)

    def __len__(self) -> int:
        return self.num_identities * self.images_per_identity

    def render(self, identity: torch.Tensor, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """Faces of absolute identities `identity` (B,), image indices `image` (B,): the person's identity factors,
        everything else from a donor of (identity, image)."""
        donor = _DONOR_BASE + (hash_uniform(self.seed, [identity, image, _DONOR_STREAM], 1, identity)[:, 0]
                               * (1 << 30)).long()
        person, scene = self.faces.sample(identity, image), self.faces.sample(donor, image)
        return self.faces.render(swap_factors(person, scene, self.identity_factors))

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        index = torch.as_tensor(indices, dtype=torch.long)
        if index.numel() and (index.min() < 0 or index.max() >= len(self)):
            raise IndexError(f"index out of range [0, {len(self)})")
        label, image = index // self.images_per_identity, index % self.images_per_identity
        faces = self.render(label + self.identity_offset, image)
        return {"image": faces["image"], "label": label, "identity": label + self.identity_offset,
                "pose": faces["pose"]}

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {k: v[0] for k, v in self.__getitems__([i]).items()}


class SyntheticVerificationPairs(Dataset):
    """Face verification on held-out procedural people: pair j shows two images of one person when j is even,
    of two different people when j is odd (`image1`, `image2`, `same`, `pose1`, `pose2`). Deterministic."""

    def __init__(self, resolution: int = 64, num_identities: int = 200, num_pairs: int = 2000,
                 identity_offset: int = 1_000_000, seed: int = 0, **kwargs) -> None:
        self.people = SyntheticIdentities(resolution, num_identities, 1 << 20, identity_offset, seed, **kwargs)
        self.num_pairs = int(num_pairs)

    def __len__(self) -> int:
        return self.num_pairs

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        j = torch.as_tensor(indices, dtype=torch.long)
        u = hash_uniform(self.people.seed, [j, _VERIFY_STREAM], 4, j)
        n, same = self.people.num_identities, j % 2 == 0
        first = (u[:, 0] * n).long()
        second = torch.where(same, first, (first + 1 + (u[:, 1] * (n - 1)).long()) % n)
        images = (u[:, 2:] * (1 << 20)).long()
        images[:, 1] = torch.where(same & (images[:, 1] == images[:, 0]), images[:, 0] + 1, images[:, 1])
        offset = self.people.identity_offset
        faces = self.people.render(torch.cat([first, second]) + offset, torch.cat([images[:, 0], images[:, 1]]))
        b = len(j)
        return {"image1": faces["image"][:b], "image2": faces["image"][b:], "same": same,
                "pose1": faces["pose"][:b], "pose2": faces["pose"][b:]}

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {k: v[0] for k, v in self.__getitems__([i]).items()}
