"""A task's logging ends with the task, whether it returns or raises.

`task_wrapper` wraps `train` and `evaluate`. The loggers a task hands over with `close_at_task_end` are
closed when it returns (finalized "success", W&B run finished with exit code 0) or raises (finalized
"failed", exit code 1), and a W&B run still open in the process is finished either way, so the next job of
a Hydra multirun (the same process) starts a run of its own. A failure is logged (in a multirun with its
traceback, into that job's log file) and re-raised: a single run exits non-zero, and Hydra's basic launcher
records it as that job's result, runs the remaining jobs and exits non-zero at the end of the sweep (the
Optuna sweeper stops the study unless `hydra.sweeper.max_failure_rate` allows failures).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from contextvars import ContextVar
from typing import ParamSpec, TypeVar

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from pytorch_lightning.loggers import Logger

from swaplab.runtime import get_logger
from swaplab.training.loggers import close_loggers

log = get_logger(__name__)

P = ParamSpec("P")
R = TypeVar("R")
_open_loggers: ContextVar[list[Logger] | None] = ContextVar("swaplab_task_loggers", default=None)


def close_at_task_end(loggers: Iterable[Logger]) -> list[Logger]:
    """Hands `loggers` to the enclosing `task_wrapper` to close when the task ends; returns them as a list.
    Outside a wrapped task nothing closes them (the caller's job)."""
    loggers = list(loggers)
    opened = _open_loggers.get()
    if opened is not None:
        opened.extend(loggers)
    return loggers


def _in_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def task_wrapper(task: Callable[P, R]) -> Callable[P, R]:
    """`task` with its loggers closed when it returns or raises (see the module docstring)."""

    @functools.wraps(task)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        opened: list[Logger] = []
        token = _open_loggers.set(opened)
        try:
            result = task(*args, **kwargs)
        except BaseException as error:
            log.error("%s failed (%s: %s); its loggers are closed as failed", task.__name__,
                      type(error).__name__, error, exc_info=_in_multirun())
            close_loggers(opened, failed=True)
            raise
        finally:
            _open_loggers.reset(token)
        close_loggers(opened)
        return result

    return run
