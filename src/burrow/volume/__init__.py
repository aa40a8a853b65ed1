"""Volumes: partition tables (MBR, GPT; later LVM, LUKS) over a ``BlockDevice``.

Belongs here: readers that turn a device into a list of partitions (each one opens as a
``SliceDevice``) and writers that create and change tables. May import ``burrow.block`` and
``burrow.errors``; never a filesystem or a front end.

Reading: :func:`read_table`. Writing: :func:`init_table`, :func:`add_partition`,
:func:`add_partitions`, :func:`remove_partition`, :func:`resize_partition`,
:func:`rename_partition`, :func:`relocate_backup`, :func:`repair_table`. See
``docs/formats/partitions.md``.
"""

from __future__ import annotations

import logging as _logging

from burrow.volume.edit import (
    ALIGNMENT,
    add_partition,
    add_partitions,
    init_table,
    relocate_backup,
    remove_partition,
    rename_partition,
    repair_table,
    resize_partition,
)
from burrow.volume.probe import read_table
from burrow.volume.table import Partition, PartitionTable

# A library logs warnings but leaves printing them to the application (see PartitionTable.warnings).
_logging.getLogger(__name__).addHandler(_logging.NullHandler())

__all__ = [
    "ALIGNMENT",
    "Partition",
    "PartitionTable",
    "add_partition",
    "add_partitions",
    "init_table",
    "read_table",
    "relocate_backup",
    "remove_partition",
    "rename_partition",
    "repair_table",
    "resize_partition",
]
