"""``burrow info`` lists qcow2 internal snapshots exactly as ``qemu-img info`` does."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from images import make_raw, qemu_img


@pytest.mark.tool("qemu-img")
def test_info_lists_qcow2_snapshots_like_qemu_img(tmp_path: Path) -> None:
    raw = make_raw(tmp_path / "base.raw", 8 << 20)
    image = tmp_path / "snap.qcow2"
    qemu_img("convert", "-f", "raw", "-O", "qcow2", raw, image)
    qemu_img("snapshot", "-c", "before-upgrade", image)
    qemu_img("snapshot", "-c", "second one", image)
    want = json.loads(qemu_img("info", "--output=json", image).stdout)["snapshots"]
    proc = subprocess.run(
        [sys.executable, "-m", "burrow", "info", "--json", str(image)],
        capture_output=True,
        text=True,
        check=True,
    )
    got = json.loads(proc.stdout)["snapshots"]
    assert [(s["id"], s["name"], s["date"]) for s in got] == [
        (s["id"], s["name"], s["date-sec"]) for s in want
    ]
    human = subprocess.run(
        [sys.executable, "-m", "burrow", "info", str(image)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "'before-upgrade'" in human and "'second one'" in human
