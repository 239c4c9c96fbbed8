"""Building a model from config, and rebuilding one from a swaplab checkpoint alone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf

from swaplab.utils.checkpoint_io import safe_torch_load


def build_model(cfg: DictConfig) -> tuple[pl.LightningModule, Any]:
    """Experts once, then the model that shares them."""
    experts = hydra.utils.instantiate(cfg.experts, _convert_="all")
    model = hydra.utils.instantiate(cfg.model, experts=experts, _convert_="all")
    model.run_config = OmegaConf.to_container(cfg, resolve=True)
    return model, experts


def checkpoint_config(checkpoint: dict[str, Any], path: str | Path) -> DictConfig:
    meta = checkpoint.get("swaplab")
    if not isinstance(meta, dict) or not meta.get("config"):
        raise ValueError(f"{path} is not a swaplab training checkpoint (it has no 'swaplab' config entry)")
    return OmegaConf.create(meta["config"])


def load_swap_model(path: str | Path, experts: DictConfig | None = None) -> tuple[pl.LightningModule, DictConfig]:
    """The trained model of a checkpoint (eval mode, CPU) and its run config.

    `experts` replaces the experts recorded in the checkpoint (e.g. other weight paths on this machine).
    """
    checkpoint = safe_torch_load(path)
    cfg = checkpoint_config(checkpoint, path)
    if experts is not None:
        cfg.experts = experts
    model, _ = build_model(cfg)
    model.load_state_dict(checkpoint["state_dict"], strict=True)
    return model.eval(), cfg
