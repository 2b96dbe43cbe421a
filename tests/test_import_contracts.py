"""The folders import one another only downwards (cli > bench > eval > server > graphs > agent >
tools > retrievers > prompts), no package has an import cycle, and nodes do not import each
other: the import-linter contracts in pyproject.toml, checked here as `make lint` checks them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO

LINTER = Path(sys.executable).with_name("lint-imports")


def test_import_contracts_are_kept() -> None:
    result = subprocess.run(
        [str(LINTER), "--no-cache"], cwd=REPO, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout
