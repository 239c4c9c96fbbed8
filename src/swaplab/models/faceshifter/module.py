"""FaceShifter (Li et al. 2019), stage 1: AEI-Net trained adversarially.

L = adv + 10 L_att + 5 L_id + 10 L_rec (weights from conf/model/faceshifter.yaml):
L_att = 0.5 sum_k ||z_att^k(Y) - z_att^k(X_t)||^2, L_id = 1 - cos(z_id(Y), z_id(X_s)),
L_rec = 0.5 ||Y - X_t||^2 on pairs with X_s = X_t (`same_image` pairs: the same image, not only the same person;
model.pair_rates gives their share).
"""

from __future__ import annotations

import torch
from torch import nn

from swaplab.losses import AdversarialLoss, IdentityLoss, MultiLevelFeatureLoss, ReconstructionLoss
from swaplab.models.base import Batch, SwapModule, SwapOutput
from swaplab.models.faceshifter.aei_net import AEINet


class FaceShifter(SwapModule):
    generator_terms = ("adv", "att", "id", "rec")
    pair_terms = {"rec": "same_image"}  # the paper: L_rec "if X_t = X_s"
    required_experts = ("identity",)
    network_name = "aei_net"  # what HEAR-Net's model.predecessor_ckpt must hold trained

    def __init__(self, generator: AEINet, discriminator: nn.Module, adversarial: str = "hinge",
                 reconstruction: str = "half_l2", **base_kwargs) -> None:
        super().__init__(generator=generator, discriminator=discriminator, **base_kwargs)
        self.adversarial = AdversarialLoss(adversarial)
        self.attribute_loss = MultiLevelFeatureLoss()
        self.identity_loss = IdentityLoss()
        self.reconstruction_loss = ReconstructionLoss(reconstruction)

    def generate(self, source: torch.Tensor, target: torch.Tensor, generator: nn.Module) -> SwapOutput:
        z_id = self.experts.identity(source)
        swap, z_att = generator(target, z_id)
        # The attribute loss must re-encode the swap with the encoder that produced z_att (EMA or not).
        return SwapOutput(swap, {"z_id": z_id, "z_att": z_att, "attribute_encoder": generator.encoder})

    def generator_losses(self, batch: Batch, out: SwapOutput) -> dict[str, torch.Tensor]:
        return {
            "adv": self.adversarial.generator(self.discriminator(out.swap)),
            "att": self.attribute_loss(out.extras["attribute_encoder"](out.swap), out.extras["z_att"]),
            "id": self.identity_loss(self.experts.identity(out.swap), out.extras["z_id"]),
            "rec": self.reconstruction_loss(out.swap, batch["target"], where=self.pairs_of("rec", batch)),
        }

    def discriminator_losses(self, batch: Batch, out: SwapOutput) -> dict[str, torch.Tensor]:
        return self.adversarial.discriminator(self.discriminator(batch["source"]), self.discriminator(out.swap))
