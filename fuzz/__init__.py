"""Fuzzing harnesses for every parser burrow exposes to untrusted input.

Each ``fuzz/fuzz_<name>.py`` module defines:

* ``seeds(workdir: Path) -> list[bytes]`` — inputs made by the real tools (mkfs, qemu-img,
  sgdisk...) or real protocol transcripts, used as the starting corpus;
* ``one_input(data: bytes) -> None`` — parse ``data`` through burrow's public API as deeply
  as possible. It may raise only ``BurrowError`` subclasses.

``python -m fuzz.run NAME [atheris/libFuzzer flags]`` runs one harness coverage-guided with
atheris; ``tests/test_fuzz_short.py`` runs every harness for a few hundred hypothesis-chosen
mutations of its seeds in the normal test suite.
"""
