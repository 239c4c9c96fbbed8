"""Fast Face-swap lighting network: architecture, pair datasets, siamese training, export -> expert, config run."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from helpers import TINY, compose_config
from torch.utils.data import Dataset

from swaplab.data import SwapDataModule
from swaplab.data.lighting_pairs import ExtendedYaleBPairs, SyntheticLightingPairs
from swaplab.errors import MissingWeightsError
from swaplab.experts.lighting import LightingFeatures
from swaplab.models.lighting import LightingNetModule, contrastive_loss
from swaplab.models.lighting.export import export_lighting_net, main
from swaplab.nets.lighting import LightingNet, to_grayscale

RES = 32


def test_net_output_shape_and_architecture_read_back_from_weights():
    net = LightingNet()
    assert net(torch.zeros(2, 1, 128, 128)).shape == (2, 128)
    assert LightingNet.config_from_state_dict(net.state_dict()) == {
        "in_channels": 1, "input_size": 128, "widths": [16, 32, 64, 128, 128], "fc_dims": [256, 128]}
    small = LightingNet(input_size=48, widths=(4, 8, 8), fc_dims=(16, 8, 5))
    assert small(torch.zeros(3, 1, 48, 48)).shape == (3, 5)
    assert LightingNet(**LightingNet.config_from_state_dict(small.state_dict())).load_state_dict(small.state_dict())
    with pytest.raises(ValueError, match="divisible"):
        LightingNet(input_size=40, widths=(4, 8, 8, 8))


def test_contrastive_loss_pulls_same_and_pushes_different_within_the_margin():
    d = torch.tensor([0.0, 0.4, 0.2, 1.5])
    same = torch.tensor([True, True, False, False])
    expected = 0.5 * (0.0 + 0.4**2 + (1 - 0.2) ** 2 + 0.0) / 4
    assert contrastive_loss(d, same, 1.0).item() == pytest.approx(expected)


def test_synthetic_pairs_have_exact_labels_equal_pose_and_are_deterministic():
    ds = SyntheticLightingPairs(resolution=RES, num_identities=12, images_per_identity=2, supersample=1)
    b = ds.__getitems__(list(range(24)))
    assert b["image1"].shape == b["image2"].shape == (24, 1, RES, RES)
    assert b["image1"].min() >= -1 and b["image1"].max() <= 1
    assert torch.equal(b["pose1"], b["pose2"])
    same = b["same"]
    assert 0 < same.sum() < 24
    assert torch.equal((b["light1"] == b["light2"]).all(1), same)
    assert torch.equal(b["light_ambient1"] == b["light_ambient2"], same)
    angle = torch.rad2deg(torch.acos((b["light1"] * b["light2"]).sum(1).clamp(-1, 1)))
    assert (angle[~same] >= 20.0).all()
    # same-light pairs are still two different pictures (expression / gaze / identity re-drawn)
    assert ((b["image1"] - b["image2"]).abs().flatten(1).amax(1)[same] > 0.05).all()
    assert (b["identity1"] != b["identity2"]).any() and (b["identity1"] == b["identity2"]).any()
    again = ds.__getitems__([7, 3])
    assert torch.equal(again["image1"][0], b["image1"][7]) and torch.equal(again["image2"][1], b["image2"][3])


class Pool(Dataset):
    """Pre-rendered pairs, served in whole batches like the synthetic dataset."""

    def __init__(self, batch: dict[str, torch.Tensor]) -> None:
        self.batch, self.resolution = batch, batch["image1"].shape[-1]

    def __len__(self) -> int:
        return len(self.batch["same"])

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        return {k: v[indices] for k, v in self.batch.items()}


class LossRecorder(pl.Callback):
    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses.append(float(outputs["loss"]))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A small lighting net trained for 150 steps on 384 synthetic pairs (32 px), checked on 256 unseen faces."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    keys = ("image1", "image2", "same")

    def render(n: int, offset: int) -> Pool:
        ds = SyntheticLightingPairs(resolution=RES, num_identities=n, images_per_identity=1,
                                    identity_offset=offset, supersample=1)
        return Pool({k: v for k, v in ds.__getitems__(list(range(n))).items() if k in keys})

    data = SwapDataModule(render(384, 0), render(256, 10**6), batch_size=32, val_batch_size=128)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = LightingNet(input_size=RES, widths=(8, 16, 32), fc_dims=(64, 32))
    module = LightingNetModule(net, optimizer=lambda p: torch.optim.Adam(p, lr=1e-3), margin=1.0)
    recorder = LossRecorder()
    trainer = pl.Trainer(max_steps=150, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                         check_val_every_n_epoch=None, val_check_interval=10**6, callbacks=[recorder], default_root_dir=tmp_path_factory.mktemp("l"))
    (before,) = trainer.validate(module, datamodule=data, verbose=False)
    trainer.fit(module, datamodule=data)
    (after,) = trainer.validate(module, datamodule=data, verbose=False)
    ckpt = tmp_path_factory.mktemp("ckpt") / "lighting.ckpt"
    trainer.save_checkpoint(ckpt)
    torch.set_num_threads(threads)
    return {"module": module, "before": before, "after": after, "losses": recorder.losses, "ckpt": ckpt,
            "val": data.val_set.batch}


def test_training_on_synthetic_pairs_separates_same_from_different_light(trained):
    before, after, losses = trained["before"], trained["after"], trained["losses"]
    print(f"held-out accuracy {before['val/accuracy']:.3f} -> {after['val/accuracy']:.3f}, AUROC "
          f"{before['val/auroc']:.3f} -> {after['val/auroc']:.3f}, loss {before['val/loss']:.4f} -> "
          f"{after['val/loss']:.4f}, distance same / different {after['val/distance_same']:.3f} / "
          f"{after['val/distance_different']:.3f}")
    assert len(losses) == 150
    assert np.mean(losses[-20:]) < 0.5 * np.mean(losses[:10])
    assert after["val/loss"] < 0.5 * before["val/loss"]
    assert after["val/accuracy"] >= 0.75  # 256 unseen pairs, ~half same: chance is ~0.5 (measured ~0.9)
    assert after["val/auroc"] >= 0.85
    assert after["val/distance_same"] < 0.5 * after["val/distance_different"]


def test_export_and_pretrained_expert_reproduce_the_trained_features(trained, tmp_path, capsys):
    net = trained["module"].net.eval()
    out = tmp_path / "weights" / "lighting_net.pth"
    assert main(["export", str(trained["ckpt"]), str(out)]) == 0
    assert "input_size': 32" in capsys.readouterr().out
    x = trained["val"]["image1"][:8]
    with torch.no_grad():
        reference = net(x)
    expert = LightingFeatures.build(weights="pretrained", path=str(out))
    assert expert.weights == str(out) and expert.net.input_size == RES
    assert torch.allclose(expert(x), reference, atol=1e-6)
    # the training checkpoint loads as it is, and weights_dir/<file name> is found through the registry
    assert torch.allclose(LightingFeatures.build(weights="pretrained", path=str(trained["ckpt"]))(x), reference,
                          atol=1e-6)
    assert LightingFeatures.build(weights="pretrained", weights_dir=str(tmp_path / "weights")).weights == str(out)
    # RGB crops of any size: BT.601 luma, resized (antialiased) to the net's input
    rgb = torch.rand(3, 3, 2 * RES, 2 * RES) * 2 - 1
    luma = 0.299 * rgb[:, :1] + 0.587 * rgb[:, 1:2] + 0.114 * rgb[:, 2:]
    small = F.interpolate(luma, size=(RES, RES), mode="bilinear", align_corners=False, antialias=True)
    with torch.no_grad():
        assert torch.allclose(expert(rgb), net(small), atol=1e-5)
    with pytest.raises(ValueError, match="config asks for"):
        LightingFeatures.build(weights="pretrained", path=str(out), input_size=64)
    with pytest.raises(MissingWeightsError, match="lighting_net.pth"):
        LightingFeatures.build(weights="pretrained", weights_dir=str(tmp_path / "none"))


def test_light_loss_is_zero_for_identical_images_and_positive_otherwise():
    expert = LightingFeatures.build(input_size=RES, widths=(4, 8), fc_dims=(16, 8))
    assert expert.weights == "random"
    x = torch.rand(2, 3, RES, RES) * 2 - 1
    assert expert.loss(x, x.clone()).item() == 0.0
    y = (x + 0.3 * torch.randn_like(x)).clamp(-1, 1).requires_grad_(True)
    loss = expert.loss(y, x)
    assert loss.item() > 0
    with torch.no_grad():
        gx, gy = expert(x), expert(y)
    assert loss.item() == pytest.approx(((gy - gx) ** 2).sum(1).div(gx.shape[1]).mean().item(), rel=1e-5)
    loss.backward()
    assert y.grad is not None and y.grad.abs().sum() > 0
    assert all(p.grad is None for p in expert.net.parameters())
    assert torch.equal(to_grayscale(x[:, :1]), x[:, :1]) and to_grayscale(x).shape == (2, 1, RES, RES)


def write_yale(root, subjects=(1, 2, 3), lights=((0, 0), (35, 15), (-50, -40)), size=(24, 20)):
    """A CroppedYale-like tree; each image is one grey level that encodes (subject, light, pose)."""
    for s in subjects:
        folder = root / f"yaleB{s:02d}"
        folder.mkdir(parents=True)
        for pose in (0, 1):
            for k, (a, e) in enumerate(lights if pose == 0 else lights[:2]):
                value = 20 * s + 5 * k + 2 * pose
                name = f"yaleB{s:02d}_P{pose:02d}A{a:+04d}E{e:+03d}.pgm"
                assert cv2.imwrite(str(folder / name), np.full(size, value, np.uint8))
        cv2.imwrite(str(folder / f"yaleB{s:02d}_P00_Ambient.pgm"), np.zeros(size, np.uint8))
    (root / "yaleB02" / "yaleB02_P00A+035E+15.pgm").write_bytes(b"P5\n20 24\n255\n" + b"\x00" * 7)  # truncated


def test_extended_yale_b_pairs_match_pose_and_label_illumination(tmp_path):
    write_yale(tmp_path)
    ds = ExtendedYaleBPairs(tmp_path, resolution=16, num_pairs=200, seed=3)
    assert ds.skipped == {"ambient": 3, "unreadable": 1, "other_name": 0}
    assert len(ds.files) == 3 * 5 - 1 and not any("Ambient" in p.name for p in ds.files)
    lights = {(0, 0): 0, (35, 15): 1, (-50, -40): 2}
    labels, seen = [], set()
    for i in range(len(ds)):
        item = ds[i]
        assert item["image1"].shape == (1, 16, 16) and item["subject1"] != item["subject2"]
        light1, light2 = (tuple(int(v) for v in item[k]) for k in ("light1", "light2"))
        assert bool(item["same"]) == (light1 == light2)
        for side, light in (("1", light1), ("2", light2)):  # the image is the file the labels name
            value = 20 * int(item[f"subject{side}"]) + 5 * lights[light] + 2 * int(item["pose"])
            assert torch.allclose(item[f"image{side}"], torch.full((1, 16, 16), value / 127.5 - 1))
            seen.add((int(item[f"subject{side}"]), light, int(item["pose"])))
        labels.append(bool(item["same"]))
    assert 0.3 < np.mean(labels) < 0.7
    assert len(seen) == 3 * 5 - 1 and (2, (35, 15), 0) not in seen  # every file used, never the corrupt one
    assert {int(ds[i]["pose"]) for i in range(50)} == {0, 1}
    again = ExtendedYaleBPairs(tmp_path, resolution=16, num_pairs=200, seed=3)
    assert all(ds.pair(i) == again.pair(i) for i in range(50))
    val = ExtendedYaleBPairs(tmp_path, resolution=16, num_pairs=10, subjects=[1, 3])
    assert {int(val[i][f"subject{k}"]) for i in range(10) for k in "12"} <= {1, 3}
    with pytest.raises(ValueError, match="no usable"):
        ExtendedYaleBPairs(tmp_path, subjects=[9])


def test_experiment_config_trains_through_the_entry_point_and_exports(tmp_path):
    from swaplab.tasks.train import train

    overrides = [o for o in TINY if not o.startswith("model.")] + [
        "experiment=lighting_net", "model.net.widths=[4,8]", "model.net.fc_dims=[16,8]", "logger=csv",
        "trainer.max_steps=2", "trainer.val_check_interval=2", "trainer.log_every_n_steps=1",
        "callbacks.last_checkpoint.every_n_train_steps=2"]
    cfg = compose_config("train", tmp_path, overrides)
    assert cfg.optimized_metric == "val/accuracy" and "image_grid" not in cfg.callbacks
    metrics, objects = train(cfg)
    assert {"train/loss", "val/loss", "val/accuracy"} <= set(metrics)
    assert 0.0 <= metrics["val/accuracy"] <= 1.0 and math.isfinite(metrics["val/loss"])
    ckpt = tmp_path / "checkpoints" / "last.ckpt"
    config = export_lighting_net(ckpt, tmp_path / "lighting_net.pth")
    assert config == {"in_channels": 1, "input_size": 32, "widths": [4, 8], "fc_dims": [16, 8]}
    expert = LightingFeatures.build(weights="pretrained", path=str(tmp_path / "lighting_net.pth"))
    x = torch.rand(2, 1, 32, 32) * 2 - 1
    with torch.no_grad():
        assert torch.allclose(expert(x), objects["model"].net.eval()(x), atol=1e-6)


def test_lighting_pairs_of_procedural_faces_are_the_dataset_built_directly():
    """experiment=lighting_net serves data=synthetic's faces through data.wrap=lighting_pairs: the same pairs as
    SyntheticLightingPairs with the source's identities, images, offset, seed and same_identity_rate."""
    from swaplab.data import SyntheticSwapDataset
    from swaplab.data.lighting_pairs import lighting_pairs

    faces = SyntheticSwapDataset(resolution=16, num_identities=6, images_per_identity=2, identity_offset=3,
                                 same_identity_rate=0.5, same_image_rate=0.0, seed=4)
    wrapped = lighting_pairs(faces, same_light_rate=0.3, min_light_angle=25.0)
    direct = SyntheticLightingPairs(16, 6, 2, 3, same_light_rate=0.3, same_identity_rate=0.5, min_light_angle=25.0,
                                    seed=4)
    a, b = wrapped.__getitems__([0, 1, 5, 11]), direct.__getitems__([0, 1, 5, 11])
    assert len(wrapped) == len(direct) and set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(TypeError, match="experiment=lighting_net_paper"):
        lighting_pairs(Dataset())  # not procedural faces (Extended Yale B pairs, a folder of photos, ...)
