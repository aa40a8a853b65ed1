#!/usr/bin/env python3
"""Real-world acceptance run: burrow against a real Debian root tree and the kernel.

Not part of the test suite (it needs root, loop mounts, FUSE, network for debootstrap and a
few minutes). It builds a Debian bookworm minbase tree once (debootstrap, or a copy of parts of
this machine's /usr and /etc when no mirror answers), adds real-world oddities, makes images
with the usual tools and then uses burrow as a user would, checking every result against
e2fsprogs, dosfstools, qemu-img and the kernel (loop mounts). See docs/acceptance.md.

    sudo .venv/bin/python scripts/acceptance.py [--work /var/tmp/burrow-accept] [-k SUBSTR]

Prints one PASS/FAIL line per check and a summary; exit status 1 when anything failed.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
BURROW = [str(REPO / ".venv" / "bin" / "burrow")]
NICE = ["nice", "-n", "10"]
RESULTS: list[tuple[str, bool, str]] = []
# tar-out and FUSE compare this subtree only with --skip-slow ("" = the whole tree): both
# resolve every path from the root, which is quadratic in a big linear directory (srv/bigdir)
SUBTREE = ""


def run(
    cmd: list[str], *, check: bool = True, input: bytes | None = None, **kw: Any
) -> subprocess.CompletedProcess[bytes]:
    proc = subprocess.run(NICE + cmd, input=input, capture_output=True, **kw)
    if check and proc.returncode != 0:
        raise RuntimeError(
            f"{' '.join(cmd)} -> {proc.returncode}\n{proc.stdout.decode(errors='replace')[-2000:]}\n{proc.stderr.decode(errors='replace')[-2000:]}"
        )
    return proc


def burrow(
    *args: str, check: bool = True, input: bytes | None = None
) -> subprocess.CompletedProcess[bytes]:
    return run(BURROW + list(args), check=check, input=input)


def check(name: str, fn: Callable[[], str | None]) -> None:
    t0 = time.monotonic()
    try:
        detail = fn() or ""
        ok = True
    except Exception as exc:
        ok = False
        detail = f"{type(exc).__name__}: {exc}"
        if os.environ.get("ACCEPT_DEBUG"):
            traceback.print_exc()
    dt = time.monotonic() - t0
    RESULTS.append((name, ok, detail))
    first = detail.strip().splitlines()[:12]
    print(f"{'PASS' if ok else 'FAIL'} {name} ({dt:.1f}s) {first[0] if first else ''}", flush=True)
    if not ok:
        for line in first[1:]:
            print("     " + line, flush=True)


# ----------------------------------------------------------------------------- the tree


def build_rootfs(work: Path) -> tuple[Path, str]:
    """debootstrap once (or copy host subsets), then add the oddities."""
    rootfs = work / "rootfs"
    marker = work / "rootfs.done"
    if marker.exists():
        return rootfs, marker.read_text().strip()
    how = "debootstrap"
    if rootfs.exists():
        shutil.rmtree(rootfs)
    if shutil.which("debootstrap") is None:
        run(["apt-get", "install", "-y", "debootstrap"], check=False)
    mirror = "http://deb.debian.org/debian"
    proc = run(["debootstrap", "--variant=minbase", "bookworm", str(rootfs), mirror], check=False)
    if proc.returncode != 0:
        how = "host copy (debootstrap failed)"
        shutil.rmtree(rootfs, ignore_errors=True)
        for sub in (
            "etc",
            "usr/bin",
            "usr/lib/os-release",
            "usr/lib/x86_64-linux-gnu/security",
            "var/lib/dpkg/status",
        ):
            dst = rootfs / sub
            dst.parent.mkdir(parents=True, exist_ok=True)
            run(["cp", "-a", "/" + sub, str(dst)], check=False)
    add_oddities(rootfs)
    marker.write_text(how + "\n")
    return rootfs, how


def add_oddities(root: Path) -> None:
    (root / "etc/hostname").write_text("accept-host\n")
    (root / "etc/fstab").write_text(
        "# /etc/fstab\nLABEL=root / ext4 errors=remount-ro 0 1\nLABEL=ESP /boot/efi vfat umask=0077 0 1\n"
    )
    odd = root / "srv/odd"
    odd.mkdir(parents=True, exist_ok=True)
    ping = odd / "ping"
    shutil.copy2(root / "usr/bin/ls", ping)
    if shutil.which("setcap"):
        run(["setcap", "cap_net_raw+ep", str(ping)], check=False)
    else:  # the raw v2 capability value setcap writes for cap_net_raw+ep
        os.setxattr(
            ping, "security.capability", bytes.fromhex("0100000200200000000000000000000000000000")
        )
    suid = odd / "suid-tool"
    shutil.copy2(root / "usr/bin/true", suid)
    os.chmod(suid, 0o4755)
    sgid = odd / "sgid-tool"
    shutil.copy2(root / "usr/bin/true", sgid)
    os.chown(sgid, 0, 42)
    os.chmod(sgid, 0o2755)
    sticky = odd / "sticky"
    sticky.mkdir(exist_ok=True)
    os.chmod(sticky, 0o1777)
    for name, kind, major, minor in (
        ("null", stat.S_IFCHR, 1, 3),
        ("sda", stat.S_IFBLK, 8, 0),
        ("bigdev", stat.S_IFCHR, 300, 70000),
    ):
        p = odd / name
        if not p.exists():
            os.mknod(p, kind | 0o660, os.makedev(major, minor))
    if not (odd / "fifo").exists():
        os.mkfifo(odd / "fifo")
    long_target = "/" + "/".join(["d" * 50] * 20)  # 1020 bytes: a slow symlink
    for name, target in (
        ("long-link", long_target),
        ("short-link", "../odd/ping"),
        ("dangling", "no/such/thing"),
    ):
        p = odd / name
        if not p.is_symlink():
            os.symlink(target, p)
    data = odd / "hard-a"
    data.write_bytes(b"hard link data\n" * 100)
    for n in ("hard-b", "sub-hard-c"):
        with contextlib.suppress(FileExistsError):
            os.link(data, odd / n)
    x = odd / "xattrs"
    x.write_text("xattrs\n")
    os.setxattr(x, "user.comment", b"hello world")
    os.setxattr(x, "user.big", b"B" * 700)
    os.setxattr(x, "trusted.note", b"trusted value")
    other = odd / "owned-by-others"
    other.mkdir(exist_ok=True)
    for uid, gid in ((1000, 1000), (65534, 65534), (123456, 654321)):
        p = other / f"f{uid}"
        p.write_text(f"{uid}\n")
        os.chown(p, uid, gid)
    os.chown(other, 1000, 100)
    sparse = odd / "sparse"
    with open(sparse, "wb") as f:
        f.seek(50 << 20)
        f.write(b"middle")
        f.seek(200 << 20)
        f.write(b"end")
    (odd / "empty").write_bytes(b"")
    (odd / ("nonutf8-\xff\xfe".encode("latin-1").decode("utf-8", "surrogateescape"))).write_text(
        "x\n"
    )
    (odd / ("n" * 255)).write_text("long name\n")
    big = root / "srv/bigdir"
    big.mkdir(exist_ok=True)
    for i in range(20000):
        (big / f"entry-{i:05d}-{'x' * (i % 40)}").write_bytes(b"")
    old = odd / "old"
    old.write_text("old\n")
    os.utime(old, ns=(0, -86400 * 365 * 10 * 10**9))
    new = odd / "y2100"
    new.write_text("new\n")
    os.utime(new, ns=(4102444800 * 10**9 + 123456789, 4102444800 * 10**9 + 123456789))


# ----------------------------------------------------------------------------- comparing trees


def _hash(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def snapshot(
    root: Path, *, skip_lost_found: bool = True, times: bool = True, root_attrs: bool = True
) -> dict[str, Any]:
    """What a user sees through lstat/readlink/xattrs/contents (hard links as groups)."""
    out: dict[str, Any] = {}
    inodes: dict[tuple[int, int], str] = {}
    rootb = os.fsencode(root)
    for dirpath, dirnames, filenames in os.walk(rootb):
        if skip_lost_found and dirpath == rootb and b"lost+found" in dirnames:
            dirnames.remove(b"lost+found")
        for name in [b"", *dirnames, *filenames] if dirpath == rootb else dirnames + filenames:
            p = os.path.join(dirpath, name) if name else dirpath
            rel = os.fsdecode(os.path.relpath(p, rootb))
            if rel == "." and not root_attrs:
                continue
            st = os.lstat(p)
            e: dict[str, Any] = {
                "mode": oct(st.st_mode),
                "uid": st.st_uid,
                "gid": st.st_gid,
            }
            if times and not stat.S_ISLNK(st.st_mode):
                e["mtime"] = st.st_mtime_ns
            if not stat.S_ISDIR(st.st_mode):
                e["size"] = st.st_size
                e["nlink"] = st.st_nlink
            if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                e["rdev"] = (os.major(st.st_rdev), os.minor(st.st_rdev))
            if stat.S_ISLNK(st.st_mode):
                e["target"] = os.fsdecode(os.readlink(p))
            else:
                try:
                    e["xattrs"] = {
                        n: os.getxattr(p, n, follow_symlinks=False).hex()
                        for n in sorted(os.listxattr(p, follow_symlinks=False))
                    }
                except OSError as exc:
                    e["xattrs"] = f"error {exc.errno}"
            if stat.S_ISREG(st.st_mode):
                key = (st.st_dev, st.st_ino)
                if st.st_nlink > 1 and key in inodes:
                    e["link_of"] = inodes[key]
                else:
                    inodes[key] = rel
                    e["sha"] = _hash(Path(os.fsdecode(p)))
            out[rel] = e
    # hard-link groups independent of walk order: map each file to the group's smallest name
    groups: dict[str, list[str]] = {}
    for rel, e in out.items():
        if "link_of" in e or (e.get("nlink", 1) > 1 and "sha" in e):
            groups.setdefault(e.get("link_of", rel), []).append(rel)
    for members in groups.values():
        first = min(members)
        sha = next(out[m]["sha"] for m in members if "sha" in out[m])
        for m in members:
            out[m].pop("link_of", None)
            out[m]["sha"] = sha
            out[m]["group"] = first
    return out


def diff(
    a: dict[str, Any], b: dict[str, Any], la: str = "expected", lb: str = "actual", limit: int = 15
) -> str | None:
    lines = []
    for k in sorted(set(a) | set(b)):
        if a.get(k) != b.get(k):
            if k not in b:
                lines.append(f"{k}: only in {la}")
            elif k not in a:
                lines.append(f"{k}: only in {lb}")
            else:
                fields = {f for f in set(a[k]) | set(b[k]) if a[k].get(f) != b[k].get(f)}
                lines.append(
                    f"{k}: "
                    + ", ".join(
                        f"{f} {la}={str(a[k].get(f))[:60]} {lb}={str(b[k].get(f))[:60]}"
                        for f in sorted(fields)
                    )
                )
    if not lines:
        return None
    return f"{len(lines)} differences\n" + "\n".join(lines[:limit])


def same(a: dict[str, Any], b: dict[str, Any], la: str = "expected", lb: str = "actual") -> str:
    d = diff(a, b, la, lb)
    if d:
        raise AssertionError(d)
    return f"{len(a)} entries identical"


@contextlib.contextmanager
def loop_mount(
    image: Path, *, ro: bool = True, offset: int = 0, fstype: str | None = None
) -> Iterator[Path]:
    mnt = Path(tempfile.mkdtemp(prefix="accept-mnt-"))
    opts = ["ro" if ro else "rw", "loop"]
    if offset:
        opts.append(f"offset={offset}")
    if ro and fstype in (None, "ext4", "ext3", "ext2"):
        opts.append("noload")
    cmd = ["mount", "-o", ",".join(opts)]
    if fstype:
        cmd += ["-t", fstype]
    if run([*cmd, str(image), str(mnt)], check=False).returncode != 0:
        cmd[2] = cmd[2].replace(",noload", "")  # ext2 refuses noload
        run([*cmd, str(image), str(mnt)])
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=False)
        mnt.rmdir()


def e2fsck(image: Path, offset: int = 0) -> str:
    target = f"{image}?offset={offset}" if offset else str(image)
    proc = run(["e2fsck", "-fn", target], check=False)
    if proc.returncode != 0:
        raise AssertionError(
            "e2fsck -fn not clean:\n" + proc.stdout.decode(errors="replace")[-1500:]
        )
    return "e2fsck clean"


def partitions(image: Path) -> list[dict[str, Any]]:
    out = json.loads(run(["sfdisk", "-J", str(image)]).stdout)
    ss = out["partitiontable"].get("sectorsize", 512)
    return [
        {"start": p["start"] * ss, "size": p["size"] * ss, "type": p["type"]}
        for p in out["partitiontable"]["partitions"]
    ]


# ----------------------------------------------------------------------------- the checks


class Ctx:
    def __init__(self, work: Path, rootfs: Path) -> None:
        self.work = work
        self.rootfs = rootfs
        self.img = work / "img"
        self.out = work / "out"
        self.img.mkdir(exist_ok=True)
        self._source_snap: dict[str, Any] | None = None

    @property
    def source_snap(self) -> dict[str, Any]:
        if self._source_snap is None:
            self._source_snap = snapshot(self.rootfs)
        return copy.deepcopy(self._source_snap)

    def fresh_out(self, name: str) -> Path:
        p = self.out / name
        if p.exists():
            shutil.rmtree(p)
        p.parent.mkdir(parents=True, exist_ok=True)
        return p


EXT_VARIANTS: dict[str, list[str]] = {
    "ext4": ["mkfs.ext4", "-q"],
    "ext3": ["mkfs.ext3", "-q"],
    "ext2": ["mkfs.ext2", "-q"],
    "ext4-nocsum-no64": ["mkfs.ext4", "-q", "-O", "^metadata_csum,^64bit"],
    "ext4-1k": ["mkfs.ext4", "-q", "-b", "1024"],
    "ext4-inline": ["mkfs.ext4", "-q", "-O", "inline_data"],
}


def make_ext_image(ctx: Ctx, variant: str) -> Path:
    path = ctx.img / f"{variant}.img"
    if not path.exists():
        tmp = path.with_suffix(".tmp")
        tmp.unlink(missing_ok=True)
        run(EXT_VARIANTS[variant] + ["-d", str(ctx.rootfs), "-L", "root", str(tmp), "1200M"])
        tmp.rename(path)
    return path


def read_checks(
    ctx: Ctx,
    image: Path,
    tag: str,
    *,
    kernel: Callable[[], contextlib.AbstractContextManager[Path]],
    full: bool = True,
    part: str = "",
) -> None:
    addr = f"{image}{part}"

    def info() -> str:
        j = json.loads(burrow("info", "--json", str(image)).stdout)
        fss = j.get("filesystems") or []
        assert fss, f"no filesystems in info: {j}"
        return f"{len(fss)} filesystems: " + ", ".join(
            str(f.get("fstype") or f.get("type")) for f in fss
        )

    def inspect() -> str:
        j = json.loads(burrow("inspect", "--json", str(image)).stdout)
        oses = j["operating_systems"]
        assert oses, f"no OS found: {j}"
        o = oses[0]
        text = json.dumps(o)
        assert "bookworm" in text or "12" in str(o.get("version", "")), (
            f"not bookworm: {text[:400]}"
        )
        assert o.get("hostname") == "accept-host", f"hostname {o.get('hostname')!r}"
        assert "dpkg" in text or "deb" in str(o.get("package_format", "")), f"no dpkg: {text[:400]}"
        assert "fstab" in text or o.get("mountpoints") or o.get("fstab"), f"no fstab: {text[:400]}"
        return f"{o.get('pretty_name')} hostname={o.get('hostname')} kernels={o.get('kernels')} packages={str(o.get('packages'))[:60]}"

    def ls_cat_stat() -> str:
        out = burrow("ls", "-l", f"{addr}:/srv/odd").stdout.decode(errors="replace")
        for name in ("ping", "suid-tool", "long-link", "null", "sda"):
            assert name in out, f"{name} missing from ls -l:\n{out}"
        with kernel() as mnt:
            want = (mnt / "etc/os-release").read_bytes()
            got = burrow("cat", f"{addr}:/etc/os-release").stdout
            assert got == want, "cat differs"
            got = burrow("cat", f"{addr}:/usr/bin/ls").stdout
            assert got == (mnt / "usr/bin/ls").read_bytes(), "cat /usr/bin/ls differs"
            j = json.loads(burrow("stat", "--json", f"{addr}:/srv/odd/suid-tool").stdout)
            j = j[0] if isinstance(j, list) else j
            st = os.lstat(mnt / "srv/odd/suid-tool")
            for f in (
                "st_mode",
                "st_uid",
                "st_gid",
                "st_size",
                "st_nlink",
                "st_ino",
                "st_mtime_ns",
                "st_ctime_ns",
            ):
                got_f = j.get(f.removeprefix("st_"))
                assert got_f == getattr(st, f), f"stat {f}: burrow {got_f} kernel {getattr(st, f)}"
            j = json.loads(burrow("stat", "--json", f"{addr}:/srv/odd/bigdev").stdout)
            j = j[0] if isinstance(j, list) else j
            st = os.lstat(mnt / "srv/odd/bigdev")
            assert j.get("rdev") == st.st_rdev, f"rdev {j.get('rdev')} vs {st.st_rdev}"
        return "ls -l, cat, stat agree with the kernel"

    def cp_out() -> str:
        dst = ctx.fresh_out(f"{tag}-cp")
        burrow("cp", "-a", f"{addr}:/", str(dst))
        with kernel() as mnt:
            k = snapshot(mnt)
        return same(k, snapshot(dst), "kernel", "burrow-cp")

    def tar_out() -> str:
        tar = ctx.out / f"{tag}.tar"
        ctx.out.mkdir(exist_ok=True)
        with open(tar, "wb") as f:
            proc = subprocess.run(
                NICE + BURROW + ["tar-out", f"{addr}:/{SUBTREE}"], stdout=f, stderr=subprocess.PIPE
            )
        assert proc.returncode == 0, proc.stderr.decode()
        dst = ctx.fresh_out(f"{tag}-untar")
        dst.mkdir()
        run(
            [
                "tar",
                "--xattrs",
                "--xattrs-include=*",
                "--numeric-owner",
                "-xpf",
                str(tar),
                "-C",
                str(dst),
            ]
        )
        with kernel() as mnt:
            k = snapshot(mnt / SUBTREE)
        tar.unlink()
        return same(
            k, snapshot(dst, root_attrs=False) | {".": k["."]}, "kernel", "burrow-tar-out|tar-x"
        )

    def fuse() -> str:
        mnt = Path(tempfile.mkdtemp(prefix="accept-fuse-"))
        proc = subprocess.Popen(
            NICE + BURROW + ["mount", "--ro", "-f", addr, str(mnt)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            for _ in range(200):
                if os.path.ismount(mnt):
                    break
                if proc.poll() is not None:
                    raise AssertionError(
                        f"burrow mount exited {proc.returncode}: {proc.stderr.read().decode()}"
                    )
                time.sleep(0.1)
            else:
                raise AssertionError("FUSE mount did not appear")
            f = snapshot(mnt / SUBTREE)
        finally:
            subprocess.run(["fusermount3", "-u", str(mnt)], check=False)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(30)
            if proc.poll() is None:
                proc.kill()
            with contextlib.suppress(OSError):
                mnt.rmdir()
        with kernel() as kmnt:
            k = snapshot(kmnt / SUBTREE)
        return same(k, f, "kernel", "burrow-fuse")

    check(f"{tag}: burrow info", info)
    check(f"{tag}: burrow inspect", inspect)
    check(f"{tag}: ls -l/cat/stat vs kernel", ls_cat_stat)
    check(f"{tag}: cp -a IMAGE:/ DIR == kernel mount", cp_out)
    if full:
        check(f"{tag}: tar-out == kernel mount", tar_out)
        check(f"{tag}: burrow mount --ro (FUSE) == kernel mount", fuse)


def write_checks(ctx: Ctx, src_image: Path, tag: str) -> None:
    image = ctx.img / f"{tag}-w.img"

    def writes() -> str:
        run(["cp", "--sparse=always", str(src_image), str(image)])
        small = ctx.rootfs / "srv/odd"
        burrow("cp", "-a", str(small), f"{image}:/newdir")
        burrow("cp", "-a", str(ctx.rootfs / "etc"), f"{image}:/newdir/etc")
        burrow("rm", "-r", f"{image}:/usr/share/doc")
        burrow("mv", f"{image}:/srv/bigdir", f"{image}:/newdir/bigdir-moved")
        burrow("rm", "-r", f"{image}:/newdir/bigdir-moved")
        burrow("mv", f"{image}:/etc/hostname", f"{image}:/etc/hostname.old")
        e2fsck(image)
        with loop_mount(image) as mnt:
            k = snapshot(mnt)
        with loop_mount(src_image) as mnt:
            base = snapshot(mnt)  # mke2fs -d keeps whole seconds only: compare with the image
        exp = {
            k2: v
            for k2, v in base.items()
            if not (
                k2 in ("usr/share/doc", "srv/bigdir")
                or k2.startswith(("usr/share/doc/", "srv/bigdir/"))
                or k2 == "etc/hostname"
            )
        }
        exp["etc/hostname.old"] = base["etc/hostname"]
        for sub, top in (("newdir", "srv/odd"), ("newdir/etc", "etc")):
            for k2, v in ctx.source_snap.items():
                if k2 == top or k2.startswith(top + "/"):
                    exp[sub + k2[len(top) :]] = copy.deepcopy(v)
        # group ids of hard links and directory mtimes of changed parents differ by nature
        for d in (exp, k):
            for v in d.values():
                v.pop("group", None)
        for p in (".", "usr/share", "srv", "etc", "newdir"):
            exp.get(p, {}).pop("mtime", None)
            k.get(p, {}).pop("mtime", None)
        return same(exp, k, "expected", "kernel") + "; e2fsck clean"

    check(f"{tag}: cp -a in, rm -r, mv; e2fsck + kernel", writes)
    image.unlink(missing_ok=True)


def assert_sparse(mnt: Path) -> None:
    """The 200 MiB sparse file holds two small data runs: it must stay sparse."""
    used = os.lstat(mnt / "srv/odd/sparse").st_blocks * 512
    assert used <= 1 << 20, f"srv/odd/sparse uses {used} bytes: holes were filled"


def mkfs_checks(ctx: Ctx) -> None:
    def from_dir(fstype: str) -> Callable[[], str]:
        def go() -> str:
            image = ctx.img / f"burrow-mkfs-{fstype}.img"
            image.unlink(missing_ok=True)
            burrow(
                "mkfs",
                fstype,
                str(image),
                "--size",
                "1200M",
                "--label",
                "root",
                "--from",
                str(ctx.rootfs),
            )
            e2fsck(image)
            with loop_mount(image) as mnt:
                k = snapshot(mnt)
                assert_sparse(mnt)
            res = same(ctx.source_snap | {".": k["."]}, k, "rootfs", "kernel")
            read_checks(
                ctx, image, f"burrow-mkfs-{fstype}", kernel=lambda: loop_mount(image), full=False
            )
            image.unlink()
            return res + "; e2fsck clean"

        return go

    def from_tar() -> str:
        tar = ctx.work / "rootfs.tar"
        if not tar.exists():
            run(
                [
                    "tar",
                    "--xattrs",
                    "--xattrs-include=*",
                    "--numeric-owner",
                    "-cpf",
                    str(tar),
                    "-C",
                    str(ctx.rootfs),
                    ".",
                ]
            )
        image = ctx.img / "burrow-mkfs-tar.img"
        image.unlink(missing_ok=True)
        burrow("mkfs", "ext4", str(image), "--size", "1200M", "--from", str(tar))
        e2fsck(image)
        with loop_mount(image) as mnt:
            k = snapshot(mnt)
            assert_sparse(mnt)
        image.unlink()
        return same(ctx.source_snap | {".": k["."]}, k, "rootfs", "kernel") + "; e2fsck clean"

    for fstype in ("ext4", "ext3", "ext2"):
        check(f"burrow mkfs {fstype} --from rootfs", from_dir(fstype))
    check("burrow mkfs ext4 --from rootfs.tar", from_tar)


def esp_tree(ctx: Ctx) -> Path:
    esp = ctx.work / "esp"
    if not esp.exists():
        (esp / "EFI/BOOT").mkdir(parents=True)
        (esp / "EFI/BOOT/BOOTX64.EFI").write_bytes(os.urandom(300_000))
        (esp / "EFI/debian").mkdir(parents=True)
        (esp / "EFI/debian/grub.cfg").write_text("search --label root\n")
        (esp / "loader").mkdir()
        (esp / "loader/loader.conf").write_text("timeout 3\n")
    return esp


def fat_compare(image: Path, offset: int, esp: Path) -> str:
    """The ESP read back with mtools (this kernel has no vfat module)."""
    mnt = Path(tempfile.mkdtemp(prefix="accept-fat-"))
    run(["mcopy", "-s", "-n", "-i", f"{image}@@{offset}", "::/*", str(mnt)])
    for p in esp.rglob("*"):
        q = mnt / p.relative_to(esp)
        assert q.exists(), f"{q} missing"
        if p.is_file():
            assert q.read_bytes() == p.read_bytes(), f"{q} differs"
    shutil.rmtree(mnt)
    return "ESP contents match (mcopy)"


def gpt_checks(ctx: Ctx) -> None:
    esp = esp_tree(ctx)
    raw = ctx.img / "gpt.img"

    def build() -> str:
        if raw.exists():
            return "cached"
        tmp = raw.with_suffix(".tmp")
        tmp.unlink(missing_ok=True)
        run(["truncate", "-s", "1500M", str(tmp)])
        run(
            [
                "sgdisk",
                "-n",
                "1:1M:+200M",
                "-t",
                "1:ef00",
                "-c",
                "1:ESP",
                "-n",
                "2:0:0",
                "-t",
                "2:8304",
                "-c",
                "2:root",
                str(tmp),
            ]
        )
        parts = partitions(tmp)
        fat = ctx.img / "esp.fat"
        fat.unlink(missing_ok=True)
        run(["mkfs.fat", "-F", "32", "-n", "ESP", "-C", str(fat), str(parts[0]["size"] // 1024)])
        run(["mcopy", "-s", "-i", str(fat), str(esp / "EFI"), str(esp / "loader"), "::/"])
        root = ctx.img / "root.ext4"
        root.unlink(missing_ok=True)
        run(
            [
                "mkfs.ext4",
                "-q",
                "-L",
                "root",
                "-d",
                str(ctx.rootfs),
                str(root),
                str(parts[1]["size"] // 1024) + "k",
            ]
        )
        run(
            [
                "dd",
                f"if={fat}",
                f"of={tmp}",
                "bs=1M",
                f"seek={parts[0]['start'] // (1 << 20)}",
                "conv=notrunc,sparse",
            ]
        )
        run(
            [
                "dd",
                f"if={root}",
                f"of={tmp}",
                "bs=1M",
                f"seek={parts[1]['start'] // (1 << 20)}",
                "conv=notrunc,sparse",
            ]
        )
        fat.unlink()
        root.unlink()
        tmp.rename(raw)
        return "built"

    check("gpt: build with sgdisk/mkfs.fat/mcopy/mkfs.ext4", build)
    if not raw.exists():
        return

    def kernel_root(image: Path) -> Callable[[], contextlib.AbstractContextManager[Path]]:
        def mk() -> contextlib.AbstractContextManager[Path]:
            src = image
            if image.suffix == ".qcow2":
                src = ctx.img / (image.name + ".raw")
                if not src.exists():
                    run(["qemu-img", "convert", "-O", "raw", str(image), str(src)])
            return loop_mount(src, offset=partitions(src)[1]["start"])

        return mk

    read_checks(ctx, raw, "gpt-raw", kernel=kernel_root(raw))

    def esp_read() -> str:
        dst = ctx.fresh_out("gpt-esp")
        burrow("cp", "-a", f"{raw}@ESP:/", str(dst))
        for p in esp.rglob("*"):
            q = dst / p.relative_to(esp)
            assert q.exists(), f"{q} missing"
            if p.is_file():
                assert q.read_bytes() == p.read_bytes(), f"{q} differs"
        return "ESP copied out, contents match"

    check("gpt-raw: cp -a IMAGE@ESP:/ DIR", esp_read)
    for opt, name in (([], "gpt.qcow2"), (["-c"], "gpt-c.qcow2")):
        q = ctx.img / name

        def conv(q: Path = q, opt: list[str] = opt) -> str:
            if not q.exists():
                run(["qemu-img", "convert", "-O", "qcow2", *opt, str(raw), str(q)])
            return "converted"

        check(f"{name}: qemu-img convert", conv)
        read_checks(ctx, q, name, kernel=kernel_root(raw), full=name == "gpt.qcow2")

    def qcow2_write() -> str:
        q = ctx.img / "gpt-w.qcow2"
        run(["qemu-img", "convert", "-O", "qcow2", str(raw), str(q)])
        burrow("cp", "-a", str(ctx.rootfs / "srv/odd"), f"{q}:/newdir")
        burrow("cp", str(ctx.rootfs / "etc/os-release"), f"{q}@ESP:/os-release")
        run(["qemu-img", "check", str(q)])
        back = ctx.img / "gpt-w.raw"
        run(["qemu-img", "convert", "-O", "raw", str(q), str(back)])
        parts = partitions(back)
        e2fsck(back, parts[1]["start"])
        with loop_mount(back, offset=parts[1]["start"]) as mnt:
            k = snapshot(mnt / "newdir")
        got = run(["mtype", "-i", f"{back}@@{parts[0]['start']}", "::/os-release"]).stdout
        assert got == (ctx.rootfs / "usr/lib/os-release").read_bytes(), "ESP os-release differs"
        exp = snapshot(ctx.rootfs / "srv/odd")
        q.unlink()
        back.unlink()
        return same(exp, k, "source", "kernel") + "; qemu-img check, e2fsck clean"

    check("gpt.qcow2: cp -a in (root and ESP), qemu-img check, e2fsck, kernel", qcow2_write)


def create_checks(ctx: Ctx) -> None:
    esp = esp_tree(ctx)

    def create() -> str:
        spec = ctx.work / "disk.toml"
        spec.write_text(
            f'table = "gpt"\nsize = "1500M"\nformat = "qcow2"\n\n'
            f'[[partitions]]\nname = "ESP"\ntype = "esp"\nsize = "200M"\nfilesystem = "fat32"\nlabel = "ESP"\ncontents = ["{esp}"]\n\n'
            f'[[partitions]]\nname = "root"\ntype = "root-x86-64"\nfilesystem = "ext4"\nlabel = "root"\ncontents = ["{ctx.rootfs}"]\n'
        )
        image = ctx.img / "created.qcow2"
        image.unlink(missing_ok=True)
        burrow("create", str(image), "--spec", str(spec))
        run(["qemu-img", "check", str(image)])
        back = ctx.img / "created.raw"
        run(["qemu-img", "convert", "-O", "raw", str(image), str(back)])
        sg = run(["sgdisk", "-v", str(back)])
        assert b"No problems found" in sg.stdout, sg.stdout.decode()
        parts = partitions(back)
        fat = ctx.img / "created-esp.fat"
        run(
            [
                "dd",
                f"if={back}",
                f"of={fat}",
                "bs=1M",
                f"skip={parts[0]['start'] >> 20}",
                f"count={parts[0]['size'] >> 20}",
            ]
        )
        fk = run(["fsck.fat", "-n", str(fat)], check=False)
        assert fk.returncode == 0, fk.stdout.decode()
        fat.unlink()
        e2fsck(back, parts[1]["start"])
        fat_compare(back, parts[0]["start"], esp)
        with loop_mount(back, offset=parts[1]["start"]) as mnt:
            k = snapshot(mnt)
        res = same(ctx.source_snap | {".": k["."]}, k, "rootfs", "kernel")
        read_checks(
            ctx,
            image,
            "created.qcow2",
            kernel=lambda: loop_mount(back, offset=parts[1]["start"]),
            full=False,
        )
        image.unlink()
        back.unlink()
        return res + "; qemu-img check, sgdisk -v, fsck.fat, e2fsck clean"

    check("burrow create --spec (GPT qcow2, ESP + root from rootfs)", create)


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--work", type=Path, default=Path("/var/tmp/burrow-accept"))
    ap.add_argument(
        "-k",
        default="",
        help="only run groups whose name contains this (ext, write, mkfs, gpt, create)",
    )
    ap.add_argument("--skip-slow", action="store_true", help="tar-out and FUSE on /usr/lib only")
    args = ap.parse_args()
    global SUBTREE
    if args.skip_slow:
        SUBTREE = "usr/lib"
    if os.geteuid() != 0:
        print("acceptance needs root (debootstrap, mknod, loop mounts)", file=sys.stderr)
        return 2
    args.work.mkdir(parents=True, exist_ok=True)
    rootfs, how = build_rootfs(args.work)
    print(f"root tree: {rootfs} ({how})", flush=True)
    ctx = Ctx(args.work, rootfs)
    groups: list[tuple[str, Callable[[], None]]] = []
    for variant in EXT_VARIANTS:

        def g(variant: str = variant) -> None:
            image: Path | None = None

            def mk() -> str:
                nonlocal image
                image = make_ext_image(ctx, variant)
                return str(image)

            check(f"{variant}: mkfs -d rootfs", mk)
            if image is not None:
                read_checks(
                    ctx,
                    image,
                    variant,
                    kernel=lambda: loop_mount(image),
                    full=variant == "ext4",
                )
                write_checks(ctx, image, variant)

        groups.append((f"ext:{variant}", g))
    # the default ext4 first, then what users do most, then the other variants
    groups[1:1] = [
        ("mkfs", lambda: mkfs_checks(ctx)),
        ("create", lambda: create_checks(ctx)),
        ("gpt", lambda: gpt_checks(ctx)),
    ]
    for name, fn in groups:
        if args.k in name:
            fn()
    failed = [r for r in RESULTS if not r[1]]
    print(f"\nSUMMARY: {len(RESULTS) - len(failed)} passed, {len(failed)} failed", flush=True)
    for name, _, detail in failed:
        print(f"  FAIL {name}: {detail.splitlines()[0] if detail else ''}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
