"""The tree is clean under the lint of .pre-commit-config.yaml (ruff: flake8's E/F/W
and isort's order, ruff.toml; codespell, .codespellrc): .ci/run's fast stage runs it."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from testkit import ROOT


def _tool(name):
    found = shutil.which(name) or str(Path(sys.executable).parent / name)
    if not Path(found).exists():
        pytest.fail(f'{name} is not installed: bash tools/install.sh --tests installs it')
    return found


@pytest.mark.parametrize('command', [['ruff', 'check', '--output-format', 'concise', '.'],
                                     ['codespell']], ids=lambda c: c[0])
def test_tree_is_lint_clean(command):
    proc = subprocess.run([_tool(command[0]), *command[1:]], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
