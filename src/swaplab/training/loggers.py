"""Logger construction and image logging that works the same for W&B, TensorBoard and CSV."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from pytorch_lightning.loggers import CSVLogger, Logger, TensorBoardLogger, WandbLogger

from swaplab.runtime import get_logger

log = get_logger(__name__)


def wandb_has_api_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    return netrc.is_file() and "api.wandb.ai" in netrc.read_text(errors="ignore")


def wandb_logger(offline: bool | str = "auto", save_dir: str = ".", **kwargs: Any) -> WandbLogger:
    """WandbLogger that goes offline by itself when no API key is configured (`offline: auto`)."""
    if offline == "auto":
        offline = os.environ.get("WANDB_MODE") in ("offline", "disabled") or not wandb_has_api_key()
    elif not isinstance(offline, bool):
        raise ValueError(f"logger.wandb.offline must be auto, true or false, got {offline!r}")
    Path(save_dir).mkdir(parents=True, exist_ok=True)
    if offline:
        log.info("W&B runs offline (no API key). Upload later with: wandb sync %s/wandb/offline-run-*", save_dir)
    return WandbLogger(offline=offline, save_dir=save_dir, **kwargs)


def announce_offline_runs(loggers: list[Logger]) -> None:
    """Tell the user how to upload W&B runs that were written offline."""
    for logger in loggers:
        if isinstance(logger, WandbLogger) and logger._offline and logger._experiment is not None:
            log.info("W&B run saved offline; upload it with: wandb sync %s", Path(logger.experiment.dir).parent)


def log_images(loggers: list[Logger], key: str, images: list[np.ndarray], step: int,
               captions: list[str] | None = None) -> None:
    """Log uint8 HWC RGB images (W&B renders float images black) to every logger that can take them."""
    for image in images:
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
            raise ValueError(f"log_images takes uint8 HxWx3 arrays, got {image.dtype} {image.shape}")
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            logger.log_image(key=key, images=list(images), step=step, caption=captions)
        elif isinstance(logger, TensorBoardLogger):
            for i, image in enumerate(images):
                logger.experiment.add_image(f"{key}/{i}", image, global_step=step, dataformats="HWC")
        elif isinstance(logger, CSVLogger):
            from PIL import Image

            folder = Path(logger.log_dir) / "images" / key.replace("/", "_")
            folder.mkdir(parents=True, exist_ok=True)
            for i, image in enumerate(images):
                Image.fromarray(image).save(folder / f"step{step:07d}_{i}.png")
