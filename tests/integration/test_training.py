"""Training end to end in-process: overfitting, frozen experts, exact resume, atomic checkpoints, EMA."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import TINY, compose_config, read_metrics

from swaplab.io.checkpoints import atomic_torch_save, safe_torch_load
from swaplab.tasks.train import train


def train_tiny(tmp_path: Path, *overrides: str):
    cfg = compose_config("train", tmp_path, [*TINY, "logger=csv", "trainer.log_every_n_steps=1", *overrides])
    return train(cfg)


def test_overfitting_one_batch_of_same_pairs_cuts_reconstruction_5x(tmp_path):
    train_tiny(tmp_path, "debug=overfit", "trainer.max_steps=100", "data.batch_size=2", "data.train.same_identity_rate=1.0",
               "callbacks=none")
    rec = read_metrics(tmp_path / "csv" / "metrics.csv", "train/g/rec")
    steps = sorted(rec)
    first, last = rec[steps[0]], sum(rec[s] for s in steps[-3:]) / 3
    assert steps[0] == 0 and len(steps) == 100
    assert first / last >= 5, f"reconstruction only went from {first:.4f} to {last:.4f}"


ALL_ROLES = ["identity", "identity_eval", "detector", "landmarks", "parsing", "face3d", "pose", "perceptual", "lpips",
             "lighting"]


def test_experts_stay_frozen_and_out_of_checkpoints(tmp_path):
    extra = f"experts_extra=[{','.join(ALL_ROLES[1:])}]"
    _, objects = train_tiny(tmp_path, "trainer.max_steps=2", "trainer.val_check_interval=2", extra)
    experts = objects["experts"]
    assert sorted(experts.describe()) == sorted(ALL_ROLES)
    from swaplab.models.loading import build_model

    _, untrained = build_model(compose_config("train", tmp_path / "fresh", [*TINY, extra]))  # seeded: identical
    for role in ALL_ROLES:
        expert, reference = getattr(experts, role), getattr(untrained, role)
        net, net0 = getattr(expert, "net", expert), getattr(reference, "net", reference)
        assert not expert.training and not net.training, f"expert {role} left eval mode"
        state, state0 = net.state_dict(), net0.state_dict()
        assert state.keys() == state0.keys()
        for name, value in state.items():
            assert torch.equal(value, state0[name]), f"expert {role} parameter {name} changed during training"
    ckpt = safe_torch_load(tmp_path / "checkpoints" / "last.ckpt")
    prefixes = {k.split(".")[0] for k in ckpt["state_dict"]}
    assert prefixes == {"generator", "discriminator"}
    assert sorted(ckpt["swaplab"]["experts"]) == sorted(ALL_ROLES)
    assert ckpt["swaplab"]["experts"]["identity"]["weights"] == "random"
    assert ckpt["swaplab"]["config"]["model"]["loss_weights"]["id"] == 5.0


def test_global_step_counts_generator_iterations(tmp_path):
    _, objects = train_tiny(tmp_path, "trainer.max_steps=3", "trainer.val_check_interval=100", "callbacks=none")
    assert objects["trainer"].global_step == 3
    steps = sorted(read_metrics(tmp_path / "csv" / "metrics.csv", "train/d/total"))
    assert steps == [0, 1, 2]  # D trained every iteration without advancing the step


@pytest.mark.parametrize("accumulate", [1, 2])
def test_losses_are_logged_on_the_trainers_logging_steps_only(tmp_path, monkeypatch, accumulate):
    """`self.log` runs only on the batches whose values Lightning writes (every log_every_n_steps batches, and
    the last step), and what is written there is that batch's value (a value logged on another batch would be
    written later under the wrong step)."""
    from swaplab.models.base import SwapModule

    batches, calls = [0], []  # batches trained; the batch count whenever the losses were logged
    training_step, log_dict = SwapModule.training_step, SwapModule.log_dict

    def step(self, *args, **kwargs):
        batches[0] += 1
        return training_step(self, *args, **kwargs)

    def counted(self, metrics, *args, **kwargs):
        if any(k.startswith("train/") for k in metrics):
            calls.append(batches[0])
        return log_dict(self, metrics, *args, **kwargs)

    monkeypatch.setattr(SwapModule, "training_step", step)
    monkeypatch.setattr(SwapModule, "log_dict", counted)
    run = ["trainer.deterministic=true", "trainer.val_check_interval=1000", "callbacks=none", "logger=csv",
           f"model.accumulate_grad_batches={accumulate}", f"trainer.max_steps={8 // accumulate}"]
    train(compose_config("train", tmp_path / "every3", [*TINY, *run, "trainer.log_every_n_steps=3"]))
    monkeypatch.undo()
    train(compose_config("train", tmp_path / "every1", [*TINY, *run, "trainer.log_every_n_steps=1"]))

    assert calls == [3, 6, 8]  # batches 3 and 6, and the last step
    for key in ("train/g/total", "train/d/total"):
        sparse = read_metrics(tmp_path / "every3" / "csv" / "metrics.csv", key)
        dense = read_metrics(tmp_path / "every1" / "csv" / "metrics.csv", key)
        assert sorted(dense) == list(range(8)) and sorted(sparse) == [2, 5]  # step: batches before this one
        for step, value in sparse.items():
            assert value == pytest.approx(dense[step], rel=1e-5, abs=1e-7), (key, step)


RESUME = ["trainer.deterministic=true", "trainer.val_check_interval=1000", "callbacks=[last_checkpoint]",
          "callbacks.last_checkpoint.every_n_train_steps=3"]


def test_resume_continues_exactly(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    train_tiny(a, *RESUME, "trainer.max_steps=3")
    probe = str(tmp_path / "probe.pt")
    train_tiny(b, *RESUME, "trainer.max_steps=6", f"ckpt_path={a / 'checkpoints' / 'last.ckpt'}",
               "+callbacks.probe._target_=helpers.OptimizerProbe", f"+callbacks.probe.path={probe}")
    train_tiny(c, *RESUME, "trainer.max_steps=6")

    saved = safe_torch_load(a / "checkpoints" / "last.ckpt")
    restored = torch.load(probe, weights_only=True)
    assert saved["global_step"] == restored["global_step"] == 3
    for saved_opt, restored_opt in zip(saved["optimizer_states"], restored["optimizers"], strict=True):
        for key, state in saved_opt["state"].items():
            for name, value in state.items():
                assert torch.equal(value, restored_opt["state"][key][name])

    for key in ("train/g/total", "train/g/rec", "train/g/id", "train/d/total"):
        resumed = read_metrics(b / "csv" / "metrics.csv", key)
        straight = read_metrics(c / "csv" / "metrics.csv", key)
        assert sorted(resumed) == [3, 4, 5]
        for step in resumed:
            assert resumed[step] == pytest.approx(straight[step], rel=1e-5, abs=1e-7), (key, step)

    final_b = safe_torch_load(b / "checkpoints" / "last.ckpt")["state_dict"]
    final_c = safe_torch_load(c / "checkpoints" / "last.ckpt")["state_dict"]
    for name in final_c:
        assert torch.allclose(final_b[name], final_c[name], atol=1e-6), name


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    atomic_torch_save({"w": torch.ones(3)}, path)

    def torn_save(obj, f, *args, **kwargs):
        f.write(b"half a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", torn_save)
    with pytest.raises(KeyboardInterrupt):
        atomic_torch_save({"w": torch.zeros(3)}, path)
    monkeypatch.undo()
    assert torch.equal(safe_torch_load(path)["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_generator_ema_is_trained_used_and_saved(tmp_path):
    _, objects = train_tiny(tmp_path, "experiment=faceshifter_ema", "model.ema_decay=0.5", "trainer.max_steps=3",
                            "trainer.val_check_interval=3")
    model = objects["model"]
    assert model.inference_generator is model.generator_ema and not model.generator_ema.training
    ema = dict(model.generator_ema.named_parameters())
    gen = dict(model.generator.named_parameters())
    assert any(not torch.equal(ema[k], gen[k]) for k in gen)
    assert all(not p.requires_grad for p in ema.values())
    keys = safe_torch_load(tmp_path / "checkpoints" / "last.ckpt")["state_dict"]
    assert any(k.startswith("generator_ema.") for k in keys)


def test_schedulers_step_per_iteration_and_clipping_bounds_updates(tmp_path):
    scheduler = "{_target_:torch.optim.lr_scheduler.StepLR,_partial_:true,step_size:1,gamma:0.5}"
    _, objects = train_tiny(tmp_path / "sched", f"model.scheduler_g={scheduler}", "trainer.max_steps=3",
                            "trainer.val_check_interval=100", "callbacks=[lr_monitor]")
    opt_g, opt_d = objects["trainer"].optimizers
    assert opt_g.param_groups[0]["lr"] == pytest.approx(4e-4 * 0.5**3)
    assert opt_d.param_groups[0]["lr"] == pytest.approx(4e-4)
    assert read_metrics(tmp_path / "sched" / "csv" / "metrics.csv", "lr/g")

    cfg_overrides = ["model.optimizer_g._target_=torch.optim.SGD", "~model.optimizer_g.betas", "model.optimizer_g.lr=1.0",
                     "model.grad_clip_norm=0.01", "trainer.max_steps=1", "trainer.val_check_interval=100",
                     "callbacks=none"]
    from pytorch_lightning import seed_everything

    from swaplab.models.loading import build_model

    seed_everything(42)  # as train() does before building the model: the same initial generator
    before = {k: v.clone() for k, v in build_model(compose_config("train", tmp_path / "x", TINY))[0]
              .generator.state_dict().items()}
    _, objects = train_tiny(tmp_path / "clip", *cfg_overrides)
    after = objects["model"].generator.state_dict()
    step = torch.sqrt(sum(((after[k] - before[k]).float() ** 2).sum() for k in before if "running" not in k
                          and "num_batches" not in k))
    # One SGD step of lr 1 moves the weights by exactly the clipped gradient norm (the raw norm is larger).
    assert step == pytest.approx(0.01, rel=0.01)
