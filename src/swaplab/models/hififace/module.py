"""HifiFace (Wang et al. IJCAI 2021): 3D shape-aware identity + semantic facial fusion, trained adversarially.

L = adv + 0.5 shape + 5 id + 20 rec + 1 cyc + 5 lpips + 100 seg (conf/model/hififace.yaml), D: non-saturating
real/fake + gp * R1 on real targets. With I_r the swap, I_low the 1/4 image, R(.) a resize:
shape = mean_n |q_fuse - q_r|_1 + |q_fuse - q_low|_1 over the 68 projected BFM landmarks,
id = (1 - cos(v_id(I_s), v_id(I_r))) + (1 - cos(v_id(I_s), v_id(I_low))),
rec = |I_r - I_t|_1 + |I_low - R(I_t)|_1 on same-identity pairs (`same_identity`: another photo of the source's person
at model.pair_rates, not only the target image itself), cyc = |G(I_t -> I_r) - I_t|_1,
lpips = LPIPS(I_r, I_t) on same-identity pairs (full resolution only),
seg = |R(M_tar) - M_low|_1 + |M_tar - M_r|_1, M_tar = the target's dilated face-parsing mask (the batch's
`target_mask` labels when the data carries them).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from swaplab.experts import shape_distance
from swaplab.faces.parsing import DEFAULT_GROUPS
from swaplab.losses import AdversarialLoss, IdentityLoss, ReconstructionLoss, masked_mean, r1_penalty
from swaplab.models.base import Batch, SwapModule, SwapOutput
from swaplab.models.hififace.generator import HifiFaceGenerator, resize
from swaplab.models.hififace.identity import shape_aware_identity


class HifiFace(SwapModule):
    generator_terms = ("adv", "shape", "id", "rec", "cyc", "lpips", "seg")
    discriminator_terms = ("gp",)
    # the paper: "if I_s and I_t have the same identity, the predicted image should be the same as I_t"
    pair_terms = {"rec": "same_identity", "lpips": "same_identity"}
    required_experts = ("identity", "face3d", "parsing", "lpips")

    def __init__(
        self,
        generator: HifiFaceGenerator,
        discriminator: nn.Module,
        adversarial: str = "nonsaturating",  # G/D objective (the paper's: non-saturating + R1)
        mask_region: str = "face",  # parsing group whose dilated mask supervises M_low and M_r
        mask_dilation: float = 0.03,  # dilation radius of M_tar, fraction of the side (paper: "slightly")
        **base_kwargs,
    ) -> None:
        super().__init__(generator=generator, discriminator=discriminator, **base_kwargs)
        if not 0.0 <= mask_dilation < 0.5:
            raise ValueError(f"mask_dilation must be in [0, 0.5), got {mask_dilation}")
        self.adversarial = AdversarialLoss(adversarial)
        self.identity_loss = IdentityLoss()
        self.reconstruction_loss = ReconstructionLoss("l1")
        self.mask_region, self.mask_dilation = mask_region, mask_dilation

    def generate(self, source: torch.Tensor, target: torch.Tensor, generator: nn.Module) -> SwapOutput:
        sid = shape_aware_identity(self.experts, source, target)
        result = generator(target, sid.v_sid)
        # The cycle term swaps back with the same generator (EMA or not) that made this swap.
        return SwapOutput(result.swap, {"low": result.low, "mask": result.mask, "mask_low": result.mask_low,
                                        "c_fuse": sid.c_fuse, "v_id": sid.v_id, "generator": generator})

    @torch.no_grad()
    def target_mask(self, target: torch.Tensor, truth: Batch | None = None) -> torch.Tensor:
        """M_tar: the target's hard mask of `mask_region`, dilated by a max-pool (B, 1, S, S). The region comes
        from the batch's `target_mask` labels when the data has them (the renderer's ground truth; the shard
        store's, written by the same parser at preprocessing), else from the parsing expert."""
        labels = self.batch_truth(target, "mask", truth)
        if labels is None:
            mask = self.experts.parsing.masks(target, hard=True)[self.mask_region].to(target.dtype)
        else:
            mask = (labels == list(DEFAULT_GROUPS).index(self.mask_region)).unsqueeze(1).to(target.dtype)
        radius = round(self.mask_dilation * target.shape[-1])
        return F.max_pool2d(mask, 2 * radius + 1, stride=1, padding=radius) if radius else mask

    def generator_losses(self, batch: Batch, out: SwapOutput) -> dict[str, torch.Tensor]:
        experts, extras = self.experts, out.extras
        target, rec_pairs = batch["target"], self.pairs_of("rec", batch)
        swap, low = out.swap, extras["low"]
        low_target = resize(target, low.shape[-2:])
        # I_r and (upsampled) I_low through the experts in one batch; per-sample values are (2, B).
        both = torch.cat([swap, resize(low, swap.shape[-2:])])
        q_fuse = experts.face3d.landmarks(extras["c_fuse"]).repeat(2, 1, 1)
        shape = shape_distance(experts.face3d.landmarks(experts.face3d(both)), q_fuse)
        ident = 2 * self.identity_loss(experts.identity(both), extras["v_id"].repeat(2, 1))
        cycle = self.generate(target, swap, extras["generator"]).swap
        m_tar = self.target_mask(target, batch)
        return {
            "adv": self.adversarial.generator(self.discriminator(swap)),
            "shape": shape.view(2, -1).sum(0).mean(),
            "id": ident,
            "rec": self.reconstruction_loss(swap, target, where=rec_pairs)
            + self.reconstruction_loss(low, low_target, where=rec_pairs),
            "cyc": (cycle - target).abs().mean(),
            "lpips": masked_mean(experts.lpips(swap, target), self.pairs_of("lpips", batch)),
            "seg": (extras["mask_low"] - resize(m_tar, low.shape[-2:])).abs().mean()
            + (extras["mask"] - m_tar).abs().mean(),
        }

    def discriminator_losses(self, batch: Batch, out: SwapOutput) -> dict[str, torch.Tensor]:
        real = batch["target"].detach().requires_grad_(True)
        with torch.enable_grad():  # R1 needs d D(real) / d real
            real_logits = self.discriminator(real)
            terms = self.adversarial.discriminator(real_logits, self.discriminator(out.swap))
            terms["gp"] = r1_penalty(real_logits, real)
        return terms
