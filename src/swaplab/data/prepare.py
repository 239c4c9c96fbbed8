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

Every data-dependent choice of that step (the output size, which rows warp or resize, which flip, whether any
colour factor differs from 1) is a Python value of `_plan`, which `plan_batch` reads off the small keys while
they are still on the CPU (the datamodule's on_before_batch_transfer, before the transfer): with it,
`prepare_batch` on a GPU queues its kernels without waiting for the device (no `.item()`, `bool(tensor)` or
`nonzero()` on device tensors), so the transfer and the step before it keep overlapping. Without `_plan` it
reads the same choices off the batch's own tensors.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F

GEOMETRY, MATRIX, AUGMENT, PLAN = "_geometry", "_matrix", "_augment", "_plan"
PREP_KEYS = (GEOMETRY, MATRIX, AUGMENT, PLAN)
KEEP, RESIZE, WARP = 0, 1, 2
IMAGE_KEYS = ("target", "source", "fake", "image")  # uint8 crops finished with the batch's geometry
MASK_KEYS = {"target_mask": "target", "source_mask": "source"}  # uint8 label maps (nearest sampling)
AUGMENTED = ("target", "source")  # rows 0 and 1 of `_augment`


def plan_batch(batch: Any) -> Any:
    """A compact batch with its `_plan` (read off `_geometry` / `_augment`: call it while they are on the CPU);
    anything else is returned as it is."""
    if not isinstance(batch, Mapping) or GEOMETRY not in batch or PLAN in batch:
        return batch
    return {**batch, PLAN: make_plan(batch[GEOMETRY], batch.get(AUGMENT))}


def make_plan(geometry: torch.Tensor, augment: torch.Tensor | None = None) -> dict[str, Any]:
    """{"size": R, "modes": {mode: rows}, "<side>_flip": rows, "<side>_jitter": bool}: plain Python values."""
    geometry = geometry.cpu()
    sizes = geometry[:, 1].unique().tolist()
    if len(sizes) != 1:
        raise ValueError(f"one batch must have one output size, got {sizes}")
    mode = geometry[:, 0]
    plan = {"size": int(sizes[0]), "modes": {int(m): (mode == m).nonzero()[:, 0].tolist() for m in mode.unique().tolist()}}
    return plan | (augment_plan(augment) if augment is not None else {})


def augment_plan(augment: torch.Tensor) -> dict[str, Any]:
    """{"<side>_flip": the rows to flip, "<side>_jitter": whether any colour factor differs from 1}."""
    augment, plan = augment.cpu(), {}
    for row, side in enumerate(AUGMENTED):
        plan[f"{side}_flip"] = (augment[:, row, 0] > 0.5).nonzero()[:, 0].tolist()
        plan[f"{side}_jitter"] = bool((augment[:, row, 1:] != 1).any())
    return plan


def prepare_batch(batch: Mapping[str, Any]) -> Any:
    """The float batch of a compact one (on the batch's device); anything else is returned as it is."""
    if not isinstance(batch, Mapping) or GEOMETRY not in batch:
        return batch
    out = {k: v for k, v in batch.items() if k not in PREP_KEYS}
    plan = batch.get(PLAN) or make_plan(batch[GEOMETRY], batch.get(AUGMENT))
    matrix = batch[MATRIX]
    for key in IMAGE_KEYS:
        if key in out:
            out[key] = to_float(finish_geometry(out[key], plan, matrix, labels=False))
    for key in MASK_KEYS:
        if key in out:
            out[key] = finish_geometry(out[key][:, None], plan, matrix, labels=True)[:, 0].long()
    if AUGMENT in batch:
        apply_augment(out, batch[AUGMENT], plan)
    return out


def row_index(rows: list[int], like: torch.Tensor) -> torch.Tensor:
    """`rows` as an index tensor on `like`'s device, copied without waiting for the device."""
    return torch.as_tensor(rows, dtype=torch.long).to(like.device, non_blocking=True)


def to_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 (or float 0..255) crops -> float32 in [-1, 1]."""
    y = x.float() if x.dtype != torch.float32 else x.clone()
    return y.div_(127.5).sub_(1).clamp_(-1, 1)


def finish_geometry(x: torch.Tensor, plan: dict[str, Any], matrix: torch.Tensor, labels: bool) -> torch.Tensor:
    """B x C x S x S crops (uint8) -> B x C x R x R in the output template: float 0..255 for images (bilinear,
    reflection padding), the nearest label otherwise (zero padding); one batched op per mode present. `plan`:
    `make_plan`'s."""
    size, modes = plan["size"], plan["modes"]
    if sum(map(len, modes.values())) != len(x):
        raise ValueError(f"the batch's _plan covers {sum(map(len, modes.values()))} rows, the batch has {len(x)}")
    if set(modes) == {KEEP} and x.shape[-1] == size:
        return x.float()
    whole = len(modes) == 1  # every row in one mode: no gather / scatter
    out = None if whole else x.new_empty((len(x), x.shape[1], size, size), dtype=torch.float32)
    for m, row_list in modes.items():
        rows = None if whole else row_index(row_list, x)
        part = (x if whole else x[rows]).float()
        if m == RESIZE or (m == KEEP and x.shape[-1] != size):
            if labels:
                part = F.interpolate(part, size=(size, size), mode="nearest")
            else:
                part = F.interpolate(part, size=(size, size), mode="bilinear", align_corners=False,
                                     antialias=part.shape[-1] > size)
        elif m == WARP:
            import kornia  # slow to import: only for batches that need a warp

            part = kornia.geometry.transform.warp_affine(
                part, matrix.to(part.device, torch.float32)[slice(None) if whole else rows], (size, size),
                mode="nearest" if labels else "bilinear", padding_mode="zeros" if labels else "reflection",
                align_corners=True)
            if labels:
                part = part.round()
        elif m != KEEP:
            raise ValueError(f"unknown geometry mode {m}")
        if whole:
            return part
        out[rows] = part
    return out


def apply_augment(batch: dict[str, Any], augment: torch.Tensor, plan: dict[str, Any] | None = None) -> None:
    """In place, batched: flip and colour-jitter `target` / `source` (and their masks) with the per-sample
    parameters of `_augment` (B x 2 x 4: flip, brightness, contrast, saturation); `plan`: `make_plan`'s."""
    plan = plan or augment_plan(augment)
    for row, side in enumerate(AUGMENTED):
        if side not in batch:
            continue
        params = augment[:, row].to(batch[side].device)
        b = len(params)
        x = batch[side]
        if plan[f"{side}_flip"]:  # only the flipped rows are copied
            rows = row_index(plan[f"{side}_flip"], x)
            x = x.index_copy(0, rows, x[rows].flip(-1))
            if f"{side}_mask" in batch:
                mask = batch[f"{side}_mask"]
                batch[f"{side}_mask"] = mask.index_copy(0, rows, mask[rows].flip(-1))
        factors = params[:, 1:].to(x.dtype)
        if plan[f"{side}_jitter"]:
            rgb = (x + 1) / 2 * factors[:, 0].view(b, 1, 1, 1)
            mean = rgb.mean((1, 2, 3), keepdim=True)
            rgb = (rgb - mean) * factors[:, 1].view(b, 1, 1, 1) + mean
            gray = (rgb * rgb.new_tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
            rgb = (rgb - gray) * factors[:, 2].view(b, 1, 1, 1) + gray
            x = rgb.clamp(0, 1) * 2 - 1
        batch[side] = x
