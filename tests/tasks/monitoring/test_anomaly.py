"""The streaming anomaly detector on constructed series, NAB's scoring on hand-made windows, the NAB loader, and on
the real NAB AWS series the detector against the issue's reference IsolationForest."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from tasks.monitoring import anomaly as an
from tests.shared_data import shared_file

N = 4032  # two weeks of 5-minute points, as most NAB files


def noise(seed: int = 7, n: int = N) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.0, 1.0, n)


def test_spike_fires_one_alarm_at_the_spike() -> None:
    values = noise()
    values[2500] += 12.0
    alarms = an.detect(values)
    assert alarms[2500]
    assert alarms[2400:2600].sum() == 1  # the point itself, not its neighbours
    z_only = replace(
        an.DetectorConfig(), range_margin=1.0
    )  # the beyond-range rule off: only the z-score alarms
    assert np.flatnonzero(an.detect(values, z_only)[600:]).tolist() == [2500 - 600]


def test_level_shift_alarms_at_once_then_reminds_until_the_baseline_absorbs_it() -> None:
    config = an.DetectorConfig()
    values = noise()
    values[2500:] += 8.0
    fired = np.flatnonzero(an.detect(values, config))
    after = fired[fired >= 2500]
    assert after[0] == 2500
    # a reminder per cooldown while the two-day median still sits on the old level, then quiet: what follows
    # is the occasional new two-day high of plain noise (about 2.6 per 1,000 points with range_margin 0)
    assert np.all(np.diff(after[after < 2500 + config.window // 2]) == config.cooldown + 1)
    assert not np.any((after > 2500 + config.window // 2) & (after <= 2500 + config.window))
    assert len(after) <= 5


def test_slow_drift_pages_rarely_and_steep_drift_pages() -> None:
    t = np.arange(N)
    slow = noise() + 0.002 * t  # 1.2 sigma per two days: the baseline follows it
    steep = noise() + np.where(t > 2000, (t - 2000) * 0.05, 0.0)
    assert an.detect(slow)[600:].sum() / (N - 600) * 1000 < 5
    fired = np.flatnonzero(an.detect(steep))
    assert np.any((fired > 2000) & (fired < 2100))


def test_noisy_seasonal_series_without_anomaly_gives_few_alarms() -> None:
    t = np.arange(N)
    seasonal = 10 + 3 * np.sin(2 * np.pi * t / 288) + np.random.default_rng(3).normal(0, 0.5, N)
    per_1k = an.detect(seasonal)[600:].sum() / (N - 600) * 1000
    # What remains are new two-day highs or lows (range_margin 0); a margin of 10% of the range removes most.
    assert per_1k < 4
    assert (
        an.detect(seasonal, replace(an.DetectorConfig(), range_margin=0.1))[600:].sum() / (N - 600) * 1000 < 1
    )


def test_streaming_and_batch_forms_fire_the_same_alarms_gaps_included() -> None:
    config = an.DetectorConfig(window=100, warmup=10, cooldown=5)
    values = noise(n=800)
    values[[300, 301, 520]] += 9.0
    values[[50, 51, 400]] = np.nan
    detector = an.RobustZDetector(config)
    streamed = np.array([detector.update(float(v)) for v in values])
    assert np.array_equal(streamed, an.detect(values, config))
    assert streamed[300] and not streamed[301] and streamed[520]


def test_config_refuses_unusable_parameters() -> None:
    with pytest.raises(ValueError, match="warmup"):
        an.DetectorConfig(window=10, warmup=20)
    with pytest.raises(ValueError, match="divides by zero"):
        an.DetectorConfig(scale_floor=0.0)


def test_reference_isolation_forest_flags_the_spike() -> None:
    values = noise()
    values[2500] += 12.0
    alarms = an.isolation_forest_reference(values)
    assert alarms[2500]
    assert alarms.sum() == pytest.approx(0.01 * N, abs=2)


# ------------------------------------------------------------------------------------------------- NAB scoring

WINDOW = (500, 599)  # 100 points; a 1,000-point file has a probation of 150


def alarms_at(*points: int, n: int = 1000) -> np.ndarray:
    alarms = np.zeros(n, dtype=bool)
    alarms[list(points)] = True
    return alarms


def test_scaled_sigmoid_matches_nab() -> None:
    assert an.scaled_sigmoid(-1.0) == pytest.approx(0.98661, abs=1e-5)
    assert an.scaled_sigmoid(-0.5) == pytest.approx(0.84828, abs=1e-5)
    assert an.scaled_sigmoid(0.0) == 0.0
    assert an.scaled_sigmoid(3.0) == -1.0
    assert an.probation_length(1000) == 150 and an.probation_length(10_000) == 750


def test_detection_at_window_start_scores_one_and_at_its_end_almost_nothing() -> None:
    start = an.score_file("f", alarms_at(500), [WINDOW])
    assert start.raw == pytest.approx(1.0) and start.found == 1 and start.false_points == 0
    end = an.score_file("f", alarms_at(599), [WINDOW])
    expected = (2 / (1 + math.exp(-5 * 0.01)) - 1) / an.scaled_sigmoid(-1.0)  # position -(0 + 1) / 100
    assert end.raw == pytest.approx(expected)
    # only the earliest detection counts
    assert an.score_file("f", alarms_at(500, 550, 599), [WINDOW]).raw == pytest.approx(1.0)


def test_false_positives_miss_and_probation() -> None:
    assert an.score_file("f", alarms_at(200), [WINDOW]).raw == pytest.approx(
        -1.0 - 0.11
    )  # FP before: full cost
    assert an.score_file("f", alarms_at(100), [WINDOW]).raw == pytest.approx(-1.0)  # in probation: unscored
    far = an.score_file("f", alarms_at(500, 599 + 3 * 99), [WINDOW])
    assert far.raw == pytest.approx(1.0 - 0.11)  # three window widths after it: full cost
    near = an.score_file("f", alarms_at(500, 650), [WINDOW])
    assert near.raw == pytest.approx(1.0 + 0.11 * (2 / (1 + math.exp(5 * 51 / 99)) - 1))  # discounted
    assert near.false_points == 1 and near.false_events == 1 and near.alarm_events == 2


def test_normalised_score_is_zero_for_silence_and_hundred_for_perfect() -> None:
    windows = [(300, 349), (700, 799)]
    null = an.score_file("f", np.zeros(1000, dtype=bool), windows)
    perfect = an.score_file("f", alarms_at(300, 700), windows)
    assert an.CorpusScore([null]).nab_score == 0.0
    assert an.CorpusScore([perfect]).nab_score == pytest.approx(100.0)
    half = an.score_file("f", alarms_at(300), windows)  # one window found at its start, one missed
    assert an.CorpusScore([half]).nab_score == pytest.approx(50.0)
    assert an.CorpusScore([half]).recall == 0.5


def test_count_runs() -> None:
    assert an.count_runs(np.array([1, 1, 0, 1, 0, 0, 1, 1], dtype=bool)) == 3
    assert an.count_runs(np.zeros(0, dtype=bool)) == 0


# ------------------------------------------------------------------------------------------------------ loading


def test_load_nab_maps_windows_to_points_and_explains_what_is_missing(tmp_path: Path) -> None:
    with pytest.raises(an.AnomalyDataError, match="no NAB labels"):
        an.load_nab(tmp_path / "absent")
    (tmp_path / "aws").mkdir()
    stamps = [f"2014-02-14 00:{m:02d}:00" for m in range(0, 60, 5)]
    rows = "\n".join(f"{s},{i}" for i, s in enumerate(stamps))
    (tmp_path / "aws" / "a.csv").write_text(f"timestamp,value\n{rows}\n")
    labels = {"aws/a.csv": [["2014-02-14 00:10:00.000000", "2014-02-14 00:20:00.000000"]]}
    (tmp_path / "combined_windows.json").write_text(json.dumps(labels))
    (series,) = an.load_nab(tmp_path)
    assert series.name == "aws/a.csv" and series.windows == [(2, 4)] and series.values[3] == 3.0
    labels["aws/b.csv"] = []
    (tmp_path / "combined_windows.json").write_text(json.dumps(labels))
    with pytest.raises(an.AnomalyDataError, match="b.csv is absent"):
        an.load_nab(tmp_path)


def test_on_real_nab_the_detector_finds_as_many_windows_with_fewer_false_alarms() -> None:
    root = shared_file("nab", "combined_windows.json").parent
    corpus = an.load_nab(root)
    assert len(corpus) == 17 and sum(len(s.windows) for s in corpus) == 30
    reference = an.score_corpus(corpus, [an.isolation_forest_reference(s.values) for s in corpus])
    ours = an.score_corpus(corpus, [an.detect(s.values) for s in corpus])
    assert reference.found >= 26  # the figure is 27 of 30
    assert ours.recall >= reference.recall
    assert ours.per_1k("false_points") < reference.per_1k("false_points") / 2
    assert ours.nab_score > reference.nab_score
