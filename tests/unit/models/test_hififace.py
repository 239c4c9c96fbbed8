"""HifiFace: generator shapes and masks, c_fuse, loss bookkeeping, overfitting + cycle, frozen experts."""

from __future__ import annotations

import copy
from pathlib import Path

import hydra
import pytest
import torch
import torch.nn.functional as F
from helpers import compose_config, fit_on_batches
from torch import nn

from swaplab.experts import Experts, FaceCoefficients
from swaplab.models.hififace import HifiFace, HifiFaceGenerator, fuse_coefficients, shape_aware_identity
from swaplab.models.loading import build_model

TINY_HIFIFACE = [
    "model=hififace",
    "data.resolution=64",
    "data.num_workers=0",
    "data.train.num_identities=50",
    "data.train.images_per_identity=4",
    "model.generator.base_channels=8",
    "model.generator.max_channels=32",
    "model.discriminator.base_channels=8",
    "model.discriminator.max_channels=32",
    "experts=random",
    "experts.identity.widths=[8,16,32,32]",
    "experts.identity.input_size=32",
    "experts.face3d.input_size=32",
    "experts.parsing.input_size=32",
]
PAPER_WEIGHTS = {"adv": 1.0, "shape": 0.5, "id": 5.0, "rec": 20.0, "cyc": 1.0, "lpips": 5.0, "seg": 100.0, "gp": 1.0}


pytestmark = pytest.mark.usefixtures("single_thread")


def tiny_model(tmp_path: Path, *overrides: str) -> tuple[HifiFace, dict[str, torch.Tensor]]:
    """A tiny HifiFace from the real config and one batch of two same-identity pairs at 64x64."""
    cfg = compose_config("train", tmp_path, [*TINY_HIFIFACE, "data.train.same_identity_rate=1.0", *overrides])
    model, _ = build_model(cfg)
    datamodule = hydra.utils.instantiate(cfg.data, _convert_="all")
    datamodule.setup("fit")
    return model, datamodule.train_set.__getitems__([0, 1])


# ---- generator -----------------------------------------------------------------------------------


@pytest.mark.parametrize("resolution", [32, 64])
def test_forward_shapes_and_masks_in_unit_range(resolution):
    g = HifiFaceGenerator(resolution, base_channels=8, max_channels=32)
    target = torch.rand(2, 3, resolution, resolution) * 2 - 1
    r = g(target, torch.randn(2, g.style_dim))
    side, low = resolution, resolution // 4
    assert r.swap.shape == r.raw.shape == (2, 3, side, side) and r.mask.shape == (2, 1, side, side)
    assert r.low.shape == (2, 3, low, low) and r.mask_low.shape == (2, 1, low, low)
    for mask in (r.mask, r.mask_low):
        assert mask.min() >= 0 and mask.max() <= 1
    torch.testing.assert_close(r.swap, r.mask * r.raw + (1 - r.mask) * target)
    assert r.swap.abs().max() <= 1


def test_f_up_reaches_the_output_side_from_a_quarter_of_the_face_networks():
    # 256: the face network at 256, F_up 4x; the paper's 512: the same face network, F_up 8x (a third up-sampling
    # res-block); the whole network at 512 (the other reading): F_up 4x from 128 with one more refine block
    for side, face, refine, ups in ((64, None, 1, 2), (128, 64, 1, 3), (512, 512, 2, 2)):
        g = HifiFaceGenerator(side, face_resolution=face, base_channels=4, max_channels=8, refine_blocks=refine)
        assert len(g.sff.upsampler) == ups + refine
        assert sum(block.resample == "up" for block in g.sff.upsampler) == ups
        r = g(torch.rand(1, 3, side, side) * 2 - 1, torch.zeros(1, g.style_dim))
        low = (face or side) // 4
        assert r.swap.shape == (1, 3, side, side) and r.mask.shape == (1, 1, side, side)
        assert r.low.shape == (1, 3, low, low) and r.mask_low.shape == (1, 1, low, low)
    with pytest.raises(ValueError, match="face_resolution must be a power of two in"):
        HifiFaceGenerator(64, face_resolution=128)


def test_paper_512_is_the_256_network_with_an_up_sampling_block_in_f_up():
    with torch.device("meta"):
        paper = [HifiFaceGenerator(side, face_resolution=256, base_channels=64, max_channels=512) for side in (256, 512)]
    g256, g512 = ({n: p.shape for n, p in g.named_parameters()} for g in paper)
    assert {n: s for n, s in g512.items() if not n.startswith("sff.upsampler.") and n != "sff.to_out.weight"} == \
        {n: s for n, s in g256.items() if not n.startswith("sff.upsampler.") and n != "sff.to_out.weight"}
    assert [b.conv1.out_channels for b in paper[1].sff.upsampler] == [64, 16, 8, 8]  # 3 up-samplings + 1 refine
    assert sum(p.numel() for p in paper[1].parameters()) == 55_358_589


def test_mask_forced_to_zero_returns_the_target_exactly():
    g = HifiFaceGenerator(64, base_channels=8, max_channels=32)
    with torch.no_grad():  # M_r = sigmoid(-1e4) == 0 exactly in float32
        g.sff.to_out.weight[3].zero_()
        g.sff.to_out.bias[3] = -1e4
    target = torch.rand(2, 3, 64, 64) * 2 - 1
    r = g(target, torch.randn(2, g.style_dim))
    assert (r.mask == 0).all()
    assert torch.equal(r.swap, target)


# ---- 3D shape-aware identity ---------------------------------------------------------------------


class CoefficientStub(nn.Module):
    """Coefficient vector = top-left pixel value + (0, 1, ..., 256): known per image."""

    def forward(self, images: torch.Tensor) -> FaceCoefficients:
        return FaceCoefficients.from_vector(images[:, 0, 0, :1] + torch.arange(257.0))


class IdentityStub(nn.Module):
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(images.flatten(1)[:, :8] + torch.arange(8.0), dim=-1)


def test_c_fuse_takes_identity_from_source_and_the_rest_from_target():
    c_s, c_t = 1000 + torch.arange(257.0).expand(2, -1), -torch.arange(257.0).expand(2, -1)
    fused = FaceCoefficients.from_vector(fuse_coefficients(c_s, c_t))
    source, target = FaceCoefficients.from_vector(c_s), FaceCoefficients.from_vector(c_t)
    assert torch.equal(fused.id, source.id)
    for name in ("exp", "tex", "angle", "gamma", "trans"):
        assert torch.equal(getattr(fused, name), getattr(target, name)), name

    experts = Experts(face3d=CoefficientStub(), identity=IdentityStub())
    source_img, target_img = torch.full((2, 3, 8, 8), 1000.0), torch.zeros(2, 3, 8, 8)
    sid = shape_aware_identity(experts, source_img, target_img)
    assert sid.v_sid.shape == (2, 257 + 8)
    assert torch.equal(sid.v_sid[:, :80], 1000 + torch.arange(80.0).expand(2, -1))
    assert torch.equal(sid.v_sid[:, 80:257], torch.arange(80.0, 257.0).expand(2, -1))
    assert torch.equal(sid.v_sid[:, 257:], IdentityStub()(source_img))


# ---- losses and training -------------------------------------------------------------------------


def test_every_term_logged_finite_and_total_is_the_weighted_sum(tmp_path):
    model, batch = tiny_model(tmp_path)
    batch["same"] = torch.tensor([True, False])
    assert model.g_loss.weights | model.d_loss.weights == {**PAPER_WEIGHTS, "real": 1.0, "fake": 1.0}
    out = model.generate(batch["source"], batch["target"], model.generator)
    terms = model.generator_losses(batch, out)
    total, logs = model.g_loss(terms)
    assert set(logs) == {"adv", "shape", "id", "rec", "cyc", "lpips", "seg", "total"}
    assert all(torch.isfinite(v) for v in logs.values())
    expected = sum(PAPER_WEIGHTS[k] * terms[k] for k in terms)
    torch.testing.assert_close(total, expected)
    d_total, d_logs = model.d_loss(model.discriminator_losses(batch, out.detach()))
    assert set(d_logs) == {"real", "fake", "gp", "total"} and all(torch.isfinite(v) for v in d_logs.values())
    torch.testing.assert_close(d_total, d_logs["real"] + d_logs["fake"] + d_logs["gp"])
    assert d_logs["gp"] > 0


def test_overfitting_same_pairs_cuts_reconstruction_3x_and_cycle_returns(tmp_path):
    # 3x, not more: M_tar is the rendered face (the batch's target_mask), so the face is regenerated, not passed
    # through a near-empty blend mask as it was when a random parser supplied M_tar.
    model, batch = tiny_model(tmp_path)
    assert batch["same"].all()
    source, target = batch["source"], batch["target"]

    def cycle_error() -> float:
        with torch.no_grad():
            swap = model(source, target).swap
            return (model(target, swap).swap - target).abs().mean().item()

    model.eval()
    before = cycle_error()
    history = fit_on_batches(model, [batch], steps=120)
    rec = [h["train/g/rec"] for h in history]
    first, last = rec[0], sum(rec[-3:]) / 3
    assert len(rec) == 120 and first / last >= 3, f"reconstruction only went from {first:.4f} to {last:.4f}"
    model.eval()
    after = cycle_error()
    assert after < before / 2, f"cycle error {before:.4f} -> {after:.4f}"


def test_seg_target_is_the_batch_face_mask_when_the_data_has_one(tmp_path):
    model, batch = tiny_model(tmp_path, "model.mask_dilation=0")
    target = batch["target"]
    assert torch.equal(model.target_mask(target, batch)[:, 0], (batch["target_mask"] == 1).to(target.dtype))
    parsed = model.experts.parsing.masks(target, hard=True)["face"].to(target.dtype)
    assert torch.equal(model.target_mask(target), parsed)  # no labels: the parsing expert
    assert torch.equal(model.target_mask(target.clone(), batch), parsed)  # labels of another tensor: not used


def test_shape_loss_step_changes_generator_but_not_3dmm_or_arcface(tmp_path):
    only_shape = [f"model.loss_weights.{k}=0" for k in PAPER_WEIGHTS if k not in ("shape", "gp")]
    model, batch = tiny_model(tmp_path, *only_shape)
    face3d, identity = model.experts.face3d, model.experts.identity
    frozen = {name: copy.deepcopy(e.net.state_dict()) for name, e in (("face3d", face3d), ("identity", identity))}
    bfm = copy.deepcopy(dict(face3d.bfm.named_buffers()))

    out = model.generate(batch["source"], batch["target"], model.generator)
    model.generator_losses(batch, out)["shape"].backward()
    grads = [p.grad for p in model.generator.parameters() if p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads), "the shape loss does not reach the generator"
    assert all(p.grad is None for e in (face3d, identity) for p in e.net.parameters())
    model.generator.zero_grad(set_to_none=True)

    before = copy.deepcopy(model.generator.state_dict())
    history = fit_on_batches(model, [batch], steps=1)
    assert history[0]["train/g/total"] == pytest.approx(0.5 * history[0]["train/g/shape"], rel=1e-5)
    after = model.generator.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before), "the generator did not change"
    for name, expert in (("face3d", face3d), ("identity", identity)):
        assert not expert.net.training
        for key, value in expert.net.state_dict().items():
            assert torch.equal(value, frozen[name][key]), f"{name} {key} changed"
    for key, value in face3d.bfm.named_buffers():
        assert torch.equal(value, bfm[key]), f"BFM {key} changed"
