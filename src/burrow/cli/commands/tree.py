"""``burrow tree [-a] [-L N] [--json] IMAGE[@PART]:PATH``: a directory tree, like ``tree``."""

from __future__ import annotations

import argparse
import posixpath
import sys
from typing import Any

from burrow.fs.paths import PathFS


def configure(parser: argparse.ArgumentParser) -> None:
    from burrow.cli.common import add_json

    parser.add_argument("path", metavar="IMAGE[@PART]:PATH")
    parser.add_argument("-a", dest="all", action="store_true", help="include names starting with .")
    parser.add_argument("-L", dest="level", type=int, default=0, help="descend at most N levels")
    add_json(parser)


def _children(pfs: PathFS, path: str, show_all: bool) -> list[tuple[str, bool, str | None]]:
    out = []
    for e in sorted(pfs.scandir(path), key=lambda e: e.name):
        if not show_all and e.name.startswith("."):
            continue
        link = pfs.readlink(e.path) if e.is_symlink() else None
        out.append((e.name, e.is_dir(follow_symlinks=False), link))
    return out


def _build(pfs: PathFS, top: str, show_all: bool, level: int) -> list[dict[str, Any]]:
    """The tree as nested dicts, built without recursion; a directory seen twice (a loop in
    a corrupt image) is shown but not entered again."""
    root: list[dict[str, Any]] = []
    seen = {pfs.resolve(top)}
    todo: list[tuple[str, list[dict[str, Any]], int]] = [(top, root, 1)]
    while todo:
        path, out, depth = todo.pop()
        for name, is_dir, link in _children(pfs, path, show_all):
            node: dict[str, Any] = {"name": name, "type": "directory" if is_dir else "file"}
            if link is not None:
                node["type"] = "link"
                node["target"] = link
            out.append(node)
            if is_dir and (not level or depth < level):
                sub = posixpath.join(path, name)
                ino = pfs.resolve(sub, follow_symlinks=False)
                if ino in seen:
                    continue
                seen.add(ino)
                node["contents"] = []
                todo.append((sub, node["contents"], depth + 1))
    return root


def run(args: argparse.Namespace) -> int:
    from burrow.cli.common import Session, display, emit_json, fs_address

    addr = fs_address(args.path)
    with Session() as session:
        pfs = session.fs(addr)
        if not pfs.stat(addr.path).is_dir():
            from burrow.errors import NotADirectory

            raise NotADirectory(path=str(addr))
        nodes = _build(pfs, addr.path, args.all, args.level)
    if args.json:
        emit_json({"name": addr.path, "type": "directory", "contents": nodes})
        return 0
    counts = [0, 0]
    out = sys.stdout.write
    out(display(addr.path) + "\n")

    def show(items: list[dict[str, Any]], prefix: str) -> None:
        for i, node in enumerate(items):
            last = i == len(items) - 1
            label = display(node["name"] + (f" -> {node['target']}" if "target" in node else ""))
            out(f"{prefix}{'└── ' if last else '├── '}{label}\n")
            if node["type"] == "directory":
                counts[0] += 1
            else:
                counts[1] += 1
            if "contents" in node:
                show(node["contents"], prefix + ("    " if last else "│   "))

    show(nodes, "")
    d, f = counts
    out(f"\n{d} director{'y' if d == 1 else 'ies'}, {f} file{'' if f == 1 else 's'}\n")
    return 0
