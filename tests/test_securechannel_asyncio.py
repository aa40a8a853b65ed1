"""The secure channel over real loopback TCP: handshake, echo both ways, bulk, close,
unknown keys refused, garbage and slow handshakes dropped."""

from __future__ import annotations

import asyncio
import os

import pytest

from burrow.errors import ConnectionLost, ProtocolError
from burrow.proto.noise import KeyPair
from burrow.proto.securechannel import PeerInfo
from burrow.share.channel import Channel, ChannelServer, open_channel


async def _echo(ch: Channel) -> None:
    while True:
        try:
            data = await ch.recv()
        except ConnectionLost:
            return
        await ch.send(data[::-1])


async def _server(
    client: KeyPair, server: KeyPair, refused: list[str], **kw: object
) -> ChannelServer:
    srv = ChannelServer(
        key=server,
        authorize=lambda k: PeerInfo("alice") if k == client.public else None,
        handler=_echo,
        on_hello=lambda ch, payload: b"welcome " + payload,
        on_refused=lambda src, exc: refused.append(f"{src}: {exc}"),
        **kw,  # type: ignore[arg-type]
    )
    await srv.start("127.0.0.1", 0)
    return srv


def test_echo_bulk_and_close() -> None:
    async def main() -> None:
        ck, sk = KeyPair.generate(), KeyPair.generate()
        refused: list[str] = []
        srv = await _server(ck, sk, refused)
        ch, hello = await open_channel(
            "127.0.0.1", srv.port, key=ck, server_key=sk.public, hello=b"bob"
        )
        assert hello == b"welcome bob"
        for n in (0, 1, 1000, 65000):
            data = os.urandom(n)
            await ch.send(data)
            assert await ch.recv() == data[::-1]
        # many in flight
        msgs = [os.urandom(i * 37) for i in range(200)]
        for m in msgs:
            ch.send_nowait(m)
        got = [await ch.recv() for _ in msgs]
        assert got == [m[::-1] for m in msgs]
        await ch.close()
        with pytest.raises(ConnectionLost):
            await ch.recv()
        await srv.aclose()
        assert refused == []

    asyncio.run(main())


def test_unknown_key_refused_and_logged() -> None:
    async def main() -> None:
        ck, sk = KeyPair.generate(), KeyPair.generate()
        refused: list[str] = []
        srv = await _server(ck, sk, refused)
        with pytest.raises(ProtocolError):
            await open_channel(
                "127.0.0.1", srv.port, key=KeyPair.generate(), server_key=sk.public, timeout=5
            )
        with pytest.raises(ProtocolError):  # right key, wrong server key: mac1 fails
            await open_channel(
                "127.0.0.1", srv.port, key=ck, server_key=KeyPair.generate().public, timeout=5
            )
        await asyncio.sleep(0.05)
        await srv.aclose()
        assert len(refused) == 2
        assert "unknown client key" in refused[0] and "mac1" in refused[1]

    asyncio.run(main())


def test_garbage_and_silent_clients_dropped() -> None:
    async def main() -> None:
        ck, sk = KeyPair.generate(), KeyPair.generate()
        refused: list[str] = []
        srv = await _server(ck, sk, refused, handshake_timeout=0.3)
        loop = asyncio.get_running_loop()
        # garbage
        r, w = await asyncio.open_connection("127.0.0.1", srv.port)
        w.write(os.urandom(5000))
        assert await asyncio.wait_for(r.read(), 5) == b""
        w.close()
        # silent (slowloris): dropped after the handshake deadline
        r, w = await asyncio.open_connection("127.0.0.1", srv.port)
        t0 = loop.time()
        assert await asyncio.wait_for(r.read(), 5) == b""
        assert loop.time() - t0 < 3
        w.close()
        # a good client still works
        ch, _ = await open_channel("127.0.0.1", srv.port, key=ck, server_key=sk.public)
        await ch.send(b"ok")
        assert await ch.recv() == b"ko"
        await ch.close()
        await srv.aclose()
        assert len(refused) == 2

    asyncio.run(main())


def test_server_under_load_uses_cookies() -> None:
    async def main() -> None:
        ck, sk = KeyPair.generate(), KeyPair.generate()
        refused: list[str] = []
        srv = await _server(ck, sk, refused)
        srv.load.max_rate = -1  # always under load
        ch, _ = await open_channel("127.0.0.1", srv.port, key=ck, server_key=sk.public)
        assert ch.sc.stats.cookie_replies == 1  # the client had to fetch a cookie first
        await ch.send(b"abc")
        assert await ch.recv() == b"cba"
        await ch.close()
        await srv.aclose()

    asyncio.run(main())


def test_abort_mid_stream_is_connection_lost_on_the_other_side() -> None:
    async def main() -> None:
        ck, sk = KeyPair.generate(), KeyPair.generate()
        seen: list[BaseException] = []

        async def handler(ch: Channel) -> None:
            try:
                while True:
                    await ch.recv()
            except ConnectionLost as exc:
                seen.append(exc)

        srv = ChannelServer(key=sk, authorize=lambda k: PeerInfo("a"), handler=handler)
        await srv.start("127.0.0.1", 0)
        ch, _ = await open_channel("127.0.0.1", srv.port, key=ck, server_key=sk.public)
        await ch.send(b"x" * 1000)
        ch.abort()  # no close record: the server must see a lost connection, not a clean end
        for _ in range(100):
            if seen:
                break
            await asyncio.sleep(0.02)
        await srv.aclose()
        assert len(seen) == 1
        assert "close record" in str(seen[0]) or "connection lost" in str(seen[0])
        assert srv.connections == set()

    asyncio.run(main())


def test_close_while_a_reader_waits_and_replies_still_arrive() -> None:
    """A reader task blocked in recv() and close() wait at the same time while the peer's
    answers are still coming in: both must be woken (close() must not sit out its 5 s
    timeout, the reader must see the end)."""

    async def main() -> None:
        ck, sk = KeyPair.generate(), KeyPair.generate()
        srv = await _server(ck, sk, [])
        ch, _ = await open_channel("127.0.0.1", srv.port, key=ck, server_key=sk.public)
        got: list[bytes] = []

        async def reader() -> None:
            while True:
                try:
                    got.append(await ch.recv())
                except ConnectionLost:
                    return

        task = asyncio.get_running_loop().create_task(reader())
        await asyncio.sleep(0.05)  # the reader is waiting
        for _ in range(20):
            ch.send_nowait(os.urandom(50_000))  # echoes arrive during close()
        t0 = asyncio.get_running_loop().time()
        await ch.close()
        assert asyncio.get_running_loop().time() - t0 < 3.0
        await asyncio.wait_for(task, 3.0)
        await srv.aclose()

    asyncio.run(main())
