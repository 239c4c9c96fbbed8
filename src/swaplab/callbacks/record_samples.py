"""Debugging aid: which dataset samples each rank trained on, step by step."""

from __future__ import annotations

import json
from pathlib import Path

import pytorch_lightning as pl


class RecordSamples(pl.Callback):
    """Appends {"step", "index"} per training batch to `<dirpath>/samples_rank<r>.jsonl`."""

    def __init__(self, dirpath: str) -> None:
        self.dirpath = Path(dirpath)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if "index" not in batch:
            raise KeyError("RecordSamples needs batches with an 'index' entry")
        self.dirpath.mkdir(parents=True, exist_ok=True)
        record = {"step": trainer.global_step, "index": batch["index"].tolist()}
        with open(self.dirpath / f"samples_rank{trainer.global_rank}.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
