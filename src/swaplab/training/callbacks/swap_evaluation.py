"""Swap metrics during training: the metric registry on a fixed subset of the validation pairs."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import WandbLogger
from torch.utils.data import Dataset

from swaplab.data.datamodule import collate_swaps
from swaplab.imaging import to_uint8
from swaplab.metrics import SwapMetrics, build_metrics, expert_lookup
from swaplab.metrics.identity import IDRetrieval, dataset_batches, read_items
from swaplab.metrics.runner import evaluate_swaps
from swaplab.models.loading import build_missing_experts
from swaplab.runtime import get_logger

log = get_logger(__name__)


class SourceGallery(Dataset):
    """An ID-retrieval gallery from a pair dataset: the sources of its first pairs, as items `image` and
    `identity` (the pair's `label_key`), up to the pair where `identities` distinct labels are reached (all
    pairs when it has fewer) and at least the first `min_pairs`. Which pairs that is is found once, on first
    use, by reading the pairs `batch_size` at a time."""

    def __init__(self, pairs: Dataset, identities: int, label_key: str, min_pairs: int, batch_size: int) -> None:
        self.pairs, self.identities, self.label_key = pairs, int(identities), label_key
        self.min_pairs, self.batch_size = int(min_pairs), int(batch_size)
        self._length: int | None = None

    def __len__(self) -> int:
        if self._length is None:
            self._length = len(self.pairs)
            seen: set[int] = set()
            labels = (label for batch in dataset_batches(self.pairs, self.batch_size)
                      for label in batch[self.label_key].tolist())
            for position, label in enumerate(labels):
                seen.add(int(label))
                if len(seen) >= self.identities:
                    self._length = max(position + 1, min(self.min_pairs, len(self.pairs)))
                    break
        return self._length

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        batch = read_items(self.pairs, indices)  # a float batch (prepare_batch)
        return {"image": batch["source"], "identity": batch[self.label_key]}


def example_table(images: Mapping[str, torch.Tensor], scores: Mapping[str, torch.Tensor],
                  rows: int) -> tuple[list[str], list[list[Any]]]:
    """Columns and rows of an examples table: uint8 HxWx3 arrays for each image column (source, target, swap),
    then one number per score column, for the first `rows` examples."""
    columns = [*images, *scores]
    n = min([rows, *(len(v) for v in images.values()), *(len(v) for v in scores.values())])
    pictures = {k: to_uint8(v[:n]).cpu().numpy() for k, v in images.items()}
    data = [[*(pictures[k][i] for k in images), *(float(v[i]) for v in scores.values())] for i in range(n)]
    return columns, data


class SwapEvaluation(pl.Callback):
    """Every `every_n_steps` generator iterations: swaps the first `num_samples` validation pairs (each process
    its share), updates the metrics (synced across processes), logs `<prefix>/<metric>` to every logger (at
    the generator step) and through `pl_module.log` to `trainer.callback_metrics` (so ModelCheckpoint can
    monitor e.g. `val/id_retrieval`), and a W&B table of `table_rows` example swaps with their per-example
    scores. When training ends, the last step is evaluated unless it just was; with `full_at_end`, the whole
    validation set instead, logged as `test/<metric>`. Lightning takes no `log` calls then, so `results`
    (every value this callback computed, the latest per key) is where the run's final metrics read them
    (swaplab.tasks.train.run_metrics, the value a sweeper optimizes).

    ID retrieval (each `id_retrieval` metric without a gallery of its own) is scored against a fixed gallery of
    `gallery_identities` validation identities (`SourceGallery`: the sources of the first validation pairs, at
    least those scored; the whole validation set with `full_at_end`), the same at every evaluation whatever
    `num_samples`; its size is logged as `<prefix>/<metric>/gallery_size`. `gallery_identities: null`: the
    gallery is the sources of the pairs scored.

    The metrics' expert roles are taken from the model's experts; roles the model does not use are built
    once from the run's experts config (`model.run_config`), or list them in `experts_extra`."""

    def __init__(self, metrics: Mapping[str, Mapping[str, Any] | None], every_n_steps: int = 200,
                 num_samples: int = 64, batch_size: int = 16, table_rows: int = 8, full_at_end: bool = False,
                 prefix: str = "val", gallery_identities: int | None = 100) -> None:
        if every_n_steps < 1 or num_samples < 1 or batch_size < 1 or table_rows < 0:
            raise ValueError("every_n_steps, num_samples and batch_size must be >= 1 and table_rows >= 0")
        if gallery_identities is not None and gallery_identities < 2:
            raise ValueError(f"gallery_identities must be >= 2 or null, got {gallery_identities}")
        self.specs = {k: dict(v) if v is not None else None for k, v in metrics.items()}
        self._unbound = build_metrics(self.specs)  # unknown metric names and bad options fail at construction
        self.every_n_steps, self.num_samples, self.batch_size = every_n_steps, num_samples, batch_size
        self.table_rows, self.full_at_end, self.prefix = table_rows, full_at_end, prefix
        self.gallery_identities = gallery_identities
        self.metrics: SwapMetrics | None = None
        self.results: dict[str, float] = {}
        self._last_step = -1

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if "_extra_experts" in self.__dict__:
            return
        run_config = getattr(pl_module, "run_config", {})
        self._template = run_config.get("data", {}).get("template")
        extra = build_missing_experts(pl_module.experts, self._unbound.roles(), run_config.get("experts"),
                                      self._template,
                                      hint=" (SwapEvaluation: the model has no run config; add them to experts_extra)")
        self.__dict__["_extra_experts"] = extra  # not a checkpointed module
        self._lookup = expert_lookup(pl_module.experts, extra)

    def _build_metrics(self, dataset: Dataset) -> SwapMetrics:
        """The metrics, bound to their experts, with the fixed ID-retrieval gallery of `dataset`'s sources."""
        specs = dict(self.specs)
        for name, metric in self._unbound.items():
            if isinstance(metric, IDRetrieval) and metric.gallery_config is None and self.gallery_identities:
                scored = len(dataset) if self.full_at_end else min(self.num_samples, len(dataset))
                gallery = SourceGallery(dataset, self.gallery_identities, metric.label_key, scored, self.batch_size)
                specs[name] = {**specs[name], "gallery": gallery, "gallery_label_key": "identity"}
        metrics = build_metrics(specs, self._lookup)
        metrics.set_input_template(self._template)
        return metrics

    def _batches(self, dataset: Any, indices: Sequence[int]) -> Iterator[dict[str, torch.Tensor]]:
        batched = getattr(dataset, "__getitems__", None)
        for start in range(0, len(indices), self.batch_size):
            chunk = list(indices[start:start + self.batch_size])
            yield collate_swaps(batched(chunk) if batched else [dataset[i] for i in chunk])

    def evaluate(self, trainer: pl.Trainer, pl_module: pl.LightningModule, count: int | None,
                 prefix: str) -> dict[str, float]:
        """Metrics over the first `count` validation pairs (None: all), logged under `prefix`."""
        dataset = getattr(trainer.datamodule, "val_set", None) if trainer.datamodule is not None else None
        if dataset is None or len(dataset) == 0:
            raise ValueError("SwapEvaluation needs a validation set (data.val)")
        indices = list(range(len(dataset) if count is None else min(count, len(dataset))))
        indices = indices[trainer.global_rank::trainer.world_size]
        device = pl_module.device
        if "_extra_experts" in self.__dict__:
            self._extra_experts.to(device)
        if self.metrics is None:
            self.metrics = self._build_metrics(dataset)
        self.metrics.to(device).reset()
        evaluate_swaps(pl_module, self._batches(dataset, indices), self.metrics, device)
        values = self.metrics.compute()  # collective under DDP: every process calls it
        logged = {f"{prefix}/{k}": v for k, v in values.items()}
        for name, metric in self.metrics.items():
            if isinstance(metric, IDRetrieval) and metric.gallery_config is not None:
                logged[f"{prefix}/{name}/gallery_size"] = float(metric.gallery_size()[0])
        self.results.update(logged)
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.log_metrics(logged, step=trainer.global_step)
            self._log_table(trainer, pl_module, dataset, indices, prefix)
        self._last_step = trainer.global_step
        return logged

    def _log_table(self, trainer: pl.Trainer, pl_module: pl.LightningModule, dataset: Any,
                   indices: Sequence[int], prefix: str) -> None:
        wandb_loggers = [lg for lg in trainer.loggers if isinstance(lg, WandbLogger)]
        if not wandb_loggers or not self.table_rows:
            return
        import wandb  # wandb: only when a W&B logger is attached

        batch = next(self._batches(dataset, indices[: self.table_rows]))
        source, target = batch["source"].to(pl_module.device), batch["target"].to(pl_module.device)
        with torch.inference_mode():
            was_training = pl_module.training
            swap = pl_module.eval()(source, target).swap
            pl_module.train(was_training)
        scores = {k: v for k, v in self.metrics.per_example().items() if v.is_floating_point()}
        columns, data = example_table({"source": source, "target": target, "swap": swap}, scores, self.table_rows)
        data = [[wandb.Image(np.ascontiguousarray(c)) if isinstance(c, np.ndarray) else c for c in row]
                for row in data]
        for logger in wandb_loggers:
            logger.log_table(key=f"{prefix}/swaps", columns=columns, data=data, step=trainer.global_step)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step % self.every_n_steps == 0 and trainer.global_step != self._last_step:
            logged = self.evaluate(trainer, pl_module, self.num_samples, self.prefix)
            # callback metrics only: evaluate() wrote the loggers at the generator step (synced values)
            pl_module.log_dict(logged, on_step=True, on_epoch=False, logger=False)

    def on_train_end(self, trainer, pl_module) -> None:
        if self.full_at_end:
            self.evaluate(trainer, pl_module, None, "test")
        elif trainer.global_step != self._last_step:
            self.evaluate(trainer, pl_module, self.num_samples, self.prefix)
