"""fsspec: ``burrow://`` over a live share and ``burrowimg::`` over an image made by
mkfs.ext4 -d (entry points are registered by pyproject; the tests register explicitly)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import fsspec
import pytest

from burrow.proto.noise import KeyPair
from burrow.share.fsspec_impl import BurrowFileSystem, BurrowImageFileSystem
from share_helpers import peers_of, running_server

fsspec.register_implementation("burrow", BurrowFileSystem, clobber=True)
fsspec.register_implementation("burrowimg", BurrowImageFileSystem, clobber=True)


def test_fsspec_share_read_write_list(tmp_path: Path) -> None:
    export = tmp_path / "export"
    (export / "sub").mkdir(parents=True)
    (export / "table.csv").write_text("a,b\n1,2\n3,4\n")
    big = os.urandom(3_000_000)
    (export / "sub" / "big.bin").write_bytes(big)
    alice = KeyPair.generate()
    with running_server({"data": export}, peers_of(("alice", alice, {"data": "rw"}))) as srv:
        opts = {"key": alice, "server_key": srv.server_pub}
        base = f"burrow://127.0.0.1:{srv.port}/data"
        with fsspec.open(f"{base}/table.csv", "rt", **opts) as f:
            assert f.read() == "a,b\n1,2\n3,4\n"
        with fsspec.open(f"{base}/sub/big.bin", "rb", **opts) as f:
            f.seek(1_000_000)
            assert f.read(500_000) == big[1_000_000:1_500_000]
        fs = fsspec.filesystem("burrow", writable=True, **opts)
        names = sorted(fs.ls(base, detail=False))
        assert names == [f"127.0.0.1:{srv.port}/data/sub", f"127.0.0.1:{srv.port}/data/table.csv"]
        assert fs.info(f"{base}/sub/big.bin")["size"] == len(big)
        assert fs.info(f"{base}/sub")["type"] == "directory"
        payload = os.urandom(12_345_67)
        with fs.open(f"{base}/sub/new.bin", "wb", block_size=1 << 20) as f:
            f.write(payload)
        assert (export / "sub" / "new.bin").read_bytes() == payload
        assert fs.cat_file(f"{base}/sub/new.bin", start=10, end=20) == payload[10:20]
        fs.mv(f"{base}/sub/new.bin", f"{base}/moved.bin")
        fs.rm_file(f"{base}/moved.bin")
        assert sorted(os.listdir(export)) == ["sub", "table.csv"]
        with pytest.raises(FileNotFoundError):
            fs.info(f"{base}/nope")
        fs.close()


@pytest.mark.tool("mkfs.ext4")
def test_fsspec_image(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "etc").mkdir(parents=True)
    (src / "etc" / "hostname").write_text("burrow-test\n")
    img = tmp_path / "disk.img"
    subprocess.run(["mkfs.ext4", "-q", "-d", str(src), str(img), "8M"], check=True)
    with fsspec.open(f"burrowimg://etc/hostname::file://{img}", "rt") as f:
        assert f.read() == "burrow-test\n"
