"""The package's layering (README, "Layout"): the import-linter contracts of pyproject.toml hold, and they fail on
an upward import or an import cycle planted in a copy of the package."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "src" / "swaplab"

LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")  # import-linter's command, in the test environment


def lint(root: Path) -> subprocess.CompletedProcess:
    """Run the contracts of `root`/pyproject.toml against the swaplab package under `root`/src."""
    env = {**os.environ, "PYTHONPATH": str(root / "src")}
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=root, env=env, capture_output=True, text=True,
                          timeout=120)


def test_contracts_hold():
    done = lint(ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 kept, 0 broken" in done.stdout


@pytest.mark.parametrize(("module", "planted", "broken"), [
    # the leaf imports from a layer above it
    ("faces/templates.py", "import swaplab.models.base  # noqa\n", "swaplab layers BROKEN"),
    # a function-local import upwards counts as much as a module-level one
    ("experts/registry.py", "def _sneaky():\n    import swaplab.data.store  # noqa\n", "swaplab layers BROKEN"),
    # two sibling modules importing each other (registry <- detection already holds)
    ("experts/registry.py", "import swaplab.experts.detection  # noqa\n", "no import cycles"),
])
def test_contracts_catch_planted_violations(tmp_path, module, planted, broken):
    shutil.copytree(PACKAGE, tmp_path / "src" / "swaplab", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    target = tmp_path / "src" / "swaplab" / module
    target.write_text(target.read_text() + "\n" + planted)
    done = lint(tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    assert broken in done.stdout


def test_local_imports_of_the_package_say_why():
    """Function-local imports dodge nothing here: one of swaplab's own modules may be imported inside a function
    only for a stated reason (a comment on the line or the line above), e.g. a heavy import avoided."""
    unexplained = []
    for path in PACKAGE.rglob("*.py"):
        lines = path.read_text().splitlines()
        for node in ast.walk(ast.parse("\n".join(lines))):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for sub in ast.walk(node):
                module = sub.module if isinstance(sub, ast.ImportFrom) else \
                    sub.names[0].name if isinstance(sub, ast.Import) else None
                if module and module.startswith("swaplab"):
                    here, above = lines[sub.lineno - 1], lines[sub.lineno - 2]
                    if "#" not in here and not above.strip().startswith("#"):
                        unexplained.append(f"{path.relative_to(ROOT)}:{sub.lineno}: {here.strip()}")
    assert not unexplained, "function-local imports without a reason:\n" + "\n".join(unexplained)
