"""Sans-IO protocol state machines: NBD, the Noise secure channel, the share RPC.

Belongs here: code that turns bytes into events and events into bytes, with time passed in
explicitly. Nothing here opens a socket, starts a thread or reads a clock, so every protocol
is testable byte for byte and usable from asyncio, trio or plain sockets. May import
``burrow.errors`` only (plus ``cryptography``/``hashlib`` for the channel).
"""
