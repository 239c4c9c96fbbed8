"""preprocess(cfg): detect, align, crop (and optionally parse) faces of images / videos into a face store."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from swaplab.errors import ConfigError
from swaplab.preprocessing import PreprocessOptions, Preprocessor
from swaplab.runtime import get_logger, resolve_device

log = get_logger(__name__)


def preprocess_options(cfg: DictConfig) -> PreprocessOptions:
    """The pipeline options named in the config (the other keys keep their defaults)."""
    names = {f.name for f in fields(PreprocessOptions)}
    return PreprocessOptions(**{k: cfg[k] for k in cfg if k in names})


def validate_preprocess_config(cfg: DictConfig) -> PreprocessOptions:
    """Every bad value, in one line, before any expert is built."""
    opts = preprocess_options(cfg)
    problems = opts.problems()
    if not Path(cfg.input).exists():
        problems.append(f"input={cfg.input} does not exist (give an image, a video or a folder of them)")
    if Path(cfg.output).is_file():
        problems.append(f"output={cfg.output} is a file; it must be a folder (new or an existing face store)")
    if str(cfg.get("device", "auto")).split(":")[0] not in ("auto", "cpu", "cuda"):
        problems.append(f"device must be auto, cpu, cuda or cuda:N, got {cfg.device!r}")
    if cfg.get("experts") is None:
        problems.append("preprocess needs an experts config (experts=offline or experts=pretrained)")
    if problems:
        raise ConfigError("invalid configuration: " + "; ".join(problems))
    return opts


def preprocess(cfg: DictConfig) -> dict[str, Any]:
    """Returns the summary (this run's and the store's cumulative counts, skips by reason)."""
    from swaplab.models.loading import build_experts  # Lightning: seconds the store tools need not pay
    opts = validate_preprocess_config(cfg)
    roles = ["detector"] + ["landmarks"] * (opts.landmarks == "dlib68") + ["parsing"] * bool(opts.parsing)
    experts = build_experts(cfg.experts, roles).to(resolve_device(str(cfg.get("device", "auto"))))
    detector = experts.detector
    if hasattr(detector, "min_face_size") and opts.min_face_size >= 1:
        # MTCNN's image pyramid then starts at faces of min_face_size: smaller ones would be dropped anyway
        detector.min_face_size = int(opts.min_face_size)
    preprocessor = Preprocessor(detector, opts, landmarks=getattr(experts, "landmarks", None),
                                parser=getattr(experts, "parsing", None), progress=bool(cfg.get("progress", True)))
    return preprocessor.run(cfg.input, cfg.output)
