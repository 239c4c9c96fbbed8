"""Adversarial objectives over (possibly multi-scale) discriminator logits."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

Logits = torch.Tensor | list[torch.Tensor]


def _as_list(logits: Logits) -> list[torch.Tensor]:
    return list(logits) if isinstance(logits, (list, tuple)) else [logits]


class AdversarialLoss(nn.Module):
    """GAN objective for G and D; multi-scale logits (a list) are averaged over scales.

    kind: "hinge" (FaceShifter), "lsgan" (pix2pixHD / FSGAN) or "nonsaturating" (StyleGAN / HifiFace).
    """

    KINDS = ("hinge", "lsgan", "nonsaturating")

    def __init__(self, kind: str = "hinge") -> None:
        super().__init__()
        if kind not in self.KINDS:
            raise ValueError(f"adversarial loss kind must be one of {self.KINDS}, got {kind!r}")
        self.kind = kind

    def generator(self, fake: Logits) -> torch.Tensor:
        terms = []
        for f in _as_list(fake):
            if self.kind == "hinge":
                terms.append(-f.mean())
            elif self.kind == "lsgan":
                terms.append(F.mse_loss(f, torch.ones_like(f)))
            else:
                terms.append(F.softplus(-f).mean())
        return torch.stack(terms).mean()

    def discriminator(self, real: Logits, fake: Logits) -> dict[str, torch.Tensor]:
        """Returns {"real": ..., "fake": ...}; D minimises their sum."""
        real_terms, fake_terms = [], []
        for r, f in zip(_as_list(real), _as_list(fake), strict=True):
            if self.kind == "hinge":
                real_terms.append(F.relu(1 - r).mean())
                fake_terms.append(F.relu(1 + f).mean())
            elif self.kind == "lsgan":
                real_terms.append(F.mse_loss(r, torch.ones_like(r)))
                fake_terms.append(F.mse_loss(f, torch.zeros_like(f)))
            else:
                real_terms.append(F.softplus(-r).mean())
                fake_terms.append(F.softplus(f).mean())
        return {"real": torch.stack(real_terms).mean(), "fake": torch.stack(fake_terms).mean()}


def r1_penalty(real_logits: Logits, real_images: torch.Tensor) -> torch.Tensor:
    """R1 gradient penalty (Mescheder et al. 2018; StarGAN v2): 0.5 * E ||d D(x) / d x||^2 on real images.

    `real_images` must require grad and `real_logits` be computed from them; the graph is kept so that the
    penalty itself can be back-propagated into D.
    """
    total = sum(r.sum() for r in _as_list(real_logits))
    (grad,) = torch.autograd.grad(total, real_images, create_graph=True)
    return 0.5 * grad.square().flatten(1).sum(1).mean()
