"""``ReadOnlyFilter``: present any device read-only (writes raise ``ReadOnly``).

Useful to hand a writable device to code that must not change it (an export, a probe).
Flush is a no-op: nothing can have been written through this filter.
"""

from __future__ import annotations

from burrow.block.device import BlockDevice
from burrow.block.filters.base import FilterDevice

__all__ = ["ReadOnlyFilter"]


class ReadOnlyFilter(FilterDevice):
    def __init__(self, base: BlockDevice, *, owns_base: bool = True) -> None:
        super().__init__(base, owns_base=owns_base)
        self._readonly = True
        self.can_discard = self.can_write_zeroes = self.can_fua = False

    def _flush(self) -> None:
        return None
