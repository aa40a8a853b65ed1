"""NBD front end: the asyncio server that exports ``BlockDevice`` objects over NBD.

Belongs here: the I/O pump around ``burrow.proto.nbd``, export configuration, TLS set-up and
the adapter that serves a user's plain Python class. May import ``burrow.block``,
``burrow.proto`` and ``burrow.errors``.
"""
