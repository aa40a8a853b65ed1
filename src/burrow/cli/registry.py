"""The table of subcommands: name -> (module, one-line help).

Kept as plain data so ``burrow --help`` can list every command without importing any of them.
Add a row here when you add a module under ``burrow/cli/commands/``.
"""

from __future__ import annotations

from typing import NamedTuple


class Command(NamedTuple):
    module: str
    help: str


COMMANDS: dict[str, Command] = {
    "mount": Command(
        "burrow.cli.commands.mount", "mount an image's filesystem (or a device) via FUSE"
    ),
    "umount": Command("burrow.cli.commands.umount", "unmount a burrow FUSE mount and commit"),
    "version": Command(
        "burrow.cli.commands.version", "print burrow's version and optional features"
    ),
}
