"""Export a trained lighting network for Fast Face-swap's light loss: checkpoint -> plain LightingNet state dict.

    python -m swaplab.models.lighting.export export <run dir>/checkpoints/last.ckpt weights/lighting_net.pth
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch

from swaplab.experts.lighting import lighting_state_dict
from swaplab.io.checkpoints import atomic_torch_save
from swaplab.nets.lighting import LightingNet


def export_lighting_net(checkpoint_path: str | Path, out_path: str | Path) -> dict[str, Any]:
    """Write the LightingNet of a training checkpoint as a plain state dict (atomic), with `input_box` (where
    its training images lie in the canonical crop; the light-loss expert cuts it); returns its config."""
    state, box = lighting_state_dict(checkpoint_path)
    config = LightingNet.config_from_state_dict(state)
    LightingNet(**config).load_state_dict(state, strict=True)  # refuse to export something that will not load
    out = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    if box is not None:
        out["input_box"] = torch.tensor(box)
    atomic_torch_save(out, out_path)
    return config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m swaplab.models.lighting.export", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    export = sub.add_parser("export", help="checkpoint -> plain LightingNet state dict for LightingFeatures")
    export.add_argument("checkpoint", help="swaplab training checkpoint, e.g. <run dir>/checkpoints/last.ckpt")
    export.add_argument("out", help="output file, e.g. weights/lighting_net.pth")
    args = parser.parse_args(argv)
    config = export_lighting_net(args.checkpoint, args.out)
    print(f"wrote {args.out}: LightingNet {config}, trained on the box {lighting_state_dict(args.out)[1]} of the "
          "canonical crop")
    return 0


if __name__ == "__main__":
    sys.exit(main())
