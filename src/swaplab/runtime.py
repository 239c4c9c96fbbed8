"""Process-level facts every layer needs: the device a run asks for, and logging that speaks once under DDP."""

from __future__ import annotations

import logging
import os
import sys
import warnings

import numpy as np
import torch

# Lightning logs a few messages on every process on purpose ("[rank: 1] Seed set to ...", "Initializing
# distributed: GLOBAL_RANK: 1 ..."); `quiet_other_ranks` keeps them to rank 0.
LIGHTNING_LOGGERS = ("pytorch_lightning", "lightning_fabric", "lightning")


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


def seeded_generator(device: torch.device | str, *keys: int) -> torch.Generator:
    """A torch.Generator on `device` seeded by a hash of the integer `keys` (numpy's SeedSequence): e.g. (seed,
    rank, epoch, step) gives every process and every step its own stream, and the same one again on resume."""
    seed = int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1, np.uint64)[0] >> 1)
    return torch.Generator(device=device).manual_seed(seed)


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


class _OtherRanksQuiet(logging.Filter):
    """A handler filter: drops records below WARNING from the `packages`' loggers (their children included) on
    processes other than global rank 0. On handlers because a logger's own filters do not see the records
    its children pass up."""

    def __init__(self, packages: tuple[str, ...]) -> None:
        super().__init__()
        self.packages = packages

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING or global_rank() == 0:
            return True
        return not any(record.name == p or record.name.startswith(p + ".") for p in self.packages)


def quiet_other_ranks(packages: tuple[str, ...] = LIGHTNING_LOGGERS) -> None:
    """Third-party messages once per run under DDP: records below WARNING from `packages` (Lightning by
    default) pass only on global rank 0, through every handler of the root logger and of those packages'
    loggers (Lightning adds its own when it is imported before logging is configured); on other ranks their
    Python warnings are ignored. Call it after logging is configured (Hydra: in the task) and again when the
    handlers are replaced; repeated calls add nothing."""
    loggers = [logging.getLogger(), *(logging.getLogger(p) for p in packages)]
    for handler in {h for logger in loggers for h in logger.handlers}:
        if not any(isinstance(f, _OtherRanksQuiet) and f.packages == packages for f in handler.filters):
            handler.addFilter(_OtherRanksQuiet(packages))
    if global_rank() != 0:
        pattern = "|".join(p.replace(".", r"\.") for p in packages)
        warnings.filterwarnings("ignore", module=rf"({pattern})(\.|$)")
