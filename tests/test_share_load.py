"""Load on loopback: many clients doing mixed operations for a bounded time; zero errors,
every file checked, worker memory bounded. The 32 x 60 s version is marked slow."""

from __future__ import annotations

import os
import random
import threading
import time
from pathlib import Path

import pytest

from burrow.fs.paths import PathFS
from burrow.proto.noise import KeyPair
from burrow.share.client import connect
from share_helpers import Running, peers_of, running_server


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _client(srv: Running, key: KeyPair, n: int, deadline: float, errors: list[str]) -> None:
    rng = random.Random(n)
    try:
        with PathFS(
            connect(srv.url("data"), key=key, server_key=srv.server_pub, readonly=False)
        ) as pfs:
            mine = f"/c{n}"
            pfs.mkdir(mine)
            files: dict[str, bytes] = {}
            ops = 0
            while time.monotonic() < deadline:
                choice = rng.random()
                if choice < 0.3 or not files:
                    name = f"{mine}/f{ops}"
                    data = rng.randbytes(rng.choice([0, 10, 5000, 70000, 300000]))
                    pfs.write_bytes(name, data)
                    files[name] = data
                elif choice < 0.6:
                    name = rng.choice(list(files))
                    if pfs.read_bytes(name) != files[name]:
                        errors.append(f"client {n}: content mismatch in {name}")
                elif choice < 0.75:
                    if sorted(pfs.listdir(mine)) != sorted(p.rsplit("/", 1)[1] for p in files):
                        errors.append(f"client {n}: listing mismatch")
                elif choice < 0.85:
                    name = rng.choice(list(files))
                    if pfs.stat(name).st_size != len(files[name]):
                        errors.append(f"client {n}: size mismatch")
                elif choice < 0.93:
                    name = rng.choice(list(files))
                    new = f"{mine}/r{ops}"
                    pfs.rename(name, new)
                    files[new] = files.pop(name)
                else:
                    name = rng.choice(list(files))
                    pfs.remove(name)
                    del files[name]
                ops += 1
    except Exception as exc:
        errors.append(f"client {n}: {exc!r}")


def _load(tmp_path: Path, clients: int, seconds: float) -> None:
    export = tmp_path / "export"
    export.mkdir()
    keys = [KeyPair.generate() for _ in range(clients)]
    peers = peers_of(*[(f"p{i}", k, {"data": "rw"}) for i, k in enumerate(keys)])
    errors: list[str] = []
    with running_server({"data": export}, peers) as srv:
        link = srv.server.exports["data"].link
        assert link is not None and link.proc is not None
        rss0 = _rss_kib(link.proc.pid)
        deadline = time.monotonic() + seconds
        threads = [
            threading.Thread(target=_client, args=(srv, k, i, deadline, errors))
            for i, k in enumerate(keys)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(seconds + 60)
        assert not any(t.is_alive() for t in threads), "a client hung"
        rss1 = _rss_kib(link.proc.pid)
        stats = srv.stats()
        time.sleep(0.2)
        assert srv.server.channel.connections == set()
    assert errors == []
    assert stats["connections"] == clients and stats["refused_calls"] == 0
    assert stats["calls"] > clients * 10
    assert rss1 - rss0 < 100 * 1024, f"worker memory grew by {rss1 - rss0} KiB"
    assert sorted(os.listdir(export)) == sorted(f"c{i}" for i in range(clients))


def test_load_short(tmp_path: Path) -> None:
    _load(tmp_path, clients=8, seconds=4)


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("BURROW_SOAK"), reason="soak: make soak (BURROW_SOAK=1)")
def test_load_32_clients_60_seconds(tmp_path: Path) -> None:
    _load(tmp_path, clients=32, seconds=60)
