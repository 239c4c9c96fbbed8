"""The one DataModule every dataset is served through: swap batches, rank-sharded, resumable."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytorch_lightning as pl
from torch.utils.data import DataLoader, Dataset, default_collate

from swaplab.data.loader import ResumableSampler, fork_safe_opencv
from swaplab.data.prepare import plan_batch
from swaplab.data.subsets import TargetSubset
from swaplab.faces.templates import CANONICAL, get_template
from swaplab.runtime import get_logger

log = get_logger(__name__)


def collate_swaps(samples: Any) -> Any:
    """Datasets that render whole batches at once (`__getitems__`) already return a collated dict."""
    return samples if isinstance(samples, dict) else default_collate(samples)


class SwapDataModule(pl.LightningDataModule):
    """Serves `train` / `val` datasets of swap pairs.

    Batches are dicts with at least `source`, `target` (B,3,H,W) in [-1, 1] and `same` (B,) bool, plus
    whatever ground truth the dataset has (`target_pose`, `source_identity`, ...): so after
    `swaplab.data.prepare.prepare_batch`, which the SwapModule runs on the device after transfer; the real-face
    datasets' loader batches are compact (uint8 crops at the stored size). `batch_size` is the
    global batch: each of N processes loads batch_size / N. `wrap` turns the source's pairs into a method's
    (a callable dataset -> dataset applied to `train` and `val`, e.g. Fast Face-swap's frontal alignment): the
    data config names the dataset source, the experiment the method's view of it.
    """

    def __init__(
        self,
        train: Dataset,
        val: Dataset | None = None,
        resolution: int | None = None,  # when set, every dataset must produce this size (checked at start)
        template: str | None = None,  # alignment template of the crops served (data.templates); None: canonical
        batch_size: int = 8,  # global batch size (all devices together)
        val_batch_size: int | None = None,  # global; defaults to batch_size
        num_workers: int = 0,
        pin_memory: bool = False,
        persistent_workers: bool = True,  # only used with workers
        prefetch_factor: int | None = None,  # batches per worker in flight (PyTorch default 2)
        seed: int = 0,  # shuffling seed (the permutation of epoch e uses seed + e)
        wrap: Callable[[Dataset], Dataset] | None = None,  # applied to train and val (a partial in configs)
        train_subset: str | None = None,  # a target-subset file (HEAR-Net's hard samples): train on its targets only
    ) -> None:
        super().__init__()
        if wrap is not None:
            train, val = wrap(train), (wrap(val) if val is not None else None)
        if train_subset is not None:
            train = TargetSubset(train, train_subset)
        if batch_size < 1 or num_workers < 0:
            raise ValueError(f"need batch_size >= 1 and num_workers >= 0, got {batch_size}, {num_workers}")
        if len(train) < batch_size:
            raise ValueError(f"training set has {len(train)} pairs, fewer than one batch of {batch_size}")
        for name, dataset in (("train", train), ("val", val)):
            size = getattr(dataset, "resolution", None)
            if resolution is not None and size is not None and size != resolution:
                raise ValueError(f"data.{name} produces {size}px faces but data.resolution is {resolution}")
        self.template = get_template(template or CANONICAL).name
        for name, dataset in (("train", train), ("val", val)):
            made = getattr(dataset, "template", None)
            made = getattr(made, "name", made)
            if made is not None and made != self.template:
                raise ValueError(f"data.{name} produces {made} crops but data.template is {self.template}")
        self.resolution = resolution
        self.train_set, self.val_set = train, val
        self.batch_size, self.val_batch_size = batch_size, val_batch_size or batch_size
        self.num_workers, self.pin_memory = num_workers, pin_memory
        self.persistent_workers, self.prefetch_factor, self.seed = persistent_workers, prefetch_factor, seed
        self._resume: dict[str, int] | None = None
        self._train_loader: DataLoader | None = None

    def _world(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def per_device(self, global_batch: int) -> int:
        _, world = self._world()
        if global_batch % world:
            raise ValueError(f"batch size {global_batch} is not divisible by the {world} processes")
        return global_batch // world

    def _loader(self, dataset: Dataset, global_batch: int, shuffle: bool) -> DataLoader:
        rank, world = self._world()
        sampler = ResumableSampler(len(dataset), shuffle=shuffle, seed=self.seed, rank=rank, world_size=world,
                                   offset_by_epoch=shuffle and getattr(dataset, "pairs_vary_by_epoch", False))
        workers = self.num_workers
        if workers:
            fork_safe_opencv()  # the datasets decode and warp with OpenCV in the workers
        return DataLoader(
            dataset,
            batch_size=self.per_device(global_batch),
            sampler=sampler,
            drop_last=shuffle,
            num_workers=workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers and workers > 0,
            prefetch_factor=self.prefetch_factor if workers > 0 else None,
            collate_fn=collate_swaps,
        )

    def train_dataloader(self) -> DataLoader:
        loader = self._loader(self.train_set, self.batch_size, shuffle=True)
        if self._resume is not None:
            state = self._resume
            if "batches" in state:  # checkpoints written before the sampler kept its own place
                state = {"epoch": state["epoch"], "consumed": state["batches"] * loader.batch_size}
            loader.sampler.load_state_dict(state)
            self._resume = None
        self._train_loader = loader
        return loader

    def val_dataloader(self) -> DataLoader | list:
        return [] if self.val_set is None else self._loader(self.val_set, self.val_batch_size, shuffle=False)

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        # The training loop takes this batch now (it was drawn earlier: Lightning and the workers prefetch).
        if self._train_loader is not None and self.trainer is not None and self.trainer.training:
            self._train_loader.sampler.advance(self._train_loader.batch_size)
        return plan_batch(batch)  # prepare_batch's choices read here, on the CPU: none waits for the device

    # Checkpointed with the run (the training sampler's place) so a resumed run continues with the next unseen
    # batch.
    def state_dict(self) -> dict[str, int]:
        return {} if self._train_loader is None else self._train_loader.sampler.state_dict()

    def load_state_dict(self, state: dict[str, int]) -> None:
        self._resume = dict(state) if state else None
