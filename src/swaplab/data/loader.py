"""Sampling that shards across ranks by itself and resumes mid-epoch at the exact sample."""

from __future__ import annotations

from collections.abc import Iterator

import cv2
import torch
from torch.utils.data import Sampler


class ResumableSampler(Sampler[int]):
    """A seeded permutation per epoch (same on every rank), dealt round-robin to the ranks.

    The sampler owns its place in the epoch: `consumed`, the samples of this rank's share that training has
    taken. `advance(n)` moves it on (called by the consumer as it takes a batch: the DataLoader and Lightning
    draw batches ahead of their use, so counting what was drawn would skip unseen batches on resume), a pass
    starts there, `set_epoch` to another epoch starts that epoch from its beginning, and `state_dict()` /
    `load_state_dict()` save and restore (epoch, consumed): a run restored from a mid-epoch checkpoint sees
    exactly the batches it would have seen. With `offset_by_epoch`, epoch e yields index + e * length:
    datasets that draw a pair from the key (`FacePairs`) then pair each target with new sources every epoch.
    """

    def __init__(self, length: int, shuffle: bool = True, seed: int = 0, rank: int = 0, world_size: int = 1,
                 offset_by_epoch: bool = False) -> None:
        if length < world_size:
            raise ValueError(f"dataset of {length} samples cannot be split over {world_size} processes")
        self.length, self.shuffle, self.seed = length, shuffle, seed
        self.rank, self.world_size = rank, world_size
        self.offset_by_epoch = offset_by_epoch
        self.epoch = 0
        self.consumed = 0

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.consumed = 0
        self.epoch = epoch

    def advance(self, samples: int) -> None:
        """Training took the next `samples` samples of this rank's share of the epoch."""
        self.consumed = min(self.consumed + samples, len(self))

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "consumed": self.consumed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.consumed = int(state["epoch"]), int(state["consumed"])

    def __len__(self) -> int:
        return self.length // self.world_size

    def __iter__(self) -> Iterator[int]:
        if self.shuffle:
            order = torch.randperm(self.length, generator=torch.Generator().manual_seed(self.seed + self.epoch))
        else:
            order = torch.arange(self.length)
        mine = order[self.rank : len(self) * self.world_size : self.world_size]
        if self.offset_by_epoch:
            mine = mine + self.epoch * self.length
        return iter(mine[self.consumed:].tolist())


def fork_safe_opencv() -> None:
    """Stop OpenCV's thread pool before DataLoader workers fork: a forked child inherits the pool's locks but
    not its threads, and its first pool call (even cv2.setNumThreads) can then wait forever."""
    cv2.setNumThreads(1)
