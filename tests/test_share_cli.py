"""``burrow key`` + ``burrow serve`` as real processes: a client reads through the share, the
audit log records it, and (as root) both the network process and the export worker run as
``nobody`` with no capabilities and no_new_privs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from burrow.fs.paths import PathFS
from burrow.share.client import connect


def _status(pid: int) -> dict[str, str]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        k, _, v = line.partition(":")
        out[k] = v.strip()
    return out


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(x) for x in path.read_text().split()] if path.exists() else []


def _key(path: Path) -> str:
    res = subprocess.run(
        [sys.executable, "-m", "burrow", "key", "gen", str(path)],
        capture_output=True,
        text=True,
        check=True,
    )
    return res.stdout.strip().splitlines()[-1]


@pytest.mark.parametrize("as_nobody", [False, pytest.param(True, marks=pytest.mark.root)])
def test_serve_cli(tmp_path: Path, as_nobody: bool) -> None:
    export = tmp_path / "export"
    export.mkdir()
    (export / "hello.txt").write_text("hello from the server\n")
    server_pub = _key(tmp_path / "server.key")
    client_pub = _key(tmp_path / "client.key")
    peers = tmp_path / "peers.toml"
    peers.write_text(
        f'[[peer]]\nname = "alice"\nkey = "{client_pub}"\nexports = {{ data = "ro" }}\n'
    )
    audit = tmp_path / "audit.log"
    cmd = [
        sys.executable,
        "-m",
        "burrow",
        "serve",
        f"data={export}",
        "--listen",
        "127.0.0.1:0",
        "--key",
        str(tmp_path / "server.key"),
        "--peers",
        str(peers),
        "--audit-log",
        str(audit),
    ]
    if as_nobody:
        cmd += ["--user", "nobody", "--no-network-workers"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        banner = proc.stdout.readline()
        assert "listening on" in banner, banner
        port = int(banner.split("listening on ")[1].split(",")[0].rsplit(":", 1)[1])
        assert proc.stdout.readline().strip() == server_pub
        with PathFS(
            connect(
                f"burrow://127.0.0.1:{port}/data",
                key=tmp_path / "client.key",
                server_key=server_pub,
            )
        ) as pfs:
            assert pfs.read_text("/hello.txt") == "hello from the server\n"
            assert pfs.readonly

            # privilege separation: the network process holds no descriptor of the export;
            # the worker does
            def fds(pid: int) -> list[str]:
                out = []
                for fd in os.listdir(f"/proc/{pid}/fd"):
                    try:
                        out.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
                    except OSError:
                        pass
                return out

            assert not [f for f in fds(proc.pid) if f.startswith(str(export))]
            worker_fds = [f for w in _children(proc.pid) for f in fds(w)]
            assert any(f.startswith(str(export)) for f in worker_fds)
        # the path-level CLI takes burrow:// URLs, keys from the environment
        env = {**os.environ, "BURROW_KEY": str(tmp_path / "client.key")}
        env["BURROW_SERVER_KEY"] = server_pub
        url = f"burrow://127.0.0.1:{port}/data"
        res = subprocess.run(
            [sys.executable, "-m", "burrow", "cat", f"{url}/hello.txt"],
            capture_output=True,
            text=True,
            env=env,
        )
        assert res.returncode == 0 and res.stdout == "hello from the server\n", res.stderr
        res = subprocess.run(
            [sys.executable, "-m", "burrow", "cp", "-a", f"{url}/", str(tmp_path / "copy")],
            capture_output=True,
            text=True,
            env=env,
        )
        assert res.returncode == 0, res.stderr
        assert subprocess.run(["diff", "-r", str(export), str(tmp_path / "copy")]).returncode == 0
        if as_nobody:
            workers = _children(proc.pid)
            assert workers
            for pid in [proc.pid, *workers]:
                st = _status(pid)
                assert st["Uid"].split() == ["65534"] * 4, (pid, st["Uid"])
                assert st["Groups"] == ""
                assert int(st["CapEff"], 16) == 0 and int(st["CapPrm"], 16) == 0
                assert st["NoNewPrivs"] == "1"
            worker_net = os.readlink(f"/proc/{workers[0]}/ns/net")
            assert worker_net != os.readlink("/proc/self/ns/net")
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(20)
        if proc.stdout is not None:
            proc.stdout.close()
    assert code == 0
    log = audit.read_text()
    assert "connect peer=alice" in log and "export=data access=ro" in log
    assert "disconnect peer=alice" in log


def test_serve_usage_errors(tmp_path: Path) -> None:
    res = subprocess.run(
        [sys.executable, "-m", "burrow", "serve", "noequals", "--key", "k", "--peers", "p"],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 2 and "NAME=PATH" in res.stderr
