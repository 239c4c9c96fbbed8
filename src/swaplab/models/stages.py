"""Frozen predecessor stages: the one config key, loader, start-up policy and checkpoint record of every model
trained on top of networks from an earlier run (FSGAN's later stages on the earlier generators, HEAR-Net on
the AEI-Net).

Config keys (model group):
  predecessor_ckpt           the earlier run's checkpoint. It must RECORD the networks this model freezes as
                             trained (weights alone prove nothing: every FSGAN checkpoint holds all four
                             generators); otherwise it is refused, naming what is missing and what it holds.
  allow_random_predecessors  false (default): a model that needs predecessors and gets no predecessor_ckpt fails
                             at start-up. true (tests, benchmarks, smoke runs): it runs with random frozen networks
                             after one loud warning, and its checkpoints record them as random, so no later stage
                             accepts them as predecessors.
  predecessor_record         filled in the config saved with a checkpoint (never by hand): the record of the
                             frozen networks, whose weights come with the checkpoint's state dict.

Record: every swaplab checkpoint carries checkpoint["swaplab"]["stages"], plain containers only:
  {"model": "FSGAN",                                   # the LightningModule class that wrote it
   "trained": ["inpainting"],                          # the networks this run trained
   "weights": {"segmentation": "generator.segmentation.", ...},  # each network's state-dict prefix (EMA if kept)
   "frozen": {"segmentation": {"path": "/abs/reenactment.ckpt", "sha256": "..."}, ...},  # or {"random": true}
   "predecessor": {"path": ..., "sha256": ..., "record": {<that file's own "stages" record>}} | None,
   "resolutions": {"inpainting": 256}}                 # optional: the side each trained network was trained at
A network counts as trained in a checkpoint when the run trained it, or froze it from a predecessor in which it
counts as trained (recursively, through the nested records); its resolution is found the same way.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from swaplab.experts.registry import sha256_of
from swaplab.io.checkpoints import safe_torch_load
from swaplab.runtime import get_logger

log = get_logger(__name__)
CKPT_KEY, SWITCH_KEY = "model.predecessor_ckpt", "model.allow_random_predecessors"


def stage_record(model: str, trained: Sequence[str], weights: Mapping[str, str],
                 predecessors: Predecessors | None = None) -> dict[str, Any]:
    """The `stages` record of a checkpoint (see the module docstring)."""
    frozen = predecessors.record() if predecessors is not None else {"frozen": {}, "predecessor": None}
    return {"model": model, "trained": list(trained), "weights": dict(weights), **copy.deepcopy(frozen)}


def trained_networks(record: Mapping[str, Any]) -> list[str]:
    """The networks that count as trained in a checkpoint with this record."""
    found = list(record.get("trained") or [])
    predecessor = record.get("predecessor") or {}
    inherited = trained_networks(predecessor["record"]) if predecessor.get("record") else []
    for name, source in (record.get("frozen") or {}).items():
        if not source.get("random") and name in inherited and name not in found:
            found.append(name)
    return found


def recorded_resolution(record: Mapping[str, Any] | None, name: str) -> int | None:
    """The side the network `name` was trained at, from the record of the run that trained it (followed through
    the nested predecessor records); None when no record says (random, or a record from before resolutions)."""
    if not record:
        return None
    if name in (record.get("trained") or []):
        side = (record.get("resolutions") or {}).get(name)
        return int(side) if side else None
    source = (record.get("frozen") or {}).get(name) or {}
    predecessor = record.get("predecessor") or {}
    return None if source.get("random") else recorded_resolution(predecessor.get("record"), name)


def describe_record(record: Mapping[str, Any]) -> str:
    """One line: the model, what it trained, where its frozen networks came from."""
    text = f"a checkpoint of {record.get('model', '?')} that trained {list(record.get('trained') or [])}"
    frozen = record.get("frozen") or {}
    loaded = [n for n, s in frozen.items() if not s.get("random")]
    random = [n for n, s in frozen.items() if s.get("random")]
    if loaded:
        text += f", froze {loaded} from {(record.get('predecessor') or {}).get('path')}"
    if random:
        text += f", ran with RANDOM {random} ({SWITCH_KEY}=true)"
    return f"{text}; trained in it: {trained_networks(record)}"


@dataclass
class Predecessors:
    """A model's frozen predecessor networks and where they came from; `checkpoint` is the loaded predecessor
    checkpoint until `release()` (None: random networks, or a model rebuilt from its own checkpoint)."""

    frozen: dict[str, dict[str, Any]] = field(default_factory=dict)
    predecessor: dict[str, Any] | None = None
    checkpoint: dict[str, Any] | None = field(default=None, repr=False)

    def load_into(self, name: str, net: nn.Module) -> None:
        """`net` <- the trained weights of `name` in the predecessor checkpoint (strict); nothing when there
        is none (random, or restored from the state dict that follows)."""
        if self.checkpoint is None:
            return
        prefix = self.predecessor["record"]["weights"][name]
        state = self.checkpoint["state_dict"]
        weights = {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}
        if not weights:
            raise ValueError(f"{CKPT_KEY}={self.predecessor['path']} records {name!r} under '{prefix}*' but holds "
                             f"no such weights")
        net.load_state_dict(weights, strict=True)

    def release(self) -> None:
        self.checkpoint = None  # the predecessor's tensors are in the networks now

    def record(self) -> dict[str, Any]:
        return {"frozen": copy.deepcopy(self.frozen), "predecessor": copy.deepcopy(self.predecessor)}


def load_predecessors(owner: str, needed: Sequence[str], path: str | Path | None, allow_random: bool = False,
                      restored: Mapping[str, Any] | None = None, how_to: str = "") -> Predecessors:
    """The one policy for frozen predecessors. `owner` names the model in messages, `needed` the networks it
    freezes, `path` the predecessor checkpoint (model.predecessor_ckpt), `restored` the record saved with the
    model's own checkpoint (its weights follow in the state dict), `how_to` how to get the checkpoint."""
    path = None if path in (None, "", "???") else path
    needed = list(needed)
    if restored is not None:  # rebuilt from its own checkpoint: the state dict brings the frozen networks
        return Predecessors(dict(restored.get("frozen") or {}), restored.get("predecessor"))
    if not needed:
        if path is not None:
            raise ValueError(f"{owner} freezes no earlier networks: {CKPT_KEY} must be null, got {path}")
        return Predecessors()
    if path is None:
        if not allow_random:
            raise ValueError(f"{owner} needs trained {needed} from {CKPT_KEY}, which is not set: {how_to} "
                             f"({SWITCH_KEY}=true runs with random ones, for tests and benchmarks only)")
        log.warning("=" * 20 + " %s runs with RANDOM frozen %s (%s=true, no %s): its swaps are meaningless and "
                    "its checkpoints record the random networks, so no later stage accepts them " + "=" * 20,
                    owner, needed, SWITCH_KEY, CKPT_KEY)
        return Predecessors({name: {"random": True} for name in needed})
    if not Path(path).is_file():
        raise FileNotFoundError(f"{CKPT_KEY}={path} does not exist: {how_to}")
    checkpoint = safe_torch_load(path)
    meta = checkpoint.get("swaplab") if isinstance(checkpoint, dict) else None
    record = meta.get("stages") if isinstance(meta, dict) else None
    if not isinstance(record, dict) or "state_dict" not in checkpoint:
        raise ValueError(f"{CKPT_KEY}={path} has no record of the networks trained in it "
                         f"(checkpoint['swaplab']['stages']: not a swaplab training checkpoint, or one written "
                         f"before records), so it cannot show trained {needed} for {owner}: {how_to}")
    missing = [name for name in needed if name not in trained_networks(record)]
    if missing:
        raise ValueError(f"{CKPT_KEY}={path} lacks trained {missing} for {owner}: it is {describe_record(record)} "
                         f"({how_to})")
    source = {"path": str(Path(path).absolute()), "sha256": sha256_of(Path(path))}
    return Predecessors({name: dict(source) for name in needed}, {**source, "record": record}, checkpoint)


def self_contained_config(meta: dict[str, Any], predecessors: Predecessors) -> None:
    """The run config saved in a checkpoint (meta["config"]) rebuilds the model from the checkpoint alone: no
    predecessor file, the record of the frozen networks in its place (their weights are in the state dict)."""
    meta["config"] = config = copy.deepcopy(meta["config"])
    if "model" in config:
        config["model"]["predecessor_ckpt"] = None
        config["model"]["predecessor_record"] = predecessors.record()

