"""fsspec filesystems: ``burrow://host:port/export/path`` (shares) and ``burrowimg::`` (a
filesystem inside a disk image), so pandas, dask and xarray read from both directly.

Both are thin adapters over the path layer (:class:`burrow.fs.paths.PathFS`), so there is no
second implementation of anything:

* ``fsspec.open("burrow://host:7339/data/table.csv", key="client.key",
  server_key="BASE64")`` — keys default to ``BURROW_KEY`` / ``BURROW_SERVER_KEY`` / the
  known-servers file. One connection per ``host:port/export`` is kept by the instance.
* ``fsspec.open("burrowimg://etc/hostname::file:///images/disk.qcow2", part="1")`` — fsspec's
  chained-URL form (as ``zip::``): the part after ``::`` names the image (a local file), the
  ``part`` option the partition (default: the only filesystem). Read-only unless
  ``writable=True``.

Registered by entry points (``fsspec.specs``: ``burrow``, ``burrowimg``).
"""

from __future__ import annotations

import stat as _stat
from typing import Any

from fsspec.spec import AbstractBufferedFile, AbstractFileSystem

from burrow.errors import Exists, NotFound
from burrow.fs.paths import PathFS

__all__ = ["BurrowFileSystem", "BurrowImageFileSystem", "PathFSFileSystem"]


def _entry(pfs: PathFS, path: str, name: str) -> dict[str, Any]:
    st = pfs.lstat(path)
    kind = "directory" if _stat.S_ISDIR(st.st_mode) else "file"
    if _stat.S_ISLNK(st.st_mode):
        kind = "link"
    return {
        "name": name,
        "size": st.st_size,
        "type": kind,
        "mode": st.st_mode,
        "mtime": st.st_mtime,
        "ino": st.st_ino,
        "nlink": st.st_nlink,
        "uid": st.st_uid,
        "gid": st.st_gid,
        "islink": kind == "link",
    }


class _File(AbstractBufferedFile):  # type: ignore[misc]
    """Reads with ranged fetches; writes buffer blocks and append them as they fill."""

    def __init__(self, fs: PathFSFileSystem, path: str, mode: str = "rb", **kwargs: Any) -> None:
        self._pfs, self._inner = fs._resolve(path)
        self._ino = 0
        if mode == "rb":
            kwargs.setdefault("size", self._pfs.stat(self._inner).st_size)
        super().__init__(fs, path, mode, **kwargs)

    def _fetch_range(self, start: int, end: int) -> bytes:
        if not self._ino:
            self._ino = self._pfs.resolve(self._inner)
        return self._pfs.fs.read(self._ino, start, end - start)

    def _initiate_upload(self) -> None:
        self._pfs.write_bytes(self._inner, b"")  # create or truncate
        self._ino = self._pfs.resolve(self._inner)
        self._written = 0

    def _upload_chunk(self, final: bool = False) -> bool:
        data = self.buffer.getvalue()
        if not self._ino:
            self._initiate_upload()
        if data:
            self._pfs.fs.write(self._ino, self._written, data)
            self._written += len(data)
        return True


class PathFSFileSystem(AbstractFileSystem):  # type: ignore[misc]
    """fsspec over PathFS objects; subclasses say how a path maps to (PathFS, inner path)."""

    root_marker = "/"

    def _resolve(self, path: str) -> tuple[PathFS, str]:
        raise NotImplementedError

    def ls(self, path: str, detail: bool = True, **kwargs: Any) -> list[Any]:
        path = self._strip_protocol(path)
        pfs, inner = self._resolve(path)
        if not pfs.is_dir(inner):
            out = [_entry(pfs, inner, path)]
        else:
            base = path.rstrip("/")
            out = [
                _entry(pfs, f"{inner.rstrip('/')}/{n}", f"{base}/{n}")
                for n in sorted(pfs.listdir(inner))
            ]
        return out if detail else [e["name"] for e in out]

    def info(self, path: str, **kwargs: Any) -> dict[str, Any]:
        path = self._strip_protocol(path)
        pfs, inner = self._resolve(path)
        try:
            entry = _entry(pfs, inner, path)
        except NotFound:
            raise FileNotFoundError(path) from None
        if entry["type"] == "link":
            try:
                st = pfs.stat(inner)
                entry["type"] = "directory" if _stat.S_ISDIR(st.st_mode) else "file"
                entry["size"] = st.st_size
            except OSError:
                pass
        return entry

    def _open(self, path: str, mode: str = "rb", **kwargs: Any) -> _File:
        if mode not in ("rb", "wb"):
            raise ValueError(f"mode {mode!r} not supported (rb, wb)")
        return _File(self, self._strip_protocol(path), mode, **kwargs)

    def mkdir(self, path: str, create_parents: bool = True, **kwargs: Any) -> None:
        pfs, inner = self._resolve(self._strip_protocol(path))
        if create_parents:
            pfs.makedirs(inner, exist_ok=True)
        else:
            pfs.mkdir(inner)

    def makedirs(self, path: str, exist_ok: bool = False) -> None:
        pfs, inner = self._resolve(self._strip_protocol(path))
        try:
            pfs.makedirs(inner, exist_ok=exist_ok)
        except Exists:
            raise FileExistsError(path) from None

    def rm_file(self, path: str) -> None:
        pfs, inner = self._resolve(self._strip_protocol(path))
        pfs.remove(inner)

    def rmdir(self, path: str) -> None:
        pfs, inner = self._resolve(self._strip_protocol(path))
        pfs.rmdir(inner)

    def mv(self, path1: str, path2: str, **kwargs: Any) -> None:
        pfs1, a = self._resolve(self._strip_protocol(path1))
        pfs2, b = self._resolve(self._strip_protocol(path2))
        if pfs1 is not pfs2:
            super().mv(path1, path2, **kwargs)
            return
        pfs1.rename(a, b)

    def cat_file(
        self, path: str, start: int | None = None, end: int | None = None, **kw: Any
    ) -> bytes:
        pfs, inner = self._resolve(self._strip_protocol(path))
        if start is None and end is None:
            return pfs.read_bytes(inner)
        size = pfs.stat(inner).st_size
        s = 0 if start is None else (start if start >= 0 else max(0, size + start))
        e = size if end is None else (end if end >= 0 else max(0, size + end))
        if e <= s:
            return b""
        return pfs.fs.read(pfs.resolve(inner), s, e - s)

    def close(self) -> None:
        pass


class BurrowFileSystem(PathFSFileSystem):
    """``burrow://host:port/export/path`` (see the module docstring)."""

    protocol = "burrow"

    def __init__(
        self,
        key: str | None = None,
        server_key: str | None = None,
        writable: bool = False,
        known_servers: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._key, self._server_key, self._writable = key, server_key, writable
        self._known = known_servers
        self._conns: dict[str, PathFS] = {}

    @classmethod
    def _strip_protocol(cls, path: str) -> str:
        if path.startswith("burrow://"):
            path = path[len("burrow://") :]
        return path.rstrip("/") or "/"

    def _resolve(self, path: str) -> tuple[PathFS, str]:
        from burrow.share.client import connect

        hostport, _, rest = path.partition("/")
        export, _, inner = rest.partition("/")
        where = f"{hostport}/{export}"
        pfs = self._conns.get(where)
        if pfs is None:
            fs = connect(
                f"burrow://{where}",
                key=self._key,
                server_key=self._server_key,
                known_servers=self._known,
                readonly=not self._writable,
            )
            pfs = self._conns[where] = PathFS(fs)
        return pfs, "/" + inner

    def close(self) -> None:
        for pfs in self._conns.values():
            pfs.close()
        self._conns.clear()


class BurrowImageFileSystem(PathFSFileSystem):
    """``burrowimg://inner/path::file:///image`` — a filesystem inside a disk image."""

    protocol = "burrowimg"

    def __init__(
        self,
        fo: str = "",
        part: str | None = None,
        writable: bool = False,
        target_protocol: str | None = None,
        target_options: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        from burrow.disk import open_target

        image = str(fo)
        if image.startswith("file://"):
            image = image[len("file://") :]
        if target_protocol not in (None, "file"):
            raise ValueError("burrowimg reads local image files only (file://)")
        spec = f"{image}@{part}" if part else image
        self._target = open_target(spec, writable=writable)

    @classmethod
    def _strip_protocol(cls, path: str) -> str:
        if path.startswith("burrowimg://"):
            path = path[len("burrowimg://") :]
        return "/" + path.strip("/")

    def _resolve(self, path: str) -> tuple[PathFS, str]:
        return self._target.fs, path

    def close(self) -> None:
        self._target.close()
