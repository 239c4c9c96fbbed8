"""Every option of every config group and every experiment composes and instantiates; bad values fail early."""

from __future__ import annotations

from pathlib import Path

import hydra
import pytest
import torch
from helpers import CONF, TINY, compose_config, run_cli
from omegaconf import OmegaConf

from swaplab.errors import ConfigError
from swaplab.experts import IResNet
from swaplab.models.loading import build_model
from swaplab.tasks.instantiate import instantiate_map
from swaplab.tasks.validation import validate_train_config

GROUPS = ["model", "data", "experts", "trainer", "logger", "callbacks", "evaluation", "experiment",
          "hparams_search", "debug", "paths", "hydra"]
OPTIONS = [(g, p.stem) for g in GROUPS for p in sorted((CONF / g).glob("*.yaml"))
           if not (g == "debug" and p.stem == "default")]


def test_every_group_has_options():
    found = {g for g, _ in OPTIONS}
    assert found == set(GROUPS)
    assert not (CONF / "loss").exists()  # loss weights live in the model files
    assert {"cpu", "gpu", "ddp", "ddp_sim"} <= {o for g, o in OPTIONS if g == "trainer"}
    assert {"wandb", "csv", "tensorboard", "none"} <= {o for g, o in OPTIONS if g == "logger"}
    assert {"fdr", "overfit", "limit", "profiler"} <= {o for g, o in OPTIONS if g == "debug"}


def write_fake_pretrained_identity(cfg) -> None:
    """A state dict with the official key names at the registry's file location (tiny widths via TINY)."""
    from swaplab.experts.registry import WEIGHTS

    node = cfg.experts.identity
    net = IResNet(depth=node.depth, widths=tuple(node.widths), input_size=node.input_size)
    path = Path(node.weights_dir) / WEIGHTS[node.registry_key].filename
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), path)


def instantiate_everything(cfg) -> dict:
    validate_train_config(cfg)
    if "identity" in cfg.experts and cfg.experts.identity.get("weights") == "pretrained":
        write_fake_pretrained_identity(cfg)
    datamodule = hydra.utils.instantiate(cfg.data, _convert_="all")
    model, experts = build_model(cfg)
    callbacks = instantiate_map(cfg.get("callbacks"), "callbacks")
    loggers = instantiate_map(cfg.get("logger"), "logger")
    trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False, _convert_="all")
    return {"datamodule": datamodule, "model": model, "experts": experts, "trainer": trainer}


LIGHTING = {("model", "lighting_net"), ("data", "yaleb"), ("experiment", "lighting_net"),
            ("experiment", "lighting_net_paper")}  # the lighting network, not a swap model
LIGHTING_TINY = [o for o in TINY if not o.startswith("model.")] + ["model.net.widths=[4,8]", "model.net.fc_dims=[16,8]"]
YALE = {("data", "yaleb"), ("experiment", "lighting_net_paper")}  # Extended Yale B pairs (files on disk)
IDENTITY = {("model", "identity_net"), ("data", "synthetic_people"), ("experiment", "identity_synthetic"),
            ("experiment", "identity_synthetic_eval")}  # the synthetic identity networks, not a swap model
IDENTITY_TINY = ["experiment=identity_synthetic", "experts=random", "data.resolution=32", "data.batch_size=4", "data.val_batch_size=4",
                 "data.num_workers=0", "data.train.num_identities=6", "data.val.num_pairs=8", "model.net.widths=[4,8,8,8]",
                 "model.net.input_size=24", "model.net.embedding_size=16", "trainer.max_steps=2"]


@pytest.mark.parametrize(("group", "option"), sorted(LIGHTING), ids=[f"{g}={o}" for g, o in sorted(LIGHTING)])
def test_lighting_options_compose_and_instantiate(group, option, tmp_path):
    from test_experts_lighting import write_yale

    write_yale(tmp_path / "data" / "CroppedYale", subjects=(1, 2, 3, 4))
    experiment = [] if group == "experiment" else [
        "experiment=lighting_net_paper" if (group, option) in YALE else "experiment=lighting_net"]
    overrides = [*LIGHTING_TINY, *experiment, f"{group}={option}", f"paths.data_dir={tmp_path / 'data'}",
                 "data.batch_size=2"]
    if (group, option) in YALE:  # pairs of files on disk, not generated identities
        overrides = [o for o in overrides if not o.startswith(("data.train.", "data.val."))]
        overrides += ["data.train.exclude_subjects=[3,4]", "data.val.subjects=[3,4]"]
    cfg = compose_config("train", tmp_path, overrides)
    objects = instantiate_everything(cfg)
    batch = next(iter(objects["datamodule"].train_dataloader()))
    assert batch["image1"].shape == (2, 1, 32, 32) and batch["same"].shape == (2,)
    features = objects["model"].net(batch["image1"])
    assert features.shape == (2, 8) and torch.isfinite(features).all()


HIFIFACE = {("model", "hififace"), ("experiment", "hififace_256"), ("experiment", "hififace_512"),
            ("experiment", "hififace_512_whole_network")}  # TINY's discriminator options are FaceShifter's
# (face network side, F_up refine blocks) of the paper experiments: Ours-512 is the 256 network with a third
# F_up up-sampling to 512; the whole network at 512 is the other reading, named as such
HIFIFACE_LAYOUT = {"hififace_256": (256, 1), "hififace_512": (256, 1), "hififace_512_whole_network": (512, 2)}
HIFIFACE_TINY = [o for o in TINY if not o.startswith("model.discriminator.num_layers")] + [
    "model=hififace", "experts=random", "experts.face3d.input_size=32", "experts.parsing.input_size=32"]


@pytest.mark.parametrize(("group", "option"), sorted(HIFIFACE), ids=[f"{g}={o}" for g, o in sorted(HIFIFACE)])
def test_hififace_options_compose_and_instantiate(group, option, tmp_path):
    # tiny: 32 px output; Ours-512 keeps its face network at half the output side
    half = option == "hififace_512"
    overrides = [f"{group}={option}", *HIFIFACE_TINY, *(["model.generator.face_resolution=16"] if half else [])]
    if group == "experiment" and not torch.cuda.is_available():
        overrides.append("trainer.accelerator=cpu")
    objects = instantiate_everything(compose_config("train", tmp_path, overrides))
    assert objects["model"].experts is objects["experts"]
    assert sorted(objects["experts"].describe()) == ["face3d", "identity", "lpips", "parsing"]
    batch = objects["datamodule"].train_set.__getitems__([0, 1])
    out = objects["model"](batch["source"], batch["target"])
    low = 4 if half else 8
    assert out.swap.shape == (2, 3, 32, 32) and out.extras["low"].shape == (2, 3, low, low)
    assert out.extras["mask"].shape == (2, 1, 32, 32)  # M_r and the blend at the output side
    if group == "experiment":  # the paper's settings, before the tiny overrides
        side = int(option.split("_")[1])
        cfg = compose_config("train", tmp_path / "paper", [f"experiment={option}"])
        assert cfg.data.resolution == side and cfg.data.train.same_identity_rate == 0.5
        assert cfg.model.generator.base_channels == 64 and cfg.model.generator.max_channels == 512
        face = cfg.model.generator.face_resolution or side
        assert (face, cfg.model.generator.refine_blocks) == HIFIFACE_LAYOUT[option]
        assert cfg.model.discriminator.base_channels == 2**14 // side
        assert cfg.model.optimizer_g.lr == 1e-4 and list(cfg.model.optimizer_g.betas) == [0.0, 0.99]
        assert dict(cfg.model.loss_weights) == {"adv": 1.0, "shape": 0.5, "id": 5.0, "rec": 20.0, "cyc": 1.0,
                                                "lpips": 5.0, "seg": 100.0, "gp": 1.0}
        assert cfg.experts.face3d.weights == "pretrained" and cfg.experts.face3d.bfm == "pretrained"


# real-face datasets read files: test_datasets.py writes tiny trees and trains a step on each of them
REAL_DATA = {("data", p.stem) for p in (CONF / "data").glob("*.yaml")} - {("data", "synthetic")} - LIGHTING - IDENTITY
# each of these methods composes, instantiates and trains its own options in its own test file
OWN_TESTS = {(g, o) for g, o in OPTIONS if g in ("model", "experiment")
             and o.startswith(("fsgan", "fast_faceswap", "faceshifter_hear"))}
OWN_TESTS |= {(g, o) for g, o in OPTIONS if g == "evaluation" and o != "none"}  # test_evaluation.py
GENERIC = [o for o in OPTIONS if o not in LIGHTING | IDENTITY | HIFIFACE | REAL_DATA | OWN_TESTS]


@pytest.mark.parametrize(("group", "option"), GENERIC, ids=[f"{g}={o}" for g, o in GENERIC])
def test_option_composes_and_instantiates(group, option, tmp_path):
    overrides = [f"{group}={option}", *TINY]
    if group in ("trainer", "experiment") and not torch.cuda.is_available():
        overrides.append("trainer.accelerator=cpu")  # gpu/ddp options on a CPU-only machine
    cfg = compose_config("train", tmp_path, overrides)
    objects = instantiate_everything(cfg)
    assert objects["model"].experts is objects["experts"]
    assert objects["datamodule"].resolution == 32
    batch = objects["datamodule"].train_set.__getitems__([0, 1])
    out = objects["model"](batch["source"], batch["target"])
    assert out.swap.shape == (2, 3, 32, 32)
    if group == "hparams_search":
        for key in cfg_sweep_params(option):
            assert OmegaConf.select(cfg, key) is not None, f"sweep parameter {key} is not in the config"


def cfg_sweep_params(option: str) -> list[str]:
    return list(OmegaConf.load(CONF / "hparams_search" / f"{option}.yaml").hydra.sweeper.params.keys())


@pytest.mark.parametrize("name", ["eval", "swap"])
def test_other_entry_configs_compose(name, tmp_path):
    cfg = compose_config(name, tmp_path, ["ckpt=x.ckpt"] + (["source=a.png", "target=b"] if name == "swap" else []))
    assert cfg.task_name == name and cfg.ckpt == "x.ckpt"


# The papers' loss weights, as each conf/model/<model>.yaml states them (with their source); an experiment that
# departs from them is listed in EXPERIMENT_WEIGHTS (its file says why).
@pytest.mark.parametrize(("group", "option"), sorted(IDENTITY), ids=[f"{g}={o}" for g, o in sorted(IDENTITY)])
def test_identity_network_options_compose_train_and_verify(group, option, tmp_path):
    cfg = compose_config("train", tmp_path, [*IDENTITY_TINY, f"{group}={option}"])
    objects = instantiate_everything(cfg)
    model, datamodule = objects["model"], objects["datamodule"]
    assert model.head.centres.shape == (6, 16) and dict(cfg.model.loss_weights) == {"arcface": 1.0}
    batch = next(iter(datamodule.train_dataloader()))
    assert batch["label"].max() < 6 and batch["image"].shape == (4, 3, 32, 32)
    model.training_step(batch, 0).backward()
    assert model.net.conv1.weight.grad.abs().sum() > 0
    pairs = next(iter(datamodule.val_dataloader()))
    model.validation_step(pairs, 0)
    assert model.val_scores.compute().shape == (4,)


PAPER_WEIGHTS = {
    "faceshifter": {"adv": 1.0, "att": 10.0, "id": 5.0, "rec": 10.0},
    "faceshifter_hear": {"id": 1.0, "chg": 1.0, "rec": 1.0},
    # beta: swaplab's calibration on the paper's loss scale (the paper's 1e-22 fits only its own lighting net; README)
    "fast_faceswap": {"content": 1.0, "style": 120.0, "light": 128.0, "tv": 0.3},
    # reenact_*: official v1 stepwise, 0.5 x (direct 0.1 pix + 0.5 id + 0.5 attr) + 0.5 x (two-step 0.1 pix + 1.0 id)
    # + 0.01 x 0.5 x (direct seg + two-step seg)
    "fsgan": {"seg_ce": 1.0, **{f"{stage}_{term}": weight for stage in ("inpaint", "blend")
                                for term, weight in (("pix", 0.1), ("id", 0.5), ("attr", 0.5), ("adv", 0.001))},
              "blend_adv": 0.1, "reenact_pix": 0.05, "reenact_id": 0.25, "reenact_attr": 0.25, "reenact_seg": 0.005,
              "reenact_adv": 0.001, "reenact_step_pix": 0.05, "reenact_step_id": 0.5, "reenact_step_seg": 0.005},
    "hififace": {"adv": 1.0, "shape": 0.5, "id": 5.0, "rec": 20.0, "cyc": 1.0, "lpips": 5.0, "seg": 100.0, "gp": 1.0},
    "lighting_net": {"contrastive": 1.0},
    "identity_net": {"arcface": 1.0},
}
EXPERIMENT_WEIGHTS = {"fast_faceswap_synthetic": {"light": 1.0}}  # its own weights, on the "mean" loss scale
EXPERIMENTS = [o for g, o in OPTIONS if g == "experiment"]


def test_every_model_file_states_its_paper_loss_weights(tmp_path):
    assert set(PAPER_WEIGHTS) == {o for g, o in OPTIONS if g == "model"}
    for name, weights in PAPER_WEIGHTS.items():
        own = OmegaConf.load(CONF / "model" / f"{name}.yaml")  # the file itself, before composition
        assert dict(own.loss_weights) == weights, name
        cfg = compose_config("train", tmp_path, [f"model={name}"])
        assert dict(cfg.model.loss_weights) == weights, name


def composed_model_choice(overrides: list[str]):
    """The composed config and its `model` choice (compose_config drops the hydra node that records it)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        cfg = compose("train", return_hydra_config=True, overrides=overrides)
    return cfg, cfg.hydra.runtime.choices.model


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes_with_its_models_paper_weights(experiment):
    cfg, model = composed_model_choice([f"experiment={experiment}"])
    assert dict(cfg.model.loss_weights) == {**PAPER_WEIGHTS[model], **EXPERIMENT_WEIGHTS.get(experiment, {})}
    assert cfg.data._target_ == "swaplab.data.SwapDataModule" and "wrap" in cfg.data  # from conf/data/base


def test_a_loss_weight_sweep_reaches_the_instantiated_model(tmp_path):
    """`python train.py -m model.loss_weights.id=1,5,10`: the basic sweeper's jobs, each composed and built."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(["model.loss_weights.id=1,5,10", "model.loss_weights.att=5"])
    jobs = [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]
    assert len(jobs) == 3
    for job, expected in zip(jobs, (1.0, 5.0, 10.0), strict=True):
        cfg = compose_config("train", tmp_path, [*TINY, *job])
        validate_train_config(cfg)
        model, _ = build_model(cfg)
        assert dict(model.g_loss.weights) == {**PAPER_WEIGHTS["faceshifter"], "id": expected, "att": 5.0}


def test_shared_keys_live_in_the_bases():
    """conf/model/base/swap_module.yaml and conf/data/base/datamodule.yaml hold the keys every model / dataset
    source repeated; each file pulls its base in and restates a key only to change it."""
    import inspect

    from swaplab.data import SwapDataModule
    from swaplab.models.base import SwapModule

    for group, base, cls in (("model", "base/swap_module", SwapModule), ("data", "base/datamodule", SwapDataModule)):
        shared = OmegaConf.to_container(OmegaConf.load(CONF / group / f"{base}.yaml"))
        assert set(shared) - {"_target_"} <= set(inspect.signature(cls.__init__).parameters), base
        for path in sorted((CONF / group).glob("*.yaml")):
            own = OmegaConf.to_container(OmegaConf.load(path))
            if path.stem in ("lighting_net", "identity_net"):  # LightingNetModule / IdentityNetModule
                assert "defaults" not in own
                continue
            assert f"{base}@_here_" in own["defaults"], path
            restated = [k for k in shared if k in own and own[k] == shared[k]]
            assert not restated, f"{path} restates {restated} with the values of {base}"


def test_paper_experiment_is_the_paper_setting(tmp_path):
    cfg = compose_config("train", tmp_path, ["experiment=faceshifter_paper"])
    assert cfg.data.resolution == 256
    assert cfg.model.generator.base_channels == 32 and cfg.model.generator.max_channels == 1024
    assert cfg.model.optimizer_g.lr == 4e-4 and list(cfg.model.optimizer_g.betas) == [0.0, 0.999]
    assert cfg.experts.identity.weights == "pretrained" and cfg.experts.identity.depth == 100
    assert cfg.data.train.same_identity_rate == 0.2


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.resolution=48", "data.resolution must be a power of two"),
        ("data.batch_size=0", "data.batch_size must be a positive integer"),
        ("model.loss_weights.id=-1", "model.loss_weights.id must be a number >= 0"),
        ("ckpt_path=/no/such/last.ckpt", "does not exist"),
        ("trainer.max_steps=-1", "set trainer.max_steps"),
        ("experts_extra=[pose,gaze]", "experts_extra names roles \\['gaze'\\]"),
        ("experts_precision=int8", "experts_precision must be fp32, bf16 or fp16"),
        ("trainer.precision=bf16-true", "not supported: use bf16-mixed"),
    ],
)
def test_bad_values_fail_at_startup(override, message, tmp_path):
    cfg = compose_config("train", tmp_path, [*TINY, override])
    with pytest.raises(ConfigError, match=message):
        validate_train_config(cfg)


def test_batch_not_divisible_by_processes(tmp_path):
    cfg = compose_config("train", tmp_path, [*TINY, "trainer=ddp_sim", "data.batch_size=5"])
    with pytest.raises(ConfigError, match="not divisible by 2 processes"):
        validate_train_config(cfg)


def test_unknown_loss_weight_is_named(tmp_path):
    cfg = compose_config("train", tmp_path, [*TINY, "+model.loss_weights.lpips=1"])
    with pytest.raises(Exception, match="unknown: \\['lpips'\\]"):
        build_model(cfg)


def test_cli_rejects_bad_config_before_training(tmp_path):
    with pytest.raises(AssertionError, match="data.resolution must be a power of two"):
        run_cli("train.py", *TINY, "data.resolution=50", f"hydra.run.dir={tmp_path}", timeout=120)
    assert not (tmp_path / "checkpoints").exists()


FSGAN_PAIRS = {"segmentation": {"different"}, "reenactment": {"same_identity"}, "inpainting": {"same_identity"},
               "blending": {"different"}}  # pair kinds each stage trains on: never one image twice


@pytest.mark.parametrize("stage", list(FSGAN_PAIRS))
def test_fsgan_experiments_train_on_the_pairs_of_their_stage(stage, tmp_path):
    cfg = compose_config("train", tmp_path, [f"experiment=fsgan_{stage}", "data=synthetic", "data.resolution=32"])
    for split in ("train", "val"):
        rates = cfg.data[split]
        assert "same_identity_rate" in rates and "same_image_rate" in rates  # stated, not inherited
        dataset = hydra.utils.instantiate(rates)
        batch = dataset.__getitems__(list(range(32)))
        kinds = {"same_image" if si else "same_identity" if s else "different"
                 for s, si in zip(batch["same"].tolist(), batch["same_image"].tolist(), strict=True)}
        assert "same_image" not in kinds, f"{stage} {split}: a pair is one image twice"
        assert kinds == FSGAN_PAIRS[stage], (stage, split, kinds)
        if kinds == {"same_identity"}:
            assert torch.equal(batch["source_identity"], batch["target_identity"])
            assert (batch["source"] - batch["target"]).abs().flatten(1).amax(1).min() > 0.1
