"""`python -m swaplab.experts [--weights-dir DIR] [--json] [--no-verify]`: the weight registry, each file
found (where) or missing (and where to get it), with its sha256 checked against the official one."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import swaplab.experts  # noqa: F401  (registers every expert's weight entries)
from swaplab.experts.registry import weights_report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m swaplab.experts", description=__doc__)
    default_dir = os.environ.get("SWAPLAB_WEIGHTS", "weights")
    parser.add_argument("--weights-dir", default=default_dir, help=f"where the files are (default {default_dir})")
    parser.add_argument("--json", action="store_true", help="print one JSON object per file")
    parser.add_argument("--no-verify", action="store_true", help="skip sha256 hashing")
    args = parser.parse_args(argv)

    report = weights_report(Path(args.weights_dir), verify=not args.no_verify)
    for status in report:
        e = status.entry
        sha = {True: "sha256 ok", False: "SHA256 MISMATCH", None: "sha256 not recorded" if e.sha256_prefix is None
               else "sha256 not checked"}[status.sha256_match]
        if args.json:
            print(json.dumps({"key": e.key, "file": e.filename, "status": status.origin,
                              "path": str(status.path) if status.path else None, "sha256_match": status.sha256_match,
                              "source": e.source, "format": e.format}))
        elif status.path is None:
            print(f"MISSING  {e.key:<28} {e.filename}\n         get it from {e.source}\n"
                  f"         put it at {Path(args.weights_dir) / e.filename}")
        else:
            print(f"found    {e.key:<28} {status.path} ({status.origin}, {sha})")
    if not args.json:
        found = sum(s.path is not None for s in report)
        print(f"{found}/{len(report)} weight files available (weights dir: {args.weights_dir})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
