"""The disk API: open an image, see its partitions, mount a filesystem as a ``PathFS``.

```python
import burrow
with burrow.open("disk.qcow2") as disk:                  # read-only by default
    fs = disk.mount()                                    # the only fs, or the obvious root
    print(fs.read_text("/etc/os-release"))
with burrow.open("disk.qcow2", writable=True) as disk:   # edits go through an overlay
    disk.mount(2).write_bytes("/etc/hostname", b"new\\n")
# leaving the block normally commits the overlay to the image; an exception drops it
```

Why an overlay for every write: the image is changed only by ``commit()``, in one pass at the
end, after every filesystem was synced and closed cleanly. A failure (or Ctrl-C) half-way
through a ``burrow cp`` leaves the image exactly as it was, and a read-only open never writes a
byte.

Also here, because the CLI, FUSE and the share server all need them: ``parse_address`` (the
``IMAGE[@PART]:PATH`` and ``burrow://host:port/export/path`` syntax) and ``open_target``.
"""

from __future__ import annotations

import os
import stat as _stat
import struct
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from burrow.errors import (
    BurrowError,
    CorruptImage,
    NotFound,
    Unsupported,
    UsageError,
)
from burrow.fs.paths import PathFS

if TYPE_CHECKING:
    from burrow.block.device import BlockDevice
    from burrow.fs.vfs import Filesystem
    from burrow.volume.table import Partition, PartitionTable

__all__ = [
    "Address",
    "Disk",
    "FilesystemEntry",
    "Target",
    "backing_chain",
    "open",
    "open_target",
    "parse_address",
]

WHOLE_DISK = 0  # selector key of a filesystem that fills the whole device (no table)
ROOT_MARKERS = ("/etc/os-release", "/usr/lib/os-release", "/etc/fstab")


@dataclass
class FilesystemEntry:
    """One place a filesystem may live: the whole disk (``number`` 0) or a partition."""

    number: int
    partition: Partition | None
    size: int
    fstype: str | None = None  # driver or signature name; None when nothing was recognised
    label: str = ""
    uuid: str = ""
    features: tuple[str, ...] = ()
    block_size: int | None = None
    total_bytes: int | None = None
    free_bytes: int | None = None
    error: str | None = None
    is_root: bool = False

    def to_dict(self) -> dict[str, Any]:
        used = None
        if self.total_bytes is not None and self.free_bytes is not None:
            used = self.total_bytes - self.free_bytes
        return {
            "number": self.number,
            "partition": self.partition.to_dict() if self.partition else None,
            "device_size": self.size,
            "fstype": self.fstype,
            "label": self.label,
            "uuid": self.uuid,
            "features": list(self.features),
            "block_size": self.block_size,
            "size": self.total_bytes,
            "used": used,
            "free": self.free_bytes,
            "error": self.error,
        }


class Disk:
    """An open disk image. Use as a context manager; see the module docstring."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        writable: bool = False,
        format: str | None = None,
        allow_probe_backing: bool = False,
        overlay_file: bool | str = False,
    ) -> None:
        from burrow import block

        self.path = os.fspath(path)
        self.writable = writable
        if not writable:
            self._check_no_pending_commit()
        if format is None and not self.path.startswith(("nbd://", "nbd+unix://", "nbds://")):
            format = block.detect_format(self.path)
        self.format = format or "nbd"
        self.base: BlockDevice = block.open(
            self.path,
            format=format,
            readonly=not writable,
            allow_probe_backing=allow_probe_backing,
        )
        self.block: BlockDevice = self.base
        self._overlay: Any = None
        if writable:
            try:
                from burrow.block.overlay import (  # type: ignore[import-not-found,unused-ignore]
                    OverlayDevice,
                )
            except ImportError:
                self.base.close()
                raise Unsupported(
                    "overlay", "writing needs the copy-on-write overlay (burrow.block.overlay)"
                ) from None
            side = None
            if overlay_file is True:
                side = self._side_path()
            elif isinstance(overlay_file, str):
                side = overlay_file
            try:
                self._overlay = OverlayDevice(self.base, side_path=side)
            except BaseException:
                self.base.close()
                raise
            self.block = self._overlay
        self._table: PartitionTable | None = None
        self._table_read = False
        self._mounted: dict[int, PathFS] = {}
        self._types: dict[int, str | None] = {}
        self._closed = False

    def _side_path(self) -> str | None:
        """A sparse scratch file for the overlay next to the image (same filesystem, so
        there is room for what will be committed anyway); removed when the disk closes."""
        if "://" in self.path:
            return None
        import secrets

        head, tail = os.path.split(os.path.abspath(self.path))
        return os.path.join(head, f".{tail}.burrow-overlay-{os.getpid()}-{secrets.token_hex(4)}")

    def _check_no_pending_commit(self) -> None:
        """A read-only open must not read an image whose last commit was interrupted (it may
        be half applied) and must not repair it either (that would be a write)."""
        if "://" in self.path:
            return
        journal = self.path + ".burrow-journal"  # burrow.block.overlay.journal_path_for
        if os.path.exists(journal):
            raise BurrowError(
                f"an interrupted commit left {journal}; open the image writable once "
                "(any burrow write command) to finish it",
                path=self.path,
            )

    @classmethod
    def from_device(
        cls,
        dev: BlockDevice,
        *,
        writable: bool = False,
        name: str = "",
        journal_path: str | None = None,
    ) -> Disk:
        """A ``Disk`` over an already open device (memory, NBD, a filter chain...). With
        ``writable`` the device is wrapped in an in-memory overlay committed by ``close()``;
        its commit journal goes to ``journal_path`` (default: a fresh name in the temporary
        directory, removed after the commit). The disk owns ``dev`` and closes it."""
        self = cls.__new__(cls)
        self.path = name or repr(dev)
        self.writable = writable
        self.format = "device"
        self.base = dev
        self.block = dev
        self._overlay = None
        if writable:
            if dev.readonly:
                from burrow.errors import ReadOnly

                raise ReadOnly("the device is read-only")
            from burrow.block.overlay import (  # type: ignore[import-not-found,unused-ignore]
                OverlayDevice,
            )

            if journal_path is None:
                import secrets
                import tempfile

                journal_path = os.path.join(
                    tempfile.gettempdir(), f"burrow-journal-{os.getpid()}-{secrets.token_hex(6)}"
                )
            self._overlay = OverlayDevice(dev, journal_path=journal_path)
            self.block = self._overlay
        self._table = None
        self._table_read = False
        self._mounted = {}
        self._types = {}
        self._closed = False
        return self

    # -- partitions ----------------------------------------------------------------------
    @property
    def table(self) -> PartitionTable | None:
        """The MBR/GPT partition table, or ``None`` when the disk has none."""
        if not self._table_read and not self._may_have_table():
            self._table, self._table_read = None, True
        if not self._table_read:
            try:
                from burrow.volume import (  # type: ignore[attr-defined,unused-ignore]
                    read_table,
                )
            except ImportError:
                raise Unsupported(
                    "partition tables", "the volume reader (burrow.volume) is not available"
                ) from None
            self._table = read_table(self.block)
            self._table_read = True
        return self._table

    def _may_have_table(self) -> bool:
        """False when neither an MBR signature (0x55AA at byte 510) nor a GPT header
        ("EFI PART" at LBA 1 for 512- or 4096-byte sectors) is present: then there is no
        table and the volume package need not even be imported (``burrow cat`` of a
        whole-disk filesystem starts faster)."""
        dev = self.block
        try:
            if dev.size >= 512 and dev.pread(2, 510) == b"\x55\xaa":
                return True
            for lba1 in (512, 4096):
                if dev.size >= lba1 + 8 and dev.pread(8, lba1) == b"EFI PART":
                    return True
        except BurrowError:
            return True  # let the real reader report it
        return False

    @property
    def partitions(self) -> list[Partition]:
        t = self.table
        return list(t.partitions) if t is not None else []

    @property
    def size(self) -> int:
        return self.block.size

    def _keys(self) -> list[int]:
        t = self.table
        if t is None:
            return [WHOLE_DISK]
        return [p.number for p in t.partitions if not p.is_extended]

    def partition(self, number: int) -> Partition:
        t = self.table
        if t is None:
            raise NotFound(f"partition {number}: this disk has no partition table")
        return t.partition(number)

    def device(self, key: int) -> BlockDevice:
        """The block device of partition ``key`` (``0``: the whole disk)."""
        if key == WHOLE_DISK:
            return self.block
        return self.partition(key).open(self.block)

    def _fstype(self, key: int) -> str | None:
        if key not in self._types:
            from burrow.fs.probe import probe_type

            try:
                self._types[key] = probe_type(self.device(key))
            except BurrowError:
                self._types[key] = None
        return self._types[key]

    def _open_ro(self, key: int) -> Filesystem:
        from burrow.fs.probe import open_filesystem

        return open_filesystem(self.device(key), readonly=True)

    # -- choosing a filesystem -------------------------------------------------------------
    def select(self, sel: int | str | None = None) -> int:
        """The key (partition number, 0 = whole disk) that ``sel`` names. See :meth:`mount`."""
        keys = self._keys()
        if sel is None or sel == "":
            return self._default_key(keys)
        if isinstance(sel, int) or (isinstance(sel, str) and sel.isdigit()):
            number = int(sel)
            if self.table is None:
                if number in (0, 1):
                    return WHOLE_DISK
                raise NotFound(f"partition {number}: this disk has no partition table")
            part = self.table.partition(number)
            if part.is_extended:
                raise UsageError(f"partition {number} is an MBR extended partition (a container)")
            return number
        # by GPT partition name, then filesystem label (exact, then case-insensitive)
        parts = {p.number: p for p in self.partitions}
        for exact in (True, False):

            def same(a: str, b: str, exact: bool = exact) -> bool:
                return a == b if exact else a.casefold() == b.casefold()

            for key in keys:
                p = parts.get(key)
                if p is not None and p.name and same(p.name, sel):
                    return key
            for key in keys:
                label = self._label(key)
                if label and same(label, sel):
                    return key
        if sel.casefold() == "esp":
            for key in keys:
                p = parts.get(key)
                if p is not None and p.type_name == "EFI System":
                    return key
        known = ", ".join(self._describe(k) for k in keys) or "none"
        raise NotFound(f"no partition or filesystem named {sel!r} (have: {known})")

    def _label(self, key: int) -> str:
        if self._fstype(key) not in ("ext4", "vfat"):
            return ""
        try:
            fs = self._open_ro(key)
        except BurrowError:
            return ""
        try:
            return fs.info().label
        finally:
            fs.close()

    def _describe(self, key: int) -> str:
        if key == WHOLE_DISK:
            return "the whole disk"
        p = self.partition(key)
        extra = [x for x in (p.name, self._label(key)) if x]
        return f"{key}" + (f" ({'/'.join(extra)})" if extra else "")

    def _default_key(self, keys: list[int]) -> int:
        if self.table is None:
            return WHOLE_DISK
        found = [k for k in keys if self._fstype(k) in ("ext4", "vfat")]
        if len(found) == 1:
            return found[0]
        if not found:
            raise Unsupported(
                "filesystem", "no partition holds a filesystem burrow can open (ext2/3/4, FAT)"
            )
        root = self._find_root(found)
        if root is not None:
            return root
        raise UsageError(
            "this disk has several filesystems and none is an obvious root; choose one with "
            "IMAGE@PART (" + ", ".join(self._describe(k) for k in found) + ")"
        )

    def _find_root(self, keys: list[int]) -> int | None:
        for key in keys:
            try:
                fs = self._open_ro(key)
            except BurrowError:
                continue
            try:
                pfs = PathFS(fs)
                if any(pfs.lexists(m) for m in ROOT_MARKERS):
                    return key
            finally:
                fs.close()
        for key in keys:
            p = self.partition(key)
            if p.type_name.startswith("Linux root"):
                return key
        ext = [k for k in keys if self._fstype(k) == "ext4"]
        if ext:
            return max(ext, key=lambda k: self.partition(k).size)
        return None

    def root_key(self) -> int | None:
        """The key of the filesystem :meth:`mount` picks without a selector, or ``None``."""
        try:
            return self.select(None)
        except BurrowError:
            return None

    # -- mounting --------------------------------------------------------------------------
    def mount(self, sel: int | str | None = None) -> PathFS:
        """The filesystem ``sel`` names, as a ``PathFS``.

        ``sel``: a partition number (Linux numbering), a GPT partition name or a filesystem
        label (``"ESP"`` also finds the EFI System partition), or ``None`` for the only
        filesystem — or, when there are several, the obvious root (the one holding
        ``/etc/os-release`` or ``/etc/fstab``, else a GPT "Linux root" partition, else the
        largest ext2/3/4). Mounting the same one twice returns the same object.
        """
        self._check_open()
        key = self.select(sel)
        pfs = self._mounted.get(key)
        if pfs is not None:
            return pfs
        from burrow.fs.probe import open_filesystem

        fs = open_filesystem(self.device(key), readonly=not self.writable)

        def forget() -> None:
            self._mounted.pop(key, None)

        pfs = PathFS(fs, on_close=forget)
        self._mounted[key] = pfs
        return pfs

    def filesystems(self) -> list[FilesystemEntry]:
        """Every partition (or the whole disk) with what it holds, for ``burrow info``."""
        out = []
        root = self.root_key()
        for key in self._keys():
            part = None if key == WHOLE_DISK else self.partition(key)
            dev = self.device(key)
            kind = self._fstype(key)
            mountable = kind in ("ext4", "vfat")
            entry = FilesystemEntry(key, part, dev.size, kind, is_root=mountable and key == root)
            if mountable:
                try:
                    fs = self._mounted[key].fs if key in self._mounted else self._open_ro(key)
                except BurrowError as exc:
                    entry.error = str(exc)
                else:
                    try:
                        info = fs.info()
                        entry.fstype = info.fstype
                        entry.label, entry.uuid = info.label, info.uuid
                        entry.features = tuple(info.features)
                        sf = fs.statfs()
                        entry.block_size = sf.f_frsize
                        entry.total_bytes = sf.f_blocks * sf.f_frsize
                        entry.free_bytes = sf.f_bfree * sf.f_frsize
                    except BurrowError as exc:
                        entry.error = str(exc)
                    finally:
                        if key not in self._mounted:
                            fs.close()
            out.append(entry)
        return out

    # -- lifetime ----------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise UsageError("the disk is closed")

    @property
    def dirty(self) -> bool:
        return bool(self._overlay is not None and self._overlay.dirty)

    def sync(self) -> None:
        for pfs in list(self._mounted.values()):
            pfs.fs.sync()

    def commit(self) -> None:
        """Sync every mounted filesystem and write the overlay's changes into the image."""
        self._check_open()
        self.sync()
        if self._overlay is not None:
            self._overlay.commit()
            self.base.flush()

    def close(self, *, commit: bool = True) -> None:
        """Close the filesystems and the image. When writable, ``commit`` applies the changes
        (after every filesystem closed cleanly); ``commit=False`` drops them."""
        if self._closed:
            return
        error: BaseException | None = None
        for pfs in list(self._mounted.values()):
            try:
                pfs.close()
            except BaseException as exc:  # keep closing the rest; never commit after this
                error = error or exc
        self._mounted.clear()
        try:
            if self._overlay is not None:
                if commit and error is None:
                    self._overlay.commit()
                    self.base.flush()
                else:
                    self._overlay.drop()
        finally:
            self._closed = True
            try:
                if self._overlay is not None:
                    self._overlay.close()
            finally:
                self.base.close()
        if error is not None:
            raise error

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close(commit=exc_type is None)

    def __repr__(self) -> str:
        mode = "rw" if self.writable else "ro"
        return f"<Disk {self.path!r} {self.format} {mode}>"


def open(
    path: str | os.PathLike[str],
    *,
    writable: bool = False,
    format: str | None = None,
    allow_probe_backing: bool = False,
    overlay_file: bool | str = False,
) -> Disk:
    """Open a disk image (raw, qcow2, or an ``nbd://`` URI). Read-only unless ``writable``;
    writes go through a copy-on-write overlay committed when the ``with`` block ends cleanly.
    The overlay lives in memory unless ``overlay_file`` is ``True`` (a scratch file next to
    the image) or a path."""
    return Disk(
        path,
        writable=writable,
        format=format,
        allow_probe_backing=allow_probe_backing,
        overlay_file=overlay_file,
    )


# -- qcow2 backing chains (for `burrow info`; read straight from the headers) ---------------
_QCOW2_HEADER = struct.Struct(">4sIQI")  # magic, version, backing_file_offset, backing_file_size
_EXT_BACKING_FORMAT = 0xE2792ACA
_MAX_CHAIN = 64


def _qcow2_backing(path: str) -> tuple[str, str | None] | None:
    # The name comes from an untrusted header: never block on a fifo or a terminal, and
    # read only regular files and block devices.
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    try:
        mode = os.fstat(fd).st_mode
        if not (_stat.S_ISREG(mode) or _stat.S_ISBLK(mode)):
            return None
        head = os.pread(fd, 65536, 0)
    finally:
        os.close(fd)
    if len(head) < 72 or head[:4] != b"QFI\xfb":
        return None
    _, version, boff, bsize = _QCOW2_HEADER.unpack_from(head)
    if not boff:
        return None
    if bsize > 1023 or boff + bsize > len(head):
        raise CorruptImage("qcow2 header", boff, "backing file name out of range")
    name = head[boff : boff + bsize].decode("utf-8", "surrogateescape")
    if "\0" in name:  # os.open would raise ValueError
        raise CorruptImage("qcow2 header", boff, "NUL in the backing file name")
    fmt = None
    hlen = 72
    if version >= 3 and len(head) >= 104:
        hlen = struct.unpack_from(">I", head, 100)[0]
    pos = hlen
    while pos > 0 and pos + 8 <= min(len(head), boff):
        etype, elen = struct.unpack_from(">II", head, pos)
        if etype == 0:
            break
        if etype == _EXT_BACKING_FORMAT and pos + 8 + elen <= len(head):
            fmt = head[pos + 8 : pos + 8 + elen].decode("ascii", "replace")
        pos += 8 + ((elen + 7) & ~7)
    return name, fmt


def backing_chain(path: str | os.PathLike[str]) -> list[dict[str, str | None]]:
    """The backing files of a qcow2 image, nearest first (``[]`` for raw or no backing)."""
    chain: list[dict[str, str | None]] = []
    current = os.fspath(path)
    seen = {os.path.realpath(current)}
    for _ in range(_MAX_CHAIN):
        try:
            info = _qcow2_backing(current)
        except OSError:
            return chain
        if info is None:
            return chain
        name, fmt = info
        resolved = name if os.path.isabs(name) else os.path.join(os.path.dirname(current), name)
        chain.append({"filename": name, "path": resolved, "format": fmt})
        real = os.path.realpath(resolved)
        if real in seen:
            raise CorruptImage("qcow2 backing chain", None, f"loop through {name}")
        seen.add(real)
        current = resolved
    raise CorruptImage("qcow2 backing chain", None, f"longer than {_MAX_CHAIN} images")


# -- addresses ---------------------------------------------------------------------------------
@dataclass
class Address:
    """A parsed command-line operand: a host path, a path inside an image, or a share URL."""

    kind: str  # "host" | "image" | "url"
    path: str  # host path, path inside the filesystem, or path inside the share export
    image: str = ""
    part: str | None = None
    url: str = ""

    @property
    def target(self) -> str:
        """``IMAGE[@PART]`` (for ``open_target``) or the share URL."""
        if self.kind == "url":
            return self.url
        return self.image + (f"@{self.part}" if self.part else "")

    def __str__(self) -> str:
        if self.kind == "host":
            return self.path
        return f"{self.target}:{self.path}"


def _is_file(path: str) -> bool:
    try:
        return _stat.S_ISREG(os.stat(path).st_mode) or _stat.S_ISBLK(os.stat(path).st_mode)
    except OSError:
        return False


def split_image_part(spec: str) -> tuple[str, str | None]:
    """``IMAGE[@PART]`` -> ``(IMAGE, PART)``; an existing file named with ``@`` wins."""
    if _is_file(spec) or "@" not in spec:
        return spec, None
    image, _, part = spec.rpartition("@")
    if not part or "/" in part:
        return spec, None
    return image, part


_URL_SCHEMES = ("nbd://", "nbd+unix://", "nbds://")


def parse_address(text: str, *, image_required: bool = False) -> Address:
    """Parse ``IMAGE[@PART]:PATH``, ``burrow://host:port/export/path`` or a host path.

    Image names may contain ``:``: the longest prefix (before a ``:``) that names an existing
    file is the image. ``IMAGE:`` alone means the root. An operand with no existing image
    prefix is a host path when it exists on the host or has no ``:``; otherwise the text
    before its first ``:`` is taken as a (missing) image so the error names it.
    ``image_required`` makes even a plain existing file mean ``IMAGE:/``.
    """
    if text.startswith("burrow://"):
        rest = text[len("burrow://") :]
        host, _, tail = rest.partition("/")
        export, _, path = tail.partition("/")
        if not host or not export:
            raise UsageError(f"share address needs burrow://HOST:PORT/EXPORT[/PATH]: {text}")
        return Address("url", "/" + path, url=f"burrow://{host}/{export}")
    if text.startswith(_URL_SCHEMES):
        scheme_end = text.index("://") + 3
        cut = text.rfind(":/")
        if cut > scheme_end:
            image, path = text[:cut], text[cut + 1 :]
        else:
            image, path = text, "/"
        img, part = _split_uri_part(image)
        return Address("image", path or "/", image=img, part=part)
    positions = [i for i, c in enumerate(text) if c == ":"]
    for i in reversed(positions):
        left = text[:i]
        if not left:
            continue
        image, part = split_image_part(left)
        if _is_file(image):
            return Address("image", text[i + 1 :] or "/", image=image, part=part)
    if image_required:
        image, part = split_image_part(text)
        if _is_file(image) or not positions:
            return Address("image", "/", image=image, part=part)
    if os.path.lexists(text) or not positions:
        return Address("host", text)
    first = positions[0]
    if first == 0:
        return Address("host", text)
    image, part = split_image_part(text[:first])
    return Address("image", text[first + 1 :] or "/", image=image, part=part)


def _split_uri_part(uri: str) -> tuple[str, str | None]:
    head, at, part = uri.rpartition("@")
    if at and part and "/" not in part and ":" not in part:
        return head, part
    return uri, None


# -- targets -------------------------------------------------------------------------------
@dataclass
class Target:
    """An open filesystem for a front end: ``fs`` and the ``disk`` it lives on (``None`` for
    a share). ``close()`` commits (when writable); ``close(commit=False)`` drops changes."""

    fs: PathFS
    disk: Disk | None = None
    name: str = ""
    extra_close: list[Any] = field(default_factory=list)

    def close(self, *, commit: bool = True) -> None:
        try:
            if self.disk is not None:
                self.disk.close(commit=commit)
            else:
                self.fs.close()
        finally:
            for fn in self.extra_close:
                fn()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close(commit=exc_type is None)


def open_target(
    spec: str, *, writable: bool = False, format: str | None = None, overlay_file: bool = True
) -> Target:
    """Open ``IMAGE[@PART]`` (or a ``burrow://`` share URL) and mount its filesystem.
    Writable targets keep their overlay in a scratch file next to the image by default, so
    a large ``burrow cp`` or a long FUSE session does not hold every change in memory."""
    if spec.startswith("burrow://"):
        return _open_share(spec, writable=writable)
    if spec.startswith(_URL_SCHEMES):
        image, part = _split_uri_part(spec)
    else:
        image, part = split_image_part(spec)
        if not os.path.lexists(image):
            raise NotFound(path=image)
    disk = Disk(image, writable=writable, format=format, overlay_file=overlay_file)
    try:
        pfs = disk.mount(part)
    except BaseException:
        disk.close(commit=False)
        raise
    return Target(pfs, disk, spec)


def _open_share(url: str, *, writable: bool) -> Target:
    try:
        from burrow.share import client  # type: ignore[attr-defined,unused-ignore]
    except ImportError:
        raise Unsupported("burrow://", "the share client is not available") from None
    opener = getattr(client, "open_url", None)
    if opener is None:
        raise Unsupported("burrow://", "the share client has no open_url")
    fs = opener(url, writable=writable)
    if isinstance(fs, PathFS):
        return Target(fs, None, url)
    return Target(PathFS(fs), None, url)
