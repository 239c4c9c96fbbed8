"""Behaviour of every method's swap on tiny random-init networks: what the swap depends on, through which path.

A miswired method fails these even though its shapes are right and its losses are finite:
  - the swap follows the SOURCE (FaceShifter, HEAR, HifiFace, FSGAN) and only through the path the paper
    defines (FaceShifter / HEAR: z_id of the source; HifiFace: the source's 3DMM identity + ArcFace with the
    target's expression and pose; FSGAN: the source reenacted by Gr); Fast Face-swap ignores the source;
  - the swap follows the TARGET (every method);
  - reconstruction terms count only the pairs they are defined on (value and gradient);
  - HEAR-Net's output is the refinement of the AEI swap by the heuristic error, and it is what is returned;
  - FSGAN's Gr renders the source under the target's landmarks, Gb changes its input.
Experts are swapped for stand-ins (`StandIn`, `CoefficientShift`) to feed a method two different images with
identical conditioning: an exact equality then shows what the method does NOT look at. Networks get BatchNorm
statistics of the batch (as trained ones have): with the initial (0, 1) ones the signal fades through a random
network and every swap looks alike.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace

import hydra
import pytest
import torch
from helpers import TINY, compose_config
from hydra.errors import InstantiationException
from omegaconf import OmegaConf
from torch import nn

from swaplab.experts import FaceCoefficients
from swaplab.models.base import SwapOutput
from swaplab.models.fsgan import FSGAN, interpolate_views, landmark_heatmaps
from swaplab.models.fsgan.generators import FACE
from swaplab.models.loading import build_model

pytestmark = pytest.mark.usefixtures("single_thread")

Batch = dict[str, torch.Tensor]
SIDE = 32
# Random-init tiny networks respond weakly to their conditioning (random experts embed two synthetic faces with
# cosine ~0.97-0.99): a swap that follows an input moves by 1e-3 - 1e-1 (mean |difference|, images in [-1, 1]);
# one that does not moves by exactly 0 (the same computation), asserted to EXACT.
CLEAR = 1e-4
EXACT = {"rtol": 0.0, "atol": 1e-6}

DIFFERENT_PEOPLE = ["data.train.same_identity_rate=0.0"]
# Synthetic pairs 1, 0, 3, 7 of this dataset: X_s = X_t, same person in another image, two different people
MIXED_PAIRS = ["data.train.same_identity_rate=0.5", "data.train.same_image_rate=0.5"]
MIXED_INDICES = [1, 0, 3, 7]

FACESHIFTER = [*TINY]
HEAR = [o for o in TINY if not o.startswith("model.")] + [
    "model=faceshifter_hear", "model.generator.widths=[8,16,32]", "model.allow_random_predecessors=true",
    "model.occlusion=null"]
HIFIFACE = [o for o in TINY if not o.startswith(("model.", "data.batch_size"))] + [
    "model=hififace", "model.generator.base_channels=8", "model.generator.max_channels=32",
    "model.discriminator.base_channels=8", "model.discriminator.max_channels=32",
    "experts.face3d.input_size=32", "experts.parsing.input_size=32"]
FSGAN_NETS = [f"model.generator.{net}.{key}={value}" for net in ("reenactment", "inpainting", "blending")
              for key, value in (("base_channels", 4), ("max_channels", 16), ("flat_blocks", "[1,0,1,1]"))]
FSGAN_TINY = [o for o in TINY if not o.startswith(("model.", "experts."))] + [
    "model=fsgan", "model.allow_random_predecessors=true", "experts.pose.input_size=32",
    "experts.parsing.input_size=32", "model.generator.segmentation.widths=[4,8,16]",
    "model.discriminator.base_channels=4", "model.discriminator.max_channels=8", *FSGAN_NETS]
FAST = [o for o in TINY if not o.startswith("model.")] + [
    "model=fast_faceswap", "model.generator.branch_channels=8", "model.generator.join_channels=[16,16]"]
FAST_PASTE_BACK = [*FAST, "model.paste_back=true", "experts_extra=[parsing]", "experts.parsing.input_size=32"]


# ---- building blocks ---------------------------------------------------------------------------------


def tiny(tmp_path: Path, overrides: list[str], data: list[str] = DIFFERENT_PEOPLE,
         indices: tuple[int, ...] = (0, 1, 2, 3), edit_cfg: Callable | None = None) -> tuple[nn.Module, Batch]:
    """A model from the real config (eval mode) and synthetic pairs `indices` of its training set."""
    cfg = compose_config("train", tmp_path, [*overrides, *data])
    if edit_cfg is not None:
        edit_cfg(cfg)
    model, _ = build_model(cfg)
    datamodule = hydra.utils.instantiate(cfg.data, _convert_="all")
    datamodule.setup("fit")
    return model.eval(), datamodule.train_set.__getitems__(list(indices))


def with_random_aei(tmp_path: Path) -> Callable:
    """HEAR's frozen AEI-Net: the tiny FaceShifter generator's config (random weights, the switch is on)."""
    aei = compose_config("train", tmp_path / "aei", FACESHIFTER).model.generator

    def edit(cfg) -> None:
        cfg.model.aei_generator = OmegaConf.to_container(aei, resolve=True)

    return edit


def pairs(batch: Batch, sources: list[int], targets: list[int]) -> Batch:
    """Pairs (batch source i, batch target j): source-side keys from rows `sources`, the rest from `targets`."""
    src, tgt = torch.tensor(sources), torch.tensor(targets)
    return {k: v[src] if k.startswith("source") else v[tgt] for k, v in batch.items() if torch.is_tensor(v)}


@torch.no_grad()
def swap(model: nn.Module, batch: Batch) -> torch.Tensor:
    """The inference swap of a batch of pairs (FSGAN: with the batch's ground-truth landmarks, poses, masks)."""
    if isinstance(model, FSGAN):
        return model.swap_path(batch["source"], batch["target"], model.inference_generator, batch).swap
    return model(batch["source"], batch["target"]).swap


def difference(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().mean())


@contextlib.contextmanager
def experts_replaced(model: nn.Module, **experts: nn.Module) -> Iterator[None]:
    """The model's experts of some roles replaced inside the block (pytest's monkeypatch deletes nn.Module
    children on undo)."""
    before = {role: getattr(model.experts, role) for role in experts}
    for role, expert in experts.items():
        setattr(model.experts, role, expert)
    try:
        yield
    finally:
        for role, expert in before.items():
            setattr(model.experts, role, expert)


class StandIn(nn.Module):
    """An expert that answers for `image` what the wrapped expert answers for `stand_in` (rows of its input
    equal to `image` are replaced before it sees them): the method gets `image`, its conditioning is
    `stand_in`'s."""

    def __init__(self, expert: nn.Module, image: torch.Tensor, stand_in: torch.Tensor) -> None:
        super().__init__()
        self.expert, self.image, self.stand_in = expert, image, stand_in

    def forward(self, images: torch.Tensor):
        rows = (images == self.image).flatten(1).all(1).view(-1, 1, 1, 1)
        return self.expert(torch.where(rows, self.stand_in, images))


class CoefficientShift(nn.Module):
    """The 3DMM expert with `delta` added to coefficients `part` (a FaceCoefficients field) of the rows equal to
    `image`."""

    def __init__(self, expert: nn.Module, image: torch.Tensor, part: str, delta: float = 1.0) -> None:
        super().__init__()
        self.expert, self.image, self.part, self.delta = expert, image, part, delta

    def forward(self, images: torch.Tensor) -> FaceCoefficients:
        coeffs = self.expert(images)
        rows = (images == self.image).flatten(1).all(1).view(-1, 1)
        shifted = getattr(coeffs, self.part) + self.delta * rows.to(coeffs.id.dtype)
        return FaceCoefficients(**{**vars(coeffs), self.part: shifted})


def row_gradients(model: nn.Module, batch: Batch, term: str, names: tuple[str, ...] = ("swap",)
                  ) -> tuple[torch.Tensor, list[torch.Tensor], SwapOutput]:
    """The generator loss `term` of the model's own swap of `batch` and its gradients with respect to the output
    tensors `names` ("swap" or an extras key), as leaves."""
    out = model.generate_batch(batch, model.generator)
    leaves = {n: output(out, n).detach().requires_grad_(True) for n in names}
    leaf_out = with_outputs(out, leaves)
    value = model.generator_losses(batch, leaf_out)[term]
    grads = torch.autograd.grad(value, list(leaves.values()), allow_unused=True)
    grads = [torch.zeros_like(leaves[n]) if g is None else g for n, g in zip(names, grads, strict=True)]
    return value, grads, leaf_out


def output(out: SwapOutput, name: str) -> torch.Tensor:
    return out.swap if name == "swap" else out.extras[name]


def with_outputs(out: SwapOutput, tensors: dict[str, torch.Tensor]) -> SwapOutput:
    """`out` with the swap and / or extras of `tensors` replaced."""
    extras = {**out.extras, **{n: v for n, v in tensors.items() if n != "swap"}}
    return SwapOutput(tensors.get("swap", out.swap), extras)


def per_row(grad: torch.Tensor) -> torch.Tensor:
    return grad.abs().flatten(1).amax(1)


def batchnorm_statistics_of(net: nn.Module, run: Callable[[], object]) -> None:
    """Every BatchNorm's running statistics set to those of the activations in `run()` (nothing else)."""
    norms = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average: one pass gives the batch's statistics
        m.train()
    run()
    for m, momentum in zip(norms, momenta, strict=True):
        m.momentum = momentum
        m.eval()


class TruthParser(nn.Module):
    """A face parser that knows the synthetic ground-truth labels of some images (the batch's)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        super().__init__()
        self.images, self.labels = images, labels

    def masks(self, images: torch.Tensor, hard: bool = False) -> dict[str, torch.Tensor]:
        known = (images[:, None] == self.images[None]).flatten(2).all(2)  # B x N
        assert known.any(1).all(), "an image without ground truth"
        return {"face": (self.labels[known.float().argmax(1)] == FACE).unsqueeze(1).to(images.dtype)}


# ---- the methods, tiny ------------------------------------------------------------------------------------


def build_faceshifter(tmp_path: Path):
    model, batch = tiny(tmp_path, FACESHIFTER)
    batchnorm_statistics_of(model.generator, lambda: swap(model, batch))
    return model, batch


def build_hear(tmp_path: Path):
    model, batch = tiny(tmp_path, HEAR, edit_cfg=with_random_aei(tmp_path))
    with torch.random.fork_rng():  # a HEAR-Net that has trained a little: its zero-initialized head moved
        torch.manual_seed(1)
        nn.init.normal_(model.generator.unet.head.weight, std=0.1)
    batchnorm_statistics_of(nn.ModuleList([model.aei, model.generator]), lambda: swap(model, batch))
    return model, batch


def build_hififace(tmp_path: Path):
    return tiny(tmp_path, HIFIFACE)


def build_fsgan(tmp_path: Path, stage: str = "blending"):
    model, batch = tiny(tmp_path, [*FSGAN_TINY, f"model.stage={stage}"])
    with torch.no_grad():  # a random Gs labels everything background: the reenacted face would never be used
        model.generator.segmentation.head.bias[FACE] += 20.0  # this one labels every pixel face
    # (with the initial BatchNorm statistics the swap moves by ~1e-5 with the source, after Gr, Gc and Gb)
    batchnorm_statistics_of(model.generator, lambda: swap(model, batch))
    return model, batch


def build_fast(tmp_path: Path):
    model, batch = tiny(tmp_path, FAST)
    batchnorm_statistics_of(model.generator, lambda: swap(model, batch))
    return model, batch


def build_fast_paste_back(tmp_path: Path):
    model, batch = tiny(tmp_path, FAST_PASTE_BACK)
    # a random parser finds no face: paste-back would return the target untouched whatever the network does
    model.experts.parsing = TruthParser(torch.cat([batch["source"], batch["target"]]),
                                        torch.cat([batch["source_mask"], batch["target_mask"]]))
    batchnorm_statistics_of(model.generator, lambda: swap(model, batch))
    return model, batch


BUILDERS = {"faceshifter": build_faceshifter, "hear": build_hear, "hififace": build_hififace, "fsgan": build_fsgan,
            "fast_faceswap": build_fast, "fast_faceswap_paste_back": build_fast_paste_back}
USES_SOURCE = ("faceshifter", "hear", "hififace", "fsgan")


# ---- every method: the target, and the source -------------------------------------------------------------


@pytest.mark.parametrize("method", list(BUILDERS))
def test_changing_the_target_changes_the_swap(method, tmp_path):
    model, batch = BUILDERS[method](tmp_path)
    swaps = swap(model, pairs(batch, [0, 0], [1, 2]))
    assert difference(swaps[0], swaps[1]) > CLEAR


@pytest.mark.parametrize("method", list(BUILDERS))
def test_changing_the_source_changes_the_swap_except_for_fast_faceswap(method, tmp_path):
    model, batch = BUILDERS[method](tmp_path)
    swaps = swap(model, pairs(batch, [0, 1], [2, 2]))
    if method in USES_SOURCE:
        assert difference(swaps[0], swaps[1]) > CLEAR
    else:  # the identity lives in the weights
        assert torch.equal(swaps[0], swaps[1])


# ---- FaceShifter and HEAR: the source reaches the swap only as z_id ------------------------------------


@pytest.mark.parametrize("method", ["faceshifter", "hear"])
def test_the_source_reaches_the_swap_only_through_its_identity_embedding(method, tmp_path):
    model, batch = BUILDERS[method](tmp_path)
    a, b = batch["source"][:1], batch["source"][1:2]
    both = pairs(batch, [0, 1], [2, 2])
    plain = swap(model, both)
    with experts_replaced(model, identity=StandIn(model.experts.identity, a, b)):
        impostor = swap(model, both)  # source A, whose embedding is B's
    torch.testing.assert_close(impostor[0], plain[1], **EXACT)
    assert difference(impostor[0], plain[0]) > CLEAR


# ---- pair-gated reconstruction terms -------------------------------------------------------------------

# FaceShifter's L_rec (and HEAR's) is defined on X_s = X_t (same image), HifiFace's rec / LPIPS on same-identity pairs
GATED = [  # (method, term, pairs it must ignore: those without this flag, pairs it must count, its outputs)
    pytest.param("faceshifter", "rec", "same_identity", "same_image", ("swap",), id="faceshifter-rec-two_people"),
    pytest.param("faceshifter", "rec", "same_image", "same_image", ("swap",), id="faceshifter-rec-paper"),
    pytest.param("hear", "rec", "same_identity", "same_image", ("swap",), id="hear-rec-two_people"),
    pytest.param("hear", "rec", "same_image", "same_image", ("swap",), id="hear-rec-paper"),
    # HifiFace: rec on I_r and I_low, LPIPS on I_r, on same-identity pairs (another photo of the person counts)
    pytest.param("hififace", "rec", "same_identity", "same_identity", ("swap", "low"), id="hififace-rec-paper"),
    pytest.param("hififace", "lpips", "same_identity", "same_identity", ("swap",), id="hififace-lpips-paper"),
]
# What each paper defines its pair terms on and the pairs it trains with (model.pair_rates: same_identity_rate,
# same_image_rate); sources in conf/model/<method>.yaml.
PAPER_PAIRS = {
    "faceshifter": ({"rec": "same_image"}, (0.2, 1.0)),   # L_rec "if X_t = X_s"; 20% X_s = X_t
    "hear": ({"rec": "same_image"}, (0.5, 1.0)),          # taotaonice train_HEAR.py: same_prob=0.5, X_t = X_s
    "hififace": ({"rec": "same_identity", "lpips": "same_identity"}, (0.5, 0.0)),  # 50% same identity
}


@pytest.mark.parametrize(("method", "term", "defined_on", "counted", "names"), GATED)
def test_a_pair_gated_term_has_no_value_or_gradient_from_the_other_pairs(method, term, defined_on, counted,
                                                                          names, tmp_path):
    edit = with_random_aei(tmp_path) if method == "hear" else None
    overrides = {"faceshifter": FACESHIFTER, "hear": HEAR, "hififace": HIFIFACE}[method]
    model, batch = tiny(tmp_path, overrides, MIXED_PAIRS, tuple(MIXED_INDICES), edit)
    model.train()
    assert batch["same_identity"].tolist() == [True, True, False, False]
    assert batch["same_image"].tolist() == [True, False, False, False]
    assert model.pair_terms[term] == counted  # the flag the module gates on is the paper's (PAPER_PAIRS)
    ignored = ~batch[defined_on]
    value, grads, out = row_gradients(model, batch, term, names)
    for name, grad in zip(names, grads, strict=True):
        largest = per_row(grad).tolist()
        assert (per_row(grad)[ignored] == 0).all(), f"d {term} / d {name} without {defined_on}: {largest}"
    assert (per_row(grads[0])[batch[counted]] > 0).all()
    # the ignored pairs' outputs replaced by anything else: the same value
    rows = ignored.view(-1, 1, 1, 1)
    moved = with_outputs(out, {n: torch.where(rows, -output(out, n), output(out, n)).detach() for n in names})
    with torch.no_grad():
        again = model.generator_losses(batch, moved)[term]
    assert float(again) == pytest.approx(float(value), rel=1e-6, abs=1e-7)


@pytest.mark.parametrize("method", list(PAPER_PAIRS))
def test_each_method_trains_on_the_pairs_its_paper_defines_its_terms_on(method, tmp_path):
    terms, rates = PAPER_PAIRS[method]
    overrides = {"faceshifter": FACESHIFTER, "hear": HEAR, "hififace": HIFIFACE}[method]
    cfg = compose_config("train", tmp_path, overrides)  # the data config's rates left to the method's
    model_class = hydra.utils.get_class(cfg.model._target_)
    assert dict(model_class.pair_terms) == terms
    assert (cfg.model.pair_rates.same_identity_rate, cfg.model.pair_rates.same_image_rate) == rates
    for split in ("train", "val"):
        assert (cfg.data[split].same_identity_rate, cfg.data[split].same_image_rate) == rates
    batch = hydra.utils.instantiate(cfg.data.train, _convert_="all").__getitems__(list(range(200)))
    share = {flag: float(batch[flag].float().mean()) for flag in ("same_identity", "same_image")}
    assert share["same_identity"] == pytest.approx(rates[0], abs=0.1)
    assert share["same_image"] == pytest.approx(rates[0] * rates[1], abs=0.1)
    assert (batch["same_identity"] | ~batch["same_image"]).all()  # the same image is the same person


def test_a_pair_gated_term_without_its_pairs_fails_or_warns_at_start_up(tmp_path, caplog):
    with pytest.raises(InstantiationException, match="draw no same_image pairs, on which FaceShifter.s rec"):
        build_model(compose_config("train", tmp_path, [*FACESHIFTER, "model.pair_rates.same_image_rate=0.0"]))
    with pytest.raises(InstantiationException, match="same_image_rate must be in"):
        build_model(compose_config("train", tmp_path, [*FACESHIFTER, "model.pair_rates.same_image_rate=2.0"]))
    cfg = compose_config("train", tmp_path, [*FACESHIFTER, "data.train.same_identity_rate=0.0"])
    model, _ = build_model(cfg)
    model._trainer = SimpleNamespace(datamodule=hydra.utils.instantiate(cfg.data, _convert_="all"))
    with caplog.at_level(logging.WARNING, logger="swaplab.models.base"):
        model.setup("fit")
    assert "FaceShifter's rec term is defined on same_image pairs and the training data draws none" in caplog.text


# ---- HEAR-Net: the refinement of the AEI swap by the heuristic error --------------------------------------


@torch.no_grad()
def test_hear_returns_the_refinement_of_the_aei_swap_by_the_heuristic_error(tmp_path):
    model, batch = build_hear(tmp_path)
    source, target = batch["source"][:2], batch["target"][2:4]
    out = model(source, target)
    identity = model.experts.identity
    aei_swap, _ = model.aei(target, identity(source))
    self_swap, _ = model.aei(target, identity(target))
    torch.testing.assert_close(out.extras["aei"], aei_swap, **EXACT)  # Y^_st = AEI(X_t, z_id(X_s))
    torch.testing.assert_close(out.extras["heuristic_error"], target - self_swap, **EXACT)  # X_t - Y^_tt
    refined = model.generator(out.extras["aei"], out.extras["heuristic_error"])
    torch.testing.assert_close(out.swap, refined, **EXACT)
    assert difference(out.swap, aei_swap) > CLEAR  # the returned swap is HEAR-Net's, not the AEI result
    without_error = model.generator(aei_swap, torch.zeros_like(aei_swap))
    assert difference(out.swap, without_error) > CLEAR  # HEAR-Net reads the heuristic error
    model.refine = False
    torch.testing.assert_close(model(source, target).swap, aei_swap, **EXACT)


# ---- HifiFace: source shape + ArcFace, target expression and pose ------------------------------------------


@torch.no_grad()
def test_hififace_takes_the_shape_from_the_source_and_the_expression_and_pose_from_the_target(tmp_path):
    model, batch = build_hififace(tmp_path)
    pair = pairs(batch, [0, 1], [2, 2])
    a, b, t = pair["source"][:1], pair["source"][1:], pair["target"][:1]
    plain = swap(model, pair)
    face3d, identity = model.experts.face3d, model.experts.identity

    def swap_with(**experts) -> torch.Tensor:
        with experts_replaced(model, **experts):
            return swap(model, pair)[0]

    unchanged = {**{f"source {p}": {"face3d": CoefficientShift(face3d, a, p)}
                    for p in ("exp", "tex", "angle", "gamma", "trans")},
                 "target identity": {"face3d": CoefficientShift(face3d, t, "id")},
                 "target ArcFace": {"identity": StandIn(identity, t, b)}}
    for what, experts in unchanged.items():
        torch.testing.assert_close(swap_with(**experts), plain[0], **EXACT, msg=what)
    changed = {"source identity": {"face3d": CoefficientShift(face3d, a, "id")},
               "target expression": {"face3d": CoefficientShift(face3d, t, "exp")},
               "target pose": {"face3d": CoefficientShift(face3d, t, "angle")},
               "source ArcFace": {"identity": StandIn(identity, a, b)}}
    for what, experts in changed.items():
        assert difference(swap_with(**experts), plain[0]) > CLEAR, what
    # source A whose 3DMM and ArcFace answers are B's: B's swap, exactly (no source pixels reach the generator)
    impostor = swap_with(face3d=StandIn(face3d, a, b), identity=StandIn(identity, a, b))
    torch.testing.assert_close(impostor, plain[1], **EXACT)


# ---- FSGAN: the source reenacted to the target's landmarks, inpainted and blended ------------------------


@torch.no_grad()
def test_fsgan_reenacts_the_source_step_by_step_to_the_targets_landmarks(tmp_path):
    model, batch = build_fsgan(tmp_path, "reenactment")
    pair = pairs(batch, [0, 1], [2, 3])
    inputs = []
    hook = model.generator.reenactment.register_forward_pre_hook(lambda m, args: inputs.append(args[0]))
    out = model.swap_path(pair["source"], pair["target"], model.generator, pair)
    hook.remove()
    sigma = model.heatmap_sigma * SIDE / 256
    path = interpolate_views(pair["source_landmarks"], pair["target_landmarks"], model.num_steps)
    assert len(inputs) == model.num_steps == 2
    torch.testing.assert_close(inputs[0][:, :3], pair["source"], **EXACT)  # Gr starts from the source face
    for j, x in enumerate(inputs, start=1):  # each step: the previous image under the next view's landmarks
        torch.testing.assert_close(x[:, 3:], landmark_heatmaps(path[j], SIDE, sigma), **EXACT)
    torch.testing.assert_close(inputs[1][:, :3], out.extras["steps"][0], **EXACT)
    torch.testing.assert_close(out.swap, out.extras["steps"][-1], **EXACT)
    moved = {**pair, "target_landmarks": pair["target_landmarks"] + torch.tensor([3.0, -2.0])}
    elsewhere = model.swap_path(moved["source"], moved["target"], model.generator, moved).swap
    assert difference(elsewhere, out.swap) > CLEAR  # Gr follows the landmarks it is given


@torch.no_grad()
def test_fsgan_swap_depends_on_the_source_only_through_the_reenactment(tmp_path):
    model, batch = build_fsgan(tmp_path, "blending")
    pair = pairs(batch, [0, 1], [2, 2])
    out = model.swap_path(pair["source"], pair["target"], model.generator, pair)
    face = out.extras["target_face"]
    assert face.any() and not face.all()
    # inpainted face inside the target's face mask, the target elsewhere; Gb changes that transfer
    transfer = torch.where(face, out.extras["inpainted"], pair["target"])
    torch.testing.assert_close(out.extras["transfer"], transfer, **EXACT)
    assert difference(out.swap, out.extras["transfer"]) > CLEAR
    # Gr's output fixed: the two sources give the same swap
    fixed = model.generator.reenactment(torch.cat([pair["target"], torch.zeros(2, 68, SIDE, SIDE)], 1))
    hook = model.generator.reenactment.register_forward_hook(lambda m, args, output: fixed)
    pinned = model.swap_path(pair["source"], pair["target"], model.generator, pair).swap
    hook.remove()
    torch.testing.assert_close(pinned[0], pinned[1], **EXACT)
    assert difference(pinned[0], out.swap[0]) > CLEAR  # (the pin took hold)
