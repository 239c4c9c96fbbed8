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
import torch.nn.functional as F
from helpers import compose_config, fit_on_batches
from test_configs import instantiate_everything

from swaplab.experts.registry import sha256_of
from swaplab.imaging import from_uint8, seamless_clone, to_uint8
from swaplab.io.checkpoints import safe_torch_load
from swaplab.models.fsgan import STAGES, ViewMap, interpolate_views, landmark_heatmaps
from swaplab.models.fsgan.generators import FACE, half_resolution
from swaplab.models.fsgan.holes import hair_holes
from swaplab.models.loading import build_model, load_swap_model
from swaplab.models.stages import recorded_resolution
from swaplab.nets.resunet import MultiScaleResUNet
from swaplab.runtime import seeded_generator

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
               "reenactment": {"reenact_pix", "reenact_id", "reenact_attr", "reenact_seg", "reenact_adv",
                               "reenact_step_pix", "reenact_step_id", "reenact_step_seg"},
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
    with torch.device("meta"):  # the v1 experiments' networks, counted without allocating them
        official = MultiScaleResUNet(71, 3, 3, base_channels=128, flat_blocks=(2, 0, 2, 3))
        inpainter = MultiScaleResUNet(4, 3, base_channels=128, flat_blocks=(2, 0, 2, 3))
        blender = MultiScaleResUNet(7, 3, base_channels=128, flat_blocks=(1, 0, 1, 1))
    assert official.global_in[1].out_channels == 256 and official.enhancers[0]["input"][1].out_channels == 128
    # the official LocalEnhancer: stride-2 down block to 256 channels, its residual blocks there (at 128 px)
    enhancer = official.enhancers[0]
    assert enhancer["down"][0][1].stride == (2, 2) and enhancer["down"][0][1].out_channels == 256
    assert enhancer["flat"][0].body[0][1].in_channels == 256 and len(enhancer["flat"]) == 2
    counts = [sum(p.numel() for p in net.parameters()) for net in (official, inpainter, blender)]
    assert counts == [94_669_184, 93_352_064, 49_750_272]  # v1 res_unet_split / res_unet.MultiScaleResUNet, counted
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


def test_inpainting_holes_are_the_steps_own_draw_not_the_global_rngs(tmp_path):
    """Each DDP process / step draws its holes from SwapModule.step_generator: the same whatever the global RNG
    (which every process seeds alike), and what the step's generator gives."""
    cfg = compose_config("train", tmp_path, ["model=fsgan", "model.stage=inpainting", RANDOM_PREDECESSORS, *TINY_FSGAN])
    batch = synthetic_batch(cfg, [0, 1])
    seen = []

    def run(global_seed: int) -> torch.Tensor:
        torch.manual_seed(0)
        model, _ = build_model(cfg)
        with torch.no_grad():  # a random Gs labels nothing face (no holes to see): this one labels everything face
            model.generator.segmentation.head.bias[FACE] += 20.0
        holed = []  # Gc's input: the reenacted face with its holes filled with -1
        model.generator.inpainting.register_forward_pre_hook(lambda m, args: holed.append(args[0][:, :3].detach()))
        torch.manual_seed(global_seed)
        fit_on_batches(model, [batch], steps=1)
        seen.append(model)
        return holed[0]

    first, second = run(1), run(2)
    torch.testing.assert_close(first, second, rtol=0, atol=0)
    assert 0 < (first == -1).float().mean() < 0.3  # holes, not an empty face
    # the whole crop is face here: the hole is the official-shaped one on the crop's border, from the step's draws
    expected = hair_holes(torch.ones(2, 1, 32, 32, dtype=torch.bool),
                          generator=seeded_generator(torch.device("cpu"), seen[0].seed, 0, 0, 0, 0))
    assert torch.equal((first == -1).all(1, keepdim=True), expected)  # the step generator's holes exactly


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
    assert sizes == [16] * 3 + [32] * 3 and len(history) == 2  # 2 steps x (direct, midpoint, two-step)


def test_each_stepwise_term_scores_its_own_path_against_the_target(tmp_path):
    """Official v1 stepwise training: direct Gr(source, target landmarks) and two-step Gr(Gr(source, midpoint
    landmarks), target landmarks), each scored against the target; the midpoint render against nothing."""
    cfg = compose_config("train", tmp_path, ["model=fsgan", *TINY_FSGAN, RANDOM_PREDECESSORS,
                                             "data.train.same_identity_rate=0.5", "data.train.same_image_rate=0.0"])
    model, _ = build_model(cfg)
    model.train()
    batch = synthetic_batch(cfg, [0, 1, 2, 3])
    same, target = batch["same"], batch["target"]
    assert same.any() and not same.all()  # the terms count same-identity pairs only
    calls = []
    model.generator.reenactment.register_forward_hook(lambda m, args, out: calls.append((args[0], out)))
    seen_by_d = []
    model.discriminator.register_forward_pre_hook(lambda m, args: seen_by_d.append(args[0]))
    out = model.generate_batch(batch, model.generator)

    sigma = model.heatmap_sigma * 32 / 256
    source_points, target_points = batch["source_landmarks"], batch["target_landmarks"]
    heatmaps = {"target": landmark_heatmaps(target_points, 32, sigma),
                "midpoint": landmark_heatmaps((source_points + target_points) / 2, 32, sigma)}
    (direct_in, direct), (mid_in, mid), (step_in, step) = calls
    for given, image, points in ((direct_in, batch["source"], "target"), (mid_in, batch["source"], "midpoint"),
                                 (step_in, mid[:, :3], "target")):
        assert torch.equal(given[:, :3], image), points
        torch.testing.assert_close(given[:, 3:], heatmaps[points], rtol=0, atol=1e-6)
    assert out.swap is out.extras["adv_fake"] and torch.equal(out.swap, direct[:, :3])
    assert torch.equal(out.extras["midpoint"], mid[:, :3]) and torch.equal(out.extras["two_step"], step[:, :3])

    scored = []  # (images, reference, VGG experts) of every perceptual term
    original = model.perceptual
    model.perceptual = lambda images, reference, roles: scored.append((images, reference, roles)) or original(
        images, reference, roles)
    losses = model.generator_losses(batch, out)
    assert [(images.data_ptr(), reference is target, roles) for images, reference, roles in scored] == [
        (direct.data_ptr(), True, ("perceptual", "perceptual_attr")), (step.data_ptr(), True, ("perceptual",))]
    assert seen_by_d[-1] is out.swap  # the adversarial term: the direct output only

    def on_same(per_sample):
        return per_sample[same].mean()

    l1 = {name: on_same((image[:, :3] - target).abs().flatten(1).mean(1)) for name, image in (("direct", direct),
                                                                                           ("step", step))}
    labels = batch["target_mask"].long()
    ce = {name: on_same(F.cross_entropy(image[:, 3:], labels, reduction="none").flatten(1).mean(1))
          for name, image in (("direct", direct), ("step", step))}
    torch.testing.assert_close(losses["reenact_pix"], l1["direct"])
    torch.testing.assert_close(losses["reenact_step_pix"], l1["step"])
    torch.testing.assert_close(losses["reenact_seg"], ce["direct"])
    torch.testing.assert_close(losses["reenact_step_seg"], ce["step"])
    assert set(losses) == STAGE_TERMS["reenactment"]


@torch.no_grad()
def test_view_interpolation_blends_the_reenactments_of_the_views_around_the_targets_pose(tmp_path):
    cfg = compose_config("train", tmp_path, ["model=fsgan", "model.stage=blending", *TINY_FSGAN, RANDOM_PREDECESSORS])
    model, _ = build_model(cfg)
    model.eval()
    model.generator.segmentation.head.bias[FACE] += 20.0  # every pixel face: the swap depends on the reenactment
    batch = synthetic_batch(cfg, [0, 1, 2, 3])
    views, target = batch["source"][:3], batch["target"][:2]
    view_map = ViewMap([[0.0, 0.0], [30.0, 0.0], [0.0, 30.0]])
    poses = torch.tensor([[10.0, 5.0, 0.0], [30.0, 0.0, 4.0]])  # target 0 inside the triangle, target 1 at view 1
    model.pose = lambda images, truth=None: poses if images is target else model.experts.pose(images)
    completed = []  # what Gc is given: the blended reenactment (Gs labels every pixel face)
    model.generator.inpainting.register_forward_pre_hook(lambda m, args: completed.append(args[0][:, :3]))
    out = model.swap_views(views, view_map, target)
    (first, first_w), (second, second_w) = out.extras["views"]
    assert sorted(first.tolist()) == [0, 1, 2] and second.tolist() == [1] and second_w.tolist() == [1.0]
    np.testing.assert_allclose(first_w @ np.array(view_map.points)[first], [10.0, 5.0], atol=1e-9)

    def alone(view: int, b: int) -> torch.Tensor:  # one view reenacted to one target by the plain path
        return model.reenact(model.generator, views[view : view + 1], target[b : b + 1])[0][-1][0]

    blended = out.extras["steps"][-1]
    expected = sum(float(w) * alone(int(i), 0) for i, w in zip(first, first_w, strict=True))
    torch.testing.assert_close(blended[0], expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(blended[1], alone(1, 1), rtol=0, atol=1e-5)
    assert torch.equal(completed[0], blended)  # the rest of the path takes the blend
    plain = model.swap_path(views[1:2], target[1:2], model.generator)
    torch.testing.assert_close(out.swap[1], plain.swap[0], rtol=0, atol=1e-5)


def test_progressive_phases_run_at_their_resolution_with_fresh_optimizers_at_their_learning_rates(tmp_path):
    # the paper experiment's schedule, shortened: 3 steps at half size (batch 2), then full size at batch 1 (as
    # 32 -> 16); decay every 2 steps, every 4 at full size (the same number of samples)
    cfg = compose_config("train", tmp_path, ["experiment=fsgan_reenactment", "trainer=cpu", *TINY_FSGAN,
                                             RANDOM_PREDECESSORS, "model.progressive_steps=3",
                                             "model.full_resolution_batch=1",
                                             "model.scheduler_g.step_size=2", "model.scheduler_d.step_size=2"])
    assert dict(cfg.model.full_resolution_lr) == {"g": 4e-5, "d": 4e-6}
    assert (cfg.model.optimizer_g.lr, cfg.model.optimizer_d.lr) == (1e-4, 1e-5)
    model, _ = build_model(cfg)
    seen = []  # per Gr call: (side, batch, G lr, D lr, Adam steps taken by G so far)

    def record(module, args, out):
        opt_g, opt_d = (o.optimizer for o in model._optimizer_pair())
        first = next(iter(model.generator.reenactment.parameters()))
        taken = int(opt_g.state[first]["step"]) if first in opt_g.state else 0
        seen.append((out.shape[-1], len(out), opt_g.param_groups[0]["lr"], opt_d.param_groups[0]["lr"], taken))

    model.generator.reenactment.register_forward_hook(record)
    fit_on_batches(model, [synthetic_batch(cfg, [0, 1])], steps=8)
    per_step = seen[::3]  # direct, midpoint, two-step: one record per training step
    assert [(side, batch) for side, batch, *_ in per_step] == [(16, 2)] * 3 + [(32, 1)] * 5
    expected = [(1e-4, 1e-5, 0), (1e-4, 1e-5, 1), (5e-5, 5e-6, 2),  # decay after 2 steps
                (4e-5, 4e-6, 0), (4e-5, 4e-6, 1), (4e-5, 4e-6, 2), (4e-5, 4e-6, 3),  # new Adam, lr restarted,
                (2e-5, 2e-6, 4)]  # and the decay: after 4 steps of half the batch
    for (_, _, lr_g, lr_d, taken), (want_g, want_d, want_taken) in zip(per_step, expected, strict=True):
        assert (lr_g, lr_d, taken) == (pytest.approx(want_g), pytest.approx(want_d), want_taken)


def test_frozen_generators_run_at_the_side_their_checkpoints_record(tmp_path):
    """Official: the frozen Gs / Gr see full-resolution images in the 128 px phase, their outputs resized. Here
    Gs's record says 64 px, Gr's 32 px; an inpainting run in its half-size phase (16 px) calls each at its own,
    and Gr renders the loaded 32 px source itself, not its half-size copy brought back up."""
    segmentation = save_stage(tmp_path / "s", "segmentation")
    checkpoint = torch.load(segmentation, weights_only=True)
    assert checkpoint["swaplab"]["stages"]["resolutions"] == {"segmentation": 32}  # the run's data.resolution
    checkpoint["swaplab"]["stages"]["resolutions"] = {"segmentation": 64}  # as if trained on 64 px crops
    torch.save(checkpoint, segmentation)
    reenactment = save_stage(tmp_path / "r", "reenactment", f"model.predecessor_ckpt={segmentation}")
    cfg = compose_config("train", tmp_path, ["model=fsgan", "model.stage=inpainting", *TINY_FSGAN,
                                             f"model.predecessor_ckpt={reenactment}", "model.progressive_steps=1"])
    model, _ = build_model(cfg)
    assert model.frozen_resolutions == {"segmentation": 64, "reenactment": 32}
    sides, inputs = {name: [] for name in STAGES}, {name: [] for name in STAGES}
    for name in STAGES:
        model.generator[name].register_forward_hook(
            lambda m, args, out, name=name: sides[name].append((args[0].shape[-1], out.shape[-1])))
        model.generator[name].register_forward_pre_hook(lambda m, args, name=name: inputs[name].append(args[0]))
    batch = synthetic_batch(cfg, [0, 1])
    fit_on_batches(model, [batch], steps=1, ckpt=tmp_path / "inpainting.ckpt")
    assert set(sides["segmentation"]) == {(64, 64)} and set(sides["reenactment"]) == {(32, 32)}
    assert sides["inpainting"] == [(16, 16)]  # the training generator at the phase's side
    assert torch.equal(inputs["reenactment"][0][:, :3], batch["source"])  # the first render: the loaded source
    record = safe_torch_load(tmp_path / "inpainting.ckpt")["swaplab"]["stages"]
    assert [recorded_resolution(record, name) for name in STAGES[:3]] == [64, 32, 16]


@pytest.mark.slow
def test_reenactment_overfits_one_same_identity_batch_and_follows_its_landmarks(tmp_path):
    # L1-led weights (the random VGGs' terms are scaled down, no adversary) and a higher lr: memorise one batch
    weights = ["reenact_pix=1.0", "reenact_id=0.05", "reenact_attr=0.05", "reenact_adv=0", "reenact_step_pix=1.0",
               "reenact_step_id=0.05"]
    cfg = compose_config("train", tmp_path, ["model=fsgan", *TINY_FSGAN, "data.train.same_identity_rate=1.0",
                                             "data.train.same_image_rate=0.0", "model.optimizer_g.lr=3e-3",
                                             *(f"model.loss_weights.{w}" for w in weights),
                                             RANDOM_PREDECESSORS])
    model, _ = build_model(cfg)
    batch = synthetic_batch(cfg, [0, 1])
    assert batch["same"].all() and not batch["same_image"].any()
    history = fit_on_batches(model, [batch], steps=200)
    first, last = history[0]["train/g/reenact_pix"], min(h["train/g/reenact_pix"] for h in history[-10:])
    assert last < first / 5, (first, last)
    # Gr follows the landmarks it is given, not a memorised source -> target map: under the target's landmarks
    # the render lands on the target view; under the source's own (never trained on) it is clearly farther from it.
    model.eval()
    source, target = batch["source"], batch["target"]
    region = ((batch["source_mask"] > 0) | (batch["target_mask"] > 0)).unsqueeze(1).float()

    def distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return ((a - b).abs() * region).flatten(1).sum(1) / (3 * region.flatten(1).sum(1))

    with torch.no_grad():
        to_target = model.render(model.generator, source, batch["target_landmarks"].float())[0]
        to_source = model.render(model.generator, source, batch["source_landmarks"].float())[0]
    # measured: to the target 0.08-0.09 vs to the source 0.34 (source-target 0.36); under the source's landmarks
    # 0.18-0.25 from the target. A Gr that ignores its heatmaps renders both alike.
    assert (distance(to_target, target) < 0.5 * distance(to_target, source)).all()
    assert (distance(to_source, target) > distance(to_target, target) + 0.05).all()


@pytest.mark.parametrize("stage", STAGES)
def test_experiments_hold_the_official_settings(stage, tmp_path):
    cfg = compose_config("train", tmp_path, [f"experiment=fsgan_{stage}"])
    assert cfg.model.stage == stage and cfg.data.resolution == 256
    for net, flat in (("reenactment", [2, 0, 2, 3]), ("inpainting", [2, 0, 2, 3]), ("blending", [1, 0, 1, 1])):
        node = cfg.model.generator[net]  # the v1 experiments' gen_renderer / gen_inpainter / gen_blender
        assert (node.base_channels, list(node.flat_blocks), node.num_enhancers) == (128, flat, 1)
    assert list(cfg.model.generator.segmentation.widths) == [64, 128, 256, 512, 1024]
    assert (cfg.model.optimizer_g.lr, cfg.model.optimizer_d.lr) == (1e-4, 1e-5)
    assert list(cfg.model.optimizer_d.betas) == [0.5, 0.999]
    # v1 experiments: epochs at 128 / 256 px of 40k samples, StepLR(10 epochs, 0.5)
    epochs = {"segmentation": None, "reenactment": (40, 60), "inpainting": (20, 40), "blending": (20, 40)}[stage]
    if epochs is None:
        assert cfg.model.progressive_steps == 0 and cfg.model.scheduler_g is None
    else:
        # batch 32 at 128 px, 16 at 256 px: 2500 steps per epoch there
        assert (cfg.model.progressive_steps, cfg.trainer.max_steps) == (epochs[0] * 1250,
                                                                         epochs[0] * 1250 + epochs[1] * 2500)
        assert (cfg.data.batch_size, cfg.model.full_resolution_batch) == (32, 16)
        assert dict(cfg.model.full_resolution_lr) == {"g": 4e-5, "d": 4e-6}
        for scheduler in (cfg.model.scheduler_g, cfg.model.scheduler_d):
            assert (scheduler._target_, scheduler.step_size, scheduler.gamma) == (
                "torch.optim.lr_scheduler.StepLR", 12500, 0.5)
    weights = dict(cfg.model.loss_weights)
    assert {k: v for k, v in weights.items() if k.startswith("reenact_")} == {  # official v1 stepwise, halves folded
        "reenact_pix": 0.05, "reenact_id": 0.25, "reenact_attr": 0.25, "reenact_seg": 0.005, "reenact_adv": 0.001,
        "reenact_step_pix": 0.05, "reenact_step_id": 0.5, "reenact_step_seg": 0.005}
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
