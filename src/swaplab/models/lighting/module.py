"""Training the Fast Face-swap lighting network (Korshunova et al. 2017) as a siamese net.

Both images of a pair go through the same `LightingNet`; d = ||Gamma(x1) - Gamma(x2)||_2. The paper
"maximises the distance for different lighting and minimises it for equal illumination"; we use the
contrastive loss of Hadsell, Chopra & LeCun (2006) that does exactly that with a margin m:
L = 1/2 [ y d^2 + (1 - y) max(0, m - d)^2 ], y = 1 for equal lighting. A pair is called "same" when
d < threshold (default m / 2): `val/accuracy`. `val/auroc` ranks pairs by -d (threshold free).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pytorch_lightning as pl
import torch
from torchmetrics import MeanMetric
from torchmetrics.classification import BinaryAUROC

from swaplab.faces.crop import check_box
from swaplab.models.stages import stage_record
from swaplab.nets.lighting import LightingNet, to_grayscale

Batch = dict[str, torch.Tensor]


def contrastive_loss(distance: torch.Tensor, same: torch.Tensor, margin: float) -> torch.Tensor:
    """Mean over pairs of 1/2 [y d^2 + (1 - y) max(0, margin - d)^2]."""
    y = same.to(distance.dtype)
    return 0.5 * (y * distance.square() + (1 - y) * (margin - distance).clamp_min(0).square()).mean()


class LightingNetModule(pl.LightningModule):
    """Siamese training of `net` on batches with `image1`, `image2` (B,1,H,W) in [-1, 1] and `same` (B,) bool."""

    def __init__(
        self,
        net: LightingNet,  # the siamese branch (shared by both images); exported for LightingFeatures
        optimizer: Callable[..., torch.optim.Optimizer],  # partial: params -> optimizer
        margin: float = 1.0,  # contrastive margin on the feature distance
        threshold: float | None = None,  # "same lighting" when distance < threshold; default margin / 2
        scheduler: Callable[..., Any] | None = None,  # partial: optimizer -> scheduler, stepped per iteration
        loss_weights: Mapping[str, float] | None = None,  # accepted for the common model interface: {contrastive: w}
        experts: Any = None,  # accepted for build_model's interface; this model uses no expert
        input_box: Sequence[float] = (0.0, 1.0),  # where the training images lie inside the canonical expert
        # crop (faceshifter_256), (lo, hi) or (left, top, right, bottom) fractions: the light-loss expert cuts
        # this box out of the crops it is given, so it sees faces framed as in training (exported with the net)
    ) -> None:
        super().__init__()
        if margin <= 0:
            raise ValueError(f"margin must be > 0, got {margin}")
        unknown = set(loss_weights or {}) - {"contrastive"}
        if unknown:
            raise ValueError(f"LightingNetModule has the loss term 'contrastive' only; unknown: {sorted(unknown)}")
        self.net = net
        box = check_box(input_box)
        self.register_buffer("input_box", torch.tensor(box if len(box) == 4 else (box[0], box[0], box[1], box[1])))
        self.optimizer, self.scheduler = optimizer, scheduler
        self.margin = float(margin)
        self.threshold = float(threshold) if threshold is not None else self.margin / 2
        self.loss_weight = float((loss_weights or {}).get("contrastive", 1.0))
        self.val_distance_same, self.val_distance_different = MeanMetric(), MeanMetric()
        self.val_auroc = BinaryAUROC()
        self.run_config: dict[str, Any] = {}  # resolved run config, stored in checkpoints

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Gamma of B x 1 (or RGB 3) x H x W images in [-1, 1]."""
        return self.net(to_grayscale(images))

    def distances(self, batch: Batch) -> torch.Tensor:
        features = self.net(torch.cat([batch["image1"], batch["image2"]]))  # one pass for both branches
        first, second = features.chunk(2)
        return (first - second).norm(dim=1)

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        loss = self.loss_weight * contrastive_loss(self.distances(batch), batch["same"], self.margin)
        self.log("train/loss", loss, on_step=True, on_epoch=False, prog_bar=True, batch_size=len(batch["same"]))
        return loss

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        d, same = self.distances(batch), batch["same"].bool()
        n = len(same)
        self.log_dict({"val/loss": self.loss_weight * contrastive_loss(d, same, self.margin),
                       "val/accuracy": ((d < self.threshold) == same).float().mean()},
                      on_epoch=True, sync_dist=True, batch_size=n)
        if same.any():
            self.val_distance_same.update(d[same])
        if not same.all():
            self.val_distance_different.update(d[~same])
        self.val_auroc.update(-d, same.long())
        self.log_dict({"val/distance_same": self.val_distance_same, "val/distance_different":
                       self.val_distance_different, "val/auroc": self.val_auroc}, on_epoch=True, batch_size=n)

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer(self.net.parameters())
        if self.scheduler is None:
            return optimizer
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": self.scheduler(optimizer), "interval": "step", "name": "lr"}}

    def parameter_counts(self) -> dict[str, int]:
        return {"params/lighting_net": sum(p.numel() for p in self.net.parameters())}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        config = {"in_channels": self.net.in_channels, "input_size": self.net.input_size,
                  "widths": list(self.net.widths), "fc_dims": list(self.net.fc_dims),
                  "input_box": self.input_box.tolist()}
        checkpoint["swaplab"] = {"config": self.run_config, "experts": {}, "lighting_net": config,
                                 "stages": stage_record(type(self).__name__, ["lighting_net"], {"lighting_net": "net."})}
