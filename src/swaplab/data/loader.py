"""Sampling that shards across ranks by itself and resumes mid-epoch at the exact sample."""

from __future__ import annotations

from collections.abc import Iterator

import cv2
import torch
from torch.utils.data import Sampler


class ResumableSampler(Sampler[int]):
    """A seeded permutation per epoch (same on every rank), dealt round-robin to the ranks.

    `resume(epoch, consumed)` makes the next pass over `epoch` start after its first `consumed` samples
    of this rank, so a run restored from a mid-epoch checkpoint sees exactly the batches it would have seen.
    With `offset_by_epoch`, epoch e yields index + e * length: datasets that draw a pair from the key
    (`FacePairs`) then pair each target with new sources every epoch.
    """

    def __init__(self, length: int, shuffle: bool = True, seed: int = 0, rank: int = 0, world_size: int = 1,
                 offset_by_epoch: bool = False) -> None:
        if length < world_size:
            raise ValueError(f"dataset of {length} samples cannot be split over {world_size} processes")
        self.length, self.shuffle, self.seed = length, shuffle, seed
        self.rank, self.world_size = rank, world_size
        self.offset_by_epoch = offset_by_epoch
        self.epoch = 0
        self._skip = 0

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self._skip = 0
        self.epoch = epoch

    def resume(self, epoch: int, consumed: int) -> None:
        self.epoch, self._skip = epoch, consumed

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
        skip, self._skip = self._skip, 0
        return iter(mine[skip:].tolist())


def fork_safe_opencv() -> None:
    """Stop OpenCV's thread pool before DataLoader workers fork: a forked child inherits the pool's locks but
    not its threads, and its first pool call (even cv2.setNumThreads) can then wait forever."""
    cv2.setNumThreads(1)
