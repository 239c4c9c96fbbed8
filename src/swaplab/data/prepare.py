"""What crosses the DataLoader's process boundary, and the batched step that makes training batches of it.

Real-face datasets (`FacePairs`: folders, the store, FF++, their mixes) hand over compact batches: crops as
uint8 B x 3 x S x S at their stored size S and template, masks as uint8 B x S x S, plus three small keys that
say how to finish them: `_geometry` (B x 2 int32: mode KEEP / RESIZE / WARP and the output size R), `_matrix`
(B x 2 x 3 float32, stored pixel -> output pixel, for WARP) and `_augment` (B x 2 x 4 float32: for target and
source, the flip flag and the brightness / contrast / saturation factors, drawn in the worker from the pair key
by the dataset's hash, so a pair's augmentation does not depend on the process or the batch it is in).

`prepare_batch` runs on the training device after transfer (the SwapModule's on_after_batch_transfer; the
evaluation runner, the galleries, hard-sample mining and the image grid call it too): template resize / warp,
conversion to [-1, 1] float, flips and colour jitter, all batched, masks to int64. A batch without these keys
(the procedural datasets, which render float images) passes through unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F

GEOMETRY, MATRIX, AUGMENT = "_geometry", "_matrix", "_augment"
PREP_KEYS = (GEOMETRY, MATRIX, AUGMENT)
KEEP, RESIZE, WARP = 0, 1, 2
IMAGE_KEYS = ("target", "source", "fake", "image")  # uint8 crops finished with the batch's geometry
MASK_KEYS = {"target_mask": "target", "source_mask": "source"}  # uint8 label maps (nearest sampling)
AUGMENTED = ("target", "source")  # rows 0 and 1 of `_augment`


def prepare_batch(batch: Mapping[str, Any]) -> Any:
    """The float batch of a compact one (on the batch's device); anything else is returned as it is."""
    if not isinstance(batch, Mapping) or GEOMETRY not in batch:
        return batch
    out = {k: v for k, v in batch.items() if k not in PREP_KEYS}
    geometry, matrix = batch[GEOMETRY], batch[MATRIX]
    for key in IMAGE_KEYS:
        if key in out:
            out[key] = to_float(finish_geometry(out[key], geometry, matrix, labels=False))
    for key in MASK_KEYS:
        if key in out:
            out[key] = finish_geometry(out[key][:, None], geometry, matrix, labels=True)[:, 0].long()
    if AUGMENT in batch:
        apply_augment(out, batch[AUGMENT])
    return out


def to_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 (or float 0..255) crops -> float32 in [-1, 1]."""
    y = x.float() if x.dtype != torch.float32 else x.clone()
    return y.div_(127.5).sub_(1).clamp_(-1, 1)


def finish_geometry(x: torch.Tensor, geometry: torch.Tensor, matrix: torch.Tensor, labels: bool) -> torch.Tensor:
    """B x C x S x S crops (uint8) -> B x C x R x R in the output template: float 0..255 for images (bilinear,
    reflection padding), the nearest label otherwise (zero padding); one batched op per mode present."""
    mode, size = geometry[:, 0], int(geometry[0, 1])
    if bool((geometry[:, 1] != size).any()):
        raise ValueError(f"one batch must have one output size, got {geometry[:, 1].unique().tolist()}")
    if bool((mode == KEEP).all()) and x.shape[-1] == size:
        return x.float()
    out = x.new_empty((len(x), x.shape[1], size, size), dtype=torch.float32)
    for m in mode.unique().tolist():
        rows = (mode == m).nonzero()[:, 0]
        part = x[rows].float()
        if m == RESIZE or (m == KEEP and x.shape[-1] != size):
            if labels:
                part = F.interpolate(part, size=(size, size), mode="nearest")
            else:
                part = F.interpolate(part, size=(size, size), mode="bilinear", align_corners=False,
                                     antialias=part.shape[-1] > size)
        elif m == WARP:
            import kornia  # slow to import: only for batches that need a warp

            part = kornia.geometry.transform.warp_affine(
                part, matrix[rows].to(part.device, torch.float32), (size, size),
                mode="nearest" if labels else "bilinear", padding_mode="zeros" if labels else "reflection",
                align_corners=True)
            if labels:
                part = part.round()
        elif m != KEEP:
            raise ValueError(f"unknown geometry mode {m}")
        out[rows] = part
    return out


def apply_augment(batch: dict[str, Any], augment: torch.Tensor) -> None:
    """In place, batched: flip and colour-jitter `target` / `source` (and their masks) with the per-sample
    parameters of `_augment` (B x 2 x 4: flip, brightness, contrast, saturation)."""
    for row, side in enumerate(AUGMENTED):
        if side not in batch:
            continue
        params = augment[:, row].to(batch[side].device)
        flip = params[:, 0] > 0.5
        b = len(flip)
        x = batch[side]
        if bool(flip.any()):  # only the flipped rows are copied
            rows = flip.nonzero()[:, 0]
            x = x.index_copy(0, rows, x[rows].flip(-1))
            if f"{side}_mask" in batch:
                mask = batch[f"{side}_mask"]
                batch[f"{side}_mask"] = mask.index_copy(0, rows, mask[rows].flip(-1))
        factors = params[:, 1:].to(x.dtype)
        if bool((factors != 1).any()):
            rgb = (x + 1) / 2 * factors[:, 0].view(b, 1, 1, 1)
            mean = rgb.mean((1, 2, 3), keepdim=True)
            rgb = (rgb - mean) * factors[:, 1].view(b, 1, 1, 1) + mean
            gray = (rgb * rgb.new_tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
            rgb = (rgb - gray) * factors[:, 2].view(b, 1, 1, 1) + gray
            x = rgb.clamp(0, 1) * 2 - 1
        batch[side] = x
