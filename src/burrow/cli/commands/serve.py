"""``burrow serve NAME=PATH... --listen HOST:PORT --key FILE --peers FILE``: share host
directories (or ``IMAGE[@PART]`` filesystems) with the peers listed in the peers file, over
burrow's secure channel. See ``docs/shares.md``."""

from __future__ import annotations

import argparse

DEFAULT_PORT = 7339


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "exports", nargs="+", metavar="NAME=PATH", help="export NAME: a directory or IMAGE[@PART]"
    )
    parser.add_argument(
        "--listen", default=f"127.0.0.1:{DEFAULT_PORT}", metavar="HOST:PORT", help="address"
    )
    parser.add_argument("--key", required=True, metavar="FILE", help="server private key file")
    parser.add_argument("--peers", required=True, metavar="FILE", help="peers file (TOML)")
    parser.add_argument(
        "--user",
        metavar="USER",
        help="started as root: drop to this user (name or uid) after binding; "
        "workers drop to it before serving (default: nobody when root)",
    )
    parser.add_argument("--readonly", action="store_true", help="refuse all writes")
    parser.add_argument(
        "--no-network-workers",
        action="store_true",
        help="run export workers in an empty network namespace (root only)",
    )
    parser.add_argument(
        "--audit-log", metavar="FILE", help="append audit lines here (default stderr)"
    )


def parse_listen(text: str) -> tuple[str, int]:
    from burrow.errors import UsageError

    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = text, str(DEFAULT_PORT)
    host = host.strip("[]") or "0.0.0.0"
    try:
        number = int(port)
    except ValueError:
        raise UsageError(f"bad port in --listen {text!r}") from None
    if not 0 <= number <= 65535:
        raise UsageError(f"bad port in --listen {text!r}")
    return host, number


def parse_exports(items: list[str]) -> dict[str, str]:
    from burrow.errors import UsageError

    out: dict[str, str] = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise UsageError(f"export must be NAME=PATH, not {item!r}")
        if name in out:
            raise UsageError(f"export {name!r} given twice")
        out[name] = path
    return out


def run(args: argparse.Namespace) -> int:
    import asyncio
    import logging
    import os
    import signal
    import socket
    import sys

    from burrow.share.keys import encode_key, load_peers, load_private_key
    from burrow.share.server import ShareServer
    from burrow.share.worker import drop_privileges

    exports = parse_exports(args.exports)
    host, port = parse_listen(args.listen)
    key = load_private_key(args.key)
    peers = load_peers(args.peers)
    user = args.user
    if user is None and os.geteuid() == 0:
        user = "nobody"
    handler: logging.Handler = (
        logging.FileHandler(args.audit_log) if args.audit_log else logging.StreamHandler(sys.stderr)
    )
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    audit = logging.getLogger("burrow.share.audit")
    audit.addHandler(handler)
    audit.setLevel(logging.INFO)

    async def main() -> None:
        server = ShareServer(
            exports,
            key=key,
            peers=peers,
            readonly=args.readonly,
            user=user,
            no_network=args.no_network_workers,
        )
        await server.start_workers()  # each opens its export, then drops privileges
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))  # may need root for a low port: bind first, then drop
        sock.listen(512)
        drop_privileges(user)
        await server.channel.start(None, 0, sock=sock)
        bound = sock.getsockname()
        print(
            f"burrow serve: listening on {bound[0]}:{bound[1]}, exports {', '.join(exports)}, "
            f"{len(peers)} peers; server public key:",
            flush=True,
        )
        print(encode_key(key.public), flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            await stop.wait()
        finally:
            await server.aclose()

    asyncio.run(main())
    return 0
