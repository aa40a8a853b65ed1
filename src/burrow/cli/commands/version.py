"""``burrow version``: the version and which optional features are importable."""

from __future__ import annotations

import argparse
import importlib.util
import json

OPTIONAL = {
    "fuse": "pyfuse3",
    "trio": "trio",
    "fsspec": "fsspec",
    "rich": "rich",
    "uvloop": "uvloop",
}


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON")


def run(args: argparse.Namespace) -> int:
    from burrow._version import __version__

    features = {name: importlib.util.find_spec(mod) is not None for name, mod in OPTIONAL.items()}
    if args.json:
        print(json.dumps({"version": __version__, "features": features}))
    else:
        print(f"burrow {__version__}")
        for name, present in features.items():
            print(f"  {name:8} {'yes' if present else 'no'}")
    return 0
