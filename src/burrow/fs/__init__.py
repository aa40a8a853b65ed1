"""Filesystems: the inode-based interface (``vfs``), the path layer (``paths``) and drivers.

Belongs here: ``vfs.py`` (the interface every driver implements, modelled on the kernel VFS
and pyfuse3), ``paths.py`` (open/walk/stat/read_bytes/copy helpers written once on top of it),
and one subpackage per driver (``ext4/``, ``fat/``, ``hostdir``...). Drivers read and write
through a ``BlockDevice`` only. May import ``burrow.block`` and ``burrow.errors``; never
``burrow.volume`` (the caller picks the partition) or a front end.
"""
