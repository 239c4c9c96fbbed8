"""swap(cfg): put the source face onto each target face with a trained checkpoint.

Inputs are aligned face crops (any size; resized to the model's resolution). Detection, alignment and
pasting back into full frames and videos belong to `swaplab.pipelines` (the inference issue).
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path

import torch
import torch.nn.functional as F
from omegaconf import DictConfig

from swaplab.models.loading import load_swap_model
from swaplab.utils.images import from_uint8, to_uint8
from swaplab.utils.io import list_images, read_rgb, write_rgb

log = logging.getLogger(__name__)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _load_faces(paths: list[Path], resolution: int, skipped: Counter) -> tuple[list[Path], torch.Tensor | None]:
    kept, faces = [], []
    for path in paths:
        image = read_rgb(path, skipped)
        if image is not None:
            tensor = from_uint8(torch.from_numpy(image))[None]
            faces.append(F.interpolate(tensor, size=(resolution, resolution), mode="bilinear", antialias=True,
                                       align_corners=False))
            kept.append(path)
    return kept, (torch.cat(faces) if faces else None)


@torch.inference_mode()
def swap(cfg: DictConfig) -> dict:
    device = pick_device(cfg.device)
    model, run_cfg = load_swap_model(cfg.ckpt, cfg.get("experts"))
    model.to(device)
    generator = model.inference_generator if cfg.use_ema else model.generator
    resolution = int(run_cfg.data.resolution)
    skipped: Counter = Counter()
    _, source = _load_faces([Path(cfg.source)], resolution, Counter())
    if source is None:
        raise ValueError(f"source image {cfg.source} cannot be read")
    target_paths, targets = _load_faces(list_images(cfg.target), resolution, skipped)
    out_dir = Path(cfg.output)
    written = []
    for start in range(0, len(target_paths), cfg.batch_size):
        batch = targets[start : start + cfg.batch_size].to(device)
        swaps = model.generate(source.to(device).expand(len(batch), -1, -1, -1), batch, generator).swap
        for path, image in zip(target_paths[start : start + cfg.batch_size], to_uint8(swaps).cpu().numpy(), strict=True):
            written.append(str(out_dir / f"{path.stem}_swap.png"))
            write_rgb(written[-1], image)
    summary = {"written": len(written), "skipped": dict(skipped), "outputs": written}
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    log.info("swapped %d faces into %s; skipped %s", len(written), out_dir, dict(skipped) or "none")
    return summary
