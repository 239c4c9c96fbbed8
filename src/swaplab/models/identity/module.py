"""Training a face recognizer on procedural people (`experiment=identity_synthetic`): an IResNet with ArcFace's
additive angular margin, on the canonical crop's ArcFace box, the same preprocessing `IdentityEncoder` applies.
It gives the synthetic test bed identity networks that know faces (`experts=synthetic`), where the quickstart
and the tests would otherwise use random weights."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import CatMetric

from swaplab.experts.arcface import ARCFACE_CROP
from swaplab.faces.crop import check_box, crop_box
from swaplab.losses.margin import AdditiveAngularMargin
from swaplab.models.identity.verification import verification_report
from swaplab.models.stages import stage_record

Batch = dict[str, torch.Tensor]


class IdentityNetModule(pl.LightningModule):
    """Classification of `num_classes` training identities (batches with `image`, `label`); validation on
    held-out verification pairs (`image1`, `image2`, `same`, `pose1`, `pose2`): `val/verification_accuracy`."""

    def __init__(
        self,
        net: nn.Module,  # IResNet (swaplab.experts.arcface): the network exported for IdentityEncoder
        num_classes: int,  # training identities
        optimizer: Callable[..., torch.optim.Optimizer],  # partial: params -> optimizer
        scheduler: Callable[..., Any] | None = None,  # partial: optimizer -> scheduler, stepped per iteration
        crop: Sequence[float] = ARCFACE_CROP,  # the box of the canonical crop the network sees
        margin_scale: float = 32.0,  # ArcFace s
        margin: float = 0.3,  # ArcFace m (radians)
        margin_warmup_steps: int = 0,  # m grows linearly from 0 over these steps (from-scratch training starts
                                       # as a plain normalised softmax, which converges where a full margin stalls)
        loss_weights: Mapping[str, float] | None = None,  # accepted for the common model interface: {arcface: w}
        experts: Any = None,  # accepted for build_model's interface; this model uses no expert
    ) -> None:
        super().__init__()
        unknown = set(loss_weights or {}) - {"arcface"}
        if unknown:
            raise ValueError(f"IdentityNetModule has the loss term 'arcface' only; unknown: {sorted(unknown)}")
        self.net, self.crop = net, check_box(crop)
        self.head = AdditiveAngularMargin(net.features.num_features, num_classes, margin_scale, margin)
        self.margin, self.margin_warmup_steps = float(margin), int(margin_warmup_steps)
        self.optimizer, self.scheduler = optimizer, scheduler
        self.loss_weight = float((loss_weights or {}).get("arcface", 1.0))
        self.val_scores, self.val_same, self.val_yaw = CatMetric(), CatMetric(), CatMetric()
        self.run_config: dict[str, Any] = {}  # resolved run config, stored in checkpoints

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Unit embeddings of canonical crops (B x 3 x S x S in [-1, 1])."""
        return F.normalize(self.net(crop_box(images, self.crop, self.net.input_size)), dim=-1)

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        if self.margin_warmup_steps:
            self.head.set_margin(self.margin * min(1.0, self.global_step / self.margin_warmup_steps))
        embeddings = self.net(crop_box(batch["image"], self.crop, self.net.input_size))
        loss = self.loss_weight * self.head(embeddings, batch["label"])
        self.log("train/loss", loss, on_step=True, on_epoch=False, prog_bar=True, batch_size=len(embeddings))
        self.log("train/margin", self.head.margin, on_step=True, on_epoch=False, batch_size=len(embeddings))
        return loss

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        first, second = self(torch.cat([batch["image1"], batch["image2"]])).chunk(2)
        self.val_scores.update((first * second).sum(1))
        self.val_same.update(batch["same"].float())
        self.val_yaw.update(torch.maximum(batch["pose1"][:, 0].abs(), batch["pose2"][:, 0].abs()))

    def on_validation_epoch_end(self) -> None:
        report = verification_report(self.val_scores.compute(), self.val_same.compute() > 0.5,
                                     self.val_yaw.compute())
        self.log_dict({f"val/verification_{k}": v for k, v in report.items() if not k.startswith("pairs")},
                      sync_dist=False)
        for metric in (self.val_scores, self.val_same, self.val_yaw):
            metric.reset()

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer([*self.net.parameters(), *self.head.parameters()])
        if self.scheduler is None:
            return optimizer
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": self.scheduler(optimizer), "interval": "step", "name": "lr"}}

    def parameter_counts(self) -> dict[str, int]:
        return {"params/identity_net": sum(p.numel() for p in self.net.parameters()),
                "params/margin_head": self.head.centres.numel()}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["swaplab"] = {"config": self.run_config, "experts": {},
                                 "stages": stage_record(type(self).__name__, ["identity_net"], {"identity_net": "net."})}
