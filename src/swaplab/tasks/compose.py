"""Composing a run's config from Python exactly as `python <entry>.py overrides...` would (tests, benchmarks,
notebooks), without Hydra's global state leaking from one composition into the next."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict


def compose_run_config(config_dir: str | Path, config_name: str, overrides: list[str], output_dir: str | Path,
                       cwd: str | Path | None = None) -> DictConfig:
    """The composed config of one run whose folder is `output_dir`: `${hydra:...}` interpolations resolve as in
    a real run (HydraConfig is set for it), and the `hydra` node itself is dropped."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(Path(config_dir).resolve())):
        cfg = compose(config_name=config_name, return_hydra_config=True, overrides=list(overrides))
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(output_dir)
        cfg.hydra.runtime.cwd = str(cwd or Path(config_dir).resolve().parent)
        cfg.hydra.job.num = 0
    HydraConfig().set_config(cfg)
    with open_dict(cfg):
        del cfg.hydra
    return cfg


def clear_hydra_state() -> None:
    """Forget the global Hydra instance and the current run's HydraConfig (between tests or compositions)."""
    GlobalHydra.instance().clear()
    HydraConfig.instance().cfg = None
