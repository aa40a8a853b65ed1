"""One module per ``burrow`` subcommand.

Each module defines ``configure(parser)`` (adds its arguments) and ``run(args) -> int``.
Module level imports must stay light: the standard library and ``burrow.errors`` only.
"""
