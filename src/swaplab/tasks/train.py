"""train(cfg): build experts, data, model, callbacks, loggers and trainer from config, then fit."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf

from swaplab.io.checkpoints import AtomicCheckpointIO
from swaplab.models.loading import build_model
from swaplab.runtime import get_logger, quiet_other_ranks
from swaplab.tasks.instantiate import instantiate_data, instantiate_map
from swaplab.tasks.lifecycle import close_at_task_end, task_wrapper
from swaplab.tasks.validation import validate_train_config
from swaplab.training.callbacks import SwapEvaluation
from swaplab.training.loggers import announce_offline_runs

log = get_logger(__name__)

# Frozen experts are in eval mode on purpose (swaplab.experts.base).
warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode", category=UserWarning)
# Checkpoints after step N hold the state after N updates, which is what resuming at step N needs.
warnings.filterwarnings("ignore", message="Using ModelCheckpoint with manual optimization", category=UserWarning)


@task_wrapper
def train(cfg: DictConfig) -> tuple[dict[str, float], dict[str, Any]]:
    """Returns (final metrics, the run's objects). The loggers are closed when it returns or raises (W&B
    runs finished: swaplab.tasks.lifecycle)."""
    quiet_other_ranks()  # Lightning's per-process messages once under DDP (logging is configured by now)
    validate_train_config(cfg)
    if cfg.get("seed") is not None:
        pl.seed_everything(cfg.seed, workers=True)

    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, output_dir / "config_resolved.yaml", resolve=True)

    datamodule = instantiate_data(cfg.data)
    model, experts = build_model(cfg)
    callbacks = instantiate_map(cfg.get("callbacks"), "callbacks")
    loggers = close_at_task_end(instantiate_map(cfg.get("logger"), "logger"))
    if not loggers:  # logger=none: the learning-rate monitor would refuse to start
        dropped = [c for c in callbacks if isinstance(c, pl.callbacks.LearningRateMonitor)]
        callbacks = [c for c in callbacks if c not in dropped]
        if dropped:
            log.info("logger=none: learning rates are not monitored (lr_monitor dropped)")
    trainer: pl.Trainer = hydra.utils.instantiate(
        cfg.trainer, callbacks=callbacks, logger=loggers or False, plugins=[AtomicCheckpointIO()], _convert_="all"
    )
    for logger in loggers:
        logger.log_hyperparams({**model.run_config, **model.parameter_counts()})

    objects = {"cfg": cfg, "datamodule": datamodule, "model": model, "experts": experts,
               "callbacks": callbacks, "loggers": loggers, "trainer": trainer}
    if cfg.get("train", True):
        trainer.fit(model=model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
        wanted = cfg.get("optimized_metric")
        if wanted and wanted not in run_metrics(trainer, callbacks) and datamodule.val_set is not None:
            trainer.validate(model=model, datamodule=datamodule, verbose=False)  # the run ended between validations
    metrics = run_metrics(trainer, callbacks)
    announce_offline_runs(loggers)
    log.info("Run directory: %s", output_dir)
    return metrics, objects


def run_metrics(trainer: pl.Trainer, callbacks: list[pl.Callback]) -> dict[str, float]:
    """The run's latest scalar metrics: Lightning's callback metrics, then what SwapEvaluation computed when
    training ended (callbacks cannot `log` in on_train_end)."""
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
    for callback in callbacks:
        if isinstance(callback, SwapEvaluation):
            metrics.update(callback.results)
    return metrics


def metric_value(metrics: dict[str, float], name: str | None) -> float | None:
    """The value a sweeper optimizes; a clear error when the run never produced it."""
    if not name:
        return None
    if name not in metrics:
        raise KeyError(f"optimized_metric '{name}' was not logged; logged metrics: {sorted(metrics)}")
    return metrics[name]
