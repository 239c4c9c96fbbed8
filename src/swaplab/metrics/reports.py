"""Result files of an evaluation: per-example CSV, markdown table and a comparison plot of the methods."""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

DIGITS = 4  # decimals in tables (the JSON keeps full precision)


def format_value(value: float) -> str:
    return "nan" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{DIGITS}f}"


def write_csv(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    """Rows with possibly different keys: the columns are their union, in first-seen order."""
    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(row))
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns))
        writer.writeheader()
        writer.writerows(rows)


def arrow(higher_is_better: bool | None) -> str:
    return {True: " ↑", False: " ↓"}.get(higher_is_better, "")


def markdown_table(results: Sequence[Mapping[str, Any]], columns: Sequence[str],
                   directions: Mapping[str, bool | None]) -> str:
    """One row per evaluated checkpoint (`name`, `model`, `metrics`), one column per metric, values with
    DIGITS decimals; the header marks whether higher (↑) or lower (↓) is better."""
    header = ["checkpoint", "model", *(f"{c}{arrow(directions.get(c))}" for c in columns)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for result in results:
        cells = [result["name"], result["model"], *(format_value(result["metrics"].get(c)) for c in columns)]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def networks_table(described: Mapping[str, Mapping[str, Any]]) -> str:
    """The network behind each metric (`SwapMetrics.describe()`): role, name, weights and their sha256 (first 12
    hex digits), one row per metric and role."""
    lines = ["| metric | role | network | weights | sha256 |", "|---|---|---|---|---|"]
    for metric, info in described.items():
        for expert in info["experts"].values():
            sha = (expert.get("sha256") or "")[:12]
            lines.append(f"| {metric} | {expert['role']} | {expert['name']} | {expert['weights']} | {sha} |")
    return "\n".join(lines) + "\n"


def comparison_plot(path: Path, results: Sequence[Mapping[str, Any]], columns: Sequence[str],
                    directions: Mapping[str, bool | None], title: str = "") -> None:
    """One bar chart per metric, one bar per checkpoint (matplotlib, Agg backend), saved as PNG."""
    import matplotlib  # matplotlib (slow to import): only for the comparison plot

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = max(len(columns), 1)
    cols = min(n, 4)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.8 * rows), squeeze=False)
    names = [r["name"] for r in results]
    colors = [plt.get_cmap("tab10")(i % 10) for i in range(len(names))]
    for ax, column in zip(axes.flat, columns, strict=False):
        values = [r["metrics"].get(column, float("nan")) for r in results]
        ax.bar(range(len(values)), values, color=colors)
        ax.set_title(f"{column}{arrow(directions.get(column))}", fontsize=9)
        ax.set_xticks(range(len(values)), [str(i + 1) for i in range(len(values))])
        ax.tick_params(labelsize=8)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    legend = [plt.Rectangle((0, 0), 1, 1, color=c) for c in colors]
    fig.legend(legend, [f"{i + 1}: {name}" for i, name in enumerate(names)], loc="lower center",
               ncol=min(len(names), 3), fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.06 + 0.03 * math.ceil(len(names) / 3), 1, 0.95 if title else 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
