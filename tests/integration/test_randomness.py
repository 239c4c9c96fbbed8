"""Randomness per process: pairs, augmentations and HEAR-Net's occluders differ between DDP processes (two gloo
processes on the CPU) and a resumed run draws what the uninterrupted run would have.

Pairs and augmentations are drawn by the dataset from each pair's key (rank- and epoch-distinct through the
sampler); in-step draws (occluders) come from SwapModule.step_generator, seeded by (seed, rank, epoch, step).
Before it, every process drew its occluders from the global RNG, seeded alike on every process.
"""

from __future__ import annotations

import socket
from types import SimpleNamespace

import hydra
import pytest
import pytorch_lightning as pl
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from helpers import compose_config
from omegaconf import OmegaConf, open_dict
from test_swap_behaviour import HEAR, with_random_aei

from swaplab.models.loading import build_model
from swaplab.tasks.train import train

pytestmark = pytest.mark.usefixtures("single_thread")

OCCLUDED = [o for o in HEAR if o != "model.occlusion=null"] + ["model.occlusion.p=1.0", "data.batch_size=4",
                                                                 "data.train.same_identity_rate=0.5"]


def hear_config(tmp_path, *overrides: str):
    cfg = compose_config("train", tmp_path, [*OCCLUDED, *overrides])
    with open_dict(cfg):
        with_random_aei(tmp_path)(cfg)
    return cfg


def _draw_first_batch(rank: int, port: int, cfg, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    torch.set_num_threads(1)
    torch.manual_seed(0)  # as seed_everything does on every process: the global RNG is the same on both
    trainer = SimpleNamespace(global_rank=dist.get_rank(), world_size=dist.get_world_size(), current_epoch=0,
                              global_step=0, training=True)
    model, _ = build_model(cfg)
    model._trainer = trainer
    datamodule = hydra.utils.instantiate(cfg.data, _convert_="all")
    datamodule.trainer = trainer
    batch = next(iter(datamodule.train_dataloader()))
    occluded = model.training_batch(batch, batch_idx=0)
    torch.save({"index": batch["index"], "source": batch["source"], "occluder": occluded["occluder_mask"]},
               f"{out}{rank}.pt")
    dist.destroy_process_group()


def test_two_processes_draw_different_pairs_and_occluders(tmp_path):
    cfg = OmegaConf.create(OmegaConf.to_container(hear_config(tmp_path), resolve=True))  # no Hydra in the workers
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = str(tmp_path / "draws")
    mp.spawn(_draw_first_batch, args=(port, cfg, out), nprocs=2, join=True)
    first, second = (torch.load(f"{out}{rank}.pt") for rank in range(2))
    assert len(first["index"]) == len(second["index"]) == 2  # global batch 4 over 2 processes
    assert not set(first["index"].tolist()) & set(second["index"].tolist())  # other pairs
    assert not torch.equal(first["source"], second["source"])
    for one, other in zip(first["occluder"], second["occluder"], strict=True):  # every sample occluded (p=1)
        assert one.sum() > 0 and other.sum() > 0
        assert (one - other).abs().mean() > 1e-3, "the two processes pasted the same occluder"


class DrawProbe(pl.Callback):
    """Saves to `path`, per training step, the pairs (keys, source images) and the occluders pasted on targets."""

    def __init__(self, path: str) -> None:
        self.path, self.draws = path, {}

    def on_fit_start(self, trainer, pl_module) -> None:
        def record(module, args, output) -> None:
            self.draws.setdefault(trainer.global_step, {})["occluder"] = output[1].detach().clone()

        pl_module.occlusion.register_forward_hook(record)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step - 1  # after the update
        self.draws.setdefault(step, {}).update(index=batch["index"].clone(), source=batch["source"].clone())

    def on_fit_end(self, trainer, pl_module) -> None:
        torch.save(self.draws, self.path)


RUN = ["logger=none", "trainer.val_check_interval=1000", "callbacks=[last_checkpoint]",
       "callbacks.last_checkpoint.every_n_train_steps=2", "+callbacks.probe._target_=test_randomness.DrawProbe"]


def fit_hear(tmp_path, *overrides: str) -> dict[int, dict[str, torch.Tensor]]:
    train(hear_config(tmp_path, *RUN, f"+callbacks.probe.path={tmp_path / 'draws.pt'}", *overrides))
    return torch.load(tmp_path / "draws.pt")


def test_a_resumed_run_draws_the_pairs_and_occluders_of_the_uninterrupted_run(tmp_path):
    straight = fit_hear(tmp_path / "straight", "trainer.max_steps=4")
    fit_hear(tmp_path / "first", "trainer.max_steps=2")
    resumed = fit_hear(tmp_path / "resumed", "trainer.max_steps=4",
                       f"ckpt_path={tmp_path / 'first' / 'checkpoints' / 'last.ckpt'}")
    assert sorted(straight) == [0, 1, 2, 3] and sorted(resumed) == [2, 3]
    for step in (2, 3):
        for key in ("index", "source", "occluder"):
            assert torch.equal(resumed[step][key], straight[step][key]), (step, key)
    assert not torch.equal(straight[2]["occluder"], straight[3]["occluder"])  # a new draw every step
