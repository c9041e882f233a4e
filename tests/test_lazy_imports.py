"""Start-up guard (issue #20): the command-line entry imports none of the heavy libraries at import time.

`python -m harness` spends its first seconds importing; torch, diffusers (which pulls in torch._dynamo, peft
and transformers) and the metric networks are imported only by the stages that use them. These tests run a
fresh interpreter, so what another test imported does not hide a regression."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("torch", "diffusers", "transformers", "peft", "torch._dynamo", "lpips", "open_clip", "sklearn", "cv2")


def imported_after(statement: str) -> list[str]:
    code = (f"import sys; {statement}; import json; "
            f"print(json.dumps([m for m in {list(HEAVY)!r} if m in sys.modules]))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("statement", ["import harness", "import harness.cli", "import harness.paths"])
def test_entry_points_import_no_heavy_library(statement):
    assert imported_after(statement) == []


def test_the_check_sees_a_heavy_import():
    """The guard itself works: importing a module that needs torch is reported."""
    assert "torch" in imported_after("import harness.diffusion.timing")
