"""evaluate(cfg): validation metrics of one or more checkpoints on a dataset, written as JSON.

The FF++ protocol and the metric registry come with the evaluation issue; this runs each checkpoint's
validation step (its loss terms on held-out identities) through Lightning.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig, ListConfig

from swaplab.models.loading import load_swap_model
from swaplab.utils.checkpoint_io import AtomicCheckpointIO
from swaplab.utils.instantiate import instantiate_data

log = logging.getLogger(__name__)


def evaluate(cfg: DictConfig) -> dict[str, dict[str, float]]:
    checkpoints = list(cfg.ckpt) if isinstance(cfg.ckpt, ListConfig) else [cfg.ckpt]
    results: dict[str, dict[str, float]] = {}
    for ckpt in checkpoints:
        model, run_cfg = load_swap_model(ckpt, cfg.get("experts"))
        data_cfg = cfg.data if cfg.get("data") is not None else run_cfg.data
        datamodule = instantiate_data(data_cfg)
        trainer = hydra.utils.instantiate(cfg.trainer, logger=False, callbacks=[], plugins=[AtomicCheckpointIO()],
                                          enable_checkpointing=False, _convert_="all")
        (metrics,) = trainer.validate(model, datamodule=datamodule, verbose=False)
        results[str(ckpt)] = {"model": run_cfg.model._target_.rsplit(".", 1)[-1], **metrics}
        log.info("%s: %s", ckpt, results[str(ckpt)])
    out = Path(cfg.output_json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    return results
