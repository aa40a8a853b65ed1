"""``SliceDevice``: a window ``[start, start+length)`` of another device (used for partitions).

Bounds are checked against the window, so a partition can never read or write its neighbours.
Flush passes straight through (the kernel's rule for partitions: a flush is a flush of the
whole device).
"""

from __future__ import annotations

from collections.abc import Iterator

from burrow.block.device import BlockDevice, Extent
from burrow.errors import InvalidArgument

__all__ = ["SliceDevice"]


class SliceDevice(BlockDevice):
    """``length`` bytes of ``base`` starting at ``start``. Does not own ``base`` unless asked."""

    def __init__(
        self,
        base: BlockDevice,
        start: int,
        length: int,
        *,
        readonly: bool | None = None,
        owns_base: bool = False,
    ) -> None:
        if start < 0 or length < 0 or start + length > base.size:
            raise InvalidArgument(
                f"slice [{start}, {start + length}) does not fit in a {base.size}-byte device"
            )
        self.base = base
        self.start = start
        self._size = length
        self._block_size = base.block_size
        self._readonly = base.readonly if readonly is None else (readonly or base.readonly)
        self._owns = owns_base
        for flag in ("can_fua", "can_discard", "can_write_zeroes", "can_extents", "can_multi_conn"):
            setattr(self, flag, getattr(base, flag))

    def _preadinto(self, buf: memoryview, offset: int) -> None:
        self.base.preadinto(buf, self.start + offset)

    def _pwrite(self, data: memoryview, offset: int, fua: bool) -> None:
        self.base.pwrite(data, self.start + offset, fua=fua)

    def _flush(self) -> None:
        self.base.flush()

    def _discard(self, n: int, offset: int) -> None:
        self.base.discard(n, self.start + offset)

    def _write_zeroes(self, n: int, offset: int, may_unmap: bool) -> None:
        self.base.write_zeroes(n, self.start + offset, may_unmap=may_unmap)

    def _extents(self, n: int, offset: int) -> Iterator[Extent]:
        start = self.start
        for ext in self.base.extents(n, start + offset):
            yield Extent(ext.offset - start, ext.length, ext.flags)

    def _close(self) -> None:
        if self._owns:
            self.base.close()
