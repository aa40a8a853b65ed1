"""``burrow nbd serve TARGET [ARGS...]``: serve a block device over NBD until signalled.

TARGET is ``IMAGE[@PART]`` (a raw or qcow2 image, or one partition of it) or a Python class
given as ``module:Class`` or ``path/to/file.py:Class``; ARGS are passed to the class
(``key=value`` as keyword arguments, anything else positionally, all as strings). The NBD URI
is printed on stdout once the socket is listening (a Unix socket exists when it is printed).
SIGINT/SIGTERM finish in-flight requests, flush and exit 0.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    p = sub.add_parser("serve", help="serve an image, a partition or a Python class over NBD")
    p.add_argument("target", metavar="IMAGE[@PART]|module:Class")
    p.add_argument("args", nargs="*", default=[], metavar="ARGS", help="arguments for module:Class")
    p.add_argument("--socket", "-U", metavar="PATH", help="listen on this Unix socket")
    p.add_argument("--listen", "-l", metavar="HOST:PORT", help="listen on TCP (default port 10809)")
    p.add_argument("--read-only", "-r", action="store_true", help="refuse writes")
    p.add_argument(
        "--overlay",
        action="store_true",
        help="copy-on-write: writes go to memory, the image is never changed",
    )
    p.add_argument("--format", choices=["raw", "qcow2"], help="image format (default: detect)")
    p.add_argument(
        "--threads",
        type=_thread_count,
        default=os.environ.get("BURROW_NBD_THREADS", str(min(4, os.cpu_count() or 1))),
        metavar="N",
        help="spread connections over N event-loop threads (synchronous devices only; "
        "default: min(4, CPUs); 0: everything in the main loop)",
    )
    p.add_argument("--export", "-e", default="", metavar="NAME", help="export name (default '')")
    p.add_argument("--description", "-D", default="", help="export description")
    p.add_argument("--tls-cert", metavar="FILE", help="x509 certificate (PEM)")
    p.add_argument("--tls-key", metavar="FILE", help="private key of the certificate (PEM)")
    p.add_argument(
        "--tls-ca",
        metavar="FILE",
        help="require client certificates signed by this CA (PEM)",
    )
    p.add_argument(
        "--tls",
        choices=["required", "optional"],
        default="required",
        help="with a certificate: refuse plaintext clients (default) or let them choose",
    )


def _split_args(args: list[str]) -> tuple[list[str], dict[str, str]]:
    pos: list[str] = []
    kw: dict[str, str] = {}
    for a in args:
        key, sep, value = a.partition("=")
        if sep and key.isidentifier():
            kw[key] = value
        else:
            pos.append(a)
    return pos, kw


def load_class(spec: str) -> Any:
    """``module:Class`` or ``file.py:Class`` -> the class object."""
    import importlib
    import importlib.util

    from burrow.errors import UsageError

    where, _, name = spec.rpartition(":")
    if not where or not name:
        raise UsageError(f"{spec!r}: expected module:Class or file.py:Class")
    if where.endswith(".py") or os.sep in where:
        if not os.path.isfile(where):
            raise UsageError(f"{where}: no such Python file")
        modname = "_burrow_nbd_" + os.path.splitext(os.path.basename(where))[0]
        loader_spec = importlib.util.spec_from_file_location(modname, where)
        if loader_spec is None or loader_spec.loader is None:
            raise UsageError(f"{where}: cannot load as a Python module")
        module = importlib.util.module_from_spec(loader_spec)
        sys.modules[modname] = module
        loader_spec.loader.exec_module(module)
    else:
        if os.getcwd() not in sys.path:
            sys.path.insert(0, os.getcwd())
        try:
            module = importlib.import_module(where)
        except ImportError as exc:
            raise UsageError(f"cannot import {where!r}: {exc}") from exc
    cls = getattr(module, name, None)
    if cls is None:
        raise UsageError(f"{where} has no attribute {name!r}")
    return cls


def _select_partition(dev: Any, part: str, readonly: bool) -> Any:
    import importlib

    from burrow.errors import NotFound, UsageError

    try:
        volume = importlib.import_module("burrow.volume")
        read_table = getattr(volume, "read_table", None)
        if read_table is None:
            read_table = importlib.import_module("burrow.volume.probe").read_table
    except (ImportError, AttributeError):
        raise UsageError("IMAGE@PART needs partition table support (burrow.volume)") from None
    table = read_table(dev)
    if table is None:
        raise UsageError("the image has no MBR or GPT partition table")
    for p in table.partitions:
        if str(p.number) == part or (p.name and p.name == part):
            return p.open(dev, readonly=readonly)
    raise NotFound(f"no partition {part!r} (have {[p.number for p in table.partitions]})")


def open_target(args: argparse.Namespace) -> tuple[Any, str]:
    """The device to serve and a short description of it."""
    from burrow.errors import UsageError

    target: str = args.target
    readonly = bool(args.read_only)
    image, part = target, ""
    if not os.path.exists(target) and "@" in target:
        image, _, part = target.rpartition("@")
    if os.path.exists(image):
        if args.args:
            raise UsageError("extra ARGS are only for module:Class targets")
        import burrow.block

        base_ro = readonly or bool(args.overlay)
        dev: Any = burrow.block.open(image, format=args.format, readonly=base_ro)
        if part:
            dev = _select_partition(dev, part, base_ro)
        if args.overlay:
            import importlib

            try:
                overlay = importlib.import_module("burrow.block.overlay")
            except ImportError:
                raise UsageError("--overlay needs burrow.block.overlay (not available)") from None
            dev = overlay.OverlayDevice(dev)
        return dev, target
    if ":" in target:
        cls = load_class(target)
        pos, kw = _split_args(list(args.args))
        try:
            obj = cls(*pos, **kw)
        except TypeError as exc:
            raise UsageError(f"cannot create {target}: {exc}") from exc
        if args.overlay:
            raise UsageError("--overlay works on images, not on Python classes")
        return obj, target
    from burrow.errors import NotFound

    raise NotFound("no such image (or module:Class)", path=target)


def _thread_count(text: str) -> int:
    """``--threads`` (and ``BURROW_NBD_THREADS``): a whole number >= 0, else a usage error."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of threads (0 or more)")
    return value


def run(args: argparse.Namespace) -> int:
    import asyncio
    import signal

    from burrow.errors import UsageError

    if not args.socket and not args.listen:
        raise UsageError("give --socket PATH and/or --listen HOST:PORT")
    if bool(args.tls_cert) != bool(args.tls_key):
        raise UsageError("--tls-cert and --tls-key go together")
    device, label = open_target(args)
    description = args.description or label

    async def main() -> None:
        from burrow.nbd.server import start_server

        server = await start_server(
            device,
            listen=args.listen,
            socket=args.socket,
            name=args.export,
            description=description,
            readonly=bool(args.read_only),
            tls_cert=args.tls_cert,
            tls_key=args.tls_key,
            tls=args.tls if args.tls_cert else None,
            tls_ca=args.tls_ca,
            threads=args.threads,
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        for uri in server.uris:
            print(uri, flush=True)
        try:
            await stop.wait()
        finally:
            await server.aclose(close_devices=True)

    _run(main())
    return 0


def _tune_malloc() -> None:
    """Keep freed read buffers in the heap instead of returning them to the kernel.

    Every READ reply is a fresh buffer; with glibc's defaults buffers of 256 KiB and more are
    mmap()ed and unmapped each time, so each request pays page faults and page zeroing (about
    twice the kernel time of the copy itself). A high mmap/trim threshold lets malloc reuse the
    same pages. Only done in the ``burrow nbd serve`` process, never on import.
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if not name:
        return
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return
    m_trim_threshold, m_mmap_threshold = -1, -3
    mallopt(m_mmap_threshold, 64 * 1024 * 1024)
    mallopt(m_trim_threshold, 256 * 1024 * 1024)


def _run(coro: Any) -> None:
    import asyncio

    if os.environ.get("BURROW_NBD_MALLOPT", "1") != "0":
        _tune_malloc()

    try:
        import uvloop
    except ImportError:
        asyncio.run(coro)
        return
    uvloop.run(coro)
