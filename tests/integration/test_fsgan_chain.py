"""FSGAN's four experiments in order, in-process as `python train.py experiment=fsgan_<stage>` runs them on
synthetic faces, each from the previous run's checkpoints/last.ckpt, with the refusals of a wrong or missing
predecessor at start-up, and the last checkpoint swapping alone."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from helpers import compose_config
from test_fsgan import TINY_FSGAN, synthetic_batch

from swaplab.io.checkpoints import safe_torch_load
from swaplab.models.fsgan import STAGES
from swaplab.models.loading import load_swap_model
from swaplab.models.stages import recorded_resolution, trained_networks
from swaplab.tasks.train import train

pytestmark = pytest.mark.usefixtures("single_thread")

# two steps: one at half size (global U-Net, batch 2), one at full size with the smaller batch (as 32 -> 16)
SHORT = ["trainer=cpu", "logger=none", "trainer.max_steps=2", "trainer.val_check_interval=2",
         "trainer.limit_val_batches=1", "callbacks.last_checkpoint.every_n_train_steps=2"]
PROGRESSIVE = ["model.progressive_steps=1", "model.full_resolution_batch=1"]


def run_stage(tmp_path: Path, stage: str, predecessor: Path | None, *extra: str):
    overrides = [f"experiment=fsgan_{stage}", *TINY_FSGAN, *SHORT, *(PROGRESSIVE if stage != "segmentation" else []),
                 f"model.predecessor_ckpt={predecessor if predecessor else 'null'}", *extra]
    return train(compose_config("train", tmp_path / stage, overrides))


def test_four_experiments_chain_through_last_ckpt_and_wrong_predecessors_are_refused(tmp_path):
    last = {}
    for stage in STAGES:
        earlier = STAGES[: STAGES.index(stage)]
        if len(earlier) >= 2:  # the checkpoint before the previous one lacks the previous stage's generator
            with pytest.raises(Exception, match=rf"lacks trained \['{earlier[-1]}'\] for FSGAN stage {stage}"):
                run_stage(tmp_path / "refused", stage, last[earlier[-2]])
        if earlier:  # no predecessor at all: an error at start-up, before any step
            with pytest.raises(Exception, match=re.escape(f"FSGAN stage {stage} needs trained {list(earlier)} from "
                                                          "model.predecessor_ckpt, which is not set")):
                run_stage(tmp_path / "missing", stage, None)
        _, objects = run_stage(tmp_path, stage, last.get(earlier[-1]) if earlier else None)
        assert objects["trainer"].global_step == 2
        last[stage] = tmp_path / stage / "checkpoints" / "last.ckpt"
        record = safe_torch_load(last[stage])["swaplab"]["stages"]
        assert record["trained"] == [stage] and sorted(trained_networks(record)) == sorted([stage, *earlier])
        assert {recorded_resolution(record, name) for name in (stage, *earlier)} == {32}  # full size last
        if earlier:
            assert record["predecessor"]["path"] == str(last[earlier[-1]].absolute())

    for stage in STAGES[:-1]:  # the blending run's last.ckpt alone holds and rebuilds the pipeline
        last[stage].unlink()
    model, cfg = load_swap_model(last["blending"])
    batch = synthetic_batch(cfg, [0, 1])
    with torch.no_grad():
        out = model(batch["source"], batch["target"])
    assert out.swap.shape == batch["target"].shape and torch.isfinite(out.swap).all()
