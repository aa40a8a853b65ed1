"""Every registered command exists, imports lazily and answers ``--help``."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

from burrow.cli.registry import COMMANDS


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_command_module_has_configure_and_run(name: str) -> None:
    module = importlib.import_module(COMMANDS[name].module)
    assert callable(module.configure) and callable(module.run)


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_command_help(name: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "burrow", name, "--help"], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    assert f"burrow {name}" in proc.stdout
