"""The notebooks run: executed with nbclient on records the test writes into an MLflow store of its own (the way
the flows write them), they show what was recorded; on an empty store they say so and what to run."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient

from tests.notebooks import records

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
CELL_TIMEOUT_S = 120  # a cold kernel importing mlflow and pandas on a busy 2-core box
RETENTION_CLASSES = {"optimization_plans", "performance_data", "implementation_logs", "rollback_records"}


@dataclass
class Recorded:
    data_dir: Path
    cycles: records.Written
    plan: records.WrittenPlan


@pytest.fixture(scope="module", autouse=True)
def jupyter_dirs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Kernel connection files and IPython's profile go to temporary folders, not the user's home."""
    root = tmp_path_factory.mktemp("jupyter")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("JUPYTER_RUNTIME_DIR", str(root / "runtime"))
        patch.setenv("IPYTHONDIR", str(root / "ipython"))
        yield


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory, tiny_onnx: Path) -> Iterator[Recorded]:
    """Two optimization cycles (a gate, rollbacks) and a capacity plan in a store nothing else writes to."""
    root = tmp_path_factory.mktemp("notebook-records")
    with records.isolated_store(root / "data") as data_dir:
        cycles = records.write_cycles(root / "artifacts")
        plan = records.write_capacity_plan(root / "capacity", tiny_onnx)
        yield Recorded(data_dir, cycles, plan)


class _Tables(HTMLParser):
    """The tables of pandas' HTML output, each as rows of cell texts (the header row first)."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def table_rows(html: str) -> list[dict[str, str]]:
    """The first table of a DataFrame's HTML as one dict per row, keyed by column (the index as "")."""
    parser = _Tables()
    parser.feed(html)
    header, *rows = parser.tables[0]
    return [dict(zip(header, row, strict=True)) for row in rows]


def execute(name: str, data_dir: Path, cwd: Path) -> nbformat.NotebookNode:
    """Run a committed notebook in a fresh kernel that sees only `data_dir`'s store; the file is left as it was."""
    path = NOTEBOOKS / name
    committed = path.read_bytes()
    notebook = nbformat.read(path, as_version=4)
    env = {**os.environ, "INFEROPS_DATA_DIR": str(data_dir)}
    for key in ("INFEROPS_MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_URI"):
        env.pop(key, None)
    NotebookClient(notebook, kernel_name="python3", timeout=CELL_TIMEOUT_S).execute(cwd=str(cwd), env=env)
    assert path.read_bytes() == committed, f"executing {name} changed the committed file"
    outputs = [o for c in notebook.cells for o in c.get("outputs", [])]
    assert not [o for o in outputs if o["output_type"] == "error"]
    warned = [o["text"] for o in outputs if o["output_type"] == "stream" and o["name"] == "stderr"]
    assert not warned, f"{name} printed warnings a reader would see: {warned}"
    return notebook


def cell_outputs(notebook: nbformat.NotebookNode, source: str) -> list[Any]:
    """The outputs of the one code cell whose source contains `source`."""
    (cell,) = [c for c in notebook.cells if c.cell_type == "code" and source in c.source]
    return list(cell.outputs)


def cell_table(notebook: nbformat.NotebookNode, source: str) -> list[dict[str, str]]:
    (html,) = [o["data"]["text/html"] for o in cell_outputs(notebook, source) if "data" in o]
    return table_rows(html)


def all_text(notebook: nbformat.NotebookNode) -> str:
    parts = []
    for cell in notebook.cells:
        for out in cell.get("outputs", []):
            parts.append(out.get("text", ""))
            data = out.get("data", {})
            parts += [data.get(m, "") for m in ("text/plain", "text/html", "text/markdown")]
    return "\n".join(parts)


def images(notebook: nbformat.NotebookNode) -> int:
    return sum(
        "image/png" in out.get("data", {}) for cell in notebook.cells for out in cell.get("outputs", [])
    )


def test_committed_notebooks_are_stored_without_outputs() -> None:
    names = sorted(p.name for p in NOTEBOOKS.glob("*.ipynb"))
    assert names == ["capacity_plan.ipynb", "optimization_cycles.ipynb"]
    for name in names:
        notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
        nbformat.validate(notebook)
        assert notebook.metadata.kernelspec.name == "python3"
        code = [c for c in notebook.cells if c.cell_type == "code"]
        assert all(not c.outputs and c.execution_count is None for c in code), f"{name}: strip its outputs"
        first = notebook.cells[0]
        assert first.cell_type == "markdown" and "INFEROPS_MLFLOW_TRACKING_URI" in first.source


def test_optimization_cycles_notebook_shows_what_the_cycles_recorded(
    recorded: Recorded, tmp_path: Path
) -> None:
    written = recorded.cycles
    notebook = execute("optimization_cycles.ipynb", recorded.data_dir, tmp_path)
    text = all_text(notebook)
    assert f"2 optimization cycle(s) of {written.model}, 1 phase gate(s) and 3 rollback record(s)" in text

    cycles = {row["champion"]: row for row in cell_table(notebook, "records.cycles")}
    assert set(cycles) == {"onnx-fp32", "unchanged (torch-fp32)"}
    promoted = cycles["onnx-fp32"]
    assert promoted["version"] == written.champion_version and promoted["baseline"] == "torch-fp32"
    assert (float(promoted["baseline items/s"]), float(promoted["champion items/s"])) == (100.0, 500.0)
    assert float(promoted["accuracy retention"]) == 1.0 and float(promoted["performance improvement"]) == 4.0
    assert float(promoted["ROI"]) > 0 > float(cycles["unchanged (torch-fp32)"]["ROI"])
    assert promoted["retention class"] == "optimization_plans" and promoted["kept"] == "permanent"

    candidates = {row["candidate"]: row for row in cell_table(notebook, "records.candidates")}
    assert set(candidates) == {"onnx-fp32", *written.rejected}
    assert candidates["onnx-fp32"]["verdict"] == "accepted"
    for name, reason in written.rejected.items():
        assert candidates[name]["verdict"] == "rejected" and candidates[name]["reason"] == reason
        assert candidates[name]["rollback"] == "recorded"

    (gate,) = cell_table(notebook, "records.gates")
    assert (gate["verdict"], gate["reason"]) == ("PASS", written.gate_reason)
    assert (gate["version"], gate["decided by"], gate["promoted"]) == (
        written.champion_version,
        "policy",
        "true",
    )
    assert gate["risk actions"] == "rollback" and gate["cycle"] == promoted["run"]

    rollbacks = cell_table(notebook, "records.rollbacks")
    (back,) = [r for r in rollbacks if r["kind"] == "registry rollback"]
    assert back["reason"] == written.rollback_reason and back["retention class"] == "rollback_records"
    assert (back["rolled back"], back["restored"]) == (
        f"v{written.champion_version}",
        f"v{written.baseline_version}",
    )
    assert {r["rolled back"] for r in rollbacks if r["kind"] == "candidate rejected"} == set(written.rejected)

    versions = {row["version"]: row for row in cell_table(notebook, "records.registry")}
    assert versions[written.baseline_version]["aliases"] == "champion"
    assert versions[written.champion_version]["rolled back"] == written.rollback_reason

    assert all(f"<td>{c}</td>" in text for c in RETENTION_CLASSES), "every record's retention class is shown"
    assert images(notebook) == 1, "the baseline-vs-champion figure"


def test_capacity_plan_notebook_shows_the_logged_plan(recorded: Recorded, tmp_path: Path) -> None:
    written = recorded.plan
    notebook = execute("capacity_plan.ipynb", recorded.data_dir, tmp_path)
    summary = {row[""]: row["latest plan"] for row in cell_table(notebook, "plan.summary")}
    assert summary["recommendation"] == written.recommendation and summary["strategy"] == written.strategy
    assert summary["run"] == written.run_id[:8] and summary["validation"] == "masked"
    (report,) = [o["data"]["text/markdown"] for o in cell_outputs(notebook, "plan.report")]
    assert report.startswith("# Capacity plan — on synthetic history")
    assert images(notebook) == 2, "history + forecast with its bands; demand vs each option's capacity"
    options = {row["option"]: row for row in cell_table(notebook, "plan.options()")}
    assert set(options) == set(written.options)
    recommended = [name for name, row in options.items() if row["recommended"] == "True"]
    assert recommended == [written.recommendation.split("x", 1)[1]]
    scenarios = cell_table(notebook, "plan.units_by_scenario()")
    assert {row["scenario"] for row in scenarios} == {"normal_load", "peak_load", "burst_load"}
    assert all(set(written.options) <= set(row) for row in scenarios)
    backtest = {row["forecaster"] for row in cell_table(notebook, "plan.backtest")}
    assert set(records.QUICK_FORECASTERS) <= backtest
    (plans,) = [cell_table(notebook, "read_plans()")]
    assert [p["recommendation"] for p in plans] == [written.recommendation]


@pytest.mark.parametrize("name", ["optimization_cycles.ipynb", "capacity_plan.ipynb"])
def test_notebooks_on_an_empty_store_say_what_to_run(name: str, tmp_path: Path) -> None:
    notebook = execute(name, tmp_path / "empty-data", tmp_path)
    text = all_text(notebook)
    assert "yet: `make run` records" in text and str(tmp_path / "empty-data") in text
    assert images(notebook) == 0
