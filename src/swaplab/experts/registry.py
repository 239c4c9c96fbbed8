"""Weight registry: where each expert's official file comes from and how it is found and loaded safely.

Resolution order: an explicit path -> `<weights_dir>/<file name>` -> an error naming the file, where to
get it and where to put it. Files are loaded as tensors only (safetensors, or `torch.load(weights_only=True)`),
so a checkpoint from an untrusted source can never run code.
"""

from __future__ import annotations

import hashlib
import pickle
from dataclasses import dataclass
from pathlib import Path

import torch


@dataclass(frozen=True)
class WeightEntry:
    key: str  # registry key used in configs
    filename: str  # file name as published
    source: str  # where a user downloads it
    format: str  # what the file holds (e.g. "torch state_dict of IResNet-100")
    sha256: str | None = None  # of the official file, when known


class MissingWeightsError(FileNotFoundError):
    pass


class UnsafeCheckpointError(RuntimeError):
    pass


WEIGHTS: dict[str, WeightEntry] = {}


def register_weights(entry: WeightEntry) -> WeightEntry:
    if entry.key in WEIGHTS and WEIGHTS[entry.key] != entry:
        raise ValueError(f"weight entry '{entry.key}' registered twice with different contents")
    WEIGHTS[entry.key] = entry
    return entry


register_weights(WeightEntry(
    key="arcface_r100_ms1mv3",
    filename="ms1mv3_arcface_r100_fp16/backbone.pth",
    source="InsightFace arcface_torch model zoo (github.com/deepinsight/insightface/tree/master/recognition/arcface_torch)",
    format="torch state_dict of IResNet-100 (arcface_torch key names), 112x112 RGB input in [-1, 1]",
))
register_weights(WeightEntry(
    key="arcface_r50_ms1mv3",
    filename="ms1mv3_arcface_r50_fp16/backbone.pth",
    source="InsightFace arcface_torch model zoo (github.com/deepinsight/insightface/tree/master/recognition/arcface_torch)",
    format="torch state_dict of IResNet-50 (arcface_torch key names), 112x112 RGB input in [-1, 1]",
))


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def resolve_weights(key: str, path: str | Path | None = None, weights_dir: str | Path | None = None) -> Path:
    """The file for registry entry `key`, or MissingWeightsError with one actionable line."""
    if key not in WEIGHTS:
        raise KeyError(f"no weight entry '{key}'; known: {sorted(WEIGHTS)}")
    entry = WEIGHTS[key]
    if path:
        if Path(path).is_file():
            return Path(path)
        raise MissingWeightsError(f"weights file {path} for '{key}' does not exist (get {entry.filename} from {entry.source})")
    candidate = Path(weights_dir or "weights") / entry.filename
    if candidate.is_file():
        return candidate
    raise MissingWeightsError(
        f"missing weights '{entry.filename}' for expert '{key}': download it from {entry.source} "
        f"and put it at {candidate} (or set paths.weights_dir / the expert's path)"
    )


def load_tensors(path: str | Path, expected_sha256: str | None = None) -> dict[str, torch.Tensor]:
    """Load a state dict without executing any code stored in the file."""
    path = Path(path)
    if expected_sha256 and sha256_of(path) != expected_sha256:
        raise ValueError(f"{path}: sha256 does not match the registry entry (corrupt or different file)")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise UnsafeCheckpointError(
            f"{path} holds more than tensors (arbitrary pickled objects); refused for safety. "
            "Re-save it as a plain state_dict or safetensors from a trusted environment."
        ) from err
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise UnsafeCheckpointError(f"{path} does not contain a state dict (found {type(state).__name__})")
    return state
