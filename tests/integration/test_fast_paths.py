"""Fast-path switches (mixed precision, channels_last, torch.compile, gradient accumulation) train every method
with finite losses; the training-step benchmark's tiny mode prints the documented JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from helpers import CONF, TINY, compose_config, load_benchmark
from hydra import compose, initialize_config_dir
from hydra.errors import InstantiationException
from test_configs import HIFIFACE_TINY
from test_fast_faceswap import SMALL_NET
from test_fsgan import TINY_FSGAN
from test_hear_net import HEAR_TINY, aei_ckpt  # noqa: F401  (aei_ckpt: fixture, a tiny AEI-Net checkpoint)

from swaplab.tasks.train import train

FAST_FACESWAP_TINY = ["model=fast_faceswap", "data.resolution=32", "data.batch_size=2", "data.num_workers=0",
                      "data.train.num_identities=4", "data.train.images_per_identity=2", "model.style_set.num_images=4",
                      "model.n_best=2", f"model.generator.branch_channels={SMALL_NET['branch_channels']}",
                      f"model.generator.join_channels=[{','.join(map(str, SMALL_NET['join_channels']))}]"]
METHODS = {"faceshifter": TINY, "hififace": HIFIFACE_TINY,
           "fsgan": ["model=fsgan", *TINY_FSGAN, "model.allow_random_predecessors=true"],
           "fast_faceswap": FAST_FACESWAP_TINY}
QUIET = ["logger=none", "callbacks=none", "trainer.val_check_interval=100", "trainer.log_every_n_steps=1",
         "+trainer.enable_progress_bar=false",
         "trainer.enable_model_summary=false"]
SWITCHES = {"bf16": ["trainer.precision=bf16-mixed"], "channels_last": ["model.channels_last=true"],
            "fused_adam": ["+model.optimizer_g.fused=true"],
            "compile": ["model.compile=true", "model.compile_backend=aot_eager"]}


pytestmark = pytest.mark.usefixtures("single_thread")


class BatchRecorder(pl.Callback):
    """Per batch: the logged losses and whether the generator's weights changed; the generator convs' dtypes."""

    def __init__(self) -> None:
        self.losses: list[dict[str, float]] = []
        self.updated: list[bool] = []
        self.conv_dtypes: set[torch.dtype] = set()
        self._weights: list[torch.Tensor] = []

    def on_train_start(self, trainer, pl_module):
        for conv in (m for m in pl_module.generator.modules() if isinstance(m, torch.nn.Conv2d)):
            conv.register_forward_hook(lambda module, args, out: self.conv_dtypes.add(out.dtype))

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._weights = [p.detach().clone() for p in pl_module.generator.parameters() if p.requires_grad]

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses.append({k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("train/")})
        after = [p for p in pl_module.generator.parameters() if p.requires_grad]
        self.updated.append(any(not torch.equal(a, b) for a, b in zip(self._weights, after, strict=True)))


def train_steps(tmp_path: Path, overrides: list[str], steps: int = 2) -> tuple[BatchRecorder, dict]:
    recorder = ["+callbacks.recorder._target_=test_fast_paths.BatchRecorder"]
    _, objects = train(compose_config("train", tmp_path, [*overrides, *QUIET, *recorder, f"trainer.max_steps={steps}"]))
    return next(c for c in objects["callbacks"] if type(c).__name__ == "BatchRecorder"), objects


def assert_finite_training(recorder: BatchRecorder, objects: dict, steps: int = 2) -> None:
    assert objects["trainer"].global_step == steps
    assert len(recorder.losses) == steps and all(recorder.updated)
    expected = {"train/g/total"} | ({"train/d/total"} if objects["model"].discriminator is not None else set())
    for logged in recorder.losses:
        assert expected <= set(logged) and len(logged) > len(expected)  # totals and their terms
        bad = {k: v for k, v in logged.items() if not torch.isfinite(torch.tensor(v))}
        assert not bad, f"non-finite losses {bad}"


@pytest.mark.parametrize("switch", ["bf16", "channels_last", "fused_adam"])
@pytest.mark.parametrize("method", sorted(METHODS))
def test_switch_trains_two_steps_with_finite_losses(method, switch, tmp_path):
    recorder, objects = train_steps(tmp_path, [*METHODS[method], *SWITCHES[switch]])
    assert_finite_training(recorder, objects)
    model = objects["model"]
    assert recorder.conv_dtypes == ({torch.bfloat16} if switch == "bf16" else {torch.float32})  # autocast applied
    if switch == "fused_adam":
        assert objects["trainer"].optimizers[0].defaults["fused"] is True
    if switch == "channels_last":
        convs = [m for m in model.generator.modules() if isinstance(m, torch.nn.Conv2d)]
        assert convs and all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs)


@pytest.mark.slow
@pytest.mark.parametrize("method", sorted(METHODS))
def test_compiled_networks_train_two_steps_with_finite_losses(method, tmp_path):
    recorder, objects = train_steps(tmp_path, [*METHODS[method], *SWITCHES["compile"]])
    assert_finite_training(recorder, objects)
    assert "_orig_mod" not in "".join(objects["model"].state_dict())  # compiled in place: checkpoints unchanged


@pytest.mark.slow
@pytest.mark.parametrize("switch", ["bf16", "channels_last"])
def test_hear_net_switch_trains_two_steps(switch, aei_ckpt, tmp_path):  # noqa: F811
    recorder, objects = train_steps(tmp_path, [*HEAR_TINY, f"model.predecessor_ckpt={aei_ckpt}", *SWITCHES[switch]])
    assert_finite_training(recorder, objects)


def test_accumulation_steps_the_optimizers_every_second_batch(tmp_path):
    recorder, objects = train_steps(tmp_path, [*TINY, "model.accumulate_grad_batches=2"], steps=2)
    assert objects["trainer"].global_step == 2  # optimizer updates, as max_steps counts them
    assert recorder.updated == [False, True, False, True]
    assert all(torch.isfinite(torch.tensor(list(logged.values()))).all() for logged in recorder.losses)


def test_compile_names_unknown_backends_and_unsupported_pythons(tmp_path, monkeypatch):
    from swaplab.models.loading import build_model

    with pytest.raises(InstantiationException, match="unknown compile_backend 'nope'; torch.compile knows"):
        build_model(compose_config("train", tmp_path, [*TINY, "model.compile=true", "model.compile_backend=nope"]))
    model, _ = build_model(compose_config("train", tmp_path, [*TINY, *SWITCHES["compile"]]))

    def unsupported(*args, **kwargs):  # what torch.compile raises on a Python it does not support
        raise RuntimeError("torch.compile is not supported on Python 3.16+")

    monkeypatch.setattr(torch, "compile", unsupported)
    with pytest.raises(RuntimeError, match="model.compile=true but torch.compile is not supported here .*3.16"):
        model.setup("fit")


def test_bad_accumulation_fails_at_construction(tmp_path):
    from swaplab.models.loading import build_model

    with pytest.raises(InstantiationException, match="accumulate_grad_batches must be >= 1, got 0"):
        build_model(compose_config("train", tmp_path, [*TINY, "model.accumulate_grad_batches=0"]))


# hififace: FLOPs counted through its R1 penalty's autograd.grad; faceshifter_hear: a random AEI-Net checkpoint
@pytest.mark.parametrize(("model", "flops_only"), [("faceshifter", False), ("hififace", False),
                                                  ("faceshifter_hear", True)])
def test_train_step_benchmark_tiny_prints_the_documented_keys(model, flops_only, capsys):
    module = load_benchmark("train_step")
    result = module.main(["--tiny", "--model", model, "--device", "cpu", "--steps", "2", "--warmup", "1",
                          *(["--flops-only"] if flops_only else [])])
    printed = json.loads(capsys.readouterr().out)
    assert set(module.KEYS) <= set(printed) and printed == result
    assert printed["flops_per_image"] == printed["flops_per_step"] // 4 > printed["flops_per_swap"] > 0  # batch 4
    assert printed["mfu"] is None  # CPU: no peak-FLOPs figure
    timing = ("images_per_second", "bare_images_per_second", "step_seconds", "framework_overhead_percent")
    if flops_only:
        assert all(printed[key] is None for key in timing)
    else:
        assert printed["images_per_second"] > 0 and printed["bare_images_per_second"] > 0


def test_flop_count_matches_a_convolution_by_hand():
    counter = load_benchmark("train_step").FlopCount
    conv = torch.nn.Conv2d(3, 8, 3, padding=1, bias=False)
    x = torch.randn(2, 3, 16, 16, requires_grad=True)
    with counter() as forward:
        y = conv(x)
    assert forward.total == 2 * (2 * 16 * 16) * 8 * (3 * 3 * 3)  # 2 FLOPs per multiply-add
    with counter() as backward:
        torch.autograd.grad(y.square().sum(), x, create_graph=True)  # double-backward-ready, as R1 runs it
    assert backward.total == forward.total  # the input gradient: one transposed convolution


def test_slurm_launcher_takes_nodes_and_gpus_from_the_trainer():
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        cfg = compose("train", return_hydra_config=True, overrides=[
            "hydra/launcher=slurm", "trainer=ddp", "trainer.devices=8", "trainer.num_nodes=2",
            "hydra.launcher.partition=gpu"])
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert (launcher.nodes, launcher.gpus_per_node, launcher.tasks_per_node, launcher.partition) == (2, 8, 8, "gpu")


def test_experts_in_reduced_precision_keep_fp32_outputs_and_gradients():
    from swaplab.experts import Experts, IdentityEncoder

    identity = IdentityEncoder.build(weights="random", depth=18, widths=[8, 16, 32, 32], input_size=32)
    experts = Experts(identity=identity)
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    full = identity(images)
    inner: set[torch.dtype] = set()
    hook = identity.net.conv1.register_forward_hook(lambda module, args, out: inner.add(out.dtype))
    experts.set_precision("bf16")
    images.requires_grad_(True)
    reduced = identity(images)
    hook.remove()
    assert inner == {torch.bfloat16} and reduced.dtype == torch.float32
    assert torch.nn.functional.cosine_similarity(full, reduced.detach()).min() > 0.98
    reduced.sum().backward()  # a loss through a reduced-precision expert still reaches the generator
    assert images.grad is not None and torch.isfinite(images.grad).all() and images.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="experts precision must be one of"):
        experts.set_precision("int8")


def test_faceshifter_trains_with_bf16_experts(tmp_path):
    recorder, objects = train_steps(tmp_path, [*TINY, "experts_precision=bf16"])
    assert_finite_training(recorder, objects)
    assert objects["model"].experts.identity.autocast_dtype == torch.bfloat16
    assert recorder.conv_dtypes == {torch.float32}  # the generator itself stays in fp32


def test_benchmark_suite_runs_train_step_per_config_and_setting(capsys):
    args = ["--tiny", "--configs", "faceshifter", "--settings", "fp32", "--device", "cpu"]
    result = load_benchmark("suite").main(args)
    assert json.loads(capsys.readouterr().out) == result
    (run,) = result["runs"]
    assert "error" not in run, run
    assert (run["config"], run["setting"], run["precision"]) == ("faceshifter", "fp32", "32-true")
    assert run["resolution"] == 32
    assert run["images_per_second"] > 0 and result["speedup"] == {}  # no "fast" run to compare with
