"""Building run objects from config groups (callbacks and loggers are maps of _target_ nodes)."""

from __future__ import annotations

from typing import Any

import hydra
from omegaconf import DictConfig

from swaplab.errors import plain_user_errors
from swaplab.runtime import get_logger

log = get_logger(__name__)


def instantiate_map(cfg: DictConfig | None, what: str) -> list[Any]:
    """Instantiate every `_target_` node of a {name: node} config map; None entries are skipped."""
    if not cfg:
        return []
    if not isinstance(cfg, DictConfig):
        raise TypeError(f"{what} config must be a mapping of name -> _target_ node, got {type(cfg).__name__}")
    objects = []
    for name, node in cfg.items():
        if node is None:
            continue
        if not isinstance(node, DictConfig) or "_target_" not in node:
            raise ValueError(f"{what}.{name} has no _target_")
        log.info("Instantiating %s <%s>", what, node._target_)
        objects.append(hydra.utils.instantiate(node, _convert_="all"))
    return objects


def instantiate_data(cfg: DictConfig) -> Any:
    """The run's datamodule (a missing dataset root fails with its own one-line message)."""
    with plain_user_errors():
        return hydra.utils.instantiate(cfg, _convert_="all")
