"""Process-level facts every layer needs: the device a run asks for, and logging that speaks once under DDP."""

from __future__ import annotations

import logging
import os
import sys

import torch


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """`auto`: CUDA when available, else the CPU; anything else as torch.device reads it (cpu, cuda:1, ...)."""
    if isinstance(name, torch.device):
        return name
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def global_rank() -> int:
    """This process's global rank: Lightning's `rank_zero_only.rank` once Lightning is loaded (it sets it when the
    strategy starts), else the launcher's environment (torchrun / SLURM), else 0. Importing Lightning only to
    ask would add seconds to every light tool, so it is read only when already there."""
    rank_zero = sys.modules.get("lightning_fabric.utilities.rank_zero")
    rank = getattr(getattr(rank_zero, "rank_zero_only", None), "rank", None)
    if rank is not None:
        return int(rank)
    for key in ("RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK"):
        if os.environ.get(key, "").isdigit():
            return int(os.environ[key])
    return 0


class _RankZeroFilter(logging.Filter):
    """Drops records on processes other than global rank 0 (rank read when the record is made, so a logger
    created before DDP set the rank still behaves). `logger.info(..., extra={"all_ranks": True})` passes."""

    def filter(self, record: logging.LogRecord) -> bool:
        return global_rank() == 0 or getattr(record, "all_ranks", False)


def get_logger(name: str) -> logging.Logger:
    """A logger whose records appear once per run under DDP, not once per process."""
    logger = logging.getLogger(name)
    if not any(isinstance(f, _RankZeroFilter) for f in logger.filters):
        logger.addFilter(_RankZeroFilter())
    return logger
