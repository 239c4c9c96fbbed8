"""Shared test helpers: tiny config overrides, config composition, CLI runs, metric files."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

from omegaconf import DictConfig, open_dict

from swaplab.tasks.compose import compose_run_config

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"

# 32x32 faces, a few thousand parameters per network: a CPU training step takes ~0.1 s.
TINY = [
    "data.resolution=32",
    "data.batch_size=4",
    "data.val_batch_size=4",
    "data.num_workers=0",
    "data.train.num_identities=50",
    "data.train.images_per_identity=4",
    "data.val.num_identities=4",
    "model.generator.base_channels=8",
    "model.generator.max_channels=32",
    "model.discriminator.base_channels=8",
    "model.discriminator.max_channels=32",
    "model.discriminator.num_layers=2",
    "experts=random",  # tiny random networks: the identity net below is shrunk
    "experts.identity.widths=[8,16,32,32]",
    "experts.identity.input_size=32",
    "trainer.limit_val_batches=1",
]


def compose_config(config_name: str, tmp_path: Path, overrides: list[str]) -> DictConfig:
    """Compose a config as `python <entry>.py overrides...` would, with run folders under tmp_path."""
    cfg = compose_run_config(CONF, config_name, overrides, output_dir=tmp_path, cwd=ROOT)
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path)
        cfg.paths.log_dir = str(tmp_path / "logs")
        cfg.paths.weights_dir = str(tmp_path / "weights")
        cfg.paths.cache_dir = str(tmp_path / "cache")
    return cfg


def run_cli(script: str, *args: str, timeout: float = 600, env: dict | None = None,
            check: bool = True) -> subprocess.CompletedProcess:
    """Run an entry point as a user would; fail with its output when it exits non-zero (`check`)."""
    full_env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "HYDRA_FULL_ERROR": "1",
                **(env or {})}
    full_env.pop("WANDB_API_KEY", None)
    proc = subprocess.run([sys.executable, str(ROOT / script), *args], cwd=ROOT, env=full_env,
                          capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{script} {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n"
                             f"{proc.stderr[-8000:]}")
    return proc


def read_metrics(csv_path: Path, key: str) -> dict[int, float]:
    """{step: value} of one metric from a CSVLogger metrics.csv."""
    with open(csv_path) as f:
        return {int(row["step"]): float(row[key]) for row in csv.DictReader(f) if row.get(key)}


class OptimizerProbe:
    """Test callback: saves the optimizers' state and the global step when training starts."""

    def __new__(cls, path: str):
        import pytorch_lightning as pl
        import torch

        class _Probe(pl.Callback):
            def on_train_start(self, trainer, pl_module):
                torch.save({"global_step": trainer.global_step,
                            "optimizers": [o.state_dict() for o in trainer.optimizers]}, path)

        return _Probe()


def fit_on_batches(model, batches: list[dict], steps: int, ckpt: Path | None = None) -> list[dict[str, float]]:
    """Train `model` for `steps` steps on fixed batches (cycled) through its own training_step, on the CPU and
    without loggers; returns the logged values (`trainer.callback_metrics`) after every step."""
    import pytorch_lightning as pl
    from torch.utils.data import DataLoader

    history: list[dict[str, float]] = []

    class Record(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            history.append({k: float(v) for k, v in trainer.callback_metrics.items()})

    trainer = pl.Trainer(max_steps=steps, accelerator="cpu", logger=False, callbacks=[Record()], log_every_n_steps=1,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model, train_dataloaders=DataLoader(batches, batch_size=None))
    if ckpt is not None:
        trainer.save_checkpoint(ckpt)
    return history


def load_benchmark(name: str):
    """The module of `experiments/benchmarks/<name>.py` (scripts, not a package), to call its `main(argv)`."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "experiments" / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
