"""The store side of preprocessing: dataset.json metadata and its compatibility check, the units complete
shards already hold (what a re-run skips), cumulative totals, and `ShardSink`, which writes finished units
into shards.

A unit never spans shards and is done once a shard's done.json lists it; a shard is closed when it holds
`shard_size` faces (a unit with more faces gets a shard of its own)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from swaplab.data import store as st
from swaplab.faces.parsing import CELEBAMASK_CLASSES
from swaplab.faces.templates import Template
from swaplab.preprocessing.extraction import Unit
from swaplab.preprocessing.options import PreprocessOptions


def store_meta(template: Template, opts: PreprocessOptions) -> dict[str, Any]:
    return {"format": st.FORMAT, "version": st.VERSION, "template": template.name, "size": template.size,
            "image_codec": opts.codec, "jpeg_quality": int(opts.jpeg_quality), "labels": bool(opts.parsing),
            "label_classes": list(CELEBAMASK_CLASSES) if opts.parsing else []}


def check_compatible(out: Path, existing: dict[str, Any], wanted: dict[str, Any]) -> None:
    keys = ["format", "template", "size", "image_codec", "labels"] + (["jpeg_quality"] if
                                                                      wanted["image_codec"] == "jpeg" else [])
    diff = {k: (existing.get(k), wanted[k]) for k in keys if existing.get(k) != wanted[k]}
    if diff:
        text = ", ".join(f"{k}={a!r} there, {b!r} asked" for k, (a, b) in diff.items())
        raise ValueError(f"output {out} holds a store made with other settings ({text}): use another output "
                         f"folder or the same settings")


def done_units(out: Path) -> dict[str, dict[str, Any]]:
    """Every unit listed in a complete shard's done.json."""
    return {u["source"]: u for n in st.complete_shards(out) for u in st.read_done(out, n)["units"]}


def totals(out: Path) -> dict[str, Any]:
    """Cumulative counts over every complete shard."""
    units = done_units(out)
    status = Counter(u["status"] for u in units.values())
    return {"units": len(units), "ok": status.pop("ok", 0), "faces": sum(u.get("faces", 0) for u in units.values()),
            "frames_without_face": sum(u.get("frames_without_face", 0) for u in units.values()),
            "skipped": dict(sorted(status.items())), "shards": len(st.complete_shards(out))}


class ShardSink:
    """Opens shards as needed (numbered after the complete ones), keeps each unit inside one shard and closes
    a shard when it is full."""

    def __init__(self, out: Path, meta: dict[str, Any], shard_size: int) -> None:
        self.out, self.meta, self.shard_size = out, meta, shard_size
        done = st.complete_shards(out)
        self.next_number = done[-1] + 1 if done else 0
        self.writer: st.ShardWriter | None = None

    def add(self, unit: Unit) -> None:
        """The unit's faces (none unless its status is ok) and its done.json entry."""
        faces = unit.faces if unit.status() == "ok" else []
        if self.writer is not None and len(self.writer) and len(self.writer) + len(faces) > self.shard_size:
            self.close()
        if self.writer is None:
            self.writer = st.ShardWriter(self.out, self.next_number, self.meta)
            self.next_number += 1
        for face in faces:
            row = {"source": unit.source, "frame": face["frame"], "identity": unit.identity, **face["row"]}
            self.writer.add(face["crop"], row, face["labels"])
        self.writer.record({"source": unit.source, "status": unit.status(), "faces": len(faces),
                            "frames": unit.frames, "frames_without_face": unit.frames_without_face})
        if len(self.writer) >= self.shard_size:
            self.close()

    def close(self) -> None:
        """Finish the open shard (its done.json last)."""
        if self.writer is not None:
            self.writer.close()
            self.writer = None
