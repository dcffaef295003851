"""Reading the records back: cycles, candidates, gates, rollbacks, the registry and capacity plans, from records
written the way the flows write them into a store of this module's own (and from an empty one)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from matplotlib.figure import Figure
from mlflow import MlflowClient

from tasks.records import browse, names
from tasks.records.store import configure
from tests.notebooks import records


@pytest.fixture(scope="module")
def written(
    tmp_path_factory: pytest.TempPathFactory, tiny_onnx: Path
) -> Iterator[tuple[records.Written, records.WrittenPlan]]:
    root = tmp_path_factory.mktemp("browse-records")
    with records.isolated_store(root / "data"):
        yield (
            records.write_cycles(root / "artifacts"),
            records.write_capacity_plan(root / "capacity", tiny_onnx),
        )


@pytest.fixture
def empty_store(tmp_path: Path) -> Iterator[Path]:
    with records.isolated_store(tmp_path / "empty") as data_dir:
        yield data_dir


def test_cycles_pair_baseline_and_champion_with_its_registered_version(written) -> None:
    cycles, _ = written
    read = browse.read_cycles()
    assert list(read.cycles.columns) == browse.CYCLE_COLUMNS
    rows = read.cycles.set_index("champion")
    promoted, unchanged = rows.loc["onnx-fp32"], rows.loc["unchanged (torch-fp32)"]
    assert promoted["version"] == cycles.champion_version and unchanged["version"] == ""
    assert (promoted["baseline"], promoted["baseline items/s"], promoted["champion items/s"]) == (
        "torch-fp32",
        100.0,
        500.0,
    )
    assert promoted["accuracy retention"] == 1.0 and promoted["performance improvement"] == 4.0
    assert promoted["candidates measured"] == 2 and pd.isna(unchanged["champion items/s"])
    assert promoted["ROI"] > 0 and unchanged["ROI"] == -1.0  # nothing saved, the investment spent
    assert set(read.cycles["retention class"]) == {names.OPTIMIZATION_PLANS}
    assert set(read.cycles["kept"]) == {"permanent"}
    assert read.cycles["run"].tolist() == [r[: browse.SHORT_ID] for r in reversed(cycles.cycle_run_ids)]
    assert read.headline().startswith("2 optimization cycle(s) of digits-cnn, 1 phase gate(s) and 3 rollback")


def test_candidates_gates_rollbacks_and_registry(written) -> None:
    cycles, _ = written
    read = browse.read_cycles()
    candidates = read.candidates.set_index("candidate")
    assert set(candidates.index) == {*cycles.accepted, *cycles.rejected}
    for name, reason in cycles.rejected.items():
        assert candidates.loc[name, "reason"] == reason and candidates.loc[name, "rollback"] == "recorded"
    assert candidates.loc["onnx-fp32", "cycle"] == cycles.cycle_run_ids[0][: browse.SHORT_ID]
    assert set(candidates["kept"]) == {"730 days"}

    (gate,) = read.gates.to_dict("records")
    assert (gate["verdict"], gate["reason"], gate["decided by"]) == ("PASS", cycles.gate_reason, "policy")
    assert (gate["version"], gate["promoted"], gate["risk actions"]) == (
        cycles.champion_version,
        "true",
        "rollback",
    )
    assert gate["cycle"] == cycles.cycle_run_ids[0][: browse.SHORT_ID]
    assert gate["retention class"] == names.IMPLEMENTATION_LOGS and 0.95 < gate["weighted score"] < 1

    by_kind = read.rollbacks.groupby("kind")
    registry_rollback = by_kind.get_group("registry rollback").iloc[0]
    assert registry_rollback["reason"] == cycles.rollback_reason
    assert (registry_rollback["rolled back"], registry_rollback["restored"]) == (
        f"v{cycles.champion_version}",
        f"v{cycles.baseline_version}",
    )
    assert registry_rollback["retention class"] == names.ROLLBACK_RECORDS
    rejected = by_kind.get_group("candidate rejected").set_index("rolled back")
    assert set(rejected.index) == set(cycles.rejected)
    assert set(rejected["restored"]) == {f"torch-fp32 (v{cycles.baseline_version})"}

    versions = read.registry.set_index("version")
    assert versions.loc[cycles.baseline_version, "aliases"] == "champion"
    assert versions.loc[cycles.champion_version, "rolled back"] == cycles.rollback_reason
    assert versions.loc[cycles.champion_version, "variant"] == "onnx-fp32"


def test_champion_version_is_the_first_registered_since_the_cycle(written) -> None:
    cycles, _ = written
    client = MlflowClient(configure())
    version = client.get_model_version(cycles.model, cycles.champion_version)
    sha256 = version.tags["sha256"]
    found = browse.champion_version(client, cycles.model, sha256, 0)
    assert found is not None and (found.version, found.variant) == (cycles.champion_version, "onnx-fp32")
    assert browse.champion_version(client, cycles.model, sha256, version.creation_timestamp + 1) is None
    assert browse.champion_version(client, cycles.model, None, 0) is None


def test_cycle_figure_plots_baseline_champion_and_candidates(written) -> None:
    figure = browse.plot_cycles(browse.read_cycles())
    assert isinstance(figure, Figure)
    bars, scatter = figure.axes
    assert len(bars.patches) == 4  # baseline and champion per cycle (NaN where the champion is unchanged)
    assert {t.get_text() for t in scatter.texts} == {"onnx-fp32", "onnx-int8-dynamic", "onnx-int8-static"}


def test_capacity_plan_is_read_back_from_its_artifacts(written) -> None:
    _, plan = written
    read = browse.read_plan()
    assert read is not None
    assert read.summary["recommendation"] == plan.recommendation and read.summary["strategy"] == plan.strategy
    assert read.report.startswith("# Capacity plan — on synthetic history")
    assert set(read.figures) == set(browse.PLAN_FIGURES)
    assert all(png.startswith(b"\x89PNG") for png in read.figures.values())
    options = read.options()
    assert set(options["option"]) == set(plan.options)
    assert options.loc[options["recommended"], "option"].tolist() == [plan.recommendation.split("x", 1)[1]]
    assert options["monthly_cost"].is_monotonic_increasing
    units = read.units_by_scenario()
    assert set(units["scenario"]) == {"normal_load", "peak_load", "burst_load"} and len(units) == 9
    assert set(records.QUICK_FORECASTERS) <= set(read.backtest["forecaster"])
    assert browse.read_plan(model="no-such-model") is None
    assert browse.read_plans()["recommendation"].tolist() == [plan.recommendation]


def test_an_empty_store_reads_as_empty_tables_and_says_what_to_run(
    empty_store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    read = browse.read_cycles()
    for table, columns in (
        (read.cycles, browse.CYCLE_COLUMNS),
        (read.candidates, browse.CANDIDATE_COLUMNS),
        (read.gates, browse.GATE_COLUMNS),
        (read.rollbacks, browse.ROLLBACK_COLUMNS),
        (read.registry, browse.REGISTRY_COLUMNS),
    ):
        assert table.empty and list(table.columns) == columns
    assert read.headline() == browse.no_data("optimization cycles")
    assert "`make run`" in read.headline() and str(empty_store) in read.headline()
    assert browse.plot_cycles(read) is None
    assert browse.read_plan() is None and browse.read_plans().empty
    assert browse.show(read.gates, "phase-gate decisions") is None
    assert capsys.readouterr().out.startswith("No phase-gate decisions in sqlite:")
    table = pd.DataFrame({"a": [1]})
    assert browse.show(table, "anything") is table


def test_retention_kept_reads_the_policy() -> None:
    assert browse.retention_kept(names.OPTIMIZATION_PLANS) == "permanent"
    assert browse.retention_kept(names.ROLLBACK_RECORDS) == "365 days"
    assert browse.retention_kept("") == "" and browse.retention_kept("no-such-class") == "unknown"
