"""Logger construction and image logging that works the same for W&B, TensorBoard and CSV."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from pytorch_lightning.loggers import CSVLogger, Logger, TensorBoardLogger, WandbLogger

from swaplab.runtime import get_logger

log = get_logger(__name__)


def wandb_has_api_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    return netrc.is_file() and "api.wandb.ai" in netrc.read_text(errors="ignore")


class WandbRunLogger(WandbLogger):
    """A WandbLogger that knows, through public API only, whether it writes offline (`offline`) and whether
    this process started its W&B run (`run_started`: on global rank 0, once anything was logged), and that
    `finish`es that run with an exit code (Lightning's `finalize` leaves W&B runs open until the process
    exits, so the next run of a multirun would log into the previous one)."""

    def __init__(self, *args: Any, offline: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, offline=offline, **kwargs)
        self.offline = offline
        self.run_started = False
        self.run_finished = False

    @property
    def experiment(self) -> Any:
        experiment = super().experiment
        if not self.run_started:
            import wandb  # wandb: only when a W&B run is finished

            self.run_started = isinstance(experiment, wandb.Run)  # other ranks get a stand-in
        return experiment

    def finish(self, exit_code: int = 0) -> None:
        """End this logger's W&B run (0: success, else failed); nothing when it never started one."""
        if self.run_started and not self.run_finished:
            self.experiment.finish(exit_code=exit_code)
            self.run_finished = True


def wandb_logger(offline: bool | str = "auto", save_dir: str = ".", **kwargs: Any) -> WandbRunLogger:
    """WandbLogger that goes offline by itself when no API key is configured (`offline: auto`)."""
    if offline == "auto":
        offline = os.environ.get("WANDB_MODE") in ("offline", "disabled") or not wandb_has_api_key()
    elif not isinstance(offline, bool):
        raise ValueError(f"logger.wandb.offline must be auto, true or false, got {offline!r}")
    Path(save_dir).mkdir(parents=True, exist_ok=True)
    if offline:
        log.info("W&B runs offline (no API key). Upload later with: wandb sync %s/wandb/offline-run-*", save_dir)
    return WandbRunLogger(offline=offline, save_dir=save_dir, **kwargs)


def announce_offline_runs(loggers: list[Logger]) -> None:
    """Tell the user how to upload W&B runs that were written offline."""
    for logger in loggers:
        if isinstance(logger, WandbRunLogger) and logger.offline and logger.run_started:
            log.info("W&B run saved offline; upload it with: wandb sync %s", Path(logger.experiment.dir).parent)


def close_loggers(loggers: Iterable[Logger], failed: bool = False) -> None:
    """End a run's logging: every logger finalized ("success", or "failed") and W&B runs finished with exit code
    0 or 1, this process's current W&B run included (one a plain WandbLogger or user code started). A logger
    that fails to close is reported and the others are still closed."""
    status, exit_code = ("failed", 1) if failed else ("success", 0)
    for logger in loggers:
        try:
            logger.finalize(status)
            if isinstance(logger, WandbRunLogger):
                logger.finish(exit_code)
        except Exception:
            log.exception("could not close the %s logger", type(logger).__name__)
    wandb = sys.modules.get("wandb")  # not imported: no W&B run can be open
    if wandb is not None and wandb.run is not None:
        wandb.finish(exit_code=exit_code)


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
            folder = Path(logger.log_dir) / "images" / key.replace("/", "_")
            folder.mkdir(parents=True, exist_ok=True)
            for i, image in enumerate(images):
                Image.fromarray(image).save(folder / f"step{step:07d}_{i}.png")
