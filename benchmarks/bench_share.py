"""Shares: sequential read and write of 1 GiB and walk+stat of a 10k-file tree, burrow share
vs sshfs to a throwaway local sshd, on the same directory over loopback.

burrow: ``burrow serve`` in its own process (worker process included), the client in this
process reading/writing in 4 MiB calls (pipelined 64 KiB chunks). sshfs: mounted with its
caches off (``cache=no``, attr/entry timeouts 0) because every burrow run starts with a fresh
connection and an empty cache; reads and writes with 4 MiB ``read``/``write`` calls, the walk
with ``os.walk`` + ``os.lstat`` (the same Python loop the burrow side runs via PathFS).

Each burrow run also prints the CPU time (user + system) it cost per process — client (this
process, ``getrusage``), network process and export worker (``/proc/PID/stat``) — per GiB for
reads and writes: on a loaded shared machine the steadier figure than wall-clock rates.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from benchmarks.harness import Case
from benchmarks.sshd_helper import Sshd, start_sshd
from burrow.fs.paths import PathFS
from burrow.share.keys import encode_key, generate_key_file, load_private_key

SIZE = 1 << 30
CHUNK = 4 << 20
TREE_FILES = 10_000


def _proc_cpu(pid: int) -> float:
    """CPU seconds (user + system) of process ``pid`` so far; 0 when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _tree_cpu(pid: int) -> dict[str, float]:
    """CPU seconds of the client (us), the ``burrow serve`` process and its workers."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    out = {"client": ru.ru_utime + ru.ru_stime, "server": _proc_cpu(pid), "worker": 0.0}
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        children = []
    for child in children:
        out["worker"] += _proc_cpu(int(child))
    return out


def _with_cpu(
    fn: Callable[[], float], pid: Callable[[], int], per_gib: bool
) -> Callable[[], float]:
    """Wrap a burrow contender: print what the run cost in CPU per process."""

    def run() -> float:
        before = _tree_cpu(pid())
        amount = fn()
        after = _tree_cpu(pid())
        scale = (1 << 30) / amount if per_gib else 1.0
        unit = "s/GiB" if per_gib else "s"
        costs = ", ".join(f"{k} {(after[k] - before[k]) * scale:.2f}" for k in after)
        print(f"  burrow CPU ({unit}): {costs}", file=sys.stderr)
        return amount

    return run


def _data(work: Path) -> Path:
    root = work / "share-data"
    big = root / "big.bin"
    if not big.exists() or big.stat().st_size != SIZE:
        root.mkdir(parents=True, exist_ok=True)
        block = os.urandom(CHUNK)
        with open(big, "wb") as f:
            for _ in range(SIZE // CHUNK):
                f.write(block)
    tree = root / "tree"
    if not (tree / "d99" / "f99").exists():
        for d in range(100):
            (tree / f"d{d}").mkdir(parents=True, exist_ok=True)
            for i in range(TREE_FILES // 100):
                (tree / f"d{d}" / f"f{i}").write_bytes(b"x" * (i % 7))
    return root


def cases(work: Path) -> list[Case]:
    root = _data(work)
    keys = work / "share-keys"
    keys.mkdir(exist_ok=True)
    for name in ("server", "client"):
        if not (keys / f"{name}.key").exists():
            generate_key_file(keys / f"{name}.key")
    server = load_private_key(keys / "server.key")
    client = load_private_key(keys / "client.key")
    (keys / "peers.toml").write_text(
        f'[[peer]]\nname = "bench"\nkey = "{encode_key(client.public)}"\n'
        'exports = { data = "rw" }\n'
    )
    state: dict[str, object] = {}
    sshds: dict[str, Sshd | None] = {}
    mnt = work / "sshfs-mnt"

    def setup() -> None:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "burrow",
                "serve",
                f"data={root}",
                "--listen",
                "127.0.0.1:0",
                "--key",
                str(keys / "server.key"),
                "--peers",
                str(keys / "peers.toml"),
                "--audit-log",
                str(work / "share-audit.log"),
                "--user",
                str(os.getuid()),  # the benchmark's files belong to the caller
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        banner = proc.stdout.readline()
        state["port"] = int(banner.split("listening on ")[1].split(",")[0].rsplit(":", 1)[1])
        state["proc"] = proc
        sshd = sshds["sshd"] = start_sshd(work)
        if sshd is not None:
            mnt.mkdir(exist_ok=True)
            subprocess.run(["fusermount3", "-u", "-q", str(mnt)], capture_output=True)
            ssh_cmd = " ".join(sshd.ssh_args()[:-1])
            subprocess.run(
                [
                    "sshfs",
                    f"root@127.0.0.1:{root}",
                    str(mnt),
                    "-o",
                    f"ssh_command={ssh_cmd}",
                    "-o",
                    "cache=no,attr_timeout=0,entry_timeout=0,negative_timeout=0",
                ],
                check=True,
            )

    def teardown() -> None:
        subprocess.run(["fusermount3", "-u", "-q", str(mnt)], capture_output=True)
        sshd = sshds.get("sshd")
        if sshd is not None:
            sshd.stop()
        proc = state.get("proc")
        if isinstance(proc, subprocess.Popen):
            proc.terminate()
            proc.wait(30)
            if proc.stdout is not None:
                proc.stdout.close()

    def share() -> PathFS:
        from burrow.share.client import connect

        return PathFS(
            connect(
                f"burrow://127.0.0.1:{state['port']}/data",
                key=client,
                server_key=server.public,
                readonly=False,
            )
        )

    def need_sshfs() -> Path:
        if sshds.get("sshd") is None:
            raise RuntimeError("sshd/sshfs unavailable (needs root, openssh-server, sshfs)")
        return mnt

    def burrow_read() -> float:
        with share() as pfs:
            ino = pfs.resolve("/big.bin")
            total = 0
            for off in range(0, SIZE, CHUNK):
                total += len(pfs.fs.read(ino, off, CHUNK))
        assert total == SIZE
        return total

    def sshfs_read() -> float:
        total = 0
        with open(need_sshfs() / "big.bin", "rb", buffering=0) as f:
            while chunk := f.read(CHUNK):
                total += len(chunk)
        assert total == SIZE
        return total

    block = os.urandom(CHUNK)

    def burrow_write() -> float:
        with share() as pfs:
            pfs.write_bytes("/written.bin", b"")
            ino = pfs.resolve("/written.bin")
            for off in range(0, SIZE, CHUNK):
                pfs.fs.write(ino, off, block)
        return SIZE

    def sshfs_write() -> float:
        with open(need_sshfs() / "written-sshfs.bin", "wb", buffering=0) as f:
            for _ in range(SIZE // CHUNK):
                f.write(block)
        return SIZE

    def burrow_walk() -> float:
        n = 0
        with share() as pfs:
            for dirpath, dirnames, filenames in pfs.walk("/tree"):
                for name in dirnames + filenames:
                    pfs.lstat(f"{dirpath}/{name}")
                    n += 1
        return n

    def sshfs_walk() -> float:
        n = 0
        for dirpath, dirnames, filenames in os.walk(need_sshfs() / "tree"):
            for name in dirnames + filenames:
                os.lstat(os.path.join(dirpath, name))
                n += 1
        return n

    def server_pid() -> int:
        proc = state["proc"]
        assert isinstance(proc, subprocess.Popen)
        return int(proc.pid)

    return [
        Case(
            "share: sequential read 1 GiB (loopback)",
            "bytes",
            {"burrow": _with_cpu(burrow_read, server_pid, True), "sshfs": sshfs_read},
            target=">= 1.5x sshfs",
            setup=setup,
            teardown=teardown,
        ),
        Case(
            "share: sequential write 1 GiB (loopback)",
            "bytes",
            {"burrow": _with_cpu(burrow_write, server_pid, True), "sshfs": sshfs_write},
            target=">= 1.5x sshfs",
            setup=setup,
            teardown=teardown,
        ),
        Case(
            "share: walk+lstat 10k-file tree (loopback)",
            "ops",
            {"burrow": _with_cpu(burrow_walk, server_pid, False), "sshfs": sshfs_walk},
            target="faster than sshfs",
            setup=setup,
            teardown=teardown,
        ),
    ]
