"""``make demo``: build a bootable-looking disk image entirely in userspace and show what is in it.

Steps, each a real ``burrow`` command (printed before it runs):

1. write a small built-in root tree and an EFI tree to a temporary directory;
2. ``burrow create demo.qcow2 --spec demo.toml``: a GPT qcow2 with an ESP (FAT, label ESP)
   and an ext4 root (label root), both filled from those trees — no root, no loop devices,
   no mkfs, no VM;
3. ``burrow info``, ``burrow ls``, ``burrow cat``, ``burrow inspect`` on the result;
4. ``burrow cp`` a file in, and read it back.

When ``qemu-img`` is installed, ``qemu-img check`` confirms the qcow2 is clean.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

SPEC = """\
# demo.toml: what `burrow create --spec` builds (format documented in docs/create.md)
table = "gpt"
size = "256M"
format = "qcow2"

[[partitions]]
name = "ESP"
type = "esp"
size = "64M"
filesystem = "fat"
label = "ESP"
contents = ["esp"]

[[partitions]]
name = "root"
type = "root-x86-64"
filesystem = "ext4"
label = "root"
contents = ["rootfs"]
ownership = "all_root"

[partitions.owners]
"/home/demo" = "1000:1000"
"""


def built_in_tree(base: Path) -> None:
    root = base / "rootfs"
    for d in ("etc", "home/demo", "usr/bin", "var/log", "boot"):
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "etc/os-release").write_text(
        'PRETTY_NAME="Burrow Demo Linux 1.0"\nNAME="Burrow Demo Linux"\nID=burrowdemo\n'
        'VERSION_ID="1.0"\nHOME_URL="https://example.invalid/burrow"\n'
    )
    (root / "etc/hostname").write_text("burrow-demo\n")
    (root / "etc/fstab").write_text(
        "LABEL=root  /          ext4  defaults  0 1\nLABEL=ESP   /boot/efi  vfat  umask=0077  0 2\n"
    )
    (root / "etc/passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\ndemo:x:1000:1000:Demo:/home/demo:/bin/sh\n"
    )
    (root / "home/demo/README").write_text("Made by burrow, in userspace.\n")
    (root / "usr/bin/hello").write_text("#!/bin/sh\necho hello from the image\n")
    os.chmod(root / "usr/bin/hello", 0o755)
    (root / "boot/vmlinuz-6.1.0-demo").write_bytes(b"not really a kernel\n")
    os.symlink("usr/bin", root / "bin")
    esp = base / "esp" / "EFI" / "BOOT"
    esp.mkdir(parents=True, exist_ok=True)
    (esp / "BOOTX64.EFI").write_bytes(b"MZ" + bytes(4094))
    (base / "esp" / "loader.conf").write_text("timeout 3\ndefault burrow-demo\n")


def burrow(*args: str, cwd: Path) -> None:
    print(f"$ burrow {' '.join(args)}", flush=True)
    subprocess.run([sys.executable, "-m", "burrow", *args], check=True, cwd=cwd)
    print(flush=True)


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="burrow-demo-") as tmp:
        work = Path(tmp)
        built_in_tree(work)
        (work / "demo.toml").write_text(SPEC)
        print(f"# working in {work}: a built-in root tree (rootfs/) and EFI tree (esp/)")
        print("# demo.toml:")
        print("\n".join("    " + line for line in SPEC.splitlines()))
        print()
        burrow("create", "demo.qcow2", "--spec", "demo.toml", cwd=work)
        if shutil.which("qemu-img"):
            print("$ qemu-img check demo.qcow2", flush=True)
            subprocess.run(["qemu-img", "check", "demo.qcow2"], check=True, cwd=work)
            print(flush=True)
        burrow("info", "demo.qcow2", cwd=work)
        burrow("ls", "-l", "demo.qcow2:/", cwd=work)
        burrow("ls", "-l", "demo.qcow2@ESP:/EFI/BOOT", cwd=work)
        burrow("cat", "demo.qcow2:/etc/os-release", cwd=work)
        burrow("inspect", "demo.qcow2", cwd=work)
        (work / "motd").write_text("Welcome to the burrow demo image.\n")
        burrow("cp", "motd", "demo.qcow2:/etc/motd", cwd=work)
        burrow("cat", "demo.qcow2:/etc/motd", cwd=work)
        burrow("tree", "demo.qcow2:/home", cwd=work)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
