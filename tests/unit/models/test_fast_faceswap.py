"""Fast Face-swap: network size, the same-location patch style loss, content / light losses, alignment,
generator-only training toward a synthetic identity with the pose kept, checkpoints, paste-back, configs."""

from __future__ import annotations

from pathlib import Path

import cv2
import hydra
import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from helpers import compose_config
from test_configs import instantiate_everything
from torch.utils.data import DataLoader

from swaplab.data.lighting_pairs import SyntheticLightingPairs
from swaplab.data.style_sets import SyntheticStyleSet, frontal_reference, synthetic_content
from swaplab.experts import DlibLandmarks, Experts, VGGFeatures
from swaplab.experts.lighting import LightingFeatures
from swaplab.faces.crop import crop_box
from swaplab.imaging import to_uint8
from swaplab.losses.style import (
    channel_scales,
    content_loss,
    neural_patches,
    patch_style_loss,
    total_variation,
)
from swaplab.models.base import SwapOutput
from swaplab.models.fast_faceswap import FastFaceSwap, TransformationNet, clone_face_back
from swaplab.models.lighting import LightingNetModule
from swaplab.models.lighting.export import export_lighting_net
from swaplab.nets.lighting import LightingNet, to_grayscale

WEIGHTS = {"content": 1.0, "style": 120.0, "light": 1.0, "tv": 0.3}
SMALL_NET = {"branch_channels": 8, "join_channels": (16, 16, 16)}


pytestmark = pytest.mark.usefixtures("single_thread")


def small_experts(lighting: LightingFeatures | None = None) -> Experts:
    vgg = VGGFeatures.build(weights="random", widths=(8, 16, 32, 32, 32))
    return Experts(perceptual=vgg, lighting=lighting or LightingFeatures.build(weights="random", input_size=32))


def small_model(resolution: int = 32, style_images: int = 12, n_best: int = 4, lr: float = 3e-3,
                experts: Experts | None = None, **kwargs) -> FastFaceSwap:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = TransformationNet(resolution, **SMALL_NET)
    return FastFaceSwap(net, SyntheticStyleSet(identity=4242, num_images=style_images, resolution=resolution),
                        n_best=n_best, content_layers=("relu3_1",), style_layers=("relu2_1", "relu3_1"),
                        experts=experts or small_experts(), loss_weights=kwargs.pop("loss_weights", WEIGHTS),
                        optimizer_g=lambda p: torch.optim.Adam(p, lr=lr), **kwargs)


# ---- network ---------------------------------------------------------------------------------------


def test_transformation_net_has_about_1m_parameters_at_128_and_a_branch_per_doubling():
    counts = {r: sum(p.numel() for p in TransformationNet(r).parameters()) for r in (64, 128, 256)}
    print(f"TransformationNet parameters: {counts}")
    assert 0.8e6 <= counts[128] <= 1.2e6  # paper: "1M parameters" at 128x128
    assert len(TransformationNet(128).branches) == 5 and len(TransformationNet(256).branches) == 6
    assert counts[64] < counts[128] < counts[256]
    net = TransformationNet(32, **SMALL_NET)
    out = net(torch.rand(2, 3, 32, 32) * 2 - 1)
    assert out.shape == (2, 3, 32, 32) and out.abs().max() <= 1
    with pytest.raises(ValueError, match="8 \\* 2\\*\\*k"):
        TransformationNet(48)


# ---- losses ----------------------------------------------------------------------------------------


def cosine_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    return 1.0 - float((a.flatten() @ b.flatten()) / (a.norm() * b.norm()))


def test_style_loss_takes_the_nearest_patch_at_the_same_location_only():
    torch.manual_seed(0)
    generated = torch.randn(1, 2, 3, 4)  # 3x3 patches at two locations (columns 0 and 1)
    far = torch.randn(1, 2, 3, 4)
    near = generated + 0.3 * torch.randn(1, 2, 3, 4)  # close to the generated maps at both locations
    elsewhere = far.clone()
    elsewhere[..., 1:] = generated[..., :3]  # location 1 of this style map = the generated patch at location 0
    excluded = generated.clone()  # a perfect match, but not among the candidates
    style = torch.cat([far, elsewhere, near, excluded])
    bank = neural_patches(style)
    assert bank.shape == (4, 2 * 9, 2)
    # Candidates 0 and 1 only: the exact copy of location 0 sitting at location 1 of style 1 must be ignored.
    loss = patch_style_loss(neural_patches(generated), bank, torch.tensor([[0, 1]]))
    g = [generated[0, :, :, i : i + 3] for i in range(2)]
    by_hand = [min(cosine_distance(g[i], s[0, :, :, i : i + 3]) for s in (far, elsewhere)) for i in range(2)]
    assert loss.item() == pytest.approx(sum(by_hand) / 2, abs=1e-5)
    assert loss.item() > 0.2  # no perfect match found although one exists elsewhere in style image 1
    with_near = patch_style_loss(neural_patches(generated), bank, torch.tensor([[0, 1, 2]]))
    by_hand = [min(cosine_distance(g[i], s[0, :, :, i : i + 3]) for s in (far, elsewhere, near)) for i in range(2)]
    assert with_near.item() == pytest.approx(sum(by_hand) / 2, abs=1e-5)
    assert with_near.item() < loss.item()
    # Per-sample candidate sets in one batch; the excluded perfect match is never used.
    both = patch_style_loss(neural_patches(generated.repeat(2, 1, 1, 1)), bank, torch.tensor([[0, 1], [2, 0]]))
    assert both.item() == pytest.approx((loss.item() + with_near.item()) / 2, abs=1e-5)
    perfect = patch_style_loss(neural_patches(generated), bank, torch.tensor([[3, 0]]))
    assert perfect.item() == pytest.approx(0.0, abs=1e-6)


def test_style_loss_is_zero_on_a_style_image_and_content_loss_zero_on_the_input():
    model = small_model(n_best=12)  # every style image is a candidate
    content = synthetic_content(32, num_identities=8, images_per_identity=1).__getitems__(list(range(4)))
    bank = model.style_features()
    style_image = bank.images[5:9]
    on_style = model.generator_losses(content, SwapOutput(style_image))
    on_input = model.generator_losses(content, SwapOutput(content["target"]))
    assert on_style["style"].item() == pytest.approx(0.0, abs=1e-5)
    assert on_input["content"].item() == 0.0 and on_input["light"].item() == 0.0
    assert on_input["style"].item() > 0.05 and on_style["content"].item() > 0.0
    flat = torch.zeros(1, 3, 8, 8)
    assert total_variation(flat).item() == 0.0 and total_variation(torch.rand(1, 3, 8, 8)).item() > 0
    assert content_loss([torch.ones(2, 3)], [torch.zeros(2, 3)]).item() == 1.0


def test_tv_is_the_papers_sum_and_content_its_mean_squared_difference_on_known_tensors():
    image = torch.tensor([[0.0, 1.0, 3.0], [2.0, 2.0, 2.0]])[None, None]  # 1 x 1 x 2 x 3
    # eq. 7: horizontal (1-0)^2 + (3-1)^2 + 0 + 0 = 5, vertical (2-0)^2 + (2-1)^2 + (2-3)^2 = 6
    assert total_variation(image, "sum").item() == 11.0
    assert total_variation(torch.cat([image, 2 * image]), "sum").item() == (11.0 + 44.0) / 2  # per image, batch mean
    assert total_variation(image, "mean").item() == 5 / 4 + 6 / 3
    with pytest.raises(ValueError, match="reduction"):
        total_variation(image, "none")
    # eq. 1: 1/|Phi| ||Phi(x_hat) - Phi(x)||^2, summed over layers
    features = torch.tensor([[1.0, 2.0], [3.0, 4.0]])[None, None]
    assert content_loss([features], [torch.zeros_like(features)]).item() == 30 / 4
    assert content_loss([features, 2 * features], [0 * features, features]).item() == 30 / 4 + 30 / 4
    # the model's TV on the paper's scale: the sum over the image in [0, 1]; a +-1 checkerboard differs by 1
    # there at each of the 3 x (32 x 31 + 31 x 32) neighbour pairs
    checkerboard = ((torch.arange(32)[:, None] + torch.arange(32)) % 2 * 2.0 - 1).expand(1, 3, 32, 32)
    content = synthetic_content(32, num_identities=2, images_per_identity=1).__getitems__([0])
    paper = small_model().generator_losses(content, SwapOutput(checkerboard))
    mean = small_model(loss_normalisation="mean").generator_losses(content, SwapOutput(checkerboard))
    assert paper["tv"].item() == 3 * 2 * 32 * 31 and mean["tv"].item() == 8.0  # mean: (+-2)^2 both ways


def test_channel_scales_are_gatys_normalisation_and_make_the_losses_blind_to_a_filters_scale():
    maps = torch.stack([torch.full((4, 4), 2.0), torch.tensor([0.0, 4.0]).repeat(8).view(4, 4),
                        torch.full((4, 4), 1e-6)])[None].repeat(2, 1, 1, 1)  # 2 x 3 x 4 x 4
    scales = channel_scales(maps)
    assert torch.allclose(scales, torch.tensor([2.0, 2.0, 0.05 * 2.0]))  # mean activation, floored at the median
    assert torch.allclose((maps / scales[:, None, None]).mean((0, 2, 3))[:2], torch.ones(2))
    assert torch.equal(channel_scales(torch.zeros(1, 2, 3, 3)), torch.ones(2))
    # Gatys et al.'s normalised VGG: each filter rescaled to a mean activation of 1. Scaling one filter of the
    # VGG (conv3_1 -> relu3_1, used by the content and style losses here) must then change nothing; on raw
    # maps ("mean") it changes the content term.
    content = synthetic_content(32, num_identities=4, images_per_identity=1).__getitems__([0, 1])
    swap = content["target"].flip(-1)
    bank = small_model().style_features()
    channel = int(bank.scales["relu3_1"].argmax())  # scaled up, it stays above the median (the floor's basis)

    def losses(normalisation: str, factor: float) -> dict[str, float]:
        experts = small_experts()
        conv = experts.perceptual.net.features[experts.perceptual.layer_indices(["relu3_1"])[0] - 1]
        with torch.no_grad():
            conv.weight[channel] *= factor
            conv.bias[channel] *= factor
        # every style image a candidate: the selection layer lies after the scaled filter
        model = small_model(n_best=12, experts=experts, loss_normalisation=normalisation)
        return {k: float(v) for k, v in model.generator_losses(content, SwapOutput(swap)).items()}

    paper, paper_scaled = losses("paper", 1.0), losses("paper", 30.0)
    mean, mean_scaled = losses("mean", 1.0), losses("mean", 30.0)
    assert paper["content"] == pytest.approx(paper_scaled["content"], rel=1e-4)
    assert paper["style"] == pytest.approx(paper_scaled["style"], rel=1e-4)
    assert mean_scaled["content"] > 2 * mean["content"]
    with pytest.raises(ValueError, match="loss_normalisation"):
        small_model(loss_normalisation="sum")


def test_n_best_are_the_style_images_nearest_in_the_selection_layer():
    model = small_model(n_best=3)
    bank = model.style_features()
    queries = bank.images[[2, 7]]
    (selection,) = model.experts.perceptual(queries, [model.selection_layer])
    picked = bank.nearest(selection, 3)
    assert picked.shape == (2, 3) and picked[:, 0].tolist() == [2, 7]  # each image is its own nearest
    distances = torch.cdist(selection.flatten(1), bank.selection)
    assert torch.equal(picked, distances.argsort(1)[:, :3])


@pytest.fixture(scope="module")
def lighting_fit(tmp_path_factory):
    """A small lighting net (32 px) fitted for 100 steps on procedural same / different light pairs, exported
    with the box of its training faces, and held-out pairs."""
    def pairs(n: int, offset: int) -> dict[str, torch.Tensor]:
        ds = SyntheticLightingPairs(resolution=32, num_identities=n, images_per_identity=1, identity_offset=offset,
                                    supersample=1)
        return ds.__getitems__(list(range(n)))

    train, held_out = pairs(256, 0), pairs(128, 10**6)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = LightingNet(input_size=32, widths=(8, 16, 32), fc_dims=(64, 32))
    module = LightingNetModule(net, optimizer=lambda p: torch.optim.Adam(p, lr=1e-3), margin=1.0)
    loader = DataLoader([{k: v[i : i + 32] for k, v in train.items()} for i in range(0, 256, 32)], batch_size=None)
    tmp_path = tmp_path_factory.mktemp("lighting")
    trainer = pl.Trainer(max_steps=100, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(module, train_dataloaders=loader)
    trainer.save_checkpoint(tmp_path / "last.ckpt")
    export_lighting_net(tmp_path / "last.ckpt", tmp_path / "lighting_net.pth")
    return {"net": net.eval(), "held_out": held_out, "file": tmp_path / "lighting_net.pth"}


def test_light_loss_separates_same_from_different_light_after_a_short_lighting_fit(lighting_fit):
    expert = LightingFeatures(lighting_fit["net"])
    held_out = lighting_fit["held_out"]
    same = held_out["same"]

    def light(selection: torch.Tensor) -> float:
        return expert.loss(held_out["image1"][selection], held_out["image2"][selection]).item()

    same_light, different_light = light(same), light(~same)
    print(f"light loss: same light {same_light:.4f}, different light {different_light:.4f}")
    assert 20 < int(same.sum()) < 108
    assert same_light < 0.5 * different_light
    # eq. 6 by hand: 1/|Gamma| ||Gamma(x_hat) - Gamma(x)||^2, batch mean
    a, b = held_out["image1"][:4], held_out["image2"][:4]
    with torch.no_grad():
        by_hand = (lighting_fit["net"](a) - lighting_fit["net"](b)).square().sum(1).mean() / 32
    assert expert.loss(a, b).item() == pytest.approx(by_hand.item(), rel=1e-5)


def test_the_light_expert_cuts_the_box_its_net_was_trained_on(tmp_path):
    box = (0.2, 0.25, 0.8, 0.85)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = LightingNet(input_size=16, widths=(4, 8), fc_dims=(8, 4))
    module = LightingNetModule(net, optimizer=torch.optim.Adam, input_box=box)
    torch.save({"state_dict": module.state_dict()}, tmp_path / "last.ckpt")
    export_lighting_net(tmp_path / "last.ckpt", tmp_path / "lighting_net.pth")
    expert = LightingFeatures.build(weights="pretrained", path=str(tmp_path / "lighting_net.pth"))
    assert expert.crop == pytest.approx(box)
    faces = torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        assert torch.allclose(expert(faces), net.eval()(crop_box(to_grayscale(faces), box, 16)), atol=1e-6)
    with pytest.raises(ValueError, match="trained on faces in the box"):
        LightingFeatures.build(weights="pretrained", path=str(tmp_path / "lighting_net.pth"), crop=[0.0, 1.0])
    assert LightingFeatures.build(weights="pretrained", path=str(tmp_path / "lighting_net.pth"),
                                  crop=list(box)).crop == pytest.approx(box)
    paper = compose_config("train", tmp_path, ["experiment=lighting_net_paper"]).model.input_box
    offline = compose_config("train", tmp_path, ["experiment=lighting_net"]).model.input_box
    assert list(offline) == [0.0, 1.0] and 0.1 < paper[0] < paper[2] < 0.9  # Yale's tight crops / canonical


def test_every_weighted_term_has_a_share_at_the_start_on_the_papers_scale(lighting_fit):
    """conf/model/fast_faceswap.yaml's weights on the paper's loss scale, at initialisation: no term is dead
    (on the mean scale the paper's beta = 1e-22 gave light a share of ~1e-31 and TV ~1e-5)."""
    from omegaconf import OmegaConf

    weights = dict(OmegaConf.load(Path(__file__).parents[3] / "conf" / "model" / "fast_faceswap.yaml").loss_weights)
    lighting = LightingFeatures.build(weights="pretrained", path=str(lighting_fit["file"]))
    model = small_model(experts=small_experts(lighting), loss_weights=weights)
    content = synthetic_content(32, num_identities=8, images_per_identity=1).__getitems__(list(range(8)))
    with torch.no_grad():
        out = model.generate(content["source"], content["target"], model.generator)
        _, logs = model.g_loss(model.generator_losses(content, out))
    shares = {k.removeprefix("share_"): float(v) for k, v in logs.items() if k.startswith("share_")}
    print(f"shares at the start: {shares}")
    assert set(shares) == {"content", "style", "light", "tv"}
    assert min(shares.values()) > 1e-2  # measured: content 0.063, style 0.76, light 0.045, tv 0.14


# ---- alignment and data ----------------------------------------------------------------------------


def test_content_and_style_faces_are_aligned_to_the_frontal_reference():
    raw = synthetic_content(64, num_identities=6, images_per_identity=2).dataset.__getitems__(list(range(8)))
    aligned = synthetic_content(64, num_identities=6, images_per_identity=2).__getitems__(list(range(8)))
    style = SyntheticStyleSet(identity=3, num_images=8, resolution=64).render()
    reference = torch.from_numpy(frontal_reference(64)).float()

    def spread(points: torch.Tensor) -> float:  # mean distance of the landmarks to the reference, in pixels
        return float((points - reference).norm(dim=-1).mean())

    print(f"landmarks to the reference: raw {spread(raw['target_landmarks']):.2f} px, aligned "
          f"{spread(aligned['target_landmarks']):.2f} px, style {spread(style['landmarks']):.2f} px")
    assert spread(aligned["target_landmarks"]) < 2.0 and spread(style["landmarks"]) < 2.0  # 64 px crops
    assert spread(raw["target_landmarks"]) > 2 * spread(aligned["target_landmarks"])
    assert aligned["target"].shape == (8, 3, 64, 64) and set(aligned["target_mask"].unique().tolist()) <= {0, 1, 2}


# ---- training toward a synthetic identity ----------------------------------------------------------


def region_colours(images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """B x 6 mean RGB of the skin (class 1) and hair (class 2) regions of the ground-truth mask."""
    regions = [(mask == c).to(images.dtype)[:, None] for c in (1, 2)]
    return torch.cat([(images * m).sum((2, 3)) / m.sum((2, 3)).clamp_min(1) for m in regions], 1)


def dlib_landmarks(images: torch.Tensor) -> np.ndarray:
    detector, side = DlibLandmarks.build(points=68), images.shape[-1]
    box = np.array([[0.2, 0.3, 0.8, 0.95]]) * side
    return np.stack([detector(np.ascontiguousarray(im), box)[0] for im in to_uint8(images).numpy()])


@pytest.fixture(scope="module")
def trained():
    """A small network trained for 150 steps (32 px) toward procedural identity 4242 on 32 aligned faces."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    model = small_model(32, style_images=16, n_best=4, lr=1e-2, loss_normalisation="mean",  # weights tuned on it
                        loss_weights={"content": 1.0, "style": 20.0, "light": 1.0, "tv": 1.0})
    pool = synthetic_content(32, num_identities=32, images_per_identity=1).__getitems__(list(range(32)))
    held_out = synthetic_content(32, num_identities=16, images_per_identity=1,
                                 identity_offset=10**6).__getitems__(list(range(16)))
    model.eval()
    with torch.no_grad():
        before = model(held_out["source"], held_out["target"]).swap
    losses: list[dict[str, float]] = []

    class Record(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            losses.append({k: float(v) for k, v in trainer.callback_metrics.items()})

    trainer = pl.Trainer(max_steps=150, accelerator="cpu", logger=False, enable_checkpointing=False, log_every_n_steps=1,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[Record()])
    batches = [{k: v[i : i + 8] for k, v in pool.items()} for i in range(0, 32, 8)]
    torch.manual_seed(0)
    trainer.fit(model, train_dataloaders=DataLoader(batches, batch_size=None))
    model.eval()
    with torch.no_grad():
        after = model(held_out["source"], held_out["target"]).swap
    torch.set_num_threads(threads)
    return {"model": model, "trainer": trainer, "losses": losses, "held_out": held_out, "before": before,
            "after": after}


@pytest.mark.slow
def test_training_moves_outputs_toward_the_style_identity_and_keeps_the_landmarks(trained):
    held_out, model, losses = trained["held_out"], trained["model"], trained["losses"]
    assert model.discriminator is None and model.d_loss is None and len(trained["trainer"].optimizers) == 1
    assert len(losses) == 150 and "train/d/total" not in losses[-1]
    style_start = np.mean([s["train/g/style"] for s in losses[:5]])
    style_end = np.mean([s["train/g/style"] for s in losses[-10:]])
    # Identity measure: the procedural identity is its skin / hair / iris colours and head shape; the shape is
    # not observable in an image without a detector that works on these faces, and the random identity experts
    # of the tests carry no identity. So: mean skin and hair colour inside the input's ground-truth regions
    # (the pose is kept, so the regions stay), against the same statistics of the style set.
    style = model.style_set.render()
    reference = region_colours(style["image"], style["mask"]).mean(0)

    def identity_distance(images: torch.Tensor) -> float:
        return float((region_colours(images, held_out["target_mask"]) - reference).norm(dim=1).mean())

    before, after = identity_distance(trained["before"]), identity_distance(trained["after"])
    # Pose: dlib's 68 points on the outputs against the inputs' ground-truth landmarks (through alignment).
    # dlib is only roughly right on 32 px procedural faces (its own error on the inputs is ~4.5% of the side),
    # so the stated bound is: no more than 2.5% of the side worse than dlib on the inputs themselves.
    truth = held_out["target_landmarks"].numpy()

    def landmark_error(images: torch.Tensor) -> float:
        return float(np.linalg.norm(dlib_landmarks(images) - truth, axis=-1).mean() / images.shape[-1])

    on_inputs, on_outputs = landmark_error(held_out["target"]), landmark_error(trained["after"])
    print(f"style loss {style_start:.3f} -> {style_end:.3f}; identity distance {before:.3f} -> {after:.3f} "
          f"(input faces: {identity_distance(held_out['target']):.3f}); landmark error on outputs "
          f"{on_outputs:.4f} vs on inputs {on_inputs:.4f}")
    assert style_end < 0.8 * style_start
    assert after < 0.9 * before  # measured 0.81-0.66 of the start (the input faces themselves: ~0.43)
    assert on_outputs < on_inputs + 0.025


def test_checkpoint_restores_the_style_set_without_it(trained):
    model = trained["model"]
    with torch.random.fork_rng():
        fresh = FastFaceSwap(TransformationNet(32, **SMALL_NET), style_set=None, n_best=4,
                             content_layers=("relu3_1",), style_layers=("relu2_1", "relu3_1"),
                             experts=model.experts, loss_weights=WEIGHTS, optimizer_g=torch.optim.Adam)
    with pytest.raises(ValueError, match="no style images"):
        fresh.style_features()
    fresh.load_state_dict(model.state_dict(), strict=True)
    fresh.eval()
    target = trained["held_out"]["target"][:2]
    assert torch.equal(fresh.style_bank.images, model.style_bank.images) and len(fresh.style_bank) == 16
    assert torch.allclose(fresh(target, target).swap, model(target, target).swap)
    assert torch.allclose(fresh(torch.zeros_like(target), target).swap, fresh(target, target).swap)  # no source
    assert fresh.style_features() is fresh.style_bank


def test_paste_back_keeps_the_background_and_hair_of_the_input():
    from swaplab.experts import FaceParser

    parsing = FaceParser.build(weights="random", input_size=32)
    experts = small_experts()
    experts.parsing = parsing
    model = small_model(experts=experts, paste_back=True).eval()
    content = synthetic_content(32, num_identities=4, images_per_identity=1).__getitems__([0, 1])
    out = model(content["source"], content["target"])
    mask = out.extras["mask"]
    assert out.swap.shape == content["target"].shape and 0 < mask.mean() < 1
    assert torch.equal(out.swap[~mask.bool().expand_as(out.swap)], content["target"][~mask.bool().expand_as(out.swap)])
    blended, same_mask = clone_face_back(out.extras["raw"], content["target"], parsing)
    assert torch.equal(blended, out.swap) and torch.equal(same_mask, mask)
    with pytest.raises(ValueError, match="experts_extra"):
        small_model(paste_back=True)


# ---- configs -----------------------------------------------------------------------------------------


def write_faces(root: Path, count: int, identity: int = 0) -> None:
    """Procedural canonical crops as PNG files (a stand-in for a folder of one person's photos)."""
    root.mkdir(parents=True)
    faces = SyntheticStyleSet(identity, count, 64).faces(torch.full((count,), identity), torch.arange(count))
    for i, image in enumerate(to_uint8(faces["image"]).numpy()):
        cv2.imwrite(str(root / f"{i}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))


CONFIGS = {
    "model": ["model=fast_faceswap", "experts=random"],  # the default data=synthetic
    "synthetic": ["experiment=fast_faceswap_synthetic", "experts=random", "data.val.num_identities=4"],
    "paper": ["experiment=fast_faceswap_paper", "experts=random", "data.num_workers=0",
              "data.train.val_identities=2", "model.n_best=2"],
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_configs_compose_instantiate_and_take_a_step(name, tmp_path):
    write_faces(tmp_path / "data" / "style" / "target", 3, identity=7)
    write_faces(tmp_path / "data" / "celebahq", 6, identity=8)
    overrides = [*CONFIGS[name], "data.resolution=32", "data.batch_size=2", "data.num_workers=0",
                 f"paths.data_dir={tmp_path / 'data'}", "logger=none"]
    if name != "paper":
        overrides += ["data.train.num_identities=4", "data.train.images_per_identity=1", "model.style_set.num_images=4"]
    cfg = compose_config("train", tmp_path, overrides)
    objects = instantiate_everything(cfg)
    model, datamodule = objects["model"], objects["datamodule"]
    assert dict(model.g_loss.weights) == {**dict(cfg.model.loss_weights)} and model.discriminator is None
    batch = next(iter(datamodule.train_dataloader()))
    out = model.generate(batch["source"], batch["target"], model.generator)
    losses = model.generator_losses(batch, out)
    model.g_loss(losses)[0].backward()
    assert out.swap.shape == (2, 3, 32, 32) and all(torch.isfinite(v) for v in losses.values())
    assert model.generator.to_rgb.weight.grad is not None
    if name == "paper":
        assert model.paste_back and len(model.style_bank) == 3 and cfg.model.loss_weights.style == 120.0
        assert model(batch["source"], batch["target"]).swap.shape == (2, 3, 32, 32)


def test_content_pairs_never_decode_or_align_the_unused_source(tmp_path, monkeypatch):
    from swaplab.data.folders import FaceFolderPairs

    write_faces(tmp_path / "data" / "celebahq", 6, identity=8)
    decoded, fits = [], []
    read = FaceFolderPairs.read
    monkeypatch.setattr(FaceFolderPairs, "read", lambda self, crops: (decoded.extend(crops), read(self, crops))[1])
    for name in ("synthetic", "paper"):
        cfg = compose_config("train", tmp_path, [*CONFIGS[name], "data.resolution=32", "data.batch_size=2",
                                                 f"paths.data_dir={tmp_path / 'data'}"])
        wrapped = hydra.utils.instantiate(cfg.data, _convert_="all").train_set
        if name == "paper":  # dlib's 68 points on the procedural crops, counted per image
            wrapped._dlib = lambda image, box: (fits.append(1), frontal_reference(32)[None] + 0.3)[1]
        batch = wrapped.__getitems__([0, 1, 2])
        assert batch["same_image"].all() and torch.equal(batch["source"], batch["target"]), name
    assert len(decoded) == 3 and len(fits) == 3  # the three targets, once each


def test_a_distinct_source_is_aligned_and_a_same_image_one_reused():
    pairs = synthetic_content(32, num_identities=8, images_per_identity=2, same_identity_rate=0.5,
                              same_image_rate=0.5)
    batch = pairs.__getitems__(list(range(8)))
    same = batch["same_image"]
    assert 0 < int(same.sum()) < 8
    assert torch.equal(batch["source"][same], batch["target"][same])
    reference = torch.from_numpy(frontal_reference(32)).float()
    assert (batch["source_landmarks"][~same] - reference).abs().mean() < 0.02 * 32  # aligned by its own points
    assert not torch.equal(batch["source"][~same], batch["target"][~same])


def test_a_style_set_smaller_than_n_best_is_warned_about(caplog):
    small_model(style_images=4, n_best=4).style_features()
    assert "fewer than n_best" not in caplog.text
    small_model(style_images=3, n_best=4).style_features()
    assert "the style set has 3 images, fewer than n_best=4" in caplog.text
