"""benchmarks/table.py: the README's benchmark tables are what the committed --json results give."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import table  # noqa: E402

RESULTS = sorted((ROOT / "benchmarks" / "results").glob("*.json"))


def test_the_readme_holds_the_tables_of_the_committed_results() -> None:
    assert len(RESULTS) >= 3, "the README's ranges come from at least three full runs"
    runs = [json.loads(p.read_text()) for p in RESULTS]
    expected = table.tables(runs, [p.stem for p in RESULTS])
    readme = (ROOT / "README.md").read_text()
    assert table.replaced(readme, expected) == readme, (
        "README.md's benchmark tables differ from benchmarks/results/: run "
        "python benchmarks/table.py --write README.md benchmarks/results/*.json")


def test_ranges_are_taken_within_each_run() -> None:
    runs = [{"per_row.common": 100.0, "per_row.ceiling": 1000.0, "per_row.mailgem_pandas": 600.0},
            {"per_row.common": 200.0, "per_row.ceiling": 1000.0, "per_row.mailgem_pandas": 500.0}]
    block = table.tables(runs, ["a", "b"])
    row = next(line for line in block.splitlines() if line.startswith("| mailgem per_row, pandas"))
    assert "| 500–600 | 2.50–6.00x | 0.50–0.60x |" in row
    assert "| not measured |" in block  # no CPU figures in these runs


def test_a_readme_without_the_markers_is_refused() -> None:
    with pytest.raises(ValueError, match="benchmark tables"):
        table.replaced("# no tables here\n", "x\n")
