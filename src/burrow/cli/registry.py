"""The table of subcommands: name -> (module, one-line help).

Kept as plain data so ``burrow --help`` can list every command without importing any of them.
Add a row here when you add a module under ``burrow/cli/commands/``.
"""

from __future__ import annotations

from typing import NamedTuple


class Command(NamedTuple):
    module: str
    help: str


_C = "burrow.cli.commands."

COMMANDS: dict[str, Command] = {
    # disk images: inspect
    "info": Command(_C + "info", "show an image's format, partitions and filesystems"),
    "inspect": Command(_C + "inspect", "find operating systems in an image (like virt-inspector)"),
    "ls": Command(_C + "ls", "list a directory inside an image or share"),
    "cat": Command(_C + "cat", "print files from an image or share"),
    "stat": Command(_C + "stat", "show a file's attributes inside an image or share"),
    "tree": Command(_C + "tree", "show a directory tree inside an image or share"),
    "shell": Command(_C + "shell", "interactive shell inside an image"),
    # disk images: change
    "cp": Command(_C + "cp", "copy files between the host, images and shares"),
    "rm": Command(_C + "rm", "remove files or directories"),
    "mkdir": Command(_C + "mkdir", "make directories"),
    "mv": Command(_C + "mv", "move or rename files"),
    "ln": Command(_C + "ln", "make hard or symbolic links"),
    "chmod": Command(_C + "chmod", "change permission bits"),
    "chown": Command(_C + "chown", "change owner and group"),
    "touch": Command(_C + "touch", "create files or set their times"),
    "truncate": Command(_C + "truncate", "set a file's size"),
    "edit": Command(_C + "edit", "edit a file inside an image with $EDITOR"),
    "tar-out": Command(_C + "tar_out", "write a directory of an image as a tar stream"),
    "tar-in": Command(_C + "tar_in", "unpack a tar stream into an image"),
    # building images
    "create": Command(_C + "create", "create an image, empty or from a spec"),
    "part": Command(_C + "part", "list and edit MBR/GPT partition tables"),
    "mkfs": Command(_C + "mkfs", "make an ext2/3/4 or FAT filesystem"),
    # serving
    "mount": Command(_C + "mount", "mount an image's filesystem (or a device) via FUSE"),
    "umount": Command(_C + "umount", "unmount a burrow FUSE mount and commit"),
    "nbd": Command(_C + "nbd", "serve a block device over NBD"),
    "serve": Command(_C + "serve", "share directories or image filesystems over the network"),
    "key": Command(_C + "key", "make and show keys for secure shares"),
    "version": Command(_C + "version", "print burrow's version and optional features"),
}
