"""Fill a filesystem from a host directory or a tar archive (``burrow mkfs ext4 --from``).

Why a tar source matters: a tar records owners, device nodes and xattrs as data, so an image
with root-owned files and ``/dev`` nodes can be built by an ordinary user — the job people
otherwise do with ``fakeroot mke2fs -d``. Both sources keep modes, owners, times
(atime/mtime; ctime and crtime become "now", as with any copy), xattrs, hard links, symlinks,
device nodes, fifos and sockets; holes in sparse host files stay holes.

Ownership: ``owner_map`` maps ids (applied to uids and gids alike); ``all_root`` makes every
file owned by 0:0. Directory times are set after their contents are in place.
"""

from __future__ import annotations

import decimal
import os
import stat
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, field

from burrow.errors import BurrowError, Exists, IOFailure, UsageError
from burrow.fs import vfs

__all__ = ["Populator", "populate"]

CHUNK = 8 << 20


@dataclass
class Populator:
    fs: vfs.Filesystem
    owner_map: dict[int, int] = field(default_factory=dict)
    all_root: bool = False
    warn: Callable[[str], None] = lambda msg: None
    _dir_attrs: list[tuple[int, int, int, int, int, int]] = field(default_factory=list)

    def ids(self, uid: int, gid: int) -> tuple[int, int]:
        if self.all_root:
            return 0, 0
        return self.owner_map.get(uid, uid), self.owner_map.get(gid, gid)

    def _block_size(self) -> int:
        return int(getattr(self.fs, "block_size", 4096))

    # -- shared ----------------------------------------------------------------------------
    def _mkdir(self, parent: int, name: str, mode: int, uid: int, gid: int) -> int:
        fs = self.fs
        try:
            return fs.mkdir(parent, name, mode & 0o7777, uid, gid)
        except Exists:
            ino = fs.lookup(parent, name)
            if not fs.getattr(ino).is_dir():
                raise
            return ino

    def _finish(self) -> None:
        for ino, mode, uid, gid, atime, mtime in reversed(self._dir_attrs):
            self.fs.setattr(ino, mode=mode & 0o7777, uid=uid, gid=gid, atime_ns=atime,
                            mtime_ns=mtime)  # fmt: skip
        self._dir_attrs.clear()

    def _xattrs(self, ino: int, attrs: dict[str, bytes]) -> None:
        for name, value in attrs.items():
            try:
                self.fs.setxattr(ino, name, value)
            except BurrowError as exc:
                self.warn(f"attribute {name} not copied: {exc}")

    # -- host directories ------------------------------------------------------------------
    def from_dir(self, src: str) -> None:
        fs = self.fs
        st = os.lstat(src)
        if not stat.S_ISDIR(st.st_mode):
            raise UsageError(f"--from {src}: not a directory")
        links: dict[tuple[int, int], int] = {}
        uid, gid = self.ids(st.st_uid, st.st_gid)
        self._dir_attrs.append((fs.root_ino, st.st_mode, uid, gid, st.st_atime_ns,
                                st.st_mtime_ns))  # fmt: skip
        self._xattrs(fs.root_ino, _host_xattrs(src))
        self._walk(src, fs.root_ino, links, 0)
        self._finish()

    def _walk(self, path: str, dir_ino: int, links: dict[tuple[int, int], int], depth: int) -> None:
        if depth > 4096:
            raise UsageError(f"{path}: directory tree too deep")
        try:
            with os.scandir(path) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            raise IOFailure(f"{path}: {exc.strerror}", path=path) from exc
        for e in entries:
            try:
                self._entry(e, dir_ino, links, depth)
            except OSError as exc:
                if isinstance(exc, BurrowError):
                    raise
                raise IOFailure(f"{e.path}: {exc.strerror}", path=e.path) from exc

    def _entry(
        self, e: os.DirEntry[str], dir_ino: int, links: dict[tuple[int, int], int], depth: int
    ) -> None:
        fs = self.fs
        st = e.stat(follow_symlinks=False)
        mode = st.st_mode
        uid, gid = self.ids(st.st_uid, st.st_gid)
        key = (st.st_dev, st.st_ino)
        if not stat.S_ISDIR(mode) and st.st_nlink > 1 and key in links:
            fs.link(links[key], dir_ino, e.name)
            return
        if stat.S_ISDIR(mode):
            ino = self._mkdir(dir_ino, e.name, mode, uid, gid)
            self._xattrs(ino, _host_xattrs(e.path))
            self._walk(e.path, ino, links, depth + 1)
            self._dir_attrs.append((ino, mode, uid, gid, st.st_atime_ns, st.st_mtime_ns))
            return
        if stat.S_ISREG(mode):
            ino = fs.create(dir_ino, e.name, mode & 0o7777, uid, gid)
            _copy_file(fs, ino, e.path, st.st_size)
        elif stat.S_ISLNK(mode):
            ino = fs.symlink(dir_ino, e.name, os.readlink(e.path), uid, gid)
        else:
            ino = fs.mknod(dir_ino, e.name, mode, st.st_rdev, uid, gid)
        self._xattrs(ino, _host_xattrs(e.path))
        if not stat.S_ISLNK(mode):
            fs.setattr(ino, mode=mode & 0o7777, atime_ns=st.st_atime_ns,
                       mtime_ns=st.st_mtime_ns)  # fmt: skip
        else:
            fs.setattr(ino, atime_ns=st.st_atime_ns, mtime_ns=st.st_mtime_ns)
        if st.st_nlink > 1:
            links[key] = ino

    # -- tar archives ----------------------------------------------------------------------
    def from_tar(self, path: str) -> None:
        fs = self.fs
        seen: dict[str, int] = {"": fs.root_ino}
        try:
            tf = tarfile.open(path, "r:*")  # noqa: SIM115 (closed by the with below)
        except (tarfile.TarError, OSError) as exc:
            raise UsageError(f"--from {path}: not a readable tar archive ({exc})") from exc
        with tf:
            for m in tf:
                name = _clean(m.name)
                if name is None:
                    self.warn(f"skipping unsafe member {m.name!r}")
                    continue
                uid, gid = self.ids(m.uid, m.gid)
                pax = m.pax_headers or {}
                mtime = _pax_time_ns(pax.get("mtime"), m.mtime)
                atime = _pax_time_ns(pax.get("atime"), None) if "atime" in pax else mtime
                xattrs = {
                    k[len("SCHILY.xattr.") :]: v.encode("utf-8", "surrogateescape")
                    for k, v in pax.items()
                    if k.startswith("SCHILY.xattr.")
                }
                if name == "":
                    if m.isdir():
                        self._dir_attrs.append((fs.root_ino, m.mode, uid, gid, atime, mtime))
                        self._xattrs(fs.root_ino, xattrs)
                    continue
                parent_path, _, base = name.rpartition("/")
                parent = self._tar_parent(seen, parent_path)
                if m.isdir():
                    ino = self._mkdir(parent, base, m.mode, uid, gid)
                    seen[name] = ino
                    self._dir_attrs.append((ino, m.mode, uid, gid, atime, mtime))
                    self._xattrs(ino, xattrs)
                    continue
                if m.islnk():
                    target = _clean(m.linkname)
                    if target is None or target not in seen:
                        self.warn(f"hard link {m.name} -> {m.linkname}: target not found")
                        continue
                    fs.link(seen[target], parent, base)
                    continue
                if m.isreg():
                    ino = fs.create(parent, base, m.mode & 0o7777, uid, gid)
                    f = tf.extractfile(m)
                    if f is not None:
                        pos = 0
                        while True:
                            chunk = f.read(CHUNK)
                            if not chunk:
                                break
                            for off, run in _data_runs(chunk, self._block_size()):
                                fs.write(ino, pos + off, run)
                            pos += len(chunk)
                        if pos:
                            fs.setattr(ino, size=pos)
                elif m.issym():
                    ino = fs.symlink(parent, base, m.linkname, uid, gid)
                elif m.ischr() or m.isblk() or m.isfifo():
                    kind = (stat.S_IFCHR if m.ischr() else stat.S_IFBLK if m.isblk()
                            else stat.S_IFIFO)  # fmt: skip
                    rdev = os.makedev(m.devmajor, m.devminor) if not m.isfifo() else 0
                    ino = fs.mknod(parent, base, kind | (m.mode & 0o7777), rdev, uid, gid)
                else:
                    self.warn(f"skipping {m.name}: unsupported tar member type")
                    continue
                seen[name] = ino
                self._xattrs(ino, xattrs)
                if m.issym():
                    fs.setattr(ino, atime_ns=atime, mtime_ns=mtime)
                else:
                    fs.setattr(ino, mode=m.mode & 0o7777, atime_ns=atime, mtime_ns=mtime)
        self._finish()

    def _tar_parent(self, seen: dict[str, int], path: str) -> int:
        """The directory for ``path``, creating missing ones (tars may omit them)."""
        if path in seen:
            return seen[path]
        head, _, base = path.rpartition("/")
        parent = self._tar_parent(seen, head)
        ino = self._mkdir(parent, base, 0o755, *self.ids(0, 0))
        seen[path] = ino
        return ino


def _clean(name: str) -> str | None:
    """Archive path -> normalised relative path ("" for the root); None when it escapes."""
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        return None
    return "/".join(parts)


def _host_xattrs(path: str) -> dict[str, bytes]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return {}
    out: dict[str, bytes] = {}
    for n in names:
        try:
            out[n] = os.getxattr(path, n, follow_symlinks=False)
        except OSError:
            continue
    return out


def _copy_file(fs: vfs.Filesystem, ino: int, path: str, size: int) -> None:
    """Copy data runs only (SEEK_DATA/SEEK_HOLE), so holes stay holes."""
    if size == 0:
        return
    fd = os.open(path, os.O_RDONLY)
    written = 0
    try:
        pos = 0
        while pos < size:
            try:
                start = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError:
                break  # only a hole is left
            end = os.lseek(fd, start, os.SEEK_HOLE)
            while start < end:
                chunk = os.pread(fd, min(CHUNK, end - start), start)
                if not chunk:
                    break
                fs.write(ino, start, chunk)
                start += len(chunk)
                written = start
            pos = end
    finally:
        os.close(fd)
    if written != size:
        fs.setattr(ino, size=size)


def populate(
    fs: vfs.Filesystem,
    source: str,
    *,
    owner_map: dict[int, int] | None = None,
    all_root: bool = False,
    warn: Callable[[str], None] | None = None,
) -> None:
    """Copy a host directory or a tar archive (any compression tarfile reads) into ``fs``."""
    p = Populator(fs, owner_map or {}, all_root, warn or (lambda msg: None))
    if os.path.isdir(source):
        p.from_dir(source)
    elif os.path.isfile(source):
        p.from_tar(source)
    else:
        raise UsageError(f"--from {source}: no such directory or tar archive")


def parse_owner_map(items: list[str]) -> dict[int, int]:
    """``["1000:0", "100:0"]`` -> {1000: 0, 100: 0}."""
    out: dict[int, int] = {}
    for item in items:
        host, sep, image = item.partition(":")
        if not sep or not host.strip().isdigit() or not image.strip().isdigit():
            raise UsageError(f"bad --owner-map {item!r} (expected HOST:IMAGE, e.g. 1000:0)")
        out[int(host)] = int(image)
    return out


def cli_mkfs(dev: object, args: object) -> None:
    """The ``burrow mkfs ext4|ext3|ext2`` branch: check ``--from`` first, make the filesystem,
    then populate it (so a bad source never leaves a half-made image behind)."""
    import sys

    from burrow.block.device import BlockDevice
    from burrow.fs.ext4 import open_ext4
    from burrow.fs.ext4.mkfs import mkfs

    assert isinstance(dev, BlockDevice)
    a = vars(args)
    source = a.get("source")
    owner_map = parse_owner_map(list(a.get("owner_map") or []))
    if source:
        if os.path.isfile(source) and not tarfile.is_tarfile(source):
            raise UsageError(f"--from {source}: not a directory or a tar archive")
        if not os.path.exists(source):
            raise UsageError(f"--from {source}: no such directory or tar archive")
    mkfs(
        dev,
        fstype=a["fstype"],
        label=a.get("label") or "",
        uuid=a.get("uuid"),
        block_size=a.get("block_size"),
        inode_size=a.get("inode_size"),
        features=a.get("features"),
    )
    if source:
        fs = open_ext4(dev, readonly=False)
        try:
            populate(
                fs,
                source,
                owner_map=owner_map,
                all_root=bool(a.get("all_root")),
                warn=lambda msg: print(f"burrow: {msg}", file=sys.stderr),
            )
        finally:
            fs.close()


def _pax_time_ns(text: str | None, fallback: float | None) -> int:
    """A pax time ("1795572985.940037299") in exact nanoseconds.

    Why not ``TarInfo.mtime``: tarfile parses pax times as floats, which keep only about
    seven digits after the point for present-day times, so nanoseconds came out wrong.
    """
    if text is not None:
        try:
            return int(decimal.Decimal(text).scaleb(9).to_integral_value(decimal.ROUND_FLOOR))
        except (decimal.InvalidOperation, ValueError, OverflowError):
            pass
    if fallback is None:
        return 0
    return int(fallback * 1_000_000_000)


PIECE = 64 << 10


def _data_runs(chunk: bytes, block_size: int) -> list[tuple[int, memoryview]]:
    """The runs of ``chunk`` that hold data, at the filesystem's block granularity.

    Why: a tar member carries no hole map (GNU sparse members come back from tarfile with
    their holes as zeros), so all-zero blocks are left out here, as ``tar -x --sparse`` and
    mke2fs leave holes. Dense data costs one ``memcmp`` per 64 KiB piece and per block of a
    piece that is not all zeros; consecutive data blocks are written as one run.
    """
    view = memoryview(chunk)
    n = len(chunk)
    zeros = chunk.count(0)
    if not zeros:
        return [(0, view)] if n else []
    if zeros == n:
        return []
    zero_piece = bytes(PIECE)
    zero_block = bytes(block_size)
    runs: list[tuple[int, memoryview]] = []
    start = -1  # start of the current data run, -1 when none is open
    for p in range(0, n, PIECE):
        piece = view[p : p + PIECE]
        if len(piece) == PIECE and piece == zero_piece:
            if start >= 0:
                runs.append((start, view[start:p]))
                start = -1
            continue
        for b in range(p, p + len(piece), block_size):
            block = view[b : min(b + block_size, n)]
            if block == zero_block[: len(block)]:
                if start >= 0:
                    runs.append((start, view[start:b]))
                    start = -1
            elif start < 0:
                start = b
    if start >= 0:
        runs.append((start, view[start:n]))
    return runs
