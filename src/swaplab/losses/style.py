"""Fast Face-swap's feature losses (Korshunova et al. 2017): content, patch-based style, total variation.

With Phi_l a VGG19 feature map and Psi_i its i-th k x k neural patch (M = (H_l - k + 1)(W_l - k + 1) of them):
content = 1/|Phi_l| ||Phi_l(x_hat) - Phi_l(x)||^2 (paper eq. 1),
style = 1/M sum_i d_c(Psi_i(Phi_l(x_hat)), Psi_i(Phi_l(y_NN(i)))), NN(i) = argmin_{j <= N_best} d_c(...),
d_c = 1 - cosine: the nearest patch is searched at the *same location i* across the N_best style images only
(all images are aligned to one frontal reference, so location i is the same part of every face),
TV = sum_{i,j} (x_{i,j+1} - x_{i,j})^2 + (x_{i+1,j} - x_{i,j})^2 (paper eq. 7, a sum; `reduction="sum"`).
The paper's Phi is a "normalised VGG-19" (Gatys et al. 2016: every filter rescaled to a mean activation of 1):
`channel_scales` gives those per-channel divisors for any VGG.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def content_loss(features: Sequence[torch.Tensor], reference: Sequence[torch.Tensor]) -> torch.Tensor:
    """Sum over layers of the mean squared feature difference (1/|Phi_l| ||.||^2, averaged over the batch)."""
    return sum(F.mse_loss(f, r) for f, r in zip(features, reference, strict=True))


def channel_scales(maps: torch.Tensor, floor: float = 0.05) -> torch.Tensor:
    """Gatys et al.'s VGG normalisation as per-channel divisors: the mean activation of each channel of
    B x C x H x W (ReLU) maps over images and positions. Dividing a layer's maps by them gives the maps of the
    normalised network exactly (a ReLU net's filters rescale without changing what follows once the next layer
    compensates). A channel whose mean is below `floor` x the layer's median channel mean is divided by that
    bound instead (a filter that barely fires on the reference images would be magnified without limit);
    a layer whose median is 0 gets ones. Returns C float32 divisors."""
    mean = maps.detach().float().mean((0, 2, 3))
    bound = floor * mean.median()
    return mean.clamp_min(bound) if bound > 0 else torch.ones_like(mean)


def neural_patches(features: torch.Tensor, size: int = 3, eps: float = 1e-8) -> torch.Tensor:
    """B x C x H x W maps -> B x (C k k) x M unit-length k x k patches (valid positions, row-major order)."""
    if features.shape[-1] < size or features.shape[-2] < size:
        raise ValueError(f"{size}x{size} patches need maps of at least that size, got {tuple(features.shape)}")
    return F.normalize(F.unfold(features, size), dim=1, eps=eps)


def patch_style_loss(patches: torch.Tensor, style_patches: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of 1/M sum_i min_{j in candidates} (1 - cos) at the same location i.

    patches: B x K x M unit patches of the generated image; style_patches: N x K x M unit patches of the whole
    style set; candidates: B x N_best indices into it (the style images allowed for each sample).
    Only the style images some sample may use take part in the matrix product.
    """
    if candidates.dim() != 2 or candidates.shape[0] != patches.shape[0]:
        raise ValueError(f"candidates must be B x N_best, got {tuple(candidates.shape)} for {patches.shape[0]}")
    used, position = candidates.unique(return_inverse=True)  # U style images; candidates as indices into them
    bank = style_patches.index_select(0, used).to(patches.dtype)  # U x K x M
    similarity = torch.einsum("bkm,ukm->bum", patches, bank)  # cosine at every location, B x U x M
    allowed = torch.zeros(similarity.shape[:2], dtype=torch.bool, device=similarity.device)
    allowed.scatter_(1, position, True)
    similarity = similarity.masked_fill(~allowed[:, :, None], -2.0)  # below any cosine: never the nearest
    return (1.0 - similarity.amax(1)).mean()


def total_variation(images: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Squared differences of horizontally and vertically adjacent pixels of B x C x H x W images.

    "sum": the paper's eq. 7 (after Johnson et al. 2016): per image the sum over channels and positions, then
    the mean over the batch. "mean": the mean squared difference of each direction, added."""
    dx = images[..., :, 1:] - images[..., :, :-1]
    dy = images[..., 1:, :] - images[..., :-1, :]
    if reduction == "sum":
        return (dx.square().flatten(1).sum(1) + dy.square().flatten(1).sum(1)).mean()
    if reduction == "mean":
        return dx.square().mean() + dy.square().mean()
    raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}")
