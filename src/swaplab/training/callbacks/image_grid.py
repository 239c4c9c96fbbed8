"""Image grids of swaps on a fixed batch of validation pairs, logged during training."""

from __future__ import annotations

import pytorch_lightning as pl
import torch

from swaplab.data.datamodule import collate_swaps
from swaplab.data.prepare import prepare_batch
from swaplab.imaging import swap_grid
from swaplab.training.loggers import log_images


class ImageGridLogger(pl.Callback):
    """Every `every_n_steps` iterations (and at the end): source | target | swap for `num_samples` pairs."""

    def __init__(self, every_n_steps: int = 100, num_samples: int = 8, key: str = "images/swaps") -> None:
        if every_n_steps < 1 or num_samples < 1:
            raise ValueError("every_n_steps and num_samples must be >= 1")
        self.every_n_steps, self.num_samples, self.key = every_n_steps, num_samples, key
        self._batch: dict[str, torch.Tensor] | None = None
        self._last_logged_step = -1
        self._last_batch: dict[str, torch.Tensor] | None = None

    def _fixed_batch(self, trainer: pl.Trainer, fallback: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if self._batch is None:
            dataset = getattr(trainer.datamodule, "val_set", None) if trainer.datamodule is not None else None
            if dataset is not None and len(dataset) > 0:
                indices = list(range(min(self.num_samples, len(dataset))))
                batched = getattr(dataset, "__getitems__", None)  # one vectorized call when the dataset has it
                self._batch = prepare_batch(collate_swaps(batched(indices) if batched else
                                                          [dataset[i] for i in indices]))
            else:
                self._batch = {k: v[: self.num_samples].detach().cpu() for k, v in fallback.items()
                               if torch.is_tensor(v)}
        return self._batch

    @torch.no_grad()
    def log_grid(self, trainer: pl.Trainer, pl_module: pl.LightningModule, fallback: dict[str, torch.Tensor]) -> None:
        step = trainer.global_step
        if not trainer.is_global_zero or not trainer.loggers or step == self._last_logged_step:
            return
        batch = self._fixed_batch(trainer, fallback)
        source = batch["source"].to(pl_module.device)
        target = batch["target"].to(pl_module.device)
        was_training = pl_module.training
        pl_module.eval()
        swap = pl_module(source, target).swap
        pl_module.train(was_training)
        log_images(trainer.loggers, self.key, [swap_grid(source, target, swap)], step=step,
                   captions=["source | target | swap"])
        self._last_logged_step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step % self.every_n_steps == 0:
            self.log_grid(trainer, pl_module, batch)
        self._last_batch = batch

    def on_train_end(self, trainer, pl_module) -> None:
        if self._last_batch is not None:
            self.log_grid(trainer, pl_module, self._last_batch)
