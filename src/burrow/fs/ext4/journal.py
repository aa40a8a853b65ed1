"""jbd2 journal recovery into memory (``fs/jbd2/recovery.c``), so a read-only open sees what
the kernel would see after mounting, without writing a byte to the image.

Three passes over the log, as the kernel does:

1. SCAN: from ``s_start``/``s_sequence`` follow descriptor, revoke and commit blocks while the
   sequence numbers match and checksums hold; the first transaction without a valid commit
   block ends the log.
   A descriptor or revoke block with a bad checksum is tolerated only if the transaction's
   commit block is older than the previous one (a stale block from an earlier use of the
   log); otherwise the journal is corrupt, as ``need_check_commit_time`` decides in the kernel.
2. REVOKE: collect revoke records (block -> newest revoking transaction).
3. REPLAY: copy every logged block of every committed transaction to its home location in an
   overlay (``dict`` block -> bytes), unless a same-or-later transaction revoked it; escaped
   blocks get their magic number back. A logged block whose tag checksum fails makes the
   kernel fail the mount; here it raises ``CorruptImage`` (or is skipped, as the kernel skips
   it, with ``ignore_checksums``).

The overlay is a read-only :class:`JournalOverlay` device over the caller's device.
Fast-commit areas (``fast_commit``) are not replayed: a dirty journal with that feature is
refused with ``Unsupported("fast_commit")``.
"""

from __future__ import annotations

import bisect
from typing import TYPE_CHECKING

from burrow.block.device import BlockDevice
from burrow.errors import CorruptImage, Unsupported
from burrow.fs.ext4 import ondisk as od
from burrow.fs.ext4.csum import ext4_chksum

if TYPE_CHECKING:
    from burrow.fs.ext4.filesystem import Ext4Filesystem

__all__ = ["JournalOverlay", "replay"]

_MAGIC = od.JBD2_MAGIC_NUMBER.to_bytes(4, "big")
# the overlay lives in memory: refuse to hold more distinct blocks than this (4 GiB at 4 KiB;
# mke2fs makes journals of at most 1 GiB)
MAX_REPLAY_BLOCKS = 1 << 20


class JournalOverlay(BlockDevice):
    """``base`` with some whole blocks replaced by in-memory copies (read-only)."""

    def __init__(self, base: BlockDevice, block_size: int, blocks: dict[int, bytes]) -> None:
        self.base = base
        self.bs = block_size
        self.blocks = blocks
        self._keys = sorted(blocks)
        self._size = base.size
        self._block_size = base.block_size
        self._readonly = True

    def _preadinto(self, buf: memoryview, offset: int) -> None:
        bs = self.bs
        end = offset + len(buf)
        first, last = offset // bs, (end - 1) // bs
        i = bisect.bisect_left(self._keys, first)
        if i >= len(self._keys) or self._keys[i] > last:
            self.base.preadinto(buf, offset)
            return
        pos = offset
        while pos < end:
            blk = pos // bs
            stop = min(end, (blk + 1) * bs)
            data = self.blocks.get(blk)
            if data is None:
                # extend over following blocks that are not in the overlay
                j = bisect.bisect_left(self._keys, blk)
                nxt = self._keys[j] * bs if j < len(self._keys) else end
                stop = min(end, max(stop, nxt))
                self.base.preadinto(buf[pos - offset : stop - offset], pos)
            else:
                within = pos - blk * bs
                buf[pos - offset : stop - offset] = data[within : within + stop - pos]
            pos = stop


class _Journal:
    def __init__(self, fs: Ext4Filesystem) -> None:
        self.fs = fs
        ino = fs.sb.s_journal_inum
        node = fs.inode(ino)
        self.node = node
        bs = fs.block_size
        raw0 = self.jblock(0)
        jsb = od.JOURNAL_SUPERBLOCK.unpack(raw0)
        self.where = self.phys(0) * bs
        if jsb.h_magic != od.JBD2_MAGIC_NUMBER or jsb.h_blocktype not in (
            od.JBD2_SUPERBLOCK_V1,
            od.JBD2_SUPERBLOCK_V2,
        ):
            raise CorruptImage("journal_superblock_t", self.where, "bad magic or block type")
        if jsb.s_blocksize != bs:
            raise CorruptImage("journal_superblock_t", self.where + 12, "block size mismatch")
        v2 = jsb.h_blocktype == od.JBD2_SUPERBLOCK_V2
        self.incompat = jsb.s_feature_incompat if v2 else 0
        self.compat = jsb.s_feature_compat if v2 else 0
        if self.incompat & ~od.JBD2_KNOWN_INCOMPAT:
            raise Unsupported("jbd2 incompat", f"features {self.incompat:#x}")
        if self.incompat & od.JBD2_FEATURE_INCOMPAT_FAST_COMMIT:
            raise Unsupported("fast_commit", "replaying a fast-commit journal")
        self.csum = bool(
            self.incompat & (od.JBD2_FEATURE_INCOMPAT_CSUM_V2 | od.JBD2_FEATURE_INCOMPAT_CSUM_V3)
        )
        if self.csum:
            if jsb.s_checksum_type != od.JBD2_CRC32C_CHKSUM:
                raise Unsupported("jbd2 checksum type", str(jsb.s_checksum_type))
            zeroed = raw0[:0xFC] + b"\0\0\0\0" + raw0[0x100:1024]
            if ext4_chksum(0xFFFFFFFF, zeroed) != jsb.s_checksum:
                fs._csum_error("journal_superblock_t", self.where + 0xFC)
            self.seed = ext4_chksum(0xFFFFFFFF, jsb.s_uuid)
        else:
            self.seed = 0
        self.is64 = bool(self.incompat & od.JBD2_FEATURE_INCOMPAT_64BIT)
        self.v3 = bool(self.incompat & od.JBD2_FEATURE_INCOMPAT_CSUM_V3)
        self.tag_bytes = od.journal_tag_bytes(self.incompat)
        maxlen = jsb.s_maxlen
        if maxlen * bs > node.size or maxlen < 2:
            raise CorruptImage("journal_superblock_t", self.where + 16, "s_maxlen too big")
        if jsb.s_first == 0 or jsb.s_first >= maxlen:
            raise CorruptImage("journal_superblock_t", self.where + 20, "bad s_first")
        if jsb.s_start and (jsb.s_start < jsb.s_first or jsb.s_start >= maxlen):
            raise CorruptImage("journal_superblock_t", self.where + 28, "bad s_start")
        self.first = jsb.s_first
        self.last = maxlen
        self.start = jsb.s_start
        self.sequence: int = jsb.s_sequence
        self.transactions: int = 0

    def phys(self, jblk: int) -> int:
        p = self.fs._map_block(self.node, jblk)
        if p < 0:
            raise CorruptImage("journal", None, f"journal block {jblk} is not mapped")
        return p

    def jblock(self, jblk: int) -> bytes:
        p = self.phys(jblk)
        self.fs._check_block(p, "journal", None)
        bs = self.fs.block_size
        return self.fs.dev.pread(bs, p * bs)

    def wrap(self, n: int) -> int:
        if n >= self.last:
            n -= self.last - self.first
        return n

    def block_csum_ok(self, data: bytes) -> bool:
        """Descriptor/revoke block tail checksum (jbd2_descriptor_block_csum_verify)."""
        if not self.csum:
            return True
        bs = len(data)
        calc = ext4_chksum(self.seed, data[: bs - 4] + b"\0\0\0\0")
        return calc == int.from_bytes(data[bs - 4 :], "big")

    def commit_csum_ok(self, data: bytes) -> bool:
        if not self.csum:
            return True
        calc = ext4_chksum(self.seed, data[:16] + b"\0\0\0\0" + data[20:])
        return calc == int.from_bytes(data[16:20], "big")

    def tags(self, data: bytes, where: int) -> list[tuple[int, int, int]]:
        """(target block, flags, checksum) of each tag in a descriptor block."""
        bs = len(data)
        end = bs - (4 if self.csum else 0)
        pos = od.JOURNAL_HEADER.size
        out: list[tuple[int, int, int]] = []
        tb = self.tag_bytes
        while pos + tb <= end:
            if self.v3:
                blocknr, flags, hi, csum = od.JOURNAL_BLOCK_TAG3.struct.unpack_from(data, pos)
            else:
                blocknr, csum, flags = (
                    int.from_bytes(data[pos : pos + 4], "big"),
                    int.from_bytes(data[pos + 4 : pos + 6], "big"),
                    int.from_bytes(data[pos + 6 : pos + 8], "big"),
                )
                hi = int.from_bytes(data[pos + 8 : pos + 12], "big") if self.is64 else 0
            if not self.is64:
                hi = 0
            out.append((blocknr | (hi << 32), flags, csum))
            pos += tb
            if not flags & od.JBD2_FLAG_SAME_UUID:
                pos += 16
            if flags & od.JBD2_FLAG_LAST_TAG:
                break
            if len(out) > bs:
                raise CorruptImage("journal_block_tag_t", where, "too many tags")
        return out

    def data_csum_ok(self, sequence: int, data: bytes, csum: int) -> bool:
        if not self.csum:
            return True
        c = ext4_chksum(self.seed, sequence.to_bytes(4, "big"))
        c = ext4_chksum(c, data)
        return (c if self.v3 else c & 0xFFFF) == csum

    def run(self) -> dict[int, bytes]:
        """The three passes; returns the overlay blocks."""
        if self.start == 0:
            return {}
        end_seq = self._pass(0, None, {}, {})
        revoked: dict[int, int] = {}
        self._pass(1, end_seq, revoked, {})
        overlay: dict[int, bytes] = {}
        self._pass(2, end_seq, revoked, overlay)
        self.transactions = end_seq - self.sequence
        return overlay

    def _pass(
        self, which: int, end_seq: int | None, revoked: dict[int, int], overlay: dict[int, bytes]
    ) -> int:
        """One pass (0 SCAN, 1 REVOKE, 2 REPLAY) of ``do_one_pass``; returns the sequence
        number after the last complete transaction."""
        seq = self.sequence
        blk = self.start
        bs = self.fs.block_size
        budget = self.last  # a pass never reads more blocks than the log holds
        fs_blocks = self.fs.blocks_count
        strict = not self.fs.ignore_checksums
        # SCAN: a descriptor or revoke block whose checksum fails may be a stale block from
        # lazy journal init; the commit time decides (as the kernel's need_check_commit_time)
        need_check = False
        last_commit_time = 0
        while True:
            if end_seq is not None and seq >= end_seq:
                break
            budget -= 1
            if budget < 0:
                break
            data = self.jblock(blk)
            where = self.phys(blk) * bs
            if data[:4] != _MAGIC:
                break
            _magic, btype, bseq = od.JOURNAL_HEADER.struct.unpack_from(data, 0)
            if bseq != seq:
                break
            blk = self.wrap(blk + 1)
            if btype == od.JBD2_DESCRIPTOR_BLOCK:
                csum_ok = self.block_csum_ok(data)
                if not csum_ok:
                    if which != 0:
                        raise CorruptImage("journal descriptor", where, "checksum mismatch")
                    need_check = True
                tags = self.tags(data, where)
                budget -= len(tags)
                if which == 2:
                    for target, flags, csum in tags:
                        content = self.jblock(blk)
                        data_where = self.phys(blk) * bs
                        blk = self.wrap(blk + 1)
                        if target >= fs_blocks:
                            raise CorruptImage("journal_block_tag_t", where, "target past fs")
                        if revoked.get(target, -1) >= seq:
                            continue
                        if not self.data_csum_ok(seq, content, csum):
                            # the kernel skips the block and then fails the mount
                            if strict:
                                raise CorruptImage(
                                    "journal data block", data_where, "checksum mismatch"
                                )
                            continue
                        if flags & od.JBD2_FLAG_ESCAPE:
                            content = _MAGIC + content[4:]
                        overlay[target] = content
                        if len(overlay) > MAX_REPLAY_BLOCKS:
                            raise Unsupported(
                                "journal replay", f"more than {MAX_REPLAY_BLOCKS} blocks in memory"
                            )
                else:
                    for _ in tags:
                        blk = self.wrap(blk + 1)
            elif btype == od.JBD2_COMMIT_BLOCK:
                if which == 0:
                    commit_time = int.from_bytes(data[0x30:0x38], "big")
                    if need_check:
                        if commit_time >= last_commit_time and strict:
                            raise CorruptImage(
                                "journal", where, f"checksum mismatch in transaction {seq}"
                            )
                        break  # a block from an older journal: the log ends here
                    if not self.commit_csum_ok(data):
                        break  # the transaction never committed
                    last_commit_time = commit_time
                seq += 1
            elif btype == od.JBD2_REVOKE_BLOCK:
                if not self.block_csum_ok(data):
                    if which != 0:
                        raise CorruptImage("journal revoke", where, "checksum mismatch")
                    need_check = True
                if which == 1:
                    self._revokes(data, seq, revoked, where)
            else:
                break
        return seq

    def _revokes(self, data: bytes, seq: int, revoked: dict[int, int], where: int) -> None:
        count = int.from_bytes(data[12:16], "big")
        limit = len(data) - (4 if self.csum else 0)
        if count < 16 or count > limit:
            raise CorruptImage("jbd2_journal_revoke_header_t", where + 12, "bad r_count")
        size = 8 if self.is64 else 4
        for off in range(16, count - size + 1, size):
            target = int.from_bytes(data[off : off + size], "big")
            if revoked.get(target, -1) < seq:
                revoked[target] = seq


def replay(fs: Ext4Filesystem) -> tuple[JournalOverlay, int]:
    """Replay ``fs``'s internal journal; returns the overlay device and the number of
    transactions replayed."""
    j = _Journal(fs)
    blocks = j.run()
    return JournalOverlay(fs.dev, fs.block_size, blocks), j.transactions
