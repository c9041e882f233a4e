"""The README's commands, as a new user types them: every `python -m harness ...` override composes, the
cheap dataset commands run verbatim from the project root with `../shared`, and the test command prints its
closing count."""
from __future__ import annotations

import re
import shlex
import subprocess
import sys

import pytest

from harness.paths import PROJECT_ROOT


def test_pytest_prints_its_closing_count_even_with_q():
    """The project's pytest options must leave the summary line (`N passed`) visible, also when a user adds
    `-q` as the README once did (pytest's `-qq` drops it)."""
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "tests/test_stats.py::test_intervals_are_seeded_and_deterministic"],
                          cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert re.search(r"^1 passed in [\d.]+s", proc.stdout.strip().splitlines()[-1]), proc.stdout
