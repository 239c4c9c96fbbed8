"""Debugging aid: which dataset samples each rank trained on, step by step, and whether the ranks' weights agree."""

from __future__ import annotations

import json
from pathlib import Path

import pytorch_lightning as pl


class RecordSamples(pl.Callback):
    """Appends {"step", "index", "weights"} per training batch to `<dirpath>/samples_rank<r>.jsonl`; `weights` sums
    the generator's and discriminator's weights (in float64), equal on every rank while gradients are averaged."""

    def __init__(self, dirpath: str) -> None:
        self.dirpath = Path(dirpath)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if "index" not in batch:
            raise KeyError("RecordSamples needs batches with an 'index' entry")
        self.dirpath.mkdir(parents=True, exist_ok=True)
        nets = [net for net in (pl_module.generator, getattr(pl_module, "discriminator", None)) if net is not None]
        weights = sum(float(p.detach().double().sum()) for net in nets for p in net.parameters())
        record = {"step": trainer.global_step, "index": batch["index"].tolist(), "weights": weights}
        with open(self.dirpath / f"samples_rank{trainer.global_rank}.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
