"""The file commands as whole processes: ``burrow cat`` of one small file and ``burrow cp -a``
of a whole 10k-file, ~300 MB tree, beside ``debugfs`` (e2fsprogs, C) and, when installed,
``guestfish`` (libguestfs boots an appliance VM).

Everything is timed as a user would see it: process start, opening the image, the work, exit.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

from benchmarks.harness import Case

FILES = 10_000
TOTAL = 300 << 20


def _env(work: Path) -> dict[str, str]:
    """An installed burrow has compiled bytecode; let the timed processes cache theirs too
    (outside the source tree) even when the caller's environment forbids writing it."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(work / "pycache")
    return env


def _burrow() -> list[str]:
    script = Path(sys.executable).parent / "burrow"
    return [str(script)] if script.exists() else [sys.executable, "-m", "burrow"]


def _mkfs(image: Path, src: Path, size: str) -> None:
    subprocess.run(["mkfs.ext4", "-q", "-F", "-b", "4096", "-d", str(src), str(image), size],
                   check=True, capture_output=True)  # fmt: skip


def _small_image(work: Path) -> Path:
    image = work / "cli-small.img"
    if image.exists():
        return image
    src = work / "cli-small-src"
    shutil.rmtree(src, ignore_errors=True)
    (src / "etc").mkdir(parents=True)
    (src / "etc" / "os-release").write_text('NAME="Bench"\nID=bench\nVERSION_ID="1"\n')
    for d in ("usr/bin", "var/lib"):
        (src / d).mkdir(parents=True)
    (src / "usr/bin/tool").write_bytes(os.urandom(200_000))
    _mkfs(image, src, "64M")
    shutil.rmtree(src)
    return image


def _tree_image(work: Path) -> Path:
    """10k files in 100 directories, ~300 MB: mostly small files plus a few large ones."""
    image = work / "cli-tree-10k.img"
    if image.exists():
        return image
    src = work / "cli-tree-src"
    shutil.rmtree(src, ignore_errors=True)
    rng = random.Random(8)
    big = 40
    small_total = TOTAL // 3
    big_size = (TOTAL - small_total) // big
    blob = os.urandom(1 << 20)
    for i in range(FILES):
        d = src / f"d{i % 100:03d}" / f"s{(i // 100) % 10}"
        d.mkdir(parents=True, exist_ok=True)
        size = big_size if i < big else rng.randint(0, 2 * small_total // (FILES - big))
        with open(d / f"f{i:05d}.dat", "wb") as f:
            left = size
            while left > 0:
                n = min(left, len(blob))
                f.write(blob[:n])
                left -= n
        if i % 500 == 0:
            os.symlink(f"f{i:05d}.dat", d / f"l{i:05d}")
    _mkfs(image, src, "600M")
    shutil.rmtree(src)
    return image


def cases(work: Path) -> list[Case]:
    work.mkdir(parents=True, exist_ok=True)
    small = _small_image(work)
    tree = _tree_image(work)
    burrow = _burrow()
    env = _env(work)
    outs = work / "cli-cp-out"
    counter = [0]

    def cat_burrow() -> float:
        subprocess.run([*burrow, "cat", f"{small}:/etc/os-release"], check=True,
                       capture_output=True, env=env)  # fmt: skip
        return 1

    def cat_debugfs() -> float:
        subprocess.run(["debugfs", "-R", "cat /etc/os-release", str(small)], check=True,
                       capture_output=True)  # fmt: skip
        return 1

    def cat_guestfish() -> float:
        subprocess.run(["guestfish", "--ro", "-a", str(small), "-i", "cat", "/etc/os-release"],
                       check=True, capture_output=True)  # fmt: skip
        return 1

    def fresh() -> Path:
        counter[0] += 1
        path = outs / f"run{counter[0]}"
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
        return path

    def cp_burrow() -> float:
        subprocess.run([*burrow, "cp", "-a", f"{tree}:/", str(fresh())], check=True,
                       capture_output=True, env=env)  # fmt: skip
        return TOTAL

    def cp_debugfs() -> float:
        subprocess.run(["debugfs", "-R", f"rdump / {fresh()}", str(tree)], check=True,
                       capture_output=True)  # fmt: skip
        return TOTAL

    def cleanup() -> None:
        shutil.rmtree(outs, ignore_errors=True)

    cat = {"burrow": cat_burrow, "debugfs -R cat": cat_debugfs}
    if shutil.which("guestfish"):
        cat["guestfish --ro -i cat"] = cat_guestfish
    return [
        Case(
            "cli: burrow cat IMAGE:/etc/os-release (whole process)",
            "s",
            cat,
            target="<= 100 ms and within 40x of debugfs",
        ),
        Case(
            "cli: burrow cp -a IMAGE:/ DIR (10k files, 300 MB)",
            "bytes",
            {"burrow": cp_burrow, "debugfs rdump": cp_debugfs},
            target="within 3x of debugfs rdump",
            teardown=cleanup,
        ),
    ]
