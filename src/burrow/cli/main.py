"""Entry point of the ``burrow`` command: dispatch to one lazily imported command module.

Why two parsing stages: the top level only needs the command *name*, so it can be parsed
without importing any command. Then the chosen module builds its own parser. This keeps
``burrow --help`` and ``burrow cat`` fast (a test checks what ``--help`` imports).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from burrow import errors
from burrow._version import __version__
from burrow.cli.registry import COMMANDS

EPILOG = """exit codes:
  0  success
  1  other error
  2  bad arguments
  3  filesystem error (not found, exists, permission, read-only, no space, ...)
  4  corrupt image
  5  unsupported feature
  6  network or protocol error
  130 interrupted

Run 'burrow COMMAND --help' for a command's options. Add --debug for a traceback on errors."""


def _top_parser() -> argparse.ArgumentParser:
    width = max((len(n) for n in COMMANDS), default=8) + 2
    listing = "\n".join(f"  {name:<{width}}{cmd.help}" for name, cmd in sorted(COMMANDS.items()))
    parser = argparse.ArgumentParser(
        prog="burrow",
        description="burrow: disk images, filesystems, NBD block devices and secure network "
        "shares in userspace.\n\ncommands:\n" + listing,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"burrow {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    parser.add_argument("command", metavar="COMMAND", help="one of the commands above")
    parser.add_argument("args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    return parser


# C0 and C1 control characters, DEL, and undecodable name bytes (kept as lone surrogates):
# everything a terminal could take as part of an escape sequence. Names in messages and
# listings come from images and peers; burrow.cli.common.display uses the same table.
UNSAFE_CHARS = {c: "?" for c in [*range(0x20), 0x7F, *range(0x80, 0xA0), *range(0xDC80, 0xDD00)]}


def _report(exc: BaseException, debug: bool) -> None:
    if debug:
        import traceback

        traceback.print_exception(exc)
    path = getattr(exc, "path", None) or getattr(exc, "filename", None)
    if isinstance(exc, errors.BurrowError):
        message = str(exc)
    elif isinstance(exc, OSError):
        message = exc.strerror or str(exc)
    else:
        message = str(exc)
    prefix = f"burrow: {path}: " if path else "burrow: "
    # names in messages come from images and peers: never let them drive the terminal
    text = (prefix + message).translate(UNSAFE_CHARS)
    print(text, file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    top = _top_parser()
    ns = top.parse_args(argv)
    debug = bool(ns.debug) or os.environ.get("BURROW_DEBUG") == "1"
    entry = COMMANDS.get(ns.command)
    if entry is None:
        top.error(f"unknown command {ns.command!r} (see 'burrow --help')")
    module = importlib.import_module(entry.module)
    parser = argparse.ArgumentParser(prog=f"burrow {ns.command}", description=entry.help)
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    module.configure(parser)
    args = parser.parse_args(ns.args)
    debug = debug or bool(getattr(args, "debug", False))
    try:
        return int(module.run(args) or 0)
    except errors.BurrowError as exc:
        _report(exc, debug)
        return exc.exit_code
    except KeyboardInterrupt:
        print("burrow: interrupted", file=sys.stderr)
        return errors.EXIT_INTERRUPTED
    except BrokenPipeError:
        # Downstream closed the pipe (e.g. `burrow cat ... | head`): not an error for us.
        try:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silence the flush at exit
        except OSError:
            pass
        return 0
    except OSError as exc:  # host-side failures: missing image file, permission on a host dir
        _report(exc, debug)
        return errors.EXIT_FILESYSTEM


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
