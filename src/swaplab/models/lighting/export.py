"""Export a trained lighting network for Fast Face-swap's light loss: checkpoint -> plain LightingNet state dict.

    python -m swaplab.models.lighting.export export <run dir>/checkpoints/last.ckpt weights/lighting_net.pth
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from swaplab.experts.lighting import lighting_state_dict
from swaplab.io.checkpoints import atomic_torch_save
from swaplab.nets.lighting import LightingNet


def export_lighting_net(checkpoint_path: str | Path, out_path: str | Path) -> dict[str, Any]:
    """Write the LightingNet of a training checkpoint as a plain state dict (atomic); returns its config."""
    state = lighting_state_dict(checkpoint_path)
    config = LightingNet.config_from_state_dict(state)
    LightingNet(**config).load_state_dict(state, strict=True)  # refuse to export something that will not load
    atomic_torch_save({k: v.detach().cpu().contiguous() for k, v in state.items()}, out_path)
    return config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m swaplab.models.lighting.export", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    export = sub.add_parser("export", help="checkpoint -> plain LightingNet state dict for LightingFeatures")
    export.add_argument("checkpoint", help="swaplab training checkpoint, e.g. <run dir>/checkpoints/last.ckpt")
    export.add_argument("out", help="output file, e.g. weights/lighting_net.pth")
    args = parser.parse_args(argv)
    config = export_lighting_net(args.checkpoint, args.out)
    print(f"wrote {args.out}: LightingNet {config}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
