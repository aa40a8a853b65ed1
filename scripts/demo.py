"""``make demo``: build a small disk image entirely in userspace and show what is in it.

Shows only what burrow really does today; it grows as features land (see README).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from burrow import block
from burrow.block.device import ExtentFlags


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="burrow-demo-") as tmp:
        image = Path(tmp) / "demo.img"
        print(f"$ burrow: creating a sparse 64 MiB raw image at {image}")
        with block.create(image, 64 << 20, format="raw") as dev:
            dev.pwrite(b'NAME="Burrow Demo"\nID=burrow\n', 1 << 20)
            dev.write_zeroes(1 << 20, 8 << 20, may_unmap=True)
        with block.open(image) as dev:
            print(f"size: {dev.size} bytes, read-only: {dev.readonly}")
            print("allocation map (extents):")
            for ext in dev.extents(dev.size, 0):
                kind = "hole" if ext.flags & ExtentFlags.HOLE else "data"
                print(f"  {ext.offset:>10} +{ext.length:<10} {kind}")
            print("bytes at 1 MiB:", dev.pread(29, 1 << 20))
        subprocess.run([sys.executable, "-m", "burrow", "version"], check=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
