"""Filters: devices that wrap another device and change one aspect of it.

They stack in any order (each forwards to the public methods of the device below, so every
layer checks bounds and read-only state): ``ReadOnlyFilter``, ``StatsFilter`` (counts, bytes,
latencies), ``FaultFilter`` (injected EIO, short writes, simulated crashes — for tests) and
``CacheFilter`` (LRU read cache). By default a filter owns the device below it.
"""

from __future__ import annotations

from burrow.block.filters.base import FilterDevice
from burrow.block.filters.cache import CacheFilter
from burrow.block.filters.faults import Fault, FaultFilter
from burrow.block.filters.readonly import ReadOnlyFilter
from burrow.block.filters.stats import StatsFilter

__all__ = ["CacheFilter", "Fault", "FaultFilter", "FilterDevice", "ReadOnlyFilter", "StatsFilter"]
