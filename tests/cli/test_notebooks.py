"""Notebooks run top to bottom (their code cells executed in order, as Jupyter would)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import ROOT

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def check_train_resume_swap(ns: dict) -> None:
    assert ns["grid"].shape == (4 * 32, 3 * 32, 3) and ns["grid"].std() > 5


def check_quickstart(ns: dict) -> None:
    assert ns["photo_swap"].shape == ns["photo"].shape and ns["out"].extras["faces"].tolist() == [1]
    assert (ns["photo_swap"] != ns["photo"]).any() and "id_retrieval" in ns["table"]
    assert np.isfinite(ns["summary"]["checkpoints"][0]["metrics"]["id_retrieval"])


def check_compare_methods(ns: dict) -> None:
    assert [c["model"] for c in ns["summary"]["checkpoints"]] == ["FaceShifter", "HifiFace"]
    assert len(ns["rows"]) == 40 and ns["figure"].axes[0].get_legend() is not None


CHECKS = {"01_train_resume_swap.ipynb": check_train_resume_swap, "02_quickstart.ipynb": check_quickstart,
          "03_compare_methods.ipynb": check_compare_methods}


def test_every_notebook_is_checked():
    assert sorted(CHECKS) == [p.name for p in NOTEBOOKS]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(path, monkeypatch):
    monkeypatch.chdir(ROOT / "notebooks")
    monkeypatch.delenv("RESULTS_DIR", raising=False)
    namespace: dict = {}
    for cell in json.loads(path.read_text())["cells"]:
        if cell["cell_type"] == "code":
            exec(compile("".join(cell["source"]), f"{path.name}", "exec"), namespace)
    CHECKS[path.name](namespace)
