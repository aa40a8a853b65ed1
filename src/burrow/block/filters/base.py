"""``FilterDevice``: the pass-through every filter starts from (nbdkit's filter idea in Python).

A filter wraps one device and forwards each hook to the *public* method of the device below,
so bounds and read-only checks happen at every layer and filters stack in any order. By
default a filter owns the device below it: closing the top of a stack closes the whole stack.
"""

from __future__ import annotations

from collections.abc import Iterator

from burrow.block.device import BlockDevice, Extent

__all__ = ["FilterDevice"]

_PASS_FLAGS = ("can_fua", "can_discard", "can_write_zeroes", "can_extents", "can_multi_conn")


class FilterDevice(BlockDevice):
    """Forwards everything to ``base``; subclasses override the hooks they change."""

    def __init__(self, base: BlockDevice, *, owns_base: bool = True) -> None:
        self.base = base
        self._size = base.size
        self._block_size = base.block_size
        self._readonly = base.readonly
        self._owns = owns_base
        for flag in _PASS_FLAGS:
            setattr(self, flag, getattr(base, flag))

    def _preadinto(self, buf: memoryview, offset: int) -> None:
        self.base.preadinto(buf, offset)

    def _pwrite(self, data: memoryview, offset: int, fua: bool) -> None:
        self.base.pwrite(data, offset, fua=fua)

    def _flush(self) -> None:
        self.base.flush()

    def _discard(self, n: int, offset: int) -> None:
        self.base.discard(n, offset)

    def _write_zeroes(self, n: int, offset: int, may_unmap: bool) -> None:
        self.base.write_zeroes(n, offset, may_unmap=may_unmap)

    def _extents(self, n: int, offset: int) -> Iterator[Extent]:
        return self.base.extents(n, offset)

    def cache(self, n: int, offset: int) -> None:
        self.base.cache(n, offset)

    def statistics(self) -> dict[str, object]:
        return self.base.statistics()

    def _close(self) -> None:
        if self._owns:
            self.base.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} over {self.base!r}>"
