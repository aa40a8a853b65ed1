"""qcow2 engine: read and write versions 2 and 3 (see ``docs/formats/qcow2.md``).

Modules: ``header`` (QCowHeader, extensions, snapshot table), ``tables`` (L1/L2 entries and
the L2 cache), ``refcount`` (refcounts and allocation), ``compressed`` (deflate/zstd
clusters), ``hostfile`` (bounded positional I/O), ``device`` (the engine), ``create``.
"""

from __future__ import annotations

from burrow.block.qcow2.create import create_qcow2
from burrow.block.qcow2.device import Qcow2Device, open_qcow2
from burrow.block.qcow2.header import Header, Snapshot

__all__ = ["Header", "Qcow2Device", "Snapshot", "create_qcow2", "open_qcow2"]
