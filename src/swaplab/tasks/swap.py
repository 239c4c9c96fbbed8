"""swap(cfg): put the source face into photos and videos (or aligned crops) with a trained checkpoint.

Full photos and videos go through `swaplab.pipelines.FaceSwapPipeline` (detect, align with the method's template,
swap, mask, colour-correct, blend, paste back). `aligned=true` swaps ready-made aligned crops directly.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf

from swaplab.imaging import from_uint8, to_uint8
from swaplab.io.files import list_images, read_rgb, write_rgb
from swaplab.models.loading import load_swap_model
from swaplab.pipelines.face_swap import FaceSwapPipeline, NoFaceError
from swaplab.pipelines.video import swap_video
from swaplab.preprocessing.inputs import is_video, list_inputs
from swaplab.runtime import get_logger, resolve_device

log = get_logger(__name__)
ON_NO_FACE = ("copy", "error", "skip")


def read_photo(path: str | Path) -> np.ndarray:
    """An RGB photo, or one clear error naming the file."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path} does not exist")
    try:
        return read_rgb(path)
    except Exception as err:  # PIL raises several types for damaged files
        raise ValueError(f"cannot read image {path}: {err}") from None


@torch.inference_mode()
def swap(cfg: DictConfig) -> dict:
    if cfg.on_no_face not in ON_NO_FACE:
        raise ValueError(f"on_no_face must be one of {ON_NO_FACE}, got {cfg.on_no_face!r}")
    device = resolve_device(cfg.device)
    if cfg.aligned:
        return swap_aligned_crops(cfg, device)
    options = OmegaConf.to_container(cfg.pipeline, resolve=True)
    pipe = FaceSwapPipeline.from_checkpoint(cfg.ckpt, device, cfg.get("experts"), cfg.use_ema, **options)
    for name, value in (cfg.get("model_options") or {}).items():  # e.g. refine=false: HEAR-Net off
        if not hasattr(pipe.model, name):
            raise ValueError(f"model_options.{name}: {type(pipe.model).__name__} has no option {name!r}")
        setattr(pipe.model, name, value)
    source = None
    if pipe.uses_source:
        if cfg.source is None:
            raise ValueError("this method needs source=<photo of the person to put in>")
        source = pipe.face_crop(read_photo(cfg.source))  # NoFaceError when the source has none
    if pipe.options.select == "reference":
        if not cfg.get("reference"):
            raise ValueError("pipeline.select=reference needs reference=<photo of the face to replace>")
        pipe.set_reference(read_photo(cfg.reference))
    root, units = list_inputs(cfg.target)
    single = Path(cfg.target).is_file()
    out_dir, skipped, results = Path(cfg.output), Counter(), {}
    for unit in units:
        path = root / unit
        stem = Path(unit).with_suffix("")
        if is_video(unit):
            try:
                result = swap_video(pipe, source, path, out_dir / f"{stem}_swap.mp4", cfg.batch_size,
                                    cfg.smoothing, cfg.preview, cfg.progress, cfg.video_codec, cfg.crf)
            except ValueError as err:
                if single:
                    raise
                skipped[f"unreadable video ({err})"] += 1
                continue
            results[unit] = {"output": str(out_dir / f"{stem}_swap.mp4"), **result.__dict__}
            continue
        image = read_photo(path) if single else read_rgb(path, skipped)
        if image is None:
            continue
        out = pipe(source, image)
        if out.extras["frames_without_face"]:
            message = f"no face found in {path}"
            if cfg.on_no_face == "error":
                raise NoFaceError(f"{message} (on_no_face=copy writes it unchanged, =skip leaves it out)")
            log.warning("%s: %s", message, "written unchanged" if cfg.on_no_face == "copy" else "skipped")
            skipped["no face"] += 1
            if cfg.on_no_face == "skip":
                continue
        swapped = to_uint8(out.swap)[0].cpu().numpy()
        written = np.concatenate([image, swapped], 1) if cfg.preview else swapped
        target_out = out_dir / f"{stem}_swap.png"
        write_rgb(target_out, written)
        results[unit] = {"output": str(target_out), "faces": int(out.extras["faces"].sum())}
    return _write_summary(out_dir, results, skipped)


def _write_summary(out_dir: Path, results: dict[str, Any], skipped: Counter) -> dict:
    summary = {"written": len(results), "skipped": dict(skipped), "results": results,
               "outputs": [r["output"] for r in results.values()]}
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    log.info("wrote %d outputs into %s; skipped %s", len(results), out_dir, dict(skipped) or "none")
    return summary


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


def swap_aligned_crops(cfg: DictConfig, device: torch.device) -> dict:
    """`aligned=true`: source and targets are already crops of the model's template (resized to its side)."""
    model, run_cfg = load_swap_model(cfg.ckpt, cfg.get("experts"))
    model.to(device)
    resolution = int(run_cfg.data.resolution)
    skipped: Counter = Counter()
    _, source = _load_faces([Path(cfg.source)], resolution, Counter())
    if source is None:
        raise ValueError(f"source image {cfg.source} cannot be read")
    target_paths, targets = _load_faces(list_images(cfg.target), resolution, skipped)
    out_dir, results = Path(cfg.output), {}
    for start in range(0, len(target_paths), cfg.batch_size):
        batch = targets[start : start + cfg.batch_size].to(device)
        src = source.to(device).expand(len(batch), -1, -1, -1)
        swaps = model(src, batch, use_ema=cfg.use_ema).swap
        for path, image in zip(target_paths[start : start + cfg.batch_size], to_uint8(swaps).cpu().numpy(),
                               strict=True):
            results[str(path)] = {"output": str(out_dir / f"{path.stem}_swap.png")}
            write_rgb(results[str(path)]["output"], image)
    return _write_summary(out_dir, results, skipped)
