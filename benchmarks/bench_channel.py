"""Secure channel: encrypted bulk throughput over loopback TCP vs ``ssh -c chacha20-poly1305``.

burrow: a client process sends SIZE bytes as ~64 KiB ChaCha20-Poly1305 records to a server
process that decrypts and counts them, then answers "done". ssh: the same bytes piped through
``ssh -c chacha20-poly1305@openssh.com`` to ``cat > /dev/null`` on a throwaway local sshd.

Wall-clock throughput on a shared, loaded machine swings a lot, so each burrow run also
measures CPU time (user + system, ``getrusage``) of both ends and prints seconds of CPU per GiB
for the sender and the receiver: the steadier figure for comparing versions of the code.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import resource
import subprocess
import sys
from pathlib import Path

from benchmarks.harness import Case
from benchmarks.sshd_helper import Sshd, start_sshd
from burrow.proto.noise import KeyPair
from burrow.proto.securechannel import PeerInfo

SIZE = 1 << 30
CHUNK = 4 << 20


def _cpu() -> float:
    """CPU seconds (user + system) this process has used."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def _report_cpu(send_cpu: float, recv_cpu: float) -> None:
    gib = SIZE / (1 << 30)
    print(
        f"  burrow CPU per GiB: send {send_cpu / gib:.3f} s, receive {recv_cpu / gib:.3f} s "
        f"(one core for both ends: {SIZE / (send_cpu + recv_cpu) / 1e6:,.0f} MB/s)",
        file=sys.stderr,
    )


def _server_main(port_q: multiprocessing.Queue[int], key: bytes, client_pub: bytes) -> None:
    from burrow.errors import ConnectionLost
    from burrow.share.channel import Channel, ChannelServer

    async def handler(ch: Channel) -> None:
        total = 0
        cpu0 = _cpu()
        while total < SIZE:
            try:
                total += len(await ch.recv())
            except ConnectionLost:
                return
        await ch.send(b"done %d %.6f" % (total, _cpu() - cpu0))

    async def main() -> None:
        srv = ChannelServer(
            key=KeyPair.from_private(key),
            authorize=lambda k: PeerInfo("bench") if k == client_pub else None,
            handler=handler,
        )
        await srv.start("127.0.0.1", 0)
        port_q.put(srv.port)
        await asyncio.Event().wait()

    asyncio.run(main())


def cases(work: Path) -> list[Case]:
    data = os.urandom(CHUNK)
    src = work / "channel-1g.bin"
    if not src.exists() or src.stat().st_size != SIZE:
        with open(src, "wb") as f:
            for _ in range(SIZE // CHUNK):
                f.write(data)
    server_key, client_key = KeyPair.generate(), KeyPair.generate()
    state: dict[str, object] = {}
    servers: dict[str, Sshd | None] = {}

    def setup() -> None:
        ctx = multiprocessing.get_context("fork")
        q: multiprocessing.Queue[int] = ctx.Queue()
        proc = ctx.Process(
            target=_server_main, args=(q, server_key.private, client_key.public), daemon=True
        )
        proc.start()
        state["proc"] = proc
        state["port"] = q.get(timeout=30)
        servers["sshd"] = start_sshd(work)

    def teardown() -> None:
        proc = state.get("proc")
        if isinstance(proc, multiprocessing.process.BaseProcess):
            proc.terminate()
            proc.join(5)
        sshd = servers.get("sshd")
        if sshd is not None:
            sshd.stop()

    def burrow() -> float:
        from burrow.share.channel import open_channel

        async def main() -> int:
            port = state["port"]
            assert isinstance(port, int)
            ch, _ = await open_channel(
                "127.0.0.1", port, key=client_key, server_key=server_key.public
            )
            cpu0 = _cpu()
            for _ in range(SIZE // CHUNK):
                await ch.send_stream(data)
            reply = await ch.recv()
            send_cpu = _cpu() - cpu0
            await ch.close()
            word, total, recv_cpu = reply.split()
            assert word == b"done" and int(total) == SIZE, reply
            _report_cpu(send_cpu, float(recv_cpu))
            return SIZE

        return float(asyncio.run(main()))

    def ssh() -> float:
        sshd = servers.get("sshd")
        if sshd is None:
            raise RuntimeError("sshd unavailable (needs root and openssh-server)")
        with open(src, "rb") as f:
            subprocess.run(
                [*sshd.ssh_args("-c", "chacha20-poly1305@openssh.com"), "cat > /dev/null"],
                stdin=f,
                check=True,
            )
        return SIZE

    contenders = {"burrow": burrow, "ssh -c chacha20-poly1305": ssh}
    return [
        Case(
            "channel: encrypted bulk 1 GiB over loopback TCP",
            "bytes",
            contenders,
            target=">= 500 MB/s",
            setup=setup,
            teardown=teardown,
        )
    ]
