import os
import sys
from pathlib import Path

import pytest
import torch

from swaplab.tasks.compose import clear_hydra_state

TESTS = Path(__file__).parent
# helpers.py, and the test modules whose tiny configs and fixtures other test files reuse, import by name from any
# folder (tests/unit/<package>, tests/integration, tests/cli)
for folder in sorted({TESTS, *(p.parent for p in TESTS.rglob("test_*.py"))}, reverse=True):
    sys.path.insert(0, str(folder))
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")


@pytest.fixture(autouse=True)
def _deterministic_torch():
    torch.manual_seed(0)
    yield


@pytest.fixture(autouse=True)
def _clean_hydra_state():
    """A test that composes a config leaves no global Hydra instance or run config behind for the next one."""
    yield
    clear_hydra_state()


@pytest.fixture
def single_thread():
    """Many small ops: one torch thread avoids OpenMP oversubscription stalls on busy 2-core CI machines
    (test files opt in with `pytestmark = pytest.mark.usefixtures("single_thread")`)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
