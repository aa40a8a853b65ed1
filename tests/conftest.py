"""Shared test support: skip rules for root/FUSE/netns/tools, and common fixtures.

Markers (declared in pyproject.toml):
  @pytest.mark.root            needs root and working loop mounts
  @pytest.mark.fuse            needs /dev/fuse and fusermount3
  @pytest.mark.netns           needs root and `ip netns`
  @pytest.mark.tool("a", "b")  needs these programs on PATH
Each skips with a clear reason when its need is missing. CI installs everything, so nothing
skips there.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from pathlib import Path

import pytest

# Tools in /usr/sbin are not on a normal user's PATH on Debian.
os.environ["PATH"] = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"


@functools.cache
def _can_loop_mount() -> bool:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    return Path("/dev/loop-control").exists()


@functools.cache
def _can_netns() -> bool:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        return False
    name = f"burrowprobe{os.getpid()}"
    ok = subprocess.run(["ip", "netns", "add", name], capture_output=True).returncode == 0
    if ok:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)
    return ok


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("root") and not _can_loop_mount():
        pytest.skip("needs root with loop devices (run the suite as root)")
    if item.get_closest_marker("fuse") and not (
        Path("/dev/fuse").exists() and shutil.which("fusermount3")
    ):
        pytest.skip("needs /dev/fuse and fusermount3 (Debian package fuse3)")
    if item.get_closest_marker("netns") and not _can_netns():
        pytest.skip("needs root and network namespaces (ip netns)")
    for mark in item.iter_markers("tool"):
        for tool in mark.args:
            if shutil.which(tool) is None:
                pytest.skip(f"needs the external tool {tool!r} (see scripts/setup.sh)")


def require_tool(*tools: str) -> None:
    """Skip the calling test unless every tool is on PATH (for use inside fixtures)."""
    for tool in tools:
        if shutil.which(tool) is None:
            pytest.skip(f"needs the external tool {tool!r} (see scripts/setup.sh)")
