"""One conformance suite for every BlockDevice engine and filter.

``run_workload(dev, ops)`` applies random read / write / discard / zero / flush operations to a
device and to a ``bytearray`` model and checks that every read and the final contents agree,
and that ``extents`` covers the range without gaps and never calls non-zero data a zero run.

Discard leaves contents unspecified by NBD's rules; burrow's engines promise "zeros or
unchanged", so the model tracks discarded bytes as "either" and the check accepts both.
"""

from __future__ import annotations

from collections.abc import Callable

from hypothesis import strategies as st

from burrow.block.device import BlockDevice, ExtentFlags

SIZE = 1 << 20  # 1 MiB devices keep workloads fast while crossing many pages/clusters


def ops_strategy(size: int = SIZE) -> st.SearchStrategy[list[tuple[str, int, int, int]]]:
    offset = st.integers(0, size - 1)
    length = st.one_of(st.integers(1, 600), st.integers(1, 70_000), st.integers(1, size // 4))
    op = st.tuples(
        st.sampled_from(
            [
                "write",
                "write",
                "write",
                "read",
                "read",
                "zero",
                "zero_unmap",
                "discard",
                "flush",
                "fua",
            ]
        ),
        offset,
        length,
        st.integers(0, 255),
    )
    return st.lists(op, min_size=1, max_size=40)


def run_workload(
    dev: BlockDevice, ops: list[tuple[str, int, int, int]], model: bytearray | None = None
) -> bytearray:
    size = dev.size
    if model is None:
        model = bytearray(dev.pread(size, 0))
    unknown = bytearray(size)  # 1 where contents may be old data or zeros (after discard)
    for kind, off, n, seed in ops:
        n = min(n, size - off)
        if n <= 0:
            continue
        if kind in ("write", "fua"):
            data = bytes((seed + i * 7) & 0xFF for i in range(min(n, 251))) * (n // 251 + 1)
            data = data[:n]
            dev.pwrite(data, off, fua=(kind == "fua"))
            model[off : off + n] = data
            unknown[off : off + n] = bytes(n)
        elif kind == "read":
            got = dev.pread(n, off)
            _compare(got, model, unknown, off)
        elif kind in ("zero", "zero_unmap"):
            dev.write_zeroes(n, off, may_unmap=(kind == "zero_unmap"))
            model[off : off + n] = bytes(n)
            unknown[off : off + n] = bytes(n)
        elif kind == "discard":
            dev.discard(n, off)
            unknown[off : off + n] = b"\x01" * n
        elif kind == "flush":
            dev.flush()
    got = dev.pread(size, 0)
    _compare(got, model, unknown, 0)
    check_extents(dev, got)
    # Adopt what the device settled on for discarded bytes so callers can keep comparing.
    model[:] = got
    return model


def _compare(got: bytes, model: bytearray, unknown: bytearray, off: int) -> None:
    want = model[off : off + len(got)]
    if got == want:
        return
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        if g != w and not (unknown[off + i] and g == 0):
            raise AssertionError(f"byte {off + i}: device has {g}, model has {w}")


def check_extents(dev: BlockDevice, contents: bytes) -> None:
    pos = 0
    for ext in dev.extents(dev.size, 0):
        assert ext.offset == pos, f"extent gap/overlap at {pos}: {ext}"
        assert ext.length > 0
        if ext.flags & ExtentFlags.ZERO:
            assert not any(contents[ext.offset : ext.offset + ext.length]), (
                f"zero extent has data {ext}"
            )
        pos += ext.length
    assert pos == dev.size


DeviceFactory = Callable[[int], BlockDevice]
