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
from swaplab.io.files import IMAGE_SUFFIXES, list_images, read_rgb, write_rgb
from swaplab.io.video import VIDEO_SUFFIXES, read_video_frames
from swaplab.models.loading import load_swap_model
from swaplab.pipelines.face_swap import FaceCounts, FaceSwapPipeline, NoFaceError, SourceViews
from swaplab.pipelines.video import swap_video
from swaplab.preprocessing.inputs import is_video, list_inputs
from swaplab.runtime import get_logger, resolve_device

log = get_logger(__name__)
ON_NO_FACE = ("copy", "error", "skip")
NEEDS_SOURCE = "this method needs source=<photo of the person to put in>"


class Outputs:
    """Where swap writes: an `output` ending in an image or video suffix is that one file (the target must be a
    single input of the same kind); anything else is a folder of `<name>_swap.<ext>` files and summary.json."""

    def __init__(self, output: str | Path, units: list[str]) -> None:
        path = Path(output)
        self.file = path if path.suffix.lower() in IMAGE_SUFFIXES | VIDEO_SUFFIXES and not path.is_dir() else None
        if self.file is not None:
            if len(units) != 1:
                raise ValueError(f"output={output} names one file, but the target holds {len(units)} inputs: "
                                 f"give a folder as output")
            if is_video(units[0]) != is_video(path.name):
                raise ValueError(f"output={output} is {_kind(path.name)} file, but the target {units[0]} is "
                                 f"{_kind(units[0])}")
        self.folder = path.parent if self.file is not None else path
        self.summary = self.folder / ("summary.json" if self.file is None else f"{self.file.stem}.summary.json")

    def path(self, unit: str | Path, suffix: str) -> Path:
        """The file the swap of input `unit` (relative to the target root) goes to."""
        return self.file or self.folder / f"{Path(unit).with_suffix('')}_swap{suffix}"


def _kind(name: str) -> str:
    return "a video" if is_video(name) else "an image"


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
    root, units = list_inputs(cfg.target)
    outputs = Outputs(cfg.output, units)  # a wrong output is an error before the model loads
    options = OmegaConf.to_container(cfg.pipeline, resolve=True)
    pipe = FaceSwapPipeline.from_checkpoint(cfg.ckpt, device, cfg.get("experts"), cfg.use_ema, **options)
    for name, value in (cfg.get("model_options") or {}).items():  # e.g. refine=false: HEAR-Net off
        if not hasattr(pipe.model, name):
            raise ValueError(f"model_options.{name}: {type(pipe.model).__name__} has no option {name!r}")
        setattr(pipe.model, name, value)
    source, source_info = None, None
    if pipe.uses_source:
        if cfg.source is None:
            raise ValueError(NEEDS_SOURCE)
        if Path(cfg.source).is_dir() or is_video(str(cfg.source)):
            source, source_info = read_source_views(pipe, Path(cfg.source))
        else:
            source = pipe.face_crop(read_photo(cfg.source))  # NoFaceError when the source has none
    if pipe.options.select == "reference":
        if not cfg.get("reference"):
            raise ValueError("pipeline.select=reference needs reference=<photo of the face to replace>")
        pipe.set_reference(read_photo(cfg.reference))
    single = Path(cfg.target).is_file()
    skipped, results, faces = Counter(), {}, FaceCounts()
    for unit in units:
        path = root / unit
        if is_video(unit):
            video_out = outputs.path(unit, ".mp4")
            try:
                result = swap_video(pipe, source, path, video_out, cfg.batch_size, cfg.smoothing, cfg.preview,
                                    cfg.progress, cfg.video_codec, cfg.crf)
            except ValueError as err:
                if single:
                    raise
                skipped[f"unreadable video ({err})"] += 1
                continue
            results[unit] = {"output": str(video_out), **result.as_dict()}
            faces += result.faces
            continue
        image = read_photo(path) if single else read_rgb(path, skipped)
        if image is None:
            continue
        out = pipe(source, image)
        counts = out.extras["face_counts"]
        faces += counts
        if out.extras["frames_without_face"]:
            message = f"no face to swap in {path} (found {counts.found}; rejected: {dict(counts.rejected) or 'none'})"
            if cfg.on_no_face == "error":
                raise NoFaceError(f"{message} (on_no_face=copy writes it unchanged, =skip leaves it out)")
            log.warning("%s: %s", message, "written unchanged" if cfg.on_no_face == "copy" else "skipped")
            skipped["no face"] += 1
            if cfg.on_no_face == "skip":
                continue
        swapped = to_uint8(out.swap)[0].cpu().numpy()
        written = np.concatenate([image, swapped], 1) if cfg.preview else swapped
        target_out = outputs.path(unit, ".png")
        write_rgb(target_out, written)
        results[unit] = {"output": str(target_out), **counts.as_dict()}
    summary_extra = {"source_views": source_info} if source_info else {}
    return _write_summary(outputs, results, skipped, faces, **summary_extra)


def _write_summary(outputs: Outputs, results: dict[str, Any], skipped: Counter, faces: FaceCounts | None = None,
                   **extra: Any) -> dict:
    """`faces`: the totals of the faces found, swapped and rejected (None: aligned crops, nothing detected);
    `extra`: more top-level entries (source_views)."""
    summary = {"written": len(results), "skipped": dict(skipped), "results": results,
               "outputs": [r["output"] for r in results.values()], "summary": str(outputs.summary), **extra}
    if faces is not None:
        summary["faces"] = faces.as_dict()
        log.info("faces: %d found, %d swapped, rejected %s", faces.found, faces.swapped,
                 dict(faces.rejected) or "none")
    outputs.folder.mkdir(parents=True, exist_ok=True)
    outputs.summary.write_text(json.dumps(summary, indent=2))
    written = outputs.file if outputs.file is not None else f"{len(results)} outputs into {outputs.folder}"
    log.info("wrote %s (summary: %s); skipped %s", written if results else "nothing", outputs.summary,
             dict(skipped) or "none")
    return summary


def read_source_views(pipe: FaceSwapPipeline, path: Path) -> tuple[SourceViews, dict[str, Any]]:
    """A folder of photos or a video of the source person as views for face view interpolation (FSGAN): every
    readable image / frame with a face gives one aligned crop; the others are skipped and counted."""
    model = pipe.model
    if not hasattr(model, "view_map"):
        raise ValueError(f"source={path} is a {'video' if is_video(str(path)) else 'folder'}: several views of the "
                         f"source feed FSGAN's face view interpolation; {type(model).__name__} takes one photo")
    skipped: Counter = Counter()
    if is_video(str(path)):
        images = read_video_frames(path)[0]
    else:
        images = [image for file in list_images(path) if (image := read_rgb(file, skipped)) is not None]
    crops = []
    for image in images:
        try:
            crops.append(pipe.face_crop(image))
        except NoFaceError:
            skipped["no face"] += 1
    if not crops:
        raise NoFaceError(f"no face found in any view of source={path} (skipped: {dict(skipped) or 'none'})")
    views = torch.cat(crops)
    log.info("source %s: %d views (skipped %s)", path, len(views), dict(skipped) or "none")
    return SourceViews(views, model.view_map(views)), {"views": len(views), "skipped": dict(skipped)}


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
    target_files = list_images(cfg.target)
    outputs = Outputs(cfg.output, [p.name for p in target_files])
    model, run_cfg = load_swap_model(cfg.ckpt, cfg.get("experts"))
    model.to(device)
    resolution = int(run_cfg.data.resolution)
    skipped: Counter = Counter()
    source = None
    if getattr(model, "uses_source", True):
        if cfg.source is None:
            raise ValueError(NEEDS_SOURCE)
        _, source = _load_faces([Path(cfg.source)], resolution, Counter())
        if source is None:
            raise ValueError(f"source image {cfg.source} cannot be read")
    target_paths, targets = _load_faces(target_files, resolution, skipped)
    results = {}
    for start in range(0, len(target_paths), cfg.batch_size):
        batch = targets[start : start + cfg.batch_size].to(device)
        src = batch if source is None else source.to(device).expand(len(batch), -1, -1, -1)
        swaps = model(src, batch, use_ema=cfg.use_ema).swap
        for path, image in zip(target_paths[start : start + cfg.batch_size], to_uint8(swaps).cpu().numpy(),
                               strict=True):
            results[str(path)] = {"output": str(outputs.path(path.name, ".png"))}
            write_rgb(results[str(path)]["output"], image)
    return _write_summary(outputs, results, skipped)
