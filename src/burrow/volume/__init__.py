"""Volumes: partition tables (MBR, GPT; later LVM, LUKS) over a ``BlockDevice``.

Belongs here: readers that turn a device into a list of partitions (each one opens as a
``SliceDevice``) and writers that create and change tables. May import ``burrow.block`` and
``burrow.errors``; never a filesystem or a front end.
"""
