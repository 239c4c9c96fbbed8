"""Export a trained synthetic identity network for `IdentityEncoder`: checkpoint -> tensors-only IResNet state dict.

    python -m swaplab.models.identity.export <run dir>/checkpoints/last.ckpt src/swaplab/experts/weights/<file>.pt
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from swaplab.experts.registry import sha256_of
from swaplab.io.checkpoints import atomic_torch_save, safe_torch_load


def export_identity_net(checkpoint_path: str | Path, out_path: str | Path) -> str:
    """Write the `net.*` weights of an IdentityNetModule checkpoint (atomic, float32, contiguous); returns the
    file's sha256 (for the weight registry)."""
    state = safe_torch_load(checkpoint_path)
    weights = {k[len("net."):]: v.detach().float().contiguous() if v.is_floating_point() else v.detach()
               for k, v in state.get("state_dict", {}).items() if k.startswith("net.")}
    if not weights:
        raise ValueError(f"{checkpoint_path} holds no 'net.*' weights: not an identity-network checkpoint "
                         "(python train.py experiment=identity_synthetic)")
    atomic_torch_save(weights, out_path)
    return sha256_of(Path(out_path))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m swaplab.models.identity.export", description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint", help="swaplab training checkpoint, e.g. <run dir>/checkpoints/last.ckpt")
    parser.add_argument("out", help="output file, e.g. src/swaplab/experts/weights/synthetic_identity_a.pt")
    args = parser.parse_args(argv)
    print(f"wrote {args.out}: sha256 {export_identity_net(args.checkpoint, args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
