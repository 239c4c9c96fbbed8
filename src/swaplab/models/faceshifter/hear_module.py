"""FaceShifter (Li et al. 2019), stage 2: HEAR-Net trained on top of a frozen, trained AEI-Net.

L = L_id + L_chg + L_rec, the paper's 1:1:1 (conf/model/faceshifter_hear.yaml): L_id = 1 - cos(z_id(Y), z_id(X_s)),
L_chg = |Y - Y^_st|_1 (stay close to the AEI result), L_rec = 0.5 ||Y - X_t||^2 on pairs with X_s = X_t, by default
relative to the AEI result's own (`reconstruction_scale="aei_error"`): 0.5 ||Y - X_t||^2 / 0.5 ||Y^_st - X_t||^2, the
share of AEI-Net's reconstruction error (on X_s = X_t pairs, of the heuristic error's energy) HEAR-Net leaves; 1 at
the start. On absolute pixel means in [-1, 1] the L1 change term outweighs the half-L2 reconstruction wherever
|Y - X_t| < 1, so with 1:1:1 HEAR-Net does not move; the relative error is scale-free, and its pull balances the
change term only once Y is within about half AEI-Net's mean squared error of X_t.
Targets get random occluders in the training step (swaplab.data.occlusion), as in the public
re-implementations, so that L_rec teaches HEAR-Net to put back what AEI-Net drops.

The AEI-Net comes from a FaceShifter checkpoint (`predecessor_ckpt`, which must record a trained `aei_net`:
swaplab.models.stages); it is frozen (no gradient, eval mode, outside the optimizer) but its weights are saved
in this module's checkpoints, whose config holds the AEI-Net's config and the predecessor record in place of the
path: a HEAR checkpoint alone is enough for inference.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import hydra
import torch
import torch.nn.functional as F
from torch import nn

from swaplab.data.occlusion import RandomOccluders
from swaplab.losses import IdentityLoss, ReconstructionLoss
from swaplab.models.base import Batch, SwapModule, SwapOutput
from swaplab.models.faceshifter.hear_net import HEARNet
from swaplab.models.faceshifter.module import FaceShifter
from swaplab.models.loading import checkpoint_config
from swaplab.models.stages import Predecessors, load_predecessors, self_contained_config

AEI = FaceShifter.network_name
RECONSTRUCTION_SCALES = ("aei_error", "none")
MIN_REFERENCE_ERROR = 1e-3  # floor of the AEI result's loss (0.5 mean sq.: an RMS error of 0.045 in [-1, 1])
HOW_TO_GET_AEI = ("train the AEI-Net first (python train.py experiment=faceshifter_paper, or model=faceshifter "
                  "for the CPU demo) and pass its checkpoint, e.g. predecessor_ckpt=<run dir>/checkpoints/last.ckpt "
                  "(model.predecessor_ckpt=... when not using experiment=faceshifter_hear)")


def aei_generator_of(predecessors: Predecessors, path: str) -> tuple[nn.Module, dict[str, Any], dict[str, Any]]:
    """The trained AEI-Net of a loaded FaceShifter predecessor checkpoint (its EMA weights when it kept one),
    its config node and the experts recorded with it."""
    cfg = checkpoint_config(predecessors.checkpoint, path)
    model_class = hydra.utils.get_class(cfg.model._target_)
    if not issubclass(model_class, FaceShifter):
        raise ValueError(f"{path} is a {model_class.__name__} checkpoint, not an AEI-Net (FaceShifter) one: "
                         f"{HOW_TO_GET_AEI}")
    generator_cfg = dict(cfg.model.generator)
    generator = hydra.utils.instantiate(generator_cfg, _convert_="all")
    predecessors.load_into(AEI, generator)
    return generator, generator_cfg, predecessors.checkpoint["swaplab"].get("experts", {})


class FaceShifterHEAR(SwapModule):
    """HEAR-Net refinement of a frozen AEI-Net; `forward(source, target)` returns the refined swap with the
    AEI result in `extras["aei"]`, or the AEI result itself when `refine` is False."""

    generator_terms = ("id", "chg", "rec")
    pair_terms = {"rec": "same_image"}  # the paper: L_rec = 0.5 ||Y_st - X_t||^2 "if X_t = X_s"
    required_experts = ("identity",)
    network_name = "hear_net"

    def __init__(
        self,
        generator: HEARNet,                            # the trained refinement network
        predecessor_ckpt: str | None = None,           # the FaceShifter checkpoint to refine (training)
        allow_random_predecessors: bool = False,       # no predecessor_ckpt: a random AEI-Net (needs aei_generator)
        predecessor_record: dict | None = None,        # filled in checkpoints' configs: AEI weights in the state dict
        aei_generator: nn.Module | None = None,        # AEI-Net built from the config HEAR checkpoints record
        occlusion: RandomOccluders | None = None,      # occluders pasted onto training targets (None: off)
        refine: bool = True,                           # False: forward returns the AEI-Net result
        reconstruction: str = "half_l2",               # L_rec kind (ReconstructionLoss)
        reconstruction_scale: str = "aei_error",       # L_rec relative to the AEI result's ("aei_error") or "none"
        **base_kwargs,
    ) -> None:
        super().__init__(generator=generator, discriminator=None, **base_kwargs)
        self.predecessors = load_predecessors("FaceShifterHEAR", [AEI], predecessor_ckpt, allow_random_predecessors,
                                              predecessor_record, HOW_TO_GET_AEI)
        self._aei_config: dict[str, Any] | None = None  # recorded in checkpoints when loaded from predecessor_ckpt
        if self.predecessors.checkpoint is not None:
            aei_generator, self._aei_config, aei_experts = aei_generator_of(self.predecessors, str(predecessor_ckpt))
            self.predecessors.release()
            self._check_identity_expert(aei_experts, str(predecessor_ckpt))
        elif aei_generator is None:
            raise ValueError("FaceShifterHEAR without a predecessor checkpoint builds its AEI-Net from "
                             "model.aei_generator (the AEI-Net's config), which is not set")
        # Otherwise random (allow_random_predecessors) or rebuilt from a HEAR checkpoint's config, whose state
        # dict brings the weights.
        self.aei = aei_generator.requires_grad_(False).eval()
        self.occlusion = occlusion
        self.refine = refine
        self.identity_loss = IdentityLoss()
        if reconstruction_scale not in RECONSTRUCTION_SCALES:
            raise ValueError(f"reconstruction_scale must be one of {RECONSTRUCTION_SCALES}, got {reconstruction_scale!r}")
        self.reconstruction_scale = reconstruction_scale
        self.reconstruction_loss = ReconstructionLoss(reconstruction)

    def _check_identity_expert(self, recorded: Mapping[str, Any], path: str) -> None:
        """AEI-Net is conditioned on z_id: the identity network must be the one it was trained with."""
        trained_with, here = recorded.get("identity"), self.experts.describe().get("identity")
        if trained_with and here and (trained_with["name"], trained_with["params"]) != (here["name"], here["params"]):
            raise ValueError(f"model.predecessor_ckpt={path} was trained with identity expert {trained_with}, this run builds "
                             f"{here}: use the experts config of the AEI-Net run")

    def train(self, mode: bool = True) -> FaceShifterHEAR:
        super().train(mode)
        self.aei.eval()  # frozen: BatchNorm statistics of the attribute encoder must not move
        return self

    # ---- the swap -------------------------------------------------------------------------------
    def generate(self, source: torch.Tensor, target: torch.Tensor, generator: nn.Module) -> SwapOutput:
        n = target.shape[0]
        with torch.no_grad():
            z_id = self.experts.identity(torch.cat([source, target]))
            # One AEI pass for the swap Y^_st = AEI(X_t, z_id(X_s)) and the self-swap AEI(X_t, z_id(X_t)).
            both, _ = self.aei(torch.cat([target, target]), z_id)
        aei_swap, self_swap = both[:n], both[n:]
        heuristic_error = target - self_swap
        extras = {"aei": aei_swap, "heuristic_error": heuristic_error, "z_id": z_id[:n]}
        if not self.refine:
            return SwapOutput(aei_swap, extras)
        return SwapOutput(generator(aei_swap, heuristic_error), extras)

    def generator_losses(self, batch: Batch, out: SwapOutput) -> dict[str, torch.Tensor]:
        return {
            "id": self.identity_loss(self.experts.identity(out.swap), out.extras["z_id"]),
            "chg": F.l1_loss(out.swap, out.extras["aei"]),
            "rec": self.reconstruction_loss(out.swap, batch["target"], where=self.pairs_of("rec", batch),
                                            scale=self._reconstruction_scale(batch, out)),
        }

    def _reconstruction_scale(self, batch: Batch, out: SwapOutput) -> torch.Tensor | None:
        """Per-sample divisor of L_rec: the AEI result's own reconstruction loss (floored), or None."""
        if self.reconstruction_scale == "none":
            return None
        reference = self.reconstruction_loss.per_sample(out.extras["aei"], batch["target"]).detach()
        return reference.clamp_min(MIN_REFERENCE_ERROR)

    def occlude(self, batch: Batch, generator: torch.Generator | None = None) -> Batch:
        """The batch with occluders pasted onto the targets (sources stay clean: z_id(X_s) is the identity to
        keep, and for X_s = X_t pairs the occluded X_t is exactly what L_rec should reproduce), drawn from
        `generator` (training: the step's, see SwapModule.step_generator)."""
        if self.occlusion is None:
            return batch
        target, mask = self.occlusion(batch["target"], generator=generator)
        return {**batch, "target": target, "occluder_mask": mask}

    # ---- training -------------------------------------------------------------------------------
    def training_step(self, batch: Batch, batch_idx: int) -> None:
        if not self.refine:
            raise ValueError("refine=False is an inference switch (AEI-Net output only); HEAR-Net trains with refine")
        super().training_step(self.training_batch(batch, batch_idx), batch_idx)

    def training_batch(self, batch: Batch, batch_idx: int) -> Batch:
        """What the training step trains on: the batch with this step's occluders (own per process and step)."""
        return self.occlude(batch, self.step_generator(batch_idx))

    def parameter_counts(self) -> dict[str, int]:
        return {**super().parameter_counts(), "params/aei_frozen": sum(p.numel() for p in self.aei.parameters())}

    def network_weights(self) -> dict[str, str]:
        return {**super().network_weights(), AEI: "aei."}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        meta = checkpoint["swaplab"]
        self_contained_config(meta, self.predecessors)
        if "model" in meta["config"] and self._aei_config is not None:  # the AEI-Net rebuilt from its config
            meta["config"]["model"]["aei_generator"] = self._aei_config
