"""FSGAN: networks, heatmaps and view interpolation, Poisson target, every stage from its experiment config
(chained through checkpoints), reenactment overfitting and the full swap path."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import cv2
import hydra
import numpy as np
import pytest
import torch
from helpers import compose_config, fit_on_batches
from test_configs import instantiate_everything

from swaplab.experts.registry import sha256_of
from swaplab.imaging import from_uint8, seamless_clone, to_uint8
from swaplab.io.checkpoints import safe_torch_load
from swaplab.models.fsgan import STAGES, interpolate_views, landmark_heatmaps
from swaplab.models.fsgan.generators import half_resolution, random_holes
from swaplab.models.loading import build_model, load_swap_model
from swaplab.nets.resunet import MultiScaleResUNet

SMALL_NETS = [f"model.generator.{net}.{key}={value}" for net in ("reenactment", "inpainting", "blending")
              for key, value in (("base_channels", 4), ("max_channels", 16), ("flat_blocks", "[1,0,1,1]"))]
TINY_FSGAN = [
    "data.resolution=32",
    "data.batch_size=2",
    "data.val_batch_size=2",
    "data.num_workers=0",
    "data.train.num_identities=8",
    "data.train.images_per_identity=2",
    "data.val.num_identities=4",
    "experts=random",
    "experts.pose.input_size=32",
    "experts.parsing.input_size=32",
    "model.generator.segmentation.widths=[4,8,16]",
    "model.discriminator.base_channels=4",
    "model.discriminator.max_channels=8",
    "model.discriminator.num_layers=2",
    *SMALL_NETS,
]
RANDOM_PREDECESSORS = "model.allow_random_predecessors=true"  # a stage after Gs without predecessor_ckpt
STAGE_TERMS = {"segmentation": {"seg_ce"},
               "reenactment": {"reenact_pix", "reenact_id", "reenact_attr", "reenact_seg", "reenact_adv"},
               "inpainting": {"inpaint_pix", "inpaint_id", "inpaint_attr", "inpaint_adv"},
               "blending": {"blend_pix", "blend_id", "blend_attr", "blend_adv"}}


pytestmark = pytest.mark.usefixtures("single_thread")


def save_stage(tmp_path: Path, stage: str, *overrides: str) -> Path:
    """A checkpoint of an (untrained) FSGAN stage, written as Lightning writes one: state dict + the model's
    on_save_checkpoint."""
    model, _ = build_model(compose_config("train", tmp_path / stage, ["model=fsgan", f"model.stage={stage}",
                                                                      *TINY_FSGAN, *overrides]))
    checkpoint = {"state_dict": model.state_dict()}
    model.on_save_checkpoint(checkpoint)
    path = tmp_path / f"{stage}.ckpt"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint, path)
    return path


def synthetic_batch(cfg, indices: list[int]) -> dict[str, torch.Tensor]:
    datamodule = hydra.utils.instantiate(cfg.data, _convert_="all")
    datamodule.setup("fit")
    return datamodule.train_set.__getitems__(indices)


# ---- networks ------------------------------------------------------------------------------------


def test_resunet_official_layout_and_global_only_phase():
    official = MultiScaleResUNet(71, 3, 3, base_channels=128, flat_blocks=(2, 0, 2, 3))
    assert official.global_in[1].out_channels == 256 and official.enhancers[0]["input"][1].out_channels == 128
    net = MultiScaleResUNet(7, 3, base_channels=4, max_channels=16, flat_blocks=(1, 0, 1, 1))
    x = torch.randn(2, 7, 32, 32)
    out = net(x)
    assert out.shape == (2, 3, 32, 32) and out.abs().max() <= 1
    assert net(x[..., :16, :16], global_only=True).shape == (2, 3, 16, 16)
    with pytest.raises(ValueError, match="divisible by 8"):
        net(torch.randn(1, 7, 36, 36))


# ---- heatmaps and stepwise views -------------------------------------------------------------------


def test_heatmaps_peak_at_the_landmarks():
    points = torch.randint(2, 30, (3, 68, 2)).float()
    maps = landmark_heatmaps(points, 32, sigma=1.5)
    assert maps.shape == (3, 68, 32, 32)
    peak = maps.flatten(2).argmax(-1)
    torch.testing.assert_close(torch.stack([peak % 32, peak // 32], -1).float(), points)
    assert torch.allclose(maps.flatten(2).amax(-1), torch.ones(3, 68))
    assert maps[0, 0, int(points[0, 0, 1]), int(points[0, 0, 0]) + 3] < 0.15  # 2 sigma away: exp(-2)


def test_interpolation_is_exact_at_both_ends():
    source_pose, target_pose = torch.tensor([[-33.3, 10.1, 0.7]]), torch.tensor([[41.9, -7.3, 3.3]])
    source_points, target_points = torch.rand(1, 68, 2) * 64, torch.rand(1, 68, 2) * 64
    for steps in (1, 3, 7):
        poses = interpolate_views(source_pose, target_pose, steps)
        points = interpolate_views(source_points, target_points, steps)
        assert poses.shape == (steps + 1, 1, 3) and points.shape == (steps + 1, 1, 68, 2)
        assert torch.equal(poses[0], source_pose) and torch.equal(poses[-1], target_pose)
        assert torch.equal(points[0], source_points) and torch.equal(points[-1], target_points)
        torch.testing.assert_close(poses[1] - poses[0], (target_pose - source_pose) / steps)


def test_half_resolution_keeps_landmarks_on_their_pixels():
    batch = {"source": torch.zeros(1, 3, 8, 8), "source_landmarks": torch.tensor([[[2.5, 4.5]]]),
             "source_mask": torch.arange(64).view(1, 8, 8)}
    half = half_resolution(batch)
    assert half["source"].shape == (1, 3, 4, 4) and half["source_mask"].shape == (1, 4, 4)
    torch.testing.assert_close(half["source_landmarks"], torch.tensor([[[1.0, 2.0]]]))


def test_random_holes_are_boxes_inside_the_image():
    holes = random_holes(torch.zeros(16, 1, 32, 32, dtype=torch.bool))
    area = holes.flatten(1).float().mean(1)
    assert holes.dtype == torch.bool and (area > 0.005).all() and (area < 0.2).all()


# ---- the Poisson target -----------------------------------------------------------------------------


def test_poisson_target_is_cv2_seamless_clone(tmp_path):
    rng = np.random.default_rng(0)
    source = rng.integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    target = np.stack([np.full((32, 32, 3), 90, np.uint8), np.full((32, 32, 3), 200, np.uint8)])
    mask = np.zeros((2, 32, 32), np.uint8)
    mask[:, 8:24, 10:22] = 255
    blended = seamless_clone(from_uint8(torch.from_numpy(source)), from_uint8(torch.from_numpy(target)),
                             torch.from_numpy(mask[:, None] > 0).float())
    for i in range(2):  # the box's centre is (16, 16): seamlessClone puts the region back at its place
        expected = cv2.seamlessClone(source[i], target[i], mask[i], (16, 16), cv2.NORMAL_CLONE)
        assert np.array_equal(to_uint8(blended[i]).numpy(), expected)


def test_blending_loss_is_zero_when_gb_outputs_the_poisson_target(tmp_path):
    cfg = compose_config("train", tmp_path, ["model=fsgan", "model.stage=blending", *TINY_FSGAN, RANDOM_PREDECESSORS])
    model, _ = build_model(cfg)
    batch = synthetic_batch(cfg, [0, 1])
    out = model.generate(batch["source"], batch["target"], model.generator)
    poisson = seamless_clone(out.extras["transfer"], batch["target"], out.extras["target_face"].float())
    at_target = model.generator_losses(batch, type(out)(poisson, out.extras))
    untrained = model.generator_losses(batch, out)
    assert float(at_target["blend_pix"]) == 0.0 and float(untrained["blend_pix"]) > 0.01
    for name in ("blend_id", "blend_attr"):  # VGG maps of the same images; CPU conv kernels round differently
        assert float(at_target[name]) < 1e-4 * float(untrained[name]), name


# ---- stages from their experiment configs, chained through checkpoints, and the swap path ------------


def test_every_stage_trains_from_its_experiment_and_the_last_checkpoint_swaps(tmp_path):
    previous = None
    for stage in STAGES:
        overrides = [f"experiment=fsgan_{stage}", "trainer=cpu", *TINY_FSGAN,
                     f"model.predecessor_ckpt={previous}" if previous else "model.predecessor_ckpt=null"]
        cfg = compose_config("train", tmp_path / stage, overrides)
        objects = instantiate_everything(cfg)
        model = objects["model"]
        assert model.stage == stage and (model.discriminator is None) == (stage == "segmentation")
        assert sorted(objects["experts"].describe()) == sorted(model.required_experts)
        earlier = STAGES[: STAGES.index(stage)]
        if previous is not None:  # the frozen generators are the predecessor's trained ones, tensor for tensor
            saved = safe_torch_load(previous)
            prefixes = saved["swaplab"]["stages"]["weights"]
            for name in earlier:
                for key, value in model.generator[name].state_dict().items():
                    assert torch.equal(value, saved["state_dict"][prefixes[name] + key]), (stage, name, key)
        frozen = {n: {k: v.clone() for k, v in model.generator[n].state_dict().items()} for n in STAGES if n != stage}
        batch = synthetic_batch(cfg, [0, 3])
        history = fit_on_batches(model, [batch], steps=1, ckpt=tmp_path / f"{stage}.ckpt")
        logged = {k.removeprefix("train/g/") for k in history[-1] if k.startswith("train/g/")}
        assert logged == STAGE_TERMS[stage] | {"total", "total_pbar"}
        assert all(np.isfinite(v) for v in history[-1].values())
        for name, state in frozen.items():  # frozen generators: weights and BatchNorm statistics unchanged
            for key, value in model.generator[name].state_dict().items():
                assert torch.equal(value, state[key]), (stage, name, key)
        record = safe_torch_load(tmp_path / f"{stage}.ckpt")["swaplab"]["stages"]
        assert record["model"] == "FSGAN" and record["trained"] == [stage]
        if previous is None:
            assert record["frozen"] == {} and record["predecessor"] is None
        else:  # each frozen generator: the predecessor file (path, sha256) and that file's own record
            source = {"path": str(previous), "sha256": sha256_of(previous)}
            assert record["frozen"] == {name: source for name in earlier}
            assert record["predecessor"] == {**source, "record": safe_torch_load(previous)["swaplab"]["stages"]}
        previous = tmp_path / f"{stage}.ckpt"

    for stage in STAGES[:-1]:  # the blending checkpoint alone rebuilds the whole pipeline
        (tmp_path / f"{stage}.ckpt").unlink()
    model, cfg = load_swap_model(previous)
    assert cfg.model.stage == "blending"
    batch = synthetic_batch(cfg, [1, 2])
    with torch.no_grad():
        out = model(batch["source"], batch["target"])  # no ground truth: dlib landmarks, Hopenet pose, Gs
    assert out.swap.shape == batch["target"].shape and torch.isfinite(out.swap).all()
    outside = ~out.extras["target_face"]
    assert torch.equal(out.extras["transfer"].masked_select(outside), batch["target"].masked_select(outside))


def test_missing_predecessor_checkpoint_is_one_clear_line(tmp_path):
    cfg = compose_config("train", tmp_path, ["model=fsgan", "model.stage=inpainting",
                                             f"model.predecessor_ckpt={tmp_path / 'none.ckpt'}", *TINY_FSGAN])
    with pytest.raises(Exception, match="does not exist: train the FSGAN stages in order") as err:
        build_model(cfg)  # Hydra wraps the model's own error: its cause is the one line
    cause = err.value if isinstance(err.value, FileNotFoundError) else err.value.__cause__
    assert isinstance(cause, FileNotFoundError) and "\n" not in str(cause)
    with pytest.raises(Exception, match="stage must be one of"):
        build_model(compose_config("train", tmp_path, ["model=fsgan", "model.stage=swap", *TINY_FSGAN]))


def test_a_wrong_stage_checkpoint_is_refused_naming_what_it_lacks_and_what_it_holds(tmp_path):
    segmentation = save_stage(tmp_path, "segmentation")
    for stage, missing in (("reenactment", []), ("inpainting", ["reenactment"]),
                           ("blending", ["reenactment", "inpainting"])):
        cfg = compose_config("train", tmp_path / stage, ["model=fsgan", f"model.stage={stage}", *TINY_FSGAN,
                                                         f"model.predecessor_ckpt={segmentation}"])
        if not missing:
            build_model(cfg)
            continue
        expected = (f"model.predecessor_ckpt={segmentation} lacks trained {missing} for FSGAN stage {stage}: it is "
                    "a checkpoint of FSGAN that trained ['segmentation']; trained in it: ['segmentation'] (train the "
                    "FSGAN stages in order")
        with pytest.raises(Exception, match=re.escape(expected)):
            build_model(cfg)
    # a reenactment run on a RANDOM Gs holds Gs's weights, but its record says they are random
    random_gs = save_stage(tmp_path / "random", "reenactment", RANDOM_PREDECESSORS)
    with pytest.raises(Exception, match=r"lacks trained \['segmentation'\] .*RANDOM \['segmentation'\]"):
        build_model(compose_config("train", tmp_path / "inp", ["model=fsgan", "model.stage=inpainting", *TINY_FSGAN,
                                                               f"model.predecessor_ckpt={random_gs}"]))
    unrecorded = torch.load(segmentation, weights_only=True)  # a checkpoint from before records
    del unrecorded["swaplab"]["stages"]
    torch.save(unrecorded, tmp_path / "old.ckpt")
    with pytest.raises(Exception, match=r"old.ckpt has no record of the networks trained in it"):
        build_model(compose_config("train", tmp_path / "old", ["model=fsgan", *TINY_FSGAN,
                                                               f"model.predecessor_ckpt={tmp_path / 'old.ckpt'}"]))


def test_no_predecessor_fails_at_start_up_unless_random_ones_are_allowed(tmp_path, caplog):
    for stage in STAGES[1:]:
        cfg = compose_config("train", tmp_path / stage, ["model=fsgan", f"model.stage={stage}", *TINY_FSGAN])
        with pytest.raises(Exception, match=r"FSGAN stage .* needs trained .* from model.predecessor_ckpt, which is "
                                            r"not set.*allow_random_predecessors=true"):
            build_model(cfg)
    with pytest.raises(Exception, match="freezes no earlier networks: model.predecessor_ckpt must be null"):
        build_model(compose_config("train", tmp_path / "seg", ["model=fsgan", "model.stage=segmentation",
                                                               *TINY_FSGAN, "model.predecessor_ckpt=x.ckpt"]))
    cfg = compose_config("train", tmp_path / "random", ["model=fsgan", "model.stage=inpainting", *TINY_FSGAN,
                                                        RANDOM_PREDECESSORS])
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="swaplab"):
        model, _ = build_model(cfg)
    loud = [r.getMessage() for r in caplog.records if r.name == "swaplab.models.stages"]
    assert len(loud) == 1 and "['segmentation', 'reenactment']" in loud[0]
    history = fit_on_batches(model, [synthetic_batch(cfg, [0, 1])], steps=1, ckpt=tmp_path / "random.ckpt")
    assert all(np.isfinite(v) for v in history[-1].values())
    record = safe_torch_load(tmp_path / "random.ckpt")["swaplab"]["stages"]
    assert record["frozen"] == {"segmentation": {"random": True}, "reenactment": {"random": True}}


def test_default_model_is_the_reenactment_stage_and_progressive_phase_runs_at_half_size(tmp_path):
    cfg = compose_config("train", tmp_path, ["model=fsgan", *TINY_FSGAN, "model.progressive_steps=1",
                                             RANDOM_PREDECESSORS])
    assert cfg.model.stage == "reenactment" and cfg.model.optimizer_d.lr == 1e-5
    assert list(cfg.model.optimizer_g.betas) == [0.5, 0.999]
    model, _ = build_model(cfg)
    sizes = []
    model.generator.reenactment.register_forward_hook(lambda m, args, out: sizes.append(out.shape[-1]))
    history = fit_on_batches(model, [synthetic_batch(cfg, [0, 1])], steps=2)
    assert sizes == [16, 16, 32, 32] and len(history) == 2  # 2 steps x 2 reenactment steps


@pytest.mark.slow
def test_reenactment_overfits_one_same_identity_batch(tmp_path):
    # L1-led weights (the random VGGs' terms are scaled down, no adversary) and a higher lr: memorise one batch
    weights = ["reenact_pix=1.0", "reenact_id=0.05", "reenact_attr=0.05", "reenact_adv=0"]
    cfg = compose_config("train", tmp_path, ["model=fsgan", *TINY_FSGAN, "data.train.same_identity_rate=1.0",
                                             "data.train.same_image_rate=0.0", "model.optimizer_g.lr=3e-3",
                                             "model.num_steps=1", *(f"model.loss_weights.{w}" for w in weights),
                                             RANDOM_PREDECESSORS])
    model, _ = build_model(cfg)
    batch = synthetic_batch(cfg, [0, 1])
    assert batch["same"].all() and not batch["same_image"].any()
    history = fit_on_batches(model, [batch], steps=200)
    first, last = history[0]["train/g/reenact_pix"], min(h["train/g/reenact_pix"] for h in history[-10:])
    assert last < first / 5, (first, last)


@pytest.mark.parametrize("stage", STAGES)
def test_experiments_hold_the_official_settings(stage, tmp_path):
    cfg = compose_config("train", tmp_path, [f"experiment=fsgan_{stage}"])
    assert cfg.model.stage == stage and cfg.data.resolution == 256
    for net in ("reenactment", "inpainting", "blending"):
        node = cfg.model.generator[net]
        assert (node.base_channels, list(node.flat_blocks), node.num_enhancers) == (128, [2, 0, 2, 3], 1)
    assert list(cfg.model.generator.segmentation.widths) == [64, 128, 256, 512, 1024]
    assert (cfg.model.optimizer_g.lr, cfg.model.optimizer_d.lr) == (1e-4, 1e-5)
    assert list(cfg.model.optimizer_d.betas) == [0.5, 0.999]
    weights = dict(cfg.model.loss_weights)
    assert {k: weights[k] for k in ("reenact_pix", "reenact_id", "reenact_attr", "reenact_seg", "reenact_adv")} == {
        "reenact_pix": 0.1, "reenact_id": 0.5, "reenact_attr": 0.5, "reenact_seg": 0.1, "reenact_adv": 0.001}
    assert cfg.experts.perceptual.registry_key == "fsgan_vgg19_vggface2"
    assert cfg.experts.perceptual_attr.registry_key == "fsgan_vgg19_celeba_attr"
    assert cfg.callbacks.model_checkpoint.monitor == cfg.optimized_metric == "val/g/total"


def test_paper_experiment_instantiates_at_tiny_widths(tmp_path):
    objects = instantiate_everything(compose_config("train", tmp_path, ["experiment=fsgan_paper", "trainer=cpu",
                                                                        *TINY_FSGAN, RANDOM_PREDECESSORS]))
    batch = synthetic_batch(compose_config("train", tmp_path, ["model=fsgan", *TINY_FSGAN]), [0, 1])
    with torch.no_grad():
        out = objects["model"](batch["source"], batch["target"])
    assert out.swap.shape == (2, 3, 32, 32) and len(out.extras["steps"]) == 2
