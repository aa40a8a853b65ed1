"""``burrow create --spec SPEC.toml``: build a complete disk image from a declarative spec.

What genimage, ``systemd-repart --offline``, virt-make-fs and scripts of sgdisk + mkfs + mtools
+ debugfs do, in one pass and in userspace: partition table, partitions, filesystems, contents
(host directories and tar files) and ownership rules. The format is documented in
``docs/create.md``.

Order of work: the image file is created new (never overwritten), the table written, each
partition formatted and filled, every filesystem closed (synced) and the image flushed. If
anything fails the half-built image file is removed, so a spec either yields a whole image or
nothing.
"""

from __future__ import annotations

import fnmatch
import os
import posixpath
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from burrow.errors import BurrowError, InvalidArgument, UsageError

__all__ = ["ContentSpec", "DiskSpec", "FilesystemSpec", "PartitionSpec", "build", "load_spec"]

FS_TYPES = ("ext4", "ext3", "ext2", "fat", "vfat", "fat12", "fat16", "fat32", "none")
OWNERSHIP = ("preserve", "all_root", "invoking")


@dataclass
class ContentSpec:
    source: Path  # a host directory or a tar file (optionally compressed)
    target: str = "/"


@dataclass
class FilesystemSpec:
    type: str = "none"
    label: str = ""
    uuid: str | None = None
    contents: list[ContentSpec] = field(default_factory=list)
    ownership: str = "preserve"
    owners: dict[str, tuple[int, int]] = field(default_factory=dict)
    modes: dict[str, int] = field(default_factory=dict)


@dataclass
class PartitionSpec:
    size: int | None  # None: the rest of the disk (largest free area)
    type: str = "linux"
    name: str = ""
    bootable: bool = False
    uuid: str | None = None
    fs: FilesystemSpec = field(default_factory=FilesystemSpec)


@dataclass
class DiskSpec:
    table: str = "gpt"  # gpt | mbr | none
    size: int | None = None
    format: str | None = None
    partitions: list[PartitionSpec] = field(default_factory=list)
    fs: FilesystemSpec | None = None  # table = "none": one filesystem on the whole disk


# -- parsing -----------------------------------------------------------------------------------
def _size(value: Any, where: str) -> int | None:
    if value is None or value in ("*", "rest", ""):
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        if value <= 0:
            raise UsageError(f"{where}: size must be positive")
        return value
    if isinstance(value, str):
        from burrow.cli.common import parse_size

        n = parse_size(value)
        if n <= 0:
            raise UsageError(f"{where}: size must be positive")
        return n
    raise UsageError(f"{where}: size must be a number of bytes or a string like '64M'")


def _ids(value: Any, where: str) -> tuple[int, int]:
    if isinstance(value, int) and not isinstance(value, bool):
        return value, value
    if isinstance(value, str):
        user, _, group = value.partition(":")
        if user.isdigit() and (group.isdigit() or not group):
            return int(user), int(group or user)
    if isinstance(value, list) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return int(value[0]), int(value[1])
    raise UsageError(f"{where}: owner must be 'UID:GID' (numbers), not {value!r}")


def _str(table: dict[str, Any], key: str, default: str, where: str) -> str:
    value = table.get(key, default)
    if not isinstance(value, str):
        raise UsageError(f"{where}.{key}: expected a string")
    return value


def _fs(table: dict[str, Any], where: str, base: Path) -> FilesystemSpec:
    fs_type = _str(table, "filesystem", "none", where).lower()
    if fs_type not in FS_TYPES:
        raise UsageError(f"{where}.filesystem: {fs_type!r} is not one of {', '.join(FS_TYPES)}")
    contents: list[ContentSpec] = []
    raw = table.get("contents", [])
    if isinstance(raw, (str, dict)):
        raw = [raw]
    if not isinstance(raw, list):
        raise UsageError(f"{where}.contents: expected a list")
    for i, item in enumerate(raw):
        if isinstance(item, str):
            src, target = item, "/"
        elif isinstance(item, dict) and isinstance(item.get("source"), str):
            src = item["source"]
            target = item.get("target", "/")
            if not isinstance(target, str) or not target.startswith("/"):
                raise UsageError(f"{where}.contents[{i}].target must be an absolute path")
        else:
            raise UsageError(f"{where}.contents[{i}]: a path or {{source, target}}")
        path = Path(src).expanduser()
        if not path.is_absolute():
            path = base / path
        contents.append(ContentSpec(path, target))
    ownership = _str(table, "ownership", "preserve", where)
    if ownership not in OWNERSHIP:
        raise UsageError(f"{where}.ownership: one of {', '.join(OWNERSHIP)}")
    owners_raw = table.get("owners", {})
    if not isinstance(owners_raw, dict):
        raise UsageError(f"{where}.owners: a table of PATH = 'UID:GID'")
    owners = {str(k): _ids(v, f"{where}.owners.{k}") for k, v in owners_raw.items()}
    modes_raw = table.get("modes", {})
    if not isinstance(modes_raw, dict):
        raise UsageError(f"{where}.modes: a table of PATH = 'OCTAL'")
    modes = {}
    for k, v in modes_raw.items():
        try:
            modes[str(k)] = int(v, 8) if isinstance(v, str) else int(v)
        except (TypeError, ValueError):
            raise UsageError(f"{where}.modes.{k}: an octal string like '0755'") from None
    if fs_type == "none" and (contents or owners or modes):
        raise UsageError(f"{where}: contents need a filesystem")
    uuid = table.get("uuid")
    if uuid is not None and not isinstance(uuid, str):
        raise UsageError(f"{where}.uuid: expected a string")
    return FilesystemSpec(
        fs_type, _str(table, "label", "", where), uuid, contents, ownership, owners, modes
    )


def parse_spec(data: dict[str, Any], base: Path) -> DiskSpec:
    """A parsed TOML document -> ``DiskSpec`` (relative content paths are relative to
    ``base``, the spec file's directory). Unknown keys are refused, so typos are caught."""
    known_top = {"table", "size", "format", "partitions", "filesystem", "label", "uuid",
                 "contents", "ownership", "owners", "modes"}  # fmt: skip
    known_part = {"size", "type", "name", "bootable", "uuid", "partuuid", "filesystem",
                  "label", "contents", "ownership", "owners", "modes"}  # fmt: skip
    extra = set(data) - known_top
    if extra:
        raise UsageError(f"spec: unknown keys {', '.join(sorted(extra))}")
    table = _str(data, "table", "gpt", "spec").lower()
    if table not in ("gpt", "mbr", "none"):
        raise UsageError("spec.table: gpt, mbr or none")
    spec = DiskSpec(table=table, size=_size(data.get("size"), "spec.size"))
    fmt = data.get("format")
    if fmt is not None:
        if fmt not in ("raw", "qcow2"):
            raise UsageError("spec.format: raw or qcow2")
        spec.format = fmt
    parts = data.get("partitions", [])
    if not isinstance(parts, list):
        raise UsageError("spec.partitions: use [[partitions]] tables")
    if table == "none":
        if parts:
            raise UsageError("spec: table = 'none' takes no [[partitions]]")
        spec.fs = _fs(data, "spec", base)
        return spec
    for key in ("filesystem", "contents", "label"):
        if key in data:
            raise UsageError(f"spec.{key}: belongs in a [[partitions]] entry (or use table='none')")
    for i, p in enumerate(parts):
        where = f"spec.partitions[{i}]"
        if not isinstance(p, dict):
            raise UsageError(f"{where}: expected a table")
        extra = set(p) - known_part
        if extra:
            raise UsageError(f"{where}: unknown keys {', '.join(sorted(extra))}")
        size = _size(p.get("size"), f"{where}.size")
        if size is None and i != len(parts) - 1:
            raise UsageError(f"{where}.size: only the last partition may take the rest")
        bootable = p.get("bootable", False)
        if not isinstance(bootable, bool):
            raise UsageError(f"{where}.bootable: true or false")
        partuuid = p.get("partuuid")
        spec.partitions.append(
            PartitionSpec(
                size=size,
                type=_str(p, "type", "linux", where),
                name=_str(p, "name", "", where),
                bootable=bootable,
                uuid=partuuid if isinstance(partuuid, str) else None,
                fs=_fs(p, where, base),
            )
        )
    return spec


def load_spec(path: str | os.PathLike[str]) -> DiskSpec:
    p = Path(path)
    try:
        with open(p, "rb") as f:
            data = tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{p}: {exc}") from None
    return parse_spec(data, p.resolve().parent)


# -- building ------------------------------------------------------------------------------
def _mkfs(dev: Any, fs: FilesystemSpec, start: int) -> None:
    if fs.type in ("ext4", "ext3", "ext2"):
        from burrow.fs.ext4.mkfs import mkfs as mkfs_ext

        mkfs_ext(dev, fstype=fs.type, label=fs.label, uuid=fs.uuid)
    else:
        from burrow.fs.fat.mkfs import mkfs as mkfs_fat

        bits = {"fat12": 12, "fat16": 16, "fat32": 32}.get(fs.type)
        volume_id = None
        if fs.uuid:
            try:
                volume_id = int(fs.uuid.replace("-", ""), 16)
            except ValueError:
                raise UsageError(f"FAT volume id {fs.uuid!r}: use XXXX-XXXX (hex)") from None
        mkfs_fat(
            dev, fat_bits=bits, label=fs.label, volume_id=volume_id, hidden_sectors=start // 512
        )


def _fill(dev: Any, fs: FilesystemSpec, progress: Any = None) -> None:
    if not fs.contents and not fs.owners and not fs.modes:
        return
    from burrow.fs.copy import copy_in
    from burrow.fs.paths import PathFS
    from burrow.fs.probe import open_filesystem
    from burrow.fs.tario import extract_tar

    is_fat = fs.type not in ("ext4", "ext3", "ext2")
    pfs = PathFS(open_filesystem(dev, readonly=False), uid=0, gid=0, umask=0o022)
    try:
        for c in fs.contents:
            if not c.source.exists():
                raise BurrowError(f"contents source {c.source} does not exist", path=str(c.source))
            pfs.makedirs(c.target, exist_ok=True)
            if c.source.is_dir():
                copy_in(c.source, pfs, c.target, archive=not is_fat, recursive=True,
                        contents=True, progress=progress)  # fmt: skip
            else:
                with open(c.source, "rb") as f:
                    extract_tar(pfs, f, c.target, same_owner=not is_fat)
        if fs.ownership == "all_root" and not is_fat:
            _chown_tree(pfs, "/", (0, 0))
        elif fs.ownership == "invoking" and not is_fat:
            _chown_tree(pfs, "/", (os.getuid(), os.getgid()))
        for pattern, ids in sorted(fs.owners.items(), key=lambda kv: len(kv[0])):
            for path in _matches(pfs, pattern):
                _chown_tree(pfs, path, ids)
        for pattern, mode in sorted(fs.modes.items(), key=lambda kv: len(kv[0])):
            for path in _matches(pfs, pattern):
                pfs.chmod(path, mode & 0o7777)
    finally:
        pfs.close()


def _matches(pfs: Any, pattern: str) -> list[str]:
    """Paths matching ``pattern`` (an exact path, or a glob over every path)."""
    if not any(ch in pattern for ch in "*?["):
        if not pfs.lexists(pattern):
            raise InvalidArgument(f"spec owners/modes: {pattern} does not exist in the image")
        return [pattern]
    out = []
    for dirpath, dirs, files in pfs.walk("/"):
        for name in [*dirs, *files]:
            p = posixpath.join(dirpath, name)
            if fnmatch.fnmatchcase(p, pattern):
                out.append(p)
    return out


def _chown_tree(pfs: Any, top: str, ids: tuple[int, int]) -> None:
    uid, gid = ids
    pfs.chown(top, uid, gid, follow_symlinks=False)
    if not pfs.lstat(top).is_dir():
        return
    for dirpath, dirs, files in pfs.walk(top):
        for name in [*dirs, *files]:
            pfs.chown(posixpath.join(dirpath, name), uid, gid, follow_symlinks=False)


def build(
    image: str | os.PathLike[str],
    spec: DiskSpec,
    *,
    size: int | None = None,
    format: str | None = None,
    progress: Any = None,
) -> None:
    """Create ``image`` (which must not exist) from ``spec``; removes it again on failure."""
    from burrow import block

    total = size or spec.size
    if not total:
        raise UsageError("the image needs a size (--size or size = '...' in the spec)")
    fmt = format or spec.format or "qcow2"
    path = os.fspath(image)
    if os.path.lexists(path):
        from burrow.errors import Exists

        raise Exists("the image already exists; refusing to overwrite it", path=path)
    dev = block.create(path, total, format=fmt)
    ok = False
    try:
        if spec.table == "none":
            assert spec.fs is not None
            if spec.fs.type != "none":
                _mkfs(dev, spec.fs, 0)
                _fill(dev, spec.fs, progress)
        else:
            from burrow.volume import add_partition, init_table

            init_table(dev, spec.table)
            made = []
            for p in spec.partitions:
                part = add_partition(
                    dev,
                    size=p.size,
                    type=p.type,
                    name=p.name,
                    bootable=p.bootable,
                    uuid=p.uuid if spec.table == "gpt" else None,
                )
                made.append((part, p))
            for part, p in made:
                if p.fs.type == "none":
                    continue
                pdev = part.open(dev, readonly=False)
                _mkfs(pdev, p.fs, part.start)
                _fill(pdev, p.fs, progress)
        dev.flush()
        ok = True
    finally:
        try:
            dev.close()
        finally:
            if not ok:
                try:
                    os.unlink(path)
                except OSError:
                    pass
