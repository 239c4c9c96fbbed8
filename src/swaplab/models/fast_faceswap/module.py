"""Fast Face-swap (Korshunova et al. 2017): one feed-forward network per target identity, trained as style
transfer with the identity's photos as the style. No discriminator.

L = content + alpha style + beta light + gamma TV (conf/model/fast_faceswap.yaml: content 1, style = alpha,
light = beta, tv = gamma), with x = batch["target"] the aligned content face and x_hat = f_W(x):
content = sum over `content_layers` of 1/|Phi_l| ||Phi_l(x_hat) - Phi_l(x)||^2 (VGG19, paper: relu4_2),
style = sum over `style_layers` of the same-location 3x3 patch loss (swaplab.losses.style) against the N_best
style images closest to x (L2 between their `selection_layer` VGG maps),
light = 1/|Gamma| ||Gamma(x_hat) - Gamma(x)||^2 in the lighting network's features (the `lighting` expert,
trained with experiment=lighting_net_paper or lighting_net), TV = squared differences of neighbouring pixels.

`loss_normalisation` sets the scale the weights refer to. "paper" (default): the paper's equations on the
paper's feature scale, as far as it can be rebuilt: VGG maps of the content and style layers divided by each
channel's mean activation (Gatys et al.'s normalised VGG-19, the means measured on the style set instead of
ImageNet), TV the sum of eq. 7 over the image in [0, 1]. "mean": raw VGG maps and TV as a mean over the image in
[-1, 1] (weights of another scale; experiment=fast_faceswap_synthetic).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from swaplab.losses.style import content_loss, neural_patches, patch_style_loss, total_variation
from swaplab.models.base import Batch, SwapModule, SwapOutput
from swaplab.models.fast_faceswap.network import TransformationNet
from swaplab.models.fast_faceswap.postprocess import clone_face_back
from swaplab.models.fast_faceswap.style_bank import StyleBank
from swaplab.runtime import get_logger

log = get_logger(__name__)


class FastFaceSwap(SwapModule):
    """`forward(source, target)` ignores `source` (the identity lives in the weights) and turns the aligned
    `target` into the style identity; with `paste_back` the face is cloned back into the target's crop."""

    generator_terms = ("content", "style", "light", "tv")
    required_experts = ("perceptual", "lighting")
    experts_on_own_crops = ("perceptual",)  # content and style losses are defined on the frontal-aligned crops
    uses_source = False

    def __init__(
        self,
        generator: TransformationNet,
        style_set: Any = None,  # object with load() -> N x 3 x S x S aligned style images (data.style_sets)
        n_best: int = 16,  # style images searched per input (paper: 16); at most the size of the set
        content_layers: Sequence[str] = ("relu4_2",),
        style_layers: Sequence[str] = ("relu3_1", "relu4_1"),
        selection_layer: str = "relu5_4",  # VGG layer whose L2 distance picks each input's N_best style images
        patch_size: int = 3,  # neural patches k x k (paper: 3)
        paste_back: bool = False,  # forward(): clone the swapped face into the target (needs the parsing expert)
        paste_regions: Sequence[str] = ("face",),  # parsing groups taken from the swap
        loss_normalisation: str = "paper",  # "paper": Gatys-normalised VGG, TV summed on [0, 1]; "mean" (above)
        discriminator: nn.Module | None = None,
        **base_kwargs: Any,
    ) -> None:
        if discriminator is not None:
            raise ValueError("Fast Face-swap has no adversarial term: discriminator must be null")
        super().__init__(generator=generator, discriminator=None, **base_kwargs)
        if n_best < 1 or patch_size < 1:
            raise ValueError(f"n_best and patch_size must be >= 1, got {n_best}, {patch_size}")
        if loss_normalisation not in ("paper", "mean"):
            raise ValueError(f"loss_normalisation must be 'paper' or 'mean', got {loss_normalisation!r}")
        if not content_layers or not style_layers:
            raise ValueError("content_layers and style_layers must name at least one VGG layer each")
        self.experts.perceptual.layer_indices([*content_layers, *style_layers, selection_layer])  # clear error
        if paste_back and not hasattr(self.experts, "parsing"):
            raise ValueError("paste_back needs the parsing expert: add experts_extra=[parsing]")
        self.style_set, self.n_best, self.patch_size = style_set, int(n_best), int(patch_size)
        self.content_layers, self.style_layers = tuple(content_layers), tuple(style_layers)
        self.selection_layer = selection_layer
        self.paste_back, self.paste_regions = paste_back, tuple(paste_regions)
        self.loss_normalisation = loss_normalisation
        self.style_bank = StyleBank()
        self.g_loss.shares = True  # its weights come from another loss normalisation: show what each term weighs

    def generate(self, source: torch.Tensor, target: torch.Tensor, generator: nn.Module) -> SwapOutput:
        return SwapOutput(generator(target))

    def forward(self, source: torch.Tensor, target: torch.Tensor, use_ema: bool = True) -> SwapOutput:
        out = super().forward(source, target, use_ema)
        if not self.paste_back:
            return out
        blended, mask = clone_face_back(out.swap, target, self.experts.parsing, self.paste_regions)
        return SwapOutput(blended, {"raw": out.swap, "mask": mask})

    def style_features(self) -> StyleBank:
        """The bank, filled from `style_set` on first use (a checkpoint brings its own) and prepared on the
        current device."""
        if len(self.style_bank) == 0:
            if self.style_set is None:
                raise ValueError("FastFaceSwap has no style images: give model.style_set (data.style_sets)")
            self.style_bank.fill(self.style_set.load())
            if len(self.style_bank) < self.n_best:
                log.warning("the style set has %d images, fewer than n_best=%d: every input is compared with all "
                            "of them (more photos of the person give the style loss closer matches)",
                            len(self.style_bank), self.n_best)
        side = self.generator.resolution
        if self.style_bank.images.shape[-1] != side:
            raise ValueError(f"style images are {self.style_bank.images.shape[-1]} px, the network takes {side}")
        normalised = (*self.content_layers, *self.style_layers) if self.loss_normalisation == "paper" else ()
        self.style_bank.prepare(self.experts.perceptual, self.style_layers, self.selection_layer, self.patch_size,
                                normalised)
        return self.style_bank

    def on_fit_start(self) -> None:
        self.style_features()  # style features once, on the training device, before the first step

    def generator_losses(self, batch: Batch, out: SwapOutput) -> dict[str, torch.Tensor]:
        content, swap = batch["target"], out.extras.get("raw", out.swap)
        bank, perceptual, n = self.style_features(), self.experts.perceptual, len(self.content_layers)
        with torch.no_grad():
            *reference, selection = perceptual(content, [*self.content_layers, self.selection_layer])
        candidates = bank.nearest(selection, self.n_best)
        generated = perceptual(swap, [*self.content_layers, *self.style_layers])
        generated = [bank.normalise(layer, maps)
                     for layer, maps in zip([*self.content_layers, *self.style_layers], generated, strict=True)]
        reference = [bank.normalise(layer, maps) for layer, maps in zip(self.content_layers, reference, strict=True)]
        style = sum(patch_style_loss(neural_patches(maps, self.patch_size), bank.patches[layer], candidates)
                    for layer, maps in zip(self.style_layers, generated[n:], strict=True))
        tv = total_variation(swap * 0.5 + 0.5, "sum") if self.loss_normalisation == "paper" \
            else total_variation(swap, "mean")
        return {"content": content_loss(generated[:n], reference), "style": style,
                "light": self.experts.lighting.loss(swap, content), "tv": tv}
