"""Weight registry: where each expert's official file comes from and how it is found and loaded safely.

Resolution order: an explicit path -> `<weights_dir>/<file name>` -> an error naming the file, where to
get it and where to put it. Files are loaded as tensors only (safetensors, or `torch.load(weights_only=True)`),
so a checkpoint from an untrusted source can never run code.
"""

from __future__ import annotations

import hashlib
import importlib.util
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from swaplab.errors import MissingWeightsError, UnsafeCheckpointError
from swaplab.io.checkpoints import safe_torch_load
from swaplab.runtime import get_logger

log = get_logger(__name__)


@dataclass(frozen=True)
class WeightEntry:
    key: str  # registry key used in configs
    filename: str  # file name as published
    source: str  # where a user downloads it
    format: str  # what the file holds (e.g. "torch state_dict of IResNet-100")
    sha256: str | None = None  # of the official file, when known
    package: tuple[str, str] | None = None  # (python package, path inside it) when the file ships with one
    licence: str | None = None  # the weights' licence / terms of use, when known

    @property
    def sha256_prefix(self) -> str | None:
        """The full sha256 when recorded, else the prefix torch.hub-style names carry (vgg19-dcbb9e9d.pth)."""
        if self.sha256:
            return self.sha256
        match = re.search(r"-([0-9a-f]{8,64})\.(?:pth|pt|bin|safetensors)$", self.filename)
        return match.group(1) if match else None

    def matches(self, path: Path) -> bool | None:
        """Whether `path` has the official content (None when nothing is recorded to compare with)."""
        prefix = self.sha256_prefix
        return None if prefix is None else sha256_of(path).startswith(prefix)


WEIGHTS: dict[str, WeightEntry] = {}


def register_weights(entry: WeightEntry) -> WeightEntry:
    if entry.key in WEIGHTS and WEIGHTS[entry.key] != entry:
        raise ValueError(f"weight entry '{entry.key}' registered twice with different contents")
    WEIGHTS[entry.key] = entry
    return entry


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def package_file(package: str, relative: str) -> Path | None:
    """A data file inside an installed package, found without importing it (some, like
    face_recognition_models, fail to import on modern setuptools)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        candidate = Path(root) / relative
        if candidate.is_file():
            return candidate
    return None


def resolve_weights(key: str, path: str | Path | None = None, weights_dir: str | Path | None = None) -> Path:
    """The file for registry entry `key`: an explicit path, else `<weights_dir>/<file name>`, else the copy
    shipped inside a package; otherwise MissingWeightsError with one actionable line."""
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
    if entry.package and (shipped := package_file(*entry.package)):
        return shipped
    if entry.source.startswith("`python -m swaplab.experts fetch"):
        command = entry.source.split("`")[1]
        raise MissingWeightsError(f"missing weights '{entry.filename}' for expert '{key}': run `{command} "
                                  f"--weights-dir {candidate.parent}` (downloads and converts it)")
    raise MissingWeightsError(
        f"missing weights '{entry.filename}' for expert '{key}': download it from {entry.source} "
        f"and put it at {candidate} (or set paths.weights_dir / the expert's path)"
    )


def load_tensors(path: str | Path, expected_sha256: str | None = None, subkey: str | None = None,
                 strip_prefix: str = "module.") -> dict[str, torch.Tensor]:
    """Load a state dict without executing any code stored in the file.

    `subkey` picks a nested state dict (e.g. "net_recon" in Deep3DFaceRecon's epoch_20.pth); a
    `strip_prefix` shared by every key (DataParallel's "module.") is removed."""
    path = Path(path)
    if expected_sha256 and sha256_of(path) != expected_sha256:
        raise ValueError(f"{path}: sha256 does not match the registry entry (corrupt or different file)")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file  # safetensors: only for .safetensors files

        return load_file(str(path))
    state = safe_torch_load(path)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if subkey is not None:
        if not isinstance(state, dict) or subkey not in state:
            found = sorted(state) if isinstance(state, dict) else type(state).__name__
            raise KeyError(f"{path} has no entry '{subkey}' (found {found})")
        state = state[subkey]
    if not isinstance(state, dict):
        raise UnsafeCheckpointError(f"{path} does not contain a state dict (found {type(state).__name__})")
    if strip_prefix and state and all(k.startswith(strip_prefix) for k in state):
        state = {k[len(strip_prefix):]: v for k, v in state.items()}
    return state


def load_pretrained(net: torch.nn.Module, weights: str, registry_key: str, path: str | Path | None = None,
                    weights_dir: str | Path | None = None, convert: Callable[[dict], dict] | None = None,
                    subkey: str | None = None, strict: bool = True) -> str:
    """Fill `net` as `weights` says and return where its weights came from (recorded with every run).

    "random": leave the (seeded) initialisation; "pretrained": the registry entry's official file (a sha256
    differing from the recorded one is logged, since fine-tuned files are legitimate), optionally re-keyed by
    `convert` (official names -> ours)."""
    if weights == "random":
        return "random"
    if weights != "pretrained":
        raise ValueError(f"weights must be 'random' or 'pretrained', got {weights!r}")
    file = resolve_weights(registry_key, path=path, weights_dir=weights_dir)
    if WEIGHTS[registry_key].matches(file) is False:
        log.warning("%s: sha256 differs from the official '%s' file; loading it anyway", file, registry_key)
    state = load_tensors(file, subkey=subkey)
    # half-precision re-saves of an official file load like the original
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    if convert is not None:
        state = convert(state)
    try:
        missing, unexpected = net.load_state_dict(state, strict=False)
    except RuntimeError as err:  # tensor shapes differ: a file of another depth or width
        raise ValueError(f"{file} does not match the '{registry_key}' architecture "
                         f"({WEIGHTS[registry_key].format}): {' '.join(str(err).split())}") from err
    if strict and (missing or unexpected):
        raise ValueError(
            f"{file} does not match the '{registry_key}' architecture ({WEIGHTS[registry_key].format}): "
            f"missing keys {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected keys {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}"
        )
    return str(file)


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Deterministic random initialisation (the same on every rank and every run) without touching
    the global RNG stream."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


@dataclass(frozen=True)
class WeightStatus:
    entry: WeightEntry
    path: Path | None  # where the file was found (None: missing)
    origin: str  # "weights_dir", "package" or "missing"
    sha256_match: bool | None  # None when no official sha256 is recorded or the file is missing


def weights_report(weights_dir: str | Path, verify: bool = True) -> list[WeightStatus]:
    """Every registered file: found under `weights_dir`, shipped in a package, or missing; with its sha256
    compared to the official one when recorded (`verify=False` skips hashing large files)."""
    report = []
    for key in sorted(WEIGHTS):
        entry = WEIGHTS[key]
        try:
            path = resolve_weights(key, weights_dir=weights_dir)
        except MissingWeightsError:
            report.append(WeightStatus(entry, None, "missing", None))
            continue
        origin = "weights_dir" if path == Path(weights_dir) / entry.filename else "package"
        match = entry.matches(path) if verify else None
        report.append(WeightStatus(entry, path, origin, match))
    return report
