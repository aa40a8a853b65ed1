"""Secure network shares: the ``burrow serve`` server and the remote-filesystem client.

Belongs here: the asyncio server and client pumps around ``burrow.proto`` (secure channel and
share RPC), key and peers-file handling, the privilege-separated export workers. The client
presents the ordinary ``burrow.fs.vfs`` interface. May import ``burrow.proto``, ``burrow.fs``
and ``burrow.errors``.
"""
