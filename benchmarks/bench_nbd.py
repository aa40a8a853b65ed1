"""NBD server: 4 KiB random reads (fio, iodepth 32) and an nbdcopy of 1 GiB, burrow beside
``nbdkit file`` (C), ``nbdkit python`` (a minimal plugin) and ``qemu-nbd``, all on the same raw
image over Unix sockets."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from benchmarks.harness import Case

FIO_SIZE = 256 << 20
COPY_SIZE = 1 << 30
CHUNK = 4 << 20
FIO_SECONDS = 4

PLUGIN = """\
import os
import nbdkit

API_VERSION = 2
path = None


def config(key, value):
    global path
    if key == "file":
        path = value


def thread_model():
    return nbdkit.THREAD_MODEL_PARALLEL


def open(readonly):
    return os.open(path, os.O_RDONLY)


def get_size(h):
    return os.fstat(h).st_size


def pread(h, buf, offset, flags):
    buf[:] = os.pread(h, len(buf), offset)


def close(h):
    os.close(h)
"""


def _image(path: Path, size: int) -> Path:
    if not path.exists() or path.stat().st_size != size:
        block = os.urandom(CHUNK)
        with open(path, "wb") as f:
            for _ in range(size // CHUNK):
                f.write(block)
    return path


class _Servers:
    """Start every contender's server on its own Unix socket; stop them by pid."""

    def __init__(self, work: Path, image: Path, tag: str) -> None:
        self.work, self.image, self.tag = work, image, tag
        self.procs: list[subprocess.Popen[bytes]] = []
        self.sockets: dict[str, Path] = {}

    def _start(self, name: str, cmd: list[str]) -> None:
        sock = self.work / f"{self.tag}-{name}.sock"
        if sock.exists():
            sock.unlink()
        cmd = [c.replace("{sock}", str(sock)) for c in cmd]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.procs.append(proc)
        for _ in range(500):
            if sock.exists():
                break
            if proc.poll() is not None:
                raise RuntimeError(f"{name} server exited: {cmd}")
            time.sleep(0.01)
        self.sockets[name] = sock

    def names(self, with_python: bool) -> list[str]:
        out = ["burrow"]
        if shutil.which("nbdkit"):
            out += ["nbdkit-file"] + (["nbdkit-python"] if with_python else [])
        if shutil.which("qemu-nbd"):
            out.append("qemu-nbd")
        return out

    def start(self, with_python: bool) -> None:
        img = str(self.image)
        self._start(
            "burrow",
            [
                sys.executable,
                "-m",
                "burrow",
                "nbd",
                "serve",
                img,
                "--read-only",
                "--socket",
                "{sock}",
            ],
        )
        if shutil.which("nbdkit"):
            self._start("nbdkit-file", ["nbdkit", "-f", "-r", "-U", "{sock}", "file", img])
            if with_python:
                plugin = self.work / "nbdkit_minimal_plugin.py"
                plugin.write_text(PLUGIN)
                self._start(
                    "nbdkit-python",
                    ["nbdkit", "-f", "-r", "-U", "{sock}", "python", str(plugin), f"file={img}"],
                )
        if shutil.which("qemu-nbd"):
            self._start(
                "qemu-nbd",
                ["qemu-nbd", "-r", "-f", "raw", "--persistent", "--shared=16", "-k", "{sock}", img],
            )

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs.clear()


def _fio(sock: Path) -> float:
    out = subprocess.run(
        [
            "fio",
            "--name=randread",
            "--ioengine=nbd",
            f"--uri=nbd+unix:///?socket={sock}",
            "--rw=randread",
            "--bs=4k",
            "--iodepth=32",
            f"--size={FIO_SIZE}",
            f"--runtime={FIO_SECONDS}",
            "--time_based",
            "--output-format=json",
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=sock.parent,  # fio may write state files into its working directory
    ).stdout
    job = json.loads(out[out.index("{") :])["jobs"][0]
    return float(job["read"]["total_ios"])


def _nbdcopy(sock: Path) -> float:
    subprocess.run(
        ["nbdcopy", f"nbd+unix:///?socket={sock}", "null:"], check=True, capture_output=True
    )
    return float(COPY_SIZE)


def _contenders(
    servers: _Servers, names: list[str], fn: Callable[[Path], float]
) -> dict[str, Callable[[], float]]:
    """One callable per server; sockets are looked up at call time (servers start in setup)."""
    return {name: (lambda n=name: fn(servers.sockets[n])) for name in names}


def cases(work: Path) -> list[Case]:
    if not shutil.which("fio") or not shutil.which("nbdcopy"):
        return []
    fio_servers = _Servers(work, work / "nbd-256m.raw", "fio")
    copy_servers = _Servers(work, work / "seq-1g.raw", "copy")

    def fio_setup() -> None:
        _image(fio_servers.image, FIO_SIZE)
        fio_servers.start(with_python=True)

    def copy_setup() -> None:
        _image(copy_servers.image, COPY_SIZE)
        copy_servers.start(with_python=False)

    return [
        Case(
            "nbd: fio 4 KiB random read, iodepth 32, Unix socket (ops per run)",
            "ops",
            _contenders(fio_servers, fio_servers.names(True), _fio),
            target=">= 2x nbdkit-python; aim >= 0.6x nbdkit-file",
            setup=fio_setup,
            teardown=fio_servers.stop,
        ),
        Case(
            "nbd: nbdcopy 1 GiB raw export to null:",
            "bytes",
            _contenders(copy_servers, copy_servers.names(False), _nbdcopy),
            target=">= 0.8x nbdkit-file",
            setup=copy_setup,
            teardown=copy_servers.stop,
        ),
    ]
