"""Image-building and oracle helpers for the ext4 tests (read side; the writer reuses them).

* :func:`make_source_tree` builds a host tree that exercises every inode kind and corner the
  ext4 reader must handle (see its docstring).
* :func:`build_image` runs ``mkfs.<type> -d`` on it for one :data:`VARIANTS` entry.
* :func:`kernel_snapshot` walks a loop mount (the kernel's view) and :func:`burrow_snapshot`
  walks a :class:`burrow.fs.vfs.Filesystem` into the same shape, so tests compare dicts.
* :func:`loop_mount` mounts an image read-only (root only) as a context manager.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from burrow.fs import vfs

SIZE_5G = 5 << 30

# name -> (mkfs type, options, whether the kernel can mount it here)
VARIANTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "ext4-4k": ("ext4", ("-b", "4096")),
    "ext4-1k-128": ("ext4", ("-b", "1024", "-I", "128")),
    "ext4-2k-nocsum-nojournal": ("ext4", ("-b", "2048", "-O", "^has_journal,^metadata_csum")),
    "ext4-blockmap": ("ext4", ("-b", "4096", "-O", "^extent,^flex_bg,^64bit")),
    "ext4-inline": ("ext4", ("-b", "4096", "-O", "inline_data")),
    "ext4-bigalloc": ("ext4", ("-b", "4096", "-C", "16384", "-O", "bigalloc")),
    "ext4-largedir-tea": ("ext4", ("-b", "1024", "-O", "large_dir")),
    "ext4-metabg-legacy": ("ext4", ("-b", "1024", "-O", "meta_bg,^resize_inode")),
    "ext4-sparse2-eainode": ("ext4", ("-b", "4096", "-O", "sparse_super2,ea_inode")),
    "ext2": ("ext2", ("-b", "1024",)),
    "ext3": ("ext3", ("-b", "4096", "-I", "256")),
}  # fmt: skip
EA_INODE_VARIANTS = {"ext4-sparse2-eainode"}
# variants whose tree has the 5000-entry directory (mkfs -d inserts into linear directories in
# O(n^2), so the others get a 300-entry one to keep the suite fast)
BIG_DIR_VARIANTS = {"ext4-4k", "ext4-largedir-tea", "ext4-metabg-legacy", "ext3"}
UNSIGNED_HASH_VARIANTS = {"ext4-largedir-tea", "ext4-4k"}
LINEAR_DIR_VARIANTS = {"ext4-2k-nocsum-nojournal"}
HASH_ALG = {"ext4-largedir-tea": "tea", "ext4-metabg-legacy": "legacy"}


def _mke2fs_env(path: Path, hash_alg: str | None) -> dict[str, str] | None:
    """An environment whose MKE2FS_CONFIG sets the htree hash (mke2fs has no option)."""
    if hash_alg is None:
        return None
    base = Path("/etc/mke2fs.conf").read_text() if Path("/etc/mke2fs.conf").exists() else ""
    if "[defaults]" in base:
        conf = base.replace("[defaults]", f"[defaults]\n\thash_alg = {hash_alg}", 1)
    else:
        conf = f"[defaults]\n\thash_alg = {hash_alg}\n" + base
    cfg = path.with_suffix(".mke2fs.conf")
    cfg.write_text(conf)
    return {**os.environ, "MKE2FS_CONFIG": os.fspath(cfg)}


def _posix_acl(entries: list[tuple[int, int, int]]) -> bytes:
    """A ``posix_acl_xattr`` (version 2) value, as setfacl passes it to setxattr."""
    out = bytearray((2).to_bytes(4, "little"))
    for tag, perm, eid in entries:
        out += tag.to_bytes(2, "little") + perm.to_bytes(2, "little") + eid.to_bytes(4, "little")
    return bytes(out)


def make_source_tree(root: Path, *, big_entries: int = 5000) -> Path:
    """Nested dirs, a ``big_entries``-entry directory (plus 60 names with high bytes), 255-byte and non-UTF-8 names, fast and slow
    symlinks, hard links, fifo/char/block/socket nodes, sparse files (one > 4 GiB), small and
    inline-sized files, xattrs in user/trusted/security and a POSIX ACL, one xattr too big for
    the inode, odd modes and owners,
    times before 1970 and after 2038."""
    root.mkdir(parents=True, exist_ok=True)
    r = os.fsencode(root)
    d = root / "d1" / "d2" / "d3" / "d4"
    d.mkdir(parents=True)
    (d / "deep.txt").write_bytes(b"deep file\n")
    (root / "d1" / "mid.bin").write_bytes(os.urandom(70_000))
    big = root / "bigdir"
    big.mkdir()
    for i in range(big_entries):
        (big / f"entry-{i:05d}-{'x' * (i % 40)}").write_bytes(b"" if i % 7 else b"%d\n" % i)
    for i in range(60):  # bytes >= 0x80: signed and unsigned htree hashes differ on these
        with open(os.fsencode(big) + b"/hi-\xc3\xa9-\xff\x80-%d" % i, "wb") as f:
            f.write(b"%d" % i)
    (root / ("L" * 255)).write_bytes(b"long name\n")
    with open(r + b"/non-utf8-\xff\xfe-\xe9t\xe9", "wb") as f:
        f.write(b"latin-1 name\n")
    (root / "tiny.txt").write_bytes(b"0123456789" * 5)  # fits inline_data
    (root / "small-200.txt").write_bytes(bytes(range(200)))  # inline, spills into the xattr
    (root / "random-1m.bin").write_bytes(os.urandom(1 << 20))
    os.symlink("d1/d2/d3/d4/deep.txt", root / "fast-link")
    os.symlink("s" * 59, root / "fast-59")
    os.symlink("t" * 60, root / "slow-60")
    os.symlink("/" + "long/" * 60 + "target", root / "slow-link")
    os.symlink("dangling/nowhere", root / "dangling")
    os.link(root / "tiny.txt", root / "hard-1")
    os.link(root / "tiny.txt", root / "d1" / "hard-2")
    os.mkfifo(root / "fifo")
    os.mknod(root / "chr-old", 0o620 | stat.S_IFCHR, os.makedev(4, 64))
    os.mknod(root / "blk-new", 0o660 | stat.S_IFBLK, os.makedev(259, 70000))
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(os.fspath(root / "sock"))
    with open(root / "sparse.bin", "wb") as f:
        f.write(b"start")
        f.seek(3 << 20)
        f.write(b"middle" * 1000)
        f.seek(12 << 20)
        f.write(b"end")
    with open(root / "fragmented.bin", "wb") as f:  # 1200 extents: index blocks, depth >= 1
        for i in range(1200):
            f.seek(i * 8192)
            f.write(b"%07d" % i)
        f.truncate(1200 * 8192)
    with open(root / "sparse-5g.bin", "wb") as f:
        f.write(b"head")
        f.seek(SIZE_5G)
        f.write(b"tail past 4 GiB")
    x = root / "xattrs.txt"
    x.write_bytes(b"has xattrs\n")
    os.setxattr(x, "user.small", b"value")
    os.setxattr(x, "user.empty", b"")
    os.setxattr(x, "trusted.t", b"trusted value")
    os.setxattr(x, "security.s", b"security value")
    os.setxattr(x, "user.medium", os.urandom(500))  # too big for the inode: goes to a block
    acl = _posix_acl([(1, 6, 0xFFFFFFFF), (2, 4, 1234), (4, 4, 0xFFFFFFFF), (8, 5, 99),
                      (0x10, 7, 0xFFFFFFFF), (0x20, 0, 0xFFFFFFFF)])  # fmt: skip
    os.setxattr(x, "system.posix_acl_access", acl)
    os.setxattr(root / "d1", "system.posix_acl_default", acl)
    odd = root / "odd"
    odd.mkdir()
    for name, mode, uid, gid in [
        ("setuid", 0o4751, 1234, 5678),
        ("none", 0o000, 70000, 80000),
        ("sticky", 0o1777, 0, 0),
    ]:
        p = odd / name
        p.write_bytes(name.encode())
        os.chown(p, uid, gid)
        os.chmod(p, mode)
    times = odd / "times"
    times.mkdir()
    for name, ns in [
        ("before-1970", -1_234_567_890_123_456_789),
        ("after-2038", 4_000_000_000_987_654_321),
        ("far-2400", 13_000_000_000_000_000_001),
        ("epoch", 0),
    ]:
        p = times / name
        p.write_bytes(b"t")
        os.utime(p, ns=(ns, ns))
    os.utime(times, ns=(-1, 2_500_000_000_000_000_000))
    return root


def build_image(path: Path, source: Path, variant: str, size: str = "96M") -> Path:
    fstype, options = VARIANTS[variant]
    subprocess.run(
        [f"mkfs.{fstype}", "-q", "-F", *options, "-d", os.fspath(source), os.fspath(path), size],
        check=True,
        capture_output=True,
        env=_mke2fs_env(path, HASH_ALG.get(variant)),
    )
    if variant in UNSIGNED_HASH_VARIANTS:
        # as if made on a CPU with unsigned char: e2fsck -D below indexes with that hash
        subprocess.run(["debugfs", "-w", "-R", "ssv flags 2", os.fspath(path)], check=True,
                       capture_output=True)  # fmt: skip
    if variant not in LINEAR_DIR_VARIANTS:
        # mkfs -d writes linear directories; e2fsck -D indexes them (htree), as the kernel
        # would once they grow. Exit status 1 means "changed", which is what we asked for.
        proc = subprocess.run(["e2fsck", "-fyD", os.fspath(path)], capture_output=True)
        if proc.returncode not in (0, 1):
            raise RuntimeError(f"e2fsck -fyD failed: {proc.stdout!r} {proc.stderr!r}")
    # mkfs -d (e2fsprogs 1.47.0) stores 32-bit seconds only; give a few inodes nanoseconds,
    # epoch bits past 2038 and negative times (ignored where inodes have no extra fields).
    cmds = path.with_suffix(".debugfs")
    cmds.write_text(
        "sif /odd/times/after-2038 mtime 0x12345678\n"
        "sif /odd/times/after-2038 mtime_extra 0x00000ff5\n"
        "sif /odd/times/after-2038 atime_extra 0xfffffffe\n"
        "sif /odd/times/after-2038 crtime_extra 0x00000fa2\n"
        "sif /odd/times/before-1970 mtime 0x80000001\n"
        "sif /odd/times/before-1970 mtime_extra 0x00000010\n"
        "sif /odd/times/before-1970 ctime_extra 0xeeeeeee0\n"
    )
    subprocess.run(["debugfs", "-w", "-f", os.fspath(cmds), os.fspath(path)], capture_output=True)
    if variant in EA_INODE_VARIANTS:
        # an xattr value bigger than a block: only ea_inode can hold it. The host fs cannot,
        # so debugfs adds it after mkfs.
        value = path.with_suffix(".xattr")
        value.write_bytes(os.urandom(10_000))
        subprocess.run(
            ["debugfs", "-w", "-R", f"ea_set -f {value} /tiny.txt user.huge", os.fspath(path)],
            check=True,
            capture_output=True,
        )
    return path


# ---------------------------------------------------------------------------------------
# snapshots: path (bytes, relative) -> attributes; equal dicts mean equal trees
# ---------------------------------------------------------------------------------------
BIG = 16 << 20


def _digest_file(read: Any, size: int) -> str:
    """sha256 of the whole file when small, else of head/tail/middle pieces (bounded I/O)."""
    h = hashlib.sha256()
    if size <= BIG:
        h.update(read(0, size))
    else:
        for off in (0, size // 2, size - (1 << 20)):
            h.update(read(off, 1 << 20))
    return h.hexdigest()


def kernel_snapshot(mnt: Path) -> dict[bytes, dict[str, Any]]:
    out: dict[bytes, dict[str, Any]] = {}
    base = os.fsencode(mnt)
    for dirpath, dirnames, filenames in os.walk(base):
        names = [*dirnames, *filenames]
        if dirpath == base:
            names.append(b".")  # the root directory itself, as b""
        for name in names:
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, base) if name != b"." else b""
            st = os.lstat(full)
            rec: dict[str, Any] = {
                "mode": st.st_mode,
                "nlink": st.st_nlink,
                "uid": st.st_uid,
                "gid": st.st_gid,
                "size": st.st_size,
                "atime": st.st_atime_ns,
                "mtime": st.st_mtime_ns,
                "ctime": st.st_ctime_ns,
                "rdev": st.st_rdev,
                "blocks": st.st_blocks,
                "ino": st.st_ino,
                "xattrs": {
                    k: os.getxattr(full, k, follow_symlinks=False)
                    for k in os.listxattr(full, follow_symlinks=False)
                },
            }
            if stat.S_ISLNK(st.st_mode):
                rec["target"] = os.readlink(full)
            elif stat.S_ISREG(st.st_mode):
                with open(full, "rb") as f:
                    fd = f.fileno()
                    rec["digest"] = _digest_file(lambda o, n, fd=fd: os.pread(fd, n, o), st.st_size)
            out[rel] = rec
    return out


def kernel_birthtimes(mnt: Path) -> dict[bytes, int | None]:
    """statx birth times (``stat %W``, nanoseconds; None where the kernel has none)."""
    proc = subprocess.run(
        "find . -mindepth 1 -print0 | xargs -0 stat --printf '%.9W\\t%n\\0'",
        shell=True,
        cwd=mnt,
        check=True,
        capture_output=True,
    )
    out: dict[bytes, int | None] = {}
    for rec in proc.stdout.split(b"\0"):
        if not rec:
            continue
        when, name = rec.split(b"\t", 1)
        secs, _, frac = when.partition(b".")
        ns = int(secs) * 1_000_000_000 + (int(frac) if not secs.startswith(b"-") else -int(frac))
        out[name.removeprefix(b"./")] = ns or None
    return out


def burrow_snapshot(fs: vfs.Filesystem) -> dict[bytes, dict[str, Any]]:
    out: dict[bytes, dict[str, Any]] = {}
    stack: list[tuple[int, bytes]] = [(fs.root_ino, b"")]
    while stack:
        ino, prefix = stack.pop()
        entries = list(fs.readdir(ino))
        if ino == fs.root_ino and not prefix:  # the root directory itself, as b""
            entries.append(vfs.DirEntry("", ino, stat.S_IFDIR))
        for ent in entries:
            rel = prefix + vfs.encode_name(ent.name)
            st = fs.getattr(ent.ino)
            assert ent.mode == 0 or ent.mode == stat.S_IFMT(st.st_mode), rel
            rec: dict[str, Any] = {
                "mode": st.st_mode,
                "nlink": st.st_nlink,
                "uid": st.st_uid,
                "gid": st.st_gid,
                "size": st.st_size,
                "atime": st.st_atime_ns,
                "mtime": st.st_mtime_ns,
                "ctime": st.st_ctime_ns,
                "rdev": st.st_rdev,
                "blocks": st.st_blocks,
                "ino": ent.ino,
                "xattrs": {k: fs.getxattr(ent.ino, k) for k in fs.listxattr(ent.ino)},
            }
            if stat.S_ISLNK(st.st_mode):
                rec["target"] = vfs.encode_name(fs.readlink(ent.ino))
            elif stat.S_ISREG(st.st_mode):
                rec["digest"] = _digest_file(lambda o, n, i=ent.ino: fs.read(i, o, n), st.st_size)
            out[rel] = rec
            if stat.S_ISDIR(st.st_mode) and rel:
                stack.append((ent.ino, rel + b"/"))
    return out


@contextlib.contextmanager
def loop_mount(image: Path, *, readonly: bool = True, options: str = "") -> Iterator[Path]:
    """Mount ``image`` through a loop device (root only); yields the mount point."""
    mnt = Path(tempfile.mkdtemp(prefix="burrow-ext4-mnt-"))
    opts = ("ro," if readonly else "") + "loop" + ("," + options if options else "")
    subprocess.run(["mount", "-o", opts, os.fspath(image), os.fspath(mnt)], check=True,
                   capture_output=True)  # fmt: skip
    try:
        yield mnt
    finally:
        subprocess.run(["umount", os.fspath(mnt)], check=False, capture_output=True)
        with contextlib.suppress(OSError):
            mnt.rmdir()


def debugfs(image: Path, request: str) -> str:
    proc = subprocess.run(
        ["debugfs", "-R", request, os.fspath(image)], check=True, capture_output=True
    )
    return proc.stdout.decode("utf-8", "surrogateescape")


def debugfs_ls(image: Path, path: str) -> dict[bytes, tuple[int, int, int, int, int]]:
    """``debugfs ls -p``: name -> (inode, mode, uid, gid, size) (size 0 for directories)."""
    out: dict[bytes, tuple[int, int, int, int, int]] = {}
    proc = subprocess.run(
        ["debugfs", "-R", f"ls -p {path}", os.fspath(image)], check=True, capture_output=True
    )
    for line in proc.stdout.split(b"\n"):
        if not line.startswith(b"/"):
            continue
        parts = line.split(b"/")
        # /ino/mode/uid/gid/name/size/ -- names may contain no '/', so split is safe
        ino, mode, uid, gid = (int(parts[1]), int(parts[2], 8), int(parts[3]), int(parts[4]))
        name = b"/".join(parts[5:-2])
        size = int(parts[-2]) if parts[-2] else 0
        if name in (b".", b"..") or ino == 0:  # ino 0: an unused record
            continue
        out[name] = (ino, mode, uid, gid, size)
    return out
