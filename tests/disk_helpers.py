"""Images for the disk API and file-command tests, made by real tools (mkfs.ext4 -d, mkfs.fat +
mcopy, sgdisk, sfdisk, qemu-img), and tree snapshots to compare against the kernel."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
from pathlib import Path
from typing import Any

from images import make_gpt, make_raw, run

MiB = 1 << 20


def os_tree(root: Path) -> Path:
    """A small Linux-looking root: os-release, hostname, fstab, passwd, a kernel, dpkg, odd
    modes and owners, symlinks (absolute, relative, dangling), hard links, a fifo, devices
    (as root), xattrs, a sparse file and a few MiB of data."""
    root.mkdir(parents=True, exist_ok=True)
    for d in ("etc", "boot", "lib/modules/6.1.0-9-amd64", "var/lib/dpkg", "usr/bin", "home/alice",
              "srv/data/deep/er"):  # fmt: skip
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "etc/os-release").write_text(
        'PRETTY_NAME="Burrow Test 1"\nNAME="Burrow Test"\nID=burrowtest\nVERSION_ID="1"\n'
    )
    (root / "etc/hostname").write_text("testhost\n")
    (root / "etc/fstab").write_text(
        "LABEL=root / ext4 defaults 0 1\nLABEL=EFI /boot/efi vfat defaults 0 2\n"
    )
    (root / "etc/passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\n"
    )
    (root / "etc/group").write_text("root:x:0:\nalice:x:1000:\nstaff:x:50:\n")
    (root / "boot/vmlinuz-6.1.0-9-amd64").write_bytes(b"kernel" * 100)
    (root / "var/lib/dpkg/status").write_text(
        "Package: a\nStatus: install ok installed\n\nPackage: b\nStatus: install ok installed\n"
    )
    (root / "usr/bin/tool").write_bytes(os.urandom(300_000))
    os.chmod(root / "usr/bin/tool", 0o4755)
    os.symlink("usr/bin", root / "bin")
    os.symlink("/etc/hostname", root / "etc/abs-link")
    os.symlink("../nowhere", root / "etc/dangling")
    (root / "home/alice/notes.txt").write_text("hello alice\n")
    os.link(root / "home/alice/notes.txt", root / "srv/hardlink")
    (root / "srv/data/deep/er/file").write_bytes(b"x" * 5000)
    for i in range(40):
        (root / "srv/data" / f"f{i:02d}.dat").write_bytes(os.urandom(i * 997))
    with open(root / "srv/sparse.img", "wb") as f:
        f.write(b"head")
        f.seek(6 * MiB)
        f.write(b"tail")
    os.mkfifo(root / "srv/fifo")
    os.setxattr(root / "etc/hostname", "user.origin", b"test")
    if os.geteuid() == 0:
        os.chown(root / "home/alice", 1000, 1000)
        os.chown(root / "home/alice/notes.txt", 1000, 1000)
        os.lchown(root / "etc/abs-link", 1000, 50)
        os.mknod(root / "srv/null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
        os.mknod(root / "srv/sda", stat.S_IFBLK | 0o660, os.makedev(8, 0))
    os.utime(root / "srv/data", ns=(1_500_000_000_111_222_333, 1_400_000_000_444_555_666))
    return root


def esp_tree(root: Path) -> Path:
    (root / "EFI" / "BOOT").mkdir(parents=True, exist_ok=True)
    (root / "EFI" / "BOOT" / "BOOTX64.EFI").write_bytes(os.urandom(20_000))
    (root / "loader.conf").write_text("timeout 3\n")
    return root


def ext4_image(path: Path, source: Path | None, size_mib: int = 48, label: str = "root",
               fstype: str = "ext4") -> Path:  # fmt: skip
    cmd: list[str | os.PathLike[str]] = [f"mkfs.{fstype}", "-q", "-F", "-L", label]
    if source is not None:
        cmd += ["-d", source]
    run([*cmd, path, f"{size_mib}M"])
    return path


def fat_image(path: Path, source: Path | None, size_mib: int = 32, label: str = "EFI") -> Path:
    make_raw(path, size_mib * MiB)
    run(["mkfs.fat", "-n", label, path])
    if source is not None:
        entries = sorted(source.iterdir())
        if entries:
            run(["mcopy", "-s", "-p", "-m", "-i", path, *entries, "::/"])
    return path


def place(disk: Path, part_image: Path, offset: int) -> None:
    with open(part_image, "rb") as src, open(disk, "r+b") as dst:
        dst.seek(offset)
        while True:
            chunk = src.read(4 * MiB)
            if not chunk:
                break
            dst.write(chunk)


def gpt_disk(tmp: Path, root_src: Path | None, esp_src: Path | None) -> Path:
    """GPT: 1 = ESP (FAT, label EFI, 32 MiB at 1 MiB), 2 = root (ext4, label root, 48 MiB)."""
    disk = tmp / "disk.img"
    make_gpt(
        disk, 84 * MiB, [("1:2048:+32M", "1:ef00", "1:ESP"), ("2:0:+48M", "2:8300", "2:rootfs")]
    )
    place(disk, fat_image(tmp / "esp.part", esp_src), 1 * MiB)
    place(disk, ext4_image(tmp / "root.part", root_src), 33 * MiB)
    return disk


def snapshot(root: Path, *, skip: tuple[str, ...] = ("lost+found",)) -> dict[str, Any]:
    """What the kernel shows of a tree (no inode numbers, atime or ctime)."""
    out: dict[str, Any] = {}
    groups: dict[int, list[str]] = {}
    base = os.fsencode(root)
    for dirpath, dirs, files in os.walk(base):
        dirs[:] = [d for d in dirs if os.fsdecode(d) not in skip or dirpath != base]
        for name in [*dirs, *files]:
            full = os.path.join(dirpath, name)
            rel = os.fsdecode(os.path.relpath(full, base))
            st = os.lstat(full)
            rec: dict[str, Any] = {
                "mode": st.st_mode,
                "uid": st.st_uid,
                "gid": st.st_gid,
                "nlink": st.st_nlink if not stat.S_ISDIR(st.st_mode) else None,
                "size": st.st_size if not stat.S_ISDIR(st.st_mode) else None,
                "mtime": st.st_mtime_ns if not stat.S_ISLNK(st.st_mode) else None,
                "rdev": st.st_rdev,
                "xattrs": sorted(
                    (k, os.getxattr(full, k, follow_symlinks=False))
                    for k in os.listxattr(full, follow_symlinks=False)
                ),
            }
            if stat.S_ISLNK(st.st_mode):
                rec["target"] = os.readlink(full)
            elif stat.S_ISREG(st.st_mode):
                with open(full, "rb") as f:
                    rec["sha"] = hashlib.sha256(f.read()).hexdigest()
                if st.st_nlink > 1:
                    groups.setdefault(st.st_ino, []).append(rel)
                    rec["ino"] = st.st_ino
            out[rel] = rec
    for rec in out.values():  # hard-link groups by name, independent of walk order
        ino = rec.pop("ino", None)
        if ino is not None:
            rec["group"] = min(groups[ino])
    return out


def burrow_cli(*args: str, input: bytes | None = None, check: bool = True,
               env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:  # fmt: skip
    import sys
    import tempfile

    # Let the many short burrow processes cache bytecode (outside the tree), as an installed
    # burrow would, even where the environment forbids writing it next to the sources.
    env = dict(os.environ if env is None else env)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.setdefault("PYTHONPYCACHEPREFIX", os.path.join(tempfile.gettempdir(),
                                                       f"burrow-pycache-{os.getuid()}"))  # fmt: skip
    proc = subprocess.run(
        [sys.executable, "-m", "burrow", *args], capture_output=True, input=input, env=env
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"burrow {' '.join(args)} failed ({proc.returncode}): {proc.stderr.decode()}"
        )
    return proc
