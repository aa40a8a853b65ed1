"""The single place burrow's version lives (read by pyproject and ``burrow --version``)."""

__version__ = "0.1.0"
