"""Run a ShareServer on loopback in a background thread for tests."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from burrow.proto.noise import KeyPair
from burrow.share.keys import Peer, Peers, encode_key
from burrow.share.server import ShareServer


@dataclass
class Running:
    server: ShareServer
    port: int
    server_key: KeyPair
    loop: asyncio.AbstractEventLoop

    def url(self, export: str) -> str:
        return f"burrow://127.0.0.1:{self.port}/{export}"

    @property
    def server_pub(self) -> str:
        return encode_key(self.server_key.public)

    def stats(self) -> dict[str, int]:
        return dict(self.server.statistics)


def peers_of(*entries: tuple[str, KeyPair, Mapping[str, str]]) -> Peers:
    return Peers({k.public: Peer(name, k.public, dict(ex)) for name, k, ex in entries})


@contextmanager
def running_server(
    exports: Mapping[str, str | Path], peers: Peers, **kw: object
) -> Iterator[Running]:
    key = KeyPair.generate()
    loop = asyncio.new_event_loop()
    started = threading.Event()
    box: dict[str, object] = {}

    def main() -> None:
        asyncio.set_event_loop(loop)

        async def start() -> None:
            srv = ShareServer(
                {n: str(p) for n, p in exports.items()},
                key=key,
                peers=peers,
                **kw,  # type: ignore[arg-type]
            )
            try:
                await srv.start("127.0.0.1", 0)
            except BaseException as exc:
                box["error"] = exc
                started.set()
                raise
            box["server"] = srv
            started.set()

        loop.run_until_complete(start())
        loop.run_forever()

    thread = threading.Thread(target=main, daemon=True)
    thread.start()
    started.wait(60)
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    srv = box["server"]
    assert isinstance(srv, ShareServer)
    try:
        yield Running(srv, srv.port, key, loop)
    finally:
        asyncio.run_coroutine_threadsafe(srv.aclose(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
