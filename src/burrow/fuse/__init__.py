"""FUSE front end (pyfuse3 + trio): mount a burrow filesystem or expose a device as a file.

Belongs here: translating FUSE requests to ``burrow.fs.vfs`` calls and ``BurrowError`` to
errno, lookup counting and forget, daemonisation. May import ``burrow.fs``, ``burrow.block``
and ``burrow.errors``.
"""
