"""Metrics against the true swap of procedural pairs (`SyntheticSwapDataset(true_swap=True)`, the
`synthetic_truth` protocol): image agreement (PSNR, SSIM, L1 over the image or the true face) and the
68-landmark error of the swap against the true swap's landmarks."""

from __future__ import annotations

from typing import Any

import torch
from torchmetrics.functional.image import structural_similarity_index_measure

from swaplab.experts.dlib_models import DlibLandmarks, dlib_landmarks
from swaplab.metrics.registry import SwapMetric, SwapRecord, cat_state, register_metric

MEASURES = {"psnr": True, "ssim": True, "l1": False}  # measure -> higher is better
REGIONS = ("image", "face")
OUTER_EYE_CORNERS_68 = (36, 45)  # iBUG 68: the inter-ocular distance of 300-W's NME


def region_mean(values: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Per-example mean of B x C x H x W `values` over the pixels where the B x 1 x H x W `weight` is 1 (all
    channels); NaN for an example whose region is empty."""
    total = (values * weight).sum((1, 2, 3))
    count = weight.sum((1, 2, 3)) * values.shape[1]
    return torch.where(count > 0, total / count.clamp_min(1), torch.full_like(total, float("nan")))


@register_metric("truth_image")
class TruthImage(SwapMetric):
    """The swap (`image`) against the true swap (`truth_key`), images mapped from [-1, 1] to [0, 1], per pair:
    `measure` psnr (dB, capped at `max_psnr` for identical images), ssim (Gaussian window 11, sigma 1.5) or l1
    (mean absolute difference), over the whole image (`region: image`) or the true swap's face skin
    (`region: face`: the pixels where `mask_key` is `face_class`; MSE / |difference| / the full SSIM map
    averaged there, all channels). The summary is the mean over pairs (pairs with an empty face are skipped)."""

    def __init__(self, measure: str = "psnr", region: str = "image", image: str = "swap", truth_key: str = "true_swap",
                 mask_key: str = "true_swap_mask", face_class: int = 1, max_psnr: float = 100.0,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if measure not in MEASURES:
            raise ValueError(f"truth_image measure must be one of {sorted(MEASURES)}, got {measure!r}")
        if region not in REGIONS:
            raise ValueError(f"truth_image region must be one of {list(REGIONS)}, got {region!r}")
        if image not in ("swap", "source", "target"):
            raise ValueError(f"truth_image image must be 'swap', 'source' or 'target', got {image!r}")
        self.measure, self.region, self.image = measure, region, image
        self.truth_key, self.mask_key, self.face_class, self.max_psnr = truth_key, mask_key, int(face_class), max_psnr
        self.__dict__["higher_is_better"] = MEASURES[measure]  # per instance (torchmetrics makes it a const)
        self.add_state("values", default=[], dist_reduce_fx="cat")

    def weight(self, record: SwapRecord, like: torch.Tensor) -> torch.Tensor:
        if self.region == "image":
            return torch.ones_like(like[:, :1])
        mask = record.ground_truth(self.mask_key).to(like.device)
        return (mask == self.face_class).to(like.dtype)[:, None]

    def update(self, record: SwapRecord) -> None:
        image = (record.image(self.image).float() + 1) / 2
        truth = (record.ground_truth(self.truth_key).to(image.device).float() + 1) / 2
        weight = self.weight(record, image)
        if self.measure == "l1":
            value = region_mean((image - truth).abs(), weight)
        elif self.measure == "psnr":
            mse = region_mean((image - truth).pow(2), weight)
            value = (-10 * torch.log10(mse)).clamp(max=self.max_psnr)
        else:
            _, ssim_map = structural_similarity_index_measure(image, truth, data_range=1.0, reduction="none",
                                                              return_full_image=True)
            value = region_mean(ssim_map, weight)
        self.values.append(value)

    def compute(self) -> dict[str, torch.Tensor]:
        return {"": cat_state(self.values).nanmean()}

    def per_example(self) -> dict[str, torch.Tensor]:
        return {"": cat_state(self.values)}


@register_metric("landmark_error")
class LandmarkError(SwapMetric):
    """68-point landmark error of the swap (`image`) against the true swap's landmarks (`truth_key`, pixels):
    the `landmarks_role` expert on the swap (dlib 68 runs inside the fixed face box `DLIB_FACE_BOX` of the
    canonical crop, no detection; another expert is called on the images and returns B x 68 x 2 pixels).
    Per pair: the mean point distance in pixels (headline) and that distance divided by the true inter-ocular
    distance (outer eye corners 36 and 45, `nme`). Its floor is the expert's own error (the `true_swap`
    reference row)."""

    role_args = ("landmarks_role",)
    higher_is_better = False

    def __init__(self, landmarks_role: str = "landmarks", image: str = "swap",
                 truth_key: str = "true_swap_landmarks", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if image not in ("swap", "source", "target"):
            raise ValueError(f"landmark_error image must be 'swap', 'source' or 'target', got {image!r}")
        self.landmarks_role, self.image, self.truth_key = landmarks_role, image, truth_key
        self.add_state("pixels", default=[], dist_reduce_fx="cat")
        self.add_state("normalised", default=[], dist_reduce_fx="cat")

    def landmarks(self, record: SwapRecord) -> torch.Tensor:
        """The expert's B x 68 x 2 points on the record's `image` (once per record and role)."""
        key = (self.landmarks_role, self.image)
        if key not in record.cache:
            expert, images = self.expert("landmarks_role"), record.image(self.image)
            record.cache[key] = dlib_landmarks(expert, images) if isinstance(expert, DlibLandmarks) else expert(images)
        return record.cache[key]

    def update(self, record: SwapRecord) -> None:
        points = self.landmarks(record).float()
        truth = record.ground_truth(self.truth_key).to(points.device).float()
        if points.shape != truth.shape:
            raise ValueError(f"landmark_error: the '{self.landmarks_role}' expert gives {tuple(points.shape)} points, "
                             f"the truth '{self.truth_key}' has {tuple(truth.shape)}")
        error = (points - truth).norm(dim=-1).mean(-1)
        left, right = OUTER_EYE_CORNERS_68
        self.pixels.append(error)
        self.normalised.append(error / (truth[:, left] - truth[:, right]).norm(dim=-1))

    def compute(self) -> dict[str, torch.Tensor]:
        return {"": cat_state(self.pixels).mean(), "nme": cat_state(self.normalised).mean()}

    def per_example(self) -> dict[str, torch.Tensor]:
        return {"": cat_state(self.pixels), "nme": cat_state(self.normalised)}
