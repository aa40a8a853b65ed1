"""The ``burrow`` command line: a thin front end over the library.

Belongs here: argument parsing, output formatting (text and ``--json``), turning
``BurrowError`` into one-line messages and exit codes. Nothing here knows an on-disk format.

Start-up cost matters (``burrow cat`` should feel instant), so ``main`` imports only the
registry; each command lives in its own module under ``commands/`` and is imported only when
that command runs. Command modules import heavy things (drivers, ``cryptography``, ``rich``)
inside their ``run`` function, never at module level.
"""
