"""The entry points as a user runs them: train.py (W&B offline, multirun, DDP, Optuna), eval.py, swap.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import ROOT, TINY, run_cli
from PIL import Image

from swaplab.io.checkpoints import safe_torch_load


@pytest.fixture(scope="module")
def default_run(tmp_path_factory) -> Path:
    """`python train.py` with its defaults, shortened: W&B logger (offline: no API key), every callback."""
    run_dir = tmp_path_factory.mktemp("default_run")
    run_cli("train.py", *TINY, "trainer.max_steps=4", "trainer.val_check_interval=2", "trainer.log_every_n_steps=1",
            "callbacks.image_grid.every_n_steps=2", "callbacks.last_checkpoint.every_n_train_steps=2",
            f"hydra.run.dir={run_dir}")
    return run_dir


def wandb_records(run_dir: Path) -> list[dict]:
    (log_file,) = run_dir.glob("wandb/offline-run-*/run-*.wandb")
    wandb = Path(sys.executable).with_name("wandb")
    out = subprocess.run([str(wandb), "leet", "inspect", "--json", str(log_file)], capture_output=True, text=True,
                         check=True, timeout=120).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def test_default_run_logs_losses_and_image_grids_to_wandb_offline(default_run):
    records = wandb_records(default_run)
    (run,) = [r["run"] for r in records if r["type"] == "run"]
    assert run["run_group"] == "faceshifter" and set(run["tags"]) == {"faceshifter", "synthetic"}
    history = [r["history"]["item"] for r in records if r["type"] == "history"]
    logged = set().union(*history)
    for term in ("adv", "att", "id", "rec", "total"):
        assert f"train/g/{term}" in logged
    assert {"train/d/real", "train/d/fake", "val/g/id"} <= logged
    losses = [h["train/g/total"] for h in history if "train/g/total" in h]
    assert len(losses) == 4 and all(np.isfinite(losses))
    grids = [h for h in history if "images/swaps.filenames" in h]
    assert grids, "no image grid was logged"
    (media,) = grids[-1]["images/swaps.filenames"]
    image = np.asarray(Image.open(next(default_run.glob("wandb/offline-run-*/files")) / media))
    assert image.dtype == np.uint8 and image.shape == (8 * 32, 3 * 32, 3)  # 8 val pairs x (source|target|swap)
    assert image.std() > 10, "image grid is blank"
    config = [r["run"]["config"] for r in records if r["type"] == "run"] + [
        r["config"] for r in records if r["type"] == "config"]
    assert any("params/generator" in json.dumps(c) for c in config)


def test_default_run_writes_resolved_config_and_checkpoints(default_run):
    cfg = yaml.safe_load((default_run / "config_resolved.yaml").read_text())
    assert cfg["experts"]["identity"]["weights"] == "random"
    assert "${" not in (default_run / "config_resolved.yaml").read_text()
    names = {p.name for p in (default_run / "checkpoints").iterdir()}
    assert "last.ckpt" in names and any(n.startswith("step") for n in names)
    assert (default_run / ".hydra" / "config.yaml").is_file()


def test_multirun_over_a_loss_weight_makes_two_runs(tmp_path):
    run_cli("train.py", "-m", *TINY, "model.loss_weights.id=1,10", "trainer.max_steps=2", "logger=csv",
            "callbacks=none", f"hydra.sweep.dir={tmp_path}")
    runs = sorted(p for p in tmp_path.iterdir() if p.is_dir() and p.name.isdigit())
    assert [p.name for p in runs] == ["0", "1"]
    weights = [yaml.safe_load((p / "config_resolved.yaml").read_text())["model"]["loss_weights"]["id"] for p in runs]
    assert weights == [1.0, 10.0]
    for run in runs:
        assert (run / "csv" / "metrics.csv").is_file()


def test_multirun_survives_a_failed_trial_and_finishes_every_trials_wandb_run(tmp_path):
    """The middle trial's learning rate passes the start-up checks, but Adam refuses it once training starts
    (after its W&B run began). The other trials still train, each in a W&B run of its own; every run is
    finished (the failed one with exit code 1); the failure is in the trial's log; the sweep exits non-zero."""
    proc = run_cli("train.py", "-m", *TINY, "model.optimizer_g.lr=1e-4,-1,4e-4", "trainer.max_steps=1",
                   "callbacks=[last_checkpoint]", "callbacks.last_checkpoint.every_n_train_steps=1",
                   "optimized_metric=null", f"hydra.sweep.dir={tmp_path}", check=False,
                   env={"OMP_NUM_THREADS": "1"})
    assert proc.returncode != 0 and "Invalid learning rate: -1" in proc.stderr
    runs = sorted(p for p in tmp_path.iterdir() if p.is_dir() and p.name.isdigit())
    assert [p.name for p in runs] == ["0", "1", "2"]
    for run, exit_code in zip(runs, [0, 1, 0], strict=True):
        records = wandb_records(run)  # exactly one offline run in each trial's folder
        assert [r["exit"].get("exit_code", 0) for r in records if r["type"] == "exit"] == [exit_code], run.name
        if exit_code == 0:
            assert safe_torch_load(run / "checkpoints" / "last.ckpt")["global_step"] == 1
    assert "Invalid learning rate: -1" in (runs[1] / "train.log").read_text()  # with its traceback


def test_ddp_on_two_cpu_processes_shards_the_data_and_keeps_weights_equal(tmp_path):
    proc = run_cli("train.py", *TINY, "trainer=ddp_sim", "callbacks=[last_checkpoint,record_samples]", "logger=csv",
                   "trainer.max_steps=3", "trainer.val_check_interval=2", f"hydra.run.dir={tmp_path}",
                   "callbacks.last_checkpoint.every_n_train_steps=3")
    output = proc.stdout + proc.stderr  # both processes write to the same terminal: each line once
    assert output.count("Instantiating callbacks <pytorch_lightning.callbacks.ModelCheckpoint>") == 1
    assert output.count("Run directory:") == 1
    assert "Initializing distributed: GLOBAL_RANK: 0" in output and "GLOBAL_RANK: 1" not in output  # Lightning's
    assert "[rank: 1]" not in output  # Lightning's "[rank: 1] Seed set to 42"
    seen = [[json.loads(line) for line in (tmp_path / f"samples_rank{r}.jsonl").read_text().splitlines()]
            for r in range(2)]
    assert [len(s) for s in seen] == [3, 3]
    for rank0, rank1 in zip(*seen, strict=True):
        assert rank0["step"] == rank1["step"]
        assert len(rank0["index"]) == len(rank1["index"]) == 2  # global batch 4 over 2 processes
        assert not set(rank0["index"]) & set(rank1["index"])
        assert rank0["weights"] == pytest.approx(rank1["weights"], rel=1e-9)  # different data, averaged gradients
    assert len({round(s["weights"], 6) for s in seen[0]}) == 3  # and the weights do change
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()


def test_eval_and_swap_on_a_trained_checkpoint(default_run, tmp_path):
    ckpt = default_run / "checkpoints" / "last.ckpt"
    run_cli("eval.py", f"ckpt=[{ckpt},{ckpt}]", "evaluation.max_pairs=20", f"hydra.run.dir={tmp_path / 'eval'}")
    summary = json.loads((tmp_path / "eval" / "results" / "synthetic" / "summary.json").read_text())
    (result,) = summary["checkpoints"]  # the same path twice is evaluated once
    assert result["path"] == str(ckpt) and result["model"] == "FaceShifter" and result["num_examples"] == 20
    assert np.isfinite(result["metrics"]["id_retrieval"]) and np.isfinite(result["metrics"]["pose_error"])

    faces = tmp_path / "faces"
    faces.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a.png", "b.png"):
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(faces / name)
    (faces / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    out = tmp_path / "swaps"
    run_cli("swap.py", f"ckpt={ckpt}", f"source={faces / 'a.png'}", f"target={faces}", f"output={out}",
            "aligned=true", f"hydra.run.dir={tmp_path / 'swap'}")  # full photos: test_swap_pipeline.py
    summary = json.loads((out / "summary.json").read_text())
    assert summary["written"] == 2 and sum(summary["skipped"].values()) == 1
    assert Image.open(out / "b_swap.png").size == (32, 32)


@pytest.mark.slow
def test_optuna_sweep_over_loss_weights(tmp_path):
    run_cli("train.py", "hparams_search=faceshifter_optuna", *TINY, "hydra.sweeper.n_trials=2",
            "hydra.sweeper.sampler.n_startup_trials=1", "trainer.max_steps=2", "trainer.val_check_interval=2",
            "logger=csv", "callbacks=none", f"hydra.sweep.dir={tmp_path}")
    best = yaml.safe_load((tmp_path / "optimization_results.yaml").read_text())
    assert set(best["best_params"]) == {"model.loss_weights.att", "model.loss_weights.id", "model.loss_weights.rec"}
    assert np.isfinite(best["best_value"])


def test_readme_quickstart_commands_exist():
    readme = (ROOT / "README.md").read_text().splitlines()
    head = "\n".join(readme[:15])
    assert "make quickstart" in head and "make test" in head
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    assert os.access(ROOT / ".ci" / "run", os.X_OK)


@pytest.mark.slow
def test_quickstart_default_run_finishes(tmp_path):
    """`python train.py` exactly as the quickstart runs it (defaults only), within a generous bound."""
    import time

    start = time.monotonic()
    run_cli("train.py", f"hydra.run.dir={tmp_path}", timeout=600)
    minutes = (time.monotonic() - start) / 60
    print(f"quickstart python train.py: {minutes:.1f} min")
    ckpt = safe_torch_load(tmp_path / "checkpoints" / "last.ckpt")
    assert ckpt["global_step"] == 200
    assert list(tmp_path.glob("wandb/offline-run-*/run-*.wandb"))
