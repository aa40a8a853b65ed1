"""burrow's error model: one root, ``BurrowError``, and a small tree beneath it.

Why a tree like this:

* Callers catch ``BurrowError`` to handle *anything* burrow refuses, and nothing else (a bug in
  burrow still surfaces as an ordinary exception, so it is never mistaken for bad input).
* Filesystem errors also subclass the matching builtin (``NotFound`` is a
  ``FileNotFoundError``), and carry ``errno``, so code written for :mod:`os` keeps working and
  front ends (FUSE, NBD, the share RPC) can translate them to an errno without a table.
* Corruption names the on-disk structure and the byte offset, so a report about a bad image is
  actionable. Unsupported features carry the feature's on-disk name.
* Protocol errors are split, as h11 does, into *local* (we were asked to send something the
  protocol forbids) and *remote* (the peer sent something invalid).

Each class has an ``exit_code``: the CLI exits with it (see ``docs/cli.md``).
"""

from __future__ import annotations

import errno as _errno

__all__ = [
    "AuthenticationError",
    "BurrowError",
    "ConnectionLost",
    "CorruptImage",
    "CrossDevice",
    "Exists",
    "FilesystemError",
    "IOFailure",
    "InvalidArgument",
    "InvalidOperation",
    "IsADirectory",
    "LocalProtocolError",
    "NameTooLong",
    "NoSpace",
    "NotADirectory",
    "NotEmpty",
    "NotFound",
    "NotPermitted",
    "NotSupported",
    "PermissionDenied",
    "ProtocolError",
    "ReadOnly",
    "RemoteProtocolError",
    "TooManyLinks",
    "Unsupported",
    "UsageError",
    "errno_of",
    "error_for_errno",
]

# Exit codes, documented in docs/cli.md. Kept here so the CLI and the docs have one source.
EXIT_OK = 0
EXIT_ERROR = 1  # any other BurrowError
EXIT_USAGE = 2  # bad arguments (argparse uses 2 as well)
EXIT_FILESYSTEM = 3  # a path-level error: not found, exists, permission, read-only, no space...
EXIT_CORRUPT = 4  # the image is damaged
EXIT_UNSUPPORTED = 5  # the image uses a feature burrow does not support
EXIT_PROTOCOL = 6  # network / protocol failure (peer misbehaved, connection lost, auth failed)
EXIT_INTERRUPTED = 130


class BurrowError(Exception):
    """Root of every error burrow raises on purpose (bad input, refused operations)."""

    exit_code: int = EXIT_ERROR

    def __init__(self, message: str = "", *, path: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.path = path

    def __str__(self) -> str:
        return self.message or self.__class__.__name__


class UsageError(BurrowError):
    """The caller passed arguments that make no sense (bad size, unknown format, ...)."""

    exit_code = EXIT_USAGE


class InvalidArgument(BurrowError, ValueError):
    """An argument is out of range for this object (offset past the end, bad name...).

    Also a ``ValueError`` and carries ``errno = EINVAL`` so front ends can map it.
    """

    errno = _errno.EINVAL
    exit_code = EXIT_USAGE


class FilesystemError(BurrowError, OSError):
    """A path- or inode-level failure that has an errno.

    Instances are real ``OSError`` objects: ``errno``, ``strerror`` and ``filename`` are set.
    """

    errno_value: int = _errno.EIO
    exit_code = EXIT_FILESYSTEM

    def __init__(self, message: str = "", *, path: str | None = None) -> None:
        text = message or _strerror(self.errno_value)
        OSError.__init__(self, self.errno_value, text)
        self.message = text
        self.path = path
        self.filename = path

    def __str__(self) -> str:
        return self.message


def _strerror(code: int) -> str:
    import os

    return os.strerror(code)


class NotFound(FilesystemError, FileNotFoundError):
    errno_value = _errno.ENOENT


class Exists(FilesystemError, FileExistsError):
    errno_value = _errno.EEXIST


class NotADirectory(FilesystemError, NotADirectoryError):
    errno_value = _errno.ENOTDIR


class IsADirectory(FilesystemError, IsADirectoryError):
    errno_value = _errno.EISDIR


class NotEmpty(FilesystemError):
    errno_value = _errno.ENOTEMPTY


class NoSpace(FilesystemError):
    errno_value = _errno.ENOSPC


class ReadOnly(FilesystemError):
    errno_value = _errno.EROFS


class PermissionDenied(FilesystemError, PermissionError):
    errno_value = _errno.EACCES


class NotPermitted(FilesystemError, PermissionError):
    """EPERM: the operation is not allowed on this object (e.g. hard links on FAT)."""

    errno_value = _errno.EPERM


class NameTooLong(FilesystemError):
    errno_value = _errno.ENAMETOOLONG


class TooManyLinks(FilesystemError):
    errno_value = _errno.EMLINK


class CrossDevice(FilesystemError):
    errno_value = _errno.EXDEV


class NotSupported(FilesystemError):
    """ENOTSUP: this filesystem cannot do that (symlinks on FAT, xattrs where none exist)."""

    errno_value = _errno.EOPNOTSUPP


class InvalidOperation(FilesystemError):
    """EINVAL at the filesystem level (e.g. renaming a directory into its own subtree)."""

    errno_value = _errno.EINVAL


class IOFailure(FilesystemError):
    """EIO: the device below failed (injected fault, lost connection to a remote device)."""

    errno_value = _errno.EIO


class CorruptImage(BurrowError):
    """An on-disk structure is invalid. Names the structure and the byte offset of the problem.

    ``offset`` is the absolute byte offset on the device being parsed, or ``None`` when the
    structure has no single location (e.g. a loop across several blocks).
    """

    exit_code = EXIT_CORRUPT
    errno = _errno.EIO

    def __init__(
        self,
        structure: str,
        offset: int | None = None,
        detail: str = "",
        *,
        path: str | None = None,
    ) -> None:
        where = f" at byte {offset}" if offset is not None else ""
        message = f"corrupt {structure}{where}" + (f": {detail}" if detail else "")
        super().__init__(message, path=path)
        self.structure = structure
        self.offset = offset
        self.detail = detail


class Unsupported(BurrowError):
    """The input uses a feature burrow does not implement; ``feature`` is its on-disk name."""

    exit_code = EXIT_UNSUPPORTED
    errno = _errno.EOPNOTSUPP

    def __init__(self, feature: str, detail: str = "", *, path: str | None = None) -> None:
        message = f"unsupported feature: {feature}" + (f" ({detail})" if detail else "")
        super().__init__(message, path=path)
        self.feature = feature
        self.detail = detail


class ProtocolError(BurrowError):
    """A network protocol failed (NBD, the secure channel, the share RPC)."""

    exit_code = EXIT_PROTOCOL


class LocalProtocolError(ProtocolError):
    """We were about to do something the protocol forbids (a bug or misuse on our side)."""


class RemoteProtocolError(ProtocolError):
    """The peer sent something the protocol forbids (malformed, oversized, out of order)."""


class AuthenticationError(RemoteProtocolError):
    """The peer could not prove who it is, or is not authorized."""


class ConnectionLost(ProtocolError):
    """The connection closed or timed out while a call was outstanding."""


_BY_ERRNO: dict[int, type[FilesystemError]] = {
    cls.errno_value: cls
    for cls in (
        NotFound,
        Exists,
        NotADirectory,
        IsADirectory,
        NotEmpty,
        NoSpace,
        ReadOnly,
        PermissionDenied,
        NotPermitted,
        NameTooLong,
        TooManyLinks,
        CrossDevice,
        NotSupported,
        InvalidOperation,
        IOFailure,
    )
}


def error_for_errno(code: int, message: str = "", *, path: str | None = None) -> FilesystemError:
    """Build the ``FilesystemError`` subclass for an errno (used when errors cross a wire)."""
    cls = _BY_ERRNO.get(code)
    if cls is None:
        err = FilesystemError(message or _strerror(code), path=path)
        err.errno = code
        err.errno_value = code
        return err
    return cls(message, path=path)


def errno_of(exc: BaseException) -> int:
    """The errno a front end should report for ``exc`` (EIO when there is none)."""
    if isinstance(exc, FilesystemError):
        return exc.errno_value
    code = getattr(exc, "errno", None)
    if isinstance(code, int) and code > 0:
        return code
    return _errno.EIO
