"""FaceShifter HEAR-Net: frozen AEI-Net, refinement with and without, occluders, configs, restoring occlusions."""

from __future__ import annotations

import shutil
from pathlib import Path

import hydra
import numpy as np
import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from helpers import TINY, compose_config
from omegaconf import OmegaConf
from PIL import Image
from test_configs import instantiate_everything

from swaplab.data.occlusion import RandomOccluders
from swaplab.data.subsets import TargetSubset, read_subset
from swaplab.experts.registry import sha256_of
from swaplab.io.checkpoints import safe_torch_load
from swaplab.models.base import SwapOutput
from swaplab.models.faceshifter import FaceShifterHEAR, HEARNet
from swaplab.models.loading import build_model, load_swap_model
from swaplab.tasks.hard_samples import hard_samples
from swaplab.tasks.train import train

HEAR_TINY = [o for o in TINY if not o.startswith("model.")] + ["model=faceshifter_hear", "model.generator.widths=[8,16,32]"]
QUIET = ["logger=none", "trainer.val_check_interval=100"]


pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def aei_ckpt(tmp_path_factory) -> Path:
    """A FaceShifter (AEI-Net) checkpoint after two tiny training steps."""
    run = tmp_path_factory.mktemp("aei")
    train(compose_config("train", run, [*TINY, *QUIET, "callbacks=[last_checkpoint]", "trainer.max_steps=2"]))
    return run / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="module")
def hard_subset(aei_ckpt, tmp_path_factory) -> Path:
    """python hard_samples.py on the tiny synthetic training set (200 faces) with the tiny AEI-Net."""
    run = tmp_path_factory.mktemp("hard")
    data = [o for o in HEAR_TINY if o.startswith("data.")]
    cfg = compose_config("hard_samples", run, [*data, f"aei_ckpt={aei_ckpt}", f"output={run / 'hard.json'}",
                                               "device=cpu"])
    return hard_samples(cfg)


def hear_config(tmp_path: Path, ckpt: Path, *overrides: str):
    return compose_config("train", tmp_path, [*HEAR_TINY, f"model.predecessor_ckpt={ckpt}", *overrides])


def same_pair_batch(cfg, indices: list[int]) -> dict[str, torch.Tensor]:
    data = hydra.utils.instantiate(cfg.data, _convert_="all")
    data.setup("fit")
    return data.train_set.__getitems__(indices)


# ---- the network ---------------------------------------------------------------------------------
def test_residual_output_starts_at_the_aei_result_and_direct_output_is_bounded():
    swap, error = torch.rand(2, 3, 16, 16) * 1.9 - 0.95, torch.randn(2, 3, 16, 16)
    refined = HEARNet(widths=(8, 16), output="residual")(swap, error)
    assert torch.allclose(refined, swap, atol=1e-6)
    direct = HEARNet(widths=(8, 16), output="direct")(swap, error)
    assert direct.shape == swap.shape and direct.abs().max() < 1 and (direct - swap).abs().mean() > 0.1
    with pytest.raises(ValueError, match="output must be"):
        HEARNet(output="image")


def test_zero_heuristic_error_and_identity_training_give_back_the_aei_output(aei_ckpt, tmp_path):
    cfg = hear_config(tmp_path, aei_ckpt)
    model, _ = build_model(cfg)
    batch = same_pair_batch(cfg, [0, 5, 10, 15])
    with torch.no_grad():
        aei = model.generate(batch["source"], batch["target"], model.generator).extras["aei"]
    net, zero_error = model.generator, torch.zeros_like(aei)
    torch.nn.init.normal_(net.unet.head.weight, std=0.1)  # start far from the identity
    start = (net(aei, zero_error) - aei).abs().max().item()
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(150):
        loss = F.l1_loss(net(aei, zero_error), aei)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        end = (net.eval()(aei, zero_error) - aei).abs().max().item()
    print(f"max |refined - AEI| with zero heuristic error: {start:.3f} before, {end:.4f} after identity training")
    # max over pixels: the 3x3 head over 144 up-sampled features keeps an Adam jitter of ~0.1 after 150 steps
    assert start > 0.5 and end < 0.15


# ---- occluders -----------------------------------------------------------------------------------
def test_occluders_change_only_the_masked_pixels():
    images = torch.rand(8, 3, 32, 32) * 2 - 1
    same, mask = RandomOccluders(p=0.0)(images)
    assert torch.equal(same, images) and mask.abs().max() == 0
    occluders = RandomOccluders(p=1.0, max_count=2, size=(0.15, 0.3))
    out, mask = occluders(images, generator=torch.Generator().manual_seed(1))
    again, _ = occluders(images, generator=torch.Generator().manual_seed(1))
    assert torch.equal(out, again) and mask.shape == (8, 1, 32, 32)
    assert 0 <= mask.min() and mask.max() <= 1
    area = mask.flatten(1).mean(1)
    assert (area > 0.01).all() and (area < 0.9).all() and area.std() > 0  # every image, each its own occluder
    outside = (mask == 0).expand_as(images)
    assert torch.equal(out[outside], images[outside])
    inside = (mask == 1).expand_as(images)
    assert (out[inside] - images[inside]).abs().mean() > 0.2


def test_occluders_from_a_folder_paste_the_cut_out_with_its_alpha(tmp_path):
    cut_out = np.zeros((40, 20, 4), np.uint8)
    cut_out[5:35, 5:15] = (255, 0, 0, 255)  # an opaque red bar in a transparent frame
    Image.fromarray(cut_out, "RGBA").save(tmp_path / "bar.png")
    occluders = RandomOccluders(p=1.0, max_count=1, size=(0.3, 0.3), occluders_dir=str(tmp_path), image_rate=1.0)
    images = torch.zeros(4, 3, 32, 32)
    out, mask = occluders(images)
    solid = (mask[:, 0] > 0.99)
    assert solid.any(dim=(1, 2)).all() and mask.flatten(1).mean(1).max() < 0.5
    red = out.permute(0, 2, 3, 1)[solid]
    assert torch.allclose(red, torch.tensor([1.0, -1.0, -1.0]).expand_as(red), atol=0.05)
    with pytest.raises(FileNotFoundError, match="occluders_dir"):
        RandomOccluders(occluders_dir=str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="shapes"):
        RandomOccluders(shapes=["hat"])


# ---- configs and the frozen AEI-Net --------------------------------------------------------------
def test_missing_or_wrong_aei_checkpoint_fails_with_one_clear_error(aei_ckpt, tmp_path):
    paper = compose_config("train", tmp_path / "paper", ["experiment=faceshifter_hear"])
    assert OmegaConf.is_missing(paper, "predecessor_ckpt") and paper.model.predecessor_ckpt is None
    with pytest.raises(Exception, match=r"(?s)predecessor_ckpt is required by this config.*hard_samples is required"):
        instantiate_everything(compose_config("train", tmp_path / "exp", [*HEAR_TINY, "experiment=faceshifter_hear",
                                                                          "trainer.accelerator=cpu"]))
    with pytest.raises(Exception, match=r"FaceShifterHEAR needs trained \['aei_net'\] from model.predecessor_ckpt, "
                                        r"which is not set.*experiment=faceshifter_paper"):
        instantiate_everything(compose_config("train", tmp_path / "model", [*HEAR_TINY, "trainer.accelerator=cpu"]))
    with pytest.raises(Exception, match=r"predecessor_ckpt=.*nothing.ckpt does not exist.*experiment=faceshifter_paper"):
        build_model(hear_config(tmp_path, tmp_path / "nothing.ckpt"))
    with pytest.raises(Exception, match="trained with identity expert"):
        build_model(hear_config(tmp_path, aei_ckpt, "experts.identity.widths=[8,16,32,64]"))
    # the record decides, not the weights: the same file recorded as another model's training is refused
    checkpoint = safe_torch_load(aei_ckpt)
    checkpoint["swaplab"]["stages"] = {**checkpoint["swaplab"]["stages"], "model": "HifiFace", "trained": ["generator"]}
    torch.save(checkpoint, tmp_path / "other.ckpt")
    with pytest.raises(Exception, match=r"other.ckpt lacks trained \['aei_net'\] for FaceShifterHEAR: it is a "
                                        r"checkpoint of HifiFace that trained \['generator'\]"):
        build_model(hear_config(tmp_path, tmp_path / "other.ckpt"))
    del checkpoint["swaplab"]["stages"]
    torch.save(checkpoint, tmp_path / "old.ckpt")
    with pytest.raises(Exception, match=r"old.ckpt has no record of the networks trained in it"):
        build_model(hear_config(tmp_path, tmp_path / "old.ckpt"))


def test_random_aei_net_needs_the_switch_and_a_config_and_is_recorded_as_random(aei_ckpt, tmp_path, caplog):
    aei_config = safe_torch_load(aei_ckpt)["swaplab"]["config"]["model"]["generator"]
    without = compose_config("train", tmp_path, [*HEAR_TINY, "model.allow_random_predecessors=true"])
    with pytest.raises(Exception, match=r"builds its AEI-Net from model.aei_generator .*, which is not set"):
        build_model(without)
    cfg = compose_config("train", tmp_path, [*HEAR_TINY, "model.allow_random_predecessors=true"])
    cfg.model.aei_generator = aei_config
    caplog.clear()
    model, _ = build_model(cfg)
    loud = [r.getMessage() for r in caplog.records if r.name == "swaplab.models.stages"]
    assert len(loud) == 1 and "FaceShifterHEAR runs with RANDOM frozen ['aei_net']" in loud[0]
    batch = same_pair_batch(cfg, [0, 1])
    with torch.no_grad():
        assert torch.isfinite(model(batch["source"], batch["target"]).swap).all()
    checkpoint = {"state_dict": model.state_dict()}
    model.on_save_checkpoint(checkpoint)
    assert checkpoint["swaplab"]["stages"]["frozen"] == {"aei_net": {"random": True}}


def test_experiment_composes_instantiates_and_swaps_with_and_without_refinement(aei_ckpt, hard_subset, tmp_path):
    paper = compose_config("train", tmp_path / "paper", ["experiment=faceshifter_hear", "predecessor_ckpt=x.ckpt"])
    assert paper.data.resolution == 256 and list(paper.model.generator.widths) == [64, 128, 256, 512, 512]
    assert paper.model.predecessor_ckpt == "x.ckpt" and paper.experts.identity.weights == "pretrained"
    assert dict(paper.model.loss_weights) == {"id": 1.0, "chg": 1.0, "rec": 1.0}  # the paper's
    assert paper.model.reconstruction_scale == "aei_error"
    cfg = compose_config("train", tmp_path, [*HEAR_TINY, "experiment=faceshifter_hear", f"predecessor_ckpt={aei_ckpt}",
                                             f"hard_samples={hard_subset}", "trainer.accelerator=cpu", "model.generator.output=direct",
                                             "experts.identity.depth=18"])  # the AEI-Net's identity network
    objects = instantiate_everything(cfg)
    model = objects["model"].eval()
    assert isinstance(model, FaceShifterHEAR) and model.experts is objects["experts"]
    assert isinstance(objects["datamodule"].train_set, TargetSubset)  # the experiment trains on the hard samples
    batch = objects["datamodule"].train_set.__getitems__([0, 1])
    with torch.no_grad():
        out = model(batch["source"], batch["target"])
        model.refine = False
        aei_only = model(batch["source"], batch["target"])
    assert out.swap.shape == (2, 3, 32, 32) and out.extras["heuristic_error"].shape == (2, 3, 32, 32)
    assert torch.equal(aei_only.swap, out.extras["aei"]) and (out.swap - aei_only.swap).abs().mean() > 1e-3
    model.occlusion.p = 1.0  # what training_step feeds the losses: occluded targets, clean sources
    occluded = model.occlude(batch)
    assert torch.equal(occluded["source"], batch["source"]) and occluded["occluder_mask"].flatten(1).amax(1).min() > 0
    assert not torch.equal(occluded["target"], batch["target"])


def test_training_updates_hear_net_only_and_its_checkpoint_is_self_contained(aei_ckpt, tmp_path):
    own_aei = tmp_path / "aei.ckpt"
    shutil.copy(aei_ckpt, own_aei)
    cfg = hear_config(tmp_path / "run", own_aei, *QUIET, "callbacks=[last_checkpoint]", "trainer.max_steps=3",
                      "data.train.same_identity_rate=0.5")
    pl.seed_everything(cfg.seed)  # as train() does: the same initial HEAR-Net
    initial = {k: v.clone() for k, v in build_model(cfg)[0].generator.state_dict().items()}
    _, objects = train(cfg)
    model, (optimizer,) = objects["model"], objects["trainer"].optimizers

    saved_aei = safe_torch_load(own_aei)
    prefix = saved_aei["swaplab"]["stages"]["weights"]["aei_net"]
    aei_weights = {k[len(prefix):]: v for k, v in saved_aei["state_dict"].items() if k.startswith(prefix)}
    assert aei_weights.keys() == model.aei.state_dict().keys()
    for name, value in model.aei.state_dict().items():  # parameters and BatchNorm statistics: the trained ones
        assert torch.equal(value, aei_weights[name]), f"AEI-Net {name} is not the predecessor's"
    assert not model.aei.training and not any(p.requires_grad for p in model.aei.parameters())
    trained = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert trained == {id(p) for p in model.generator.parameters()}
    changed = [k for k, v in model.generator.state_dict().items() if not torch.equal(v, initial[k])]
    weights = [k for k in initial if k.endswith("weight")]
    assert set(weights) <= set(changed), f"HEAR-Net weights left untouched: {sorted(set(weights) - set(changed))}"

    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    record = safe_torch_load(ckpt)["swaplab"]["stages"]  # trained here, and where the frozen AEI-Net came from
    source = {"path": str(own_aei), "sha256": sha256_of(own_aei)}
    assert record["model"] == "FaceShifterHEAR" and record["trained"] == ["hear_net"]
    assert record["frozen"] == {"aei_net": source}
    assert record["predecessor"] == {**source, "record": saved_aei["swaplab"]["stages"]}
    assert saved_aei["swaplab"]["stages"]["trained"] == ["aei_net"]
    own_aei.unlink()  # inference needs the HEAR checkpoint alone
    loaded, run_cfg = load_swap_model(ckpt)
    assert run_cfg.model.predecessor_ckpt is None and loaded.predecessors.record() == {
        "frozen": record["frozen"], "predecessor": record["predecessor"]}
    batch = same_pair_batch(cfg, [0, 1, 2])
    with torch.no_grad():
        expected, got = model.eval()(batch["source"], batch["target"]), loaded(batch["source"], batch["target"])
    assert torch.allclose(got.swap, expected.swap, atol=1e-6)
    assert torch.allclose(got.extras["aei"], expected.extras["aei"], atol=1e-6)


@pytest.mark.parametrize("scale", ["aei_error", "none"], ids=["config_relative_rec", "absolute_rec"])
def test_overfit_restores_the_occluded_region_that_aei_net_drops(aei_ckpt, tmp_path, scale):
    """The paper's 1:1:1 weights (the config's) with L_rec relative to the AEI result's error restore the region;
    with the absolute L_rec they leave HEAR-Net at the AEI result."""
    cfg = hear_config(tmp_path, aei_ckpt, "model.occlusion=null", f"model.reconstruction_scale={scale}",
                      "data.train.same_identity_rate=1.0")
    assert dict(cfg.model.loss_weights) == {"id": 1.0, "chg": 1.0, "rec": 1.0}
    model, _ = build_model(cfg)
    batch = same_pair_batch(cfg, [0, 5, 10, 15])
    occluded, mask = RandomOccluders(p=1.0, max_count=1, size=(0.2, 0.3))(
        batch["target"], generator=torch.Generator().manual_seed(0))
    batch = {**batch, "source": occluded, "target": occluded}  # X_s = X_t: L_rec applies to every pair
    with torch.no_grad():
        frozen = model.generate(batch["source"], batch["target"], model.generator)  # AEI-Net is fixed: once

    def region_error(images: torch.Tensor) -> float:
        return float(((images - occluded).abs() * mask).sum() / (3 * mask.sum()))

    opt = torch.optim.Adam(model.generator.parameters(), lr=3e-3)
    for _ in range(120):
        out = SwapOutput(model.generator(frozen.extras["aei"], frozen.extras["heuristic_error"]), frozen.extras)
        total, _ = model.g_loss(model.generator_losses(batch, out))
        opt.zero_grad()
        total.backward()
        opt.step()
    with torch.no_grad():
        refined = model.eval()(batch["source"], batch["target"])
    aei_error, refined_error = region_error(refined.extras["aei"]), region_error(refined.swap)
    print(f"occluder-region L1 to the target (L_rec scale {scale}, 1:1:1): AEI-Net {aei_error:.3f}, "
          f"HEAR-Net {refined_error:.3f}")
    if scale == "aei_error":
        assert refined_error < 0.5 * aei_error
    else:  # L1 change term dominates the half-L2 reconstruction wherever |Y - X_t| < 1: next to no progress
        assert refined_error > 0.9 * aei_error


# ---- the paper's training set: the hard samples ----------------------------------------------------------
def test_hard_samples_are_the_top_tenth_of_the_aei_nets_self_swap_error(aei_ckpt, hard_subset, tmp_path):
    subset = read_subset(hard_subset)
    assert subset["size"] == 200 and len(subset["indices"]) == 20 and subset["fraction"] == 0.1  # the default
    model, _ = load_swap_model(aei_ckpt)
    cfg = hear_config(tmp_path, aei_ckpt)
    data = hydra.utils.instantiate(cfg.data, _convert_="all").train_set
    targets = data.__getitems__(list(range(len(data))))["target"]
    with torch.no_grad():  # |X_t - AEI(X_t, z_id(X_t))|, the heuristic error of the paper
        self_swap, _ = model.generator(targets, model.experts.identity(targets))
    error = (targets - self_swap).abs().mean((1, 2, 3))
    chosen = torch.tensor(subset["indices"])
    torch.testing.assert_close(torch.tensor(subset["scores"]), error[chosen], rtol=1e-4, atol=1e-6)
    others = torch.ones(len(data), dtype=torch.bool)
    others[chosen] = False
    assert error[chosen].min() >= error[others].max() and error[chosen].min() > error.median()


def test_hear_net_trains_on_the_hard_samples_only(aei_ckpt, hard_subset, tmp_path):
    cfg = hear_config(tmp_path, aei_ckpt, *QUIET, "callbacks=none", "trainer.max_steps=2",
                      f"data.train_subset={hard_subset}")
    _, objects = train(cfg)
    assert objects["trainer"].global_step == 2
    train_set = objects["datamodule"].train_set
    assert isinstance(train_set, TargetSubset) and len(train_set) == 20
    hard = train_set.dataset.__getitems__(read_subset(hard_subset)["indices"])["target"].flatten(1)
    for batch in (train_set.__getitems__(list(range(20))), next(iter(objects["datamodule"].train_dataloader()))):
        matches = (batch["target"].flatten(1)[:, None] == hard[None]).all(-1)  # each target is one of the hard faces
        assert matches.any(1).all()
    with pytest.raises(ValueError, match="lists crops of a dataset of 200 faces, this training set has 8"):
        TargetSubset(hydra.utils.instantiate(cfg.data.val, _convert_="all"), hard_subset)
