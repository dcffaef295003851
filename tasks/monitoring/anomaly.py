"""Anomaly detection on streaming metrics (AIOps L2): a causal robust z-score detector with alarm debouncing, the
reference IsolationForest, the Numenta Anomaly Benchmark (NAB) loader and NAB's scoring, all as plain functions.

Alarms are boolean arrays, one entry per point; windows are (first, last) point indices, both inclusive.
"""

from __future__ import annotations

import json
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pandas as pd
from sklearn.ensemble import IsolationForest

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
Window = tuple[int, int]

# A normal distribution's interquartile range is 1.349 standard deviations: IQR / 1.349 estimates sigma robustly.
IQR_TO_SIGMA = 1.349


class AnomalyDataError(FileNotFoundError):
    """A NAB folder or file that is absent or cannot be read as `timestamp,value` series with labelled windows."""


# --------------------------------------------------------------------------------------------------- detector


@dataclass(frozen=True)
class DetectorConfig:
    """The streaming detector's parameters; the defaults are the ones benchmarks/anomaly.py reports on NAB."""

    window: int = 576  # trailing points of the baseline: two days of 5-minute points, so two daily cycles
    warmup: int = 24  # points the baseline needs before any alarm (2 h of 5-minute points)
    threshold: float = 6.0  # robust z-score (|value - median| / sigma) above which a point is abnormal
    range_floor: float = 0.02  # sigma is at least this fraction of the baseline's range (max - min) ...
    scale_floor: float = 1e-9  # ... and at least this, so a flat baseline does not alarm on rounding noise
    range_margin: float = (
        0.0  # a point beyond the baseline's max or min by this fraction of its range is abnormal
    )
    min_run: int = 1  # consecutive abnormal points before an alarm fires (1 = the first abnormal point)
    cooldown: int = 96  # points after an alarm during which no new alarm fires (8 h of 5-minute points)

    def __post_init__(self) -> None:
        if self.window < 2 or not 2 <= self.warmup <= self.window:
            raise ValueError(
                f"DetectorConfig needs window >= 2 and 2 <= warmup <= window, got window={self.window}, "
                f"warmup={self.warmup}: the baseline needs at least two points"
            )
        if self.threshold <= 0 or self.min_run < 1 or self.cooldown < 0:
            raise ValueError(
                f"DetectorConfig needs threshold > 0, min_run >= 1 and cooldown >= 0, got {self.threshold}, "
                f"{self.min_run}, {self.cooldown}"
            )
        if self.range_floor < 0 or self.scale_floor <= 0 or self.range_margin < 0:
            raise ValueError(
                f"DetectorConfig needs range_floor >= 0, scale_floor > 0 and range_margin >= 0, got "
                f"{self.range_floor}, {self.scale_floor}, {self.range_margin}: a zero sigma divides by zero"
            )


def _abnormal(
    value: FloatArray,
    q25: FloatArray,
    median: FloatArray,
    q75: FloatArray,
    high: FloatArray,
    low: FloatArray,
    config: DetectorConfig,
) -> BoolArray:
    """Abnormal points: robust z over the threshold, or beyond the baseline's range (NaN baseline: never)."""
    spread = high - low
    # IQR / 1.349 is sigma for normal data; the range floor keeps a mostly-flat series with rare bursts (disk
    # writes, network bytes: IQR 0) from alarming on every burst, and the beyond-range rule still sees new highs.
    sigma = np.maximum(
        np.maximum((q75 - q25) / IQR_TO_SIGMA, config.range_floor * spread), config.scale_floor
    )
    with np.errstate(invalid="ignore"):
        z = np.abs(value - median) / sigma
        margin = config.range_margin * spread
        beyond = (value > high + margin) | (value < low - margin)
        return np.asarray((z > config.threshold) | beyond, dtype=bool)


class RobustZDetector:
    """Streaming form: `update(value)` says whether this point fires an alarm, from past points only."""

    def __init__(self, config: DetectorConfig | None = None) -> None:
        self.config = config or DetectorConfig()
        self._past: deque[float] = deque(maxlen=self.config.window)
        self._run = 0
        self._quiet = 0  # points left in the cooldown

    def abnormal(self, value: float) -> bool:
        """Whether `value` is abnormal against the trailing baseline (never while it warms up, nor for NaN)."""
        past = np.fromiter(self._past, dtype=float)
        if int(np.count_nonzero(~np.isnan(past))) < self.config.warmup or math.isnan(value):
            return False
        q25, median, q75 = (np.array([q]) for q in np.nanquantile(past, [0.25, 0.5, 0.75]))
        high, low = np.array([np.nanmax(past)]), np.array([np.nanmin(past)])
        return bool(_abnormal(np.array([value]), q25, median, q75, high, low, self.config)[0])

    def update(self, value: float) -> bool:
        """Feed one point; True when it fires an alarm. A NaN (a gap) never alarms and holds no place in the
        baseline's warm-up count, as in `detect`."""
        abnormal = self.abnormal(value)
        self._past.append(value)
        fired, self._run, self._quiet = _step(abnormal, self._run, self._quiet, self.config)
        return fired


def _step(abnormal: bool, run: int, quiet: int, config: DetectorConfig) -> tuple[bool, int, int]:
    """One tick of the debouncer: (fired, run, quiet) after a point that is or is not abnormal."""
    run = run + 1 if abnormal else 0
    if quiet > 0:
        return False, run, quiet - 1
    if run >= config.min_run:
        return True, 0, config.cooldown
    return False, run, 0


def abnormal_points(values: Sequence[float] | FloatArray, config: DetectorConfig | None = None) -> BoolArray:
    """Batch form of `RobustZDetector.abnormal`: each point against the `window` points before it."""
    config = config or DetectorConfig()
    array = np.asarray(values, dtype=float)
    rolling = pd.Series(array).shift(1).rolling(config.window, min_periods=config.warmup)
    q25, median, q75 = (rolling.quantile(q).to_numpy() for q in (0.25, 0.5, 0.75))
    return _abnormal(array, q25, median, q75, rolling.max().to_numpy(), rolling.min().to_numpy(), config)


def debounce(abnormal: BoolArray, config: DetectorConfig | None = None) -> BoolArray:
    """Alarms from abnormal points: fire after `min_run` abnormal points in a row, then stay quiet `cooldown`
    points (an anomaly that lasts re-alarms once per cooldown, a reminder rather than a page per point)."""
    config = config or DetectorConfig()
    fired = np.zeros(len(abnormal), dtype=bool)
    run = quiet = 0
    for i, flag in enumerate(abnormal):
        fired[i], run, quiet = _step(bool(flag), run, quiet, config)
    return fired


def detect(values: Sequence[float] | FloatArray, config: DetectorConfig | None = None) -> BoolArray:
    """Batch form of the streaming detector: the alarms `RobustZDetector.update` fires point by point."""
    config = config or DetectorConfig()
    return debounce(abnormal_points(values, config), config)


# --------------------------------------------------------------------------------------- reference detector


@dataclass(frozen=True)
class IsolationForestConfig:
    """Issue 15's reference: an IsolationForest on value, rolling z-score and first difference, fit per series."""

    contamination: float = 0.01
    zscore_window: int = 12  # trailing points of the rolling z-score feature (1 h of 5-minute points)
    n_estimators: int = 100
    random_state: int = 0


def rolling_zscore(values: Sequence[float] | FloatArray, window: int) -> FloatArray:
    """(value - trailing mean) / trailing std over the last `window` points, this one included (0 where undefined)."""
    series = pd.Series(np.asarray(values, dtype=float))
    rolling = series.rolling(window, min_periods=2)
    return ((series - rolling.mean()) / rolling.std().replace(0.0, np.nan)).fillna(0.0).to_numpy()


def rolling_zscore_alarms(
    values: Sequence[float] | FloatArray, window: int = 288, threshold: float = 3.0
) -> BoolArray:
    """The plain baseline: every point whose rolling z-score is over `threshold` in magnitude is an alarm."""
    return np.asarray(np.abs(rolling_zscore(values, window)) > threshold, dtype=bool)


def isolation_forest_features(values: Sequence[float] | FloatArray, zscore_window: int) -> FloatArray:
    """Columns value, trailing rolling z-score, first difference (0 where undefined)."""
    series = pd.Series(np.asarray(values, dtype=float))
    diff = series.diff().fillna(0.0)
    return np.column_stack([series.to_numpy(), rolling_zscore(values, zscore_window), diff.to_numpy()])


def isolation_forest_reference(
    values: Sequence[float] | FloatArray, config: IsolationForestConfig | None = None
) -> BoolArray:
    """Alarms of the reference: fit on the whole series (it sees the future), flag the `contamination` outliers."""
    config = config or IsolationForestConfig()
    features = isolation_forest_features(values, config.zscore_window)
    forest = IsolationForest(
        n_estimators=config.n_estimators, contamination=config.contamination, random_state=config.random_state
    )
    return np.asarray(forest.fit_predict(features) == -1, dtype=bool)


# ---------------------------------------------------------------------------------------------------- NAB data


@dataclass(frozen=True)
class LabelledSeries:
    """One NAB file: its name as keyed in the labels ("realAWSCloudwatch/x.csv"), points and anomaly windows."""

    name: str
    timestamps: npt.NDArray[np.datetime64]
    values: FloatArray
    windows: list[Window] = field(default_factory=list)


def load_nab(root: Path, labels: str = "combined_windows.json") -> list[LabelledSeries]:
    """Every labelled CSV under `root` (a NAB `data` folder holding the labels file), windows as point indices."""
    labels_path = root / labels
    if not labels_path.is_file():
        raise AnomalyDataError(
            f"no NAB labels at {labels_path}: pass the folder that holds {labels} and the series folders "
            f"(e.g. ../shared/data/nab)"
        )
    try:
        windows_by_name: dict[str, list[list[str]]] = json.loads(labels_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise AnomalyDataError(
            f"{labels_path} is not JSON ({exc}): it should map file -> [[start, end], ...]"
        ) from exc
    series = []
    for name in sorted(windows_by_name):
        path = root / name
        if not path.is_file():
            raise AnomalyDataError(
                f"{labels_path} labels {name}, but {path} is absent: restore the file or the labels"
            )
        frame = pd.read_csv(path)
        if list(frame.columns[:2]) != ["timestamp", "value"]:
            raise AnomalyDataError(
                f"{path} has columns {list(frame.columns)}; a NAB file has timestamp,value"
            )
        timestamps = pd.to_datetime(frame["timestamp"]).to_numpy(dtype="datetime64[ns]")
        windows = [_window_indices(timestamps, start, end, path) for start, end in windows_by_name[name]]
        series.append(LabelledSeries(name, timestamps, frame["value"].to_numpy(dtype=float), windows))
    return series


def _window_indices(timestamps: npt.NDArray[np.datetime64], start: str, end: str, path: Path) -> Window:
    """The first and last point inside [start, end] (NAB's windows begin and end on a point of the file)."""
    lo = int(np.searchsorted(timestamps, np.datetime64(pd.Timestamp(start)), side="left"))
    hi = int(np.searchsorted(timestamps, np.datetime64(pd.Timestamp(end)), side="right")) - 1
    if hi < lo:
        raise AnomalyDataError(f"window [{start}, {end}] holds no point of {path}: check the labels")
    return lo, hi


# ------------------------------------------------------------------------------------------------- NAB scoring


@dataclass(frozen=True)
class CostProfile:
    """NAB's application profile weights; the default is its "standard" profile (config/profiles.json)."""

    tp: float = 1.0
    fp: float = 0.11
    fn: float = 1.0


STANDARD = CostProfile()
PROBATION_PERCENT = 0.15


def probation_length(points: int, percent: float = PROBATION_PERCENT) -> int:
    """NAB's unscored head of a file: min(floor(15% of points), 15% of 5,000 = 750)."""
    return int(min(math.floor(percent * points), percent * 5000))


def scaled_sigmoid(position: float) -> float:
    """NAB's `scaledSigmoid`: 2 * sigmoid(-5 x) - 1, and -1 from x = 3 on (x < 0 inside a window, > 0 after it)."""
    if position >= 3.0:
        return -1.0
    return 2.0 / (1.0 + math.exp(5.0 * position)) - 1.0


@dataclass(frozen=True)
class FileScore:
    """One series scored: window recall, false alarms and NAB's raw score against its null and perfect bounds."""

    name: str
    points: int  # points scored (after the probationary period)
    normal_points: int  # points scored outside every window
    windows: int
    found: int
    alarm_points: int
    false_points: int  # alarm points outside every window
    alarm_events: int  # runs of consecutive alarm points
    false_events: int  # runs of consecutive alarm points outside every window
    raw: float  # NAB raw score
    null: float  # the raw score of a detector that never alarms
    perfect: float  # the raw score of one alarm at each window's first point


def score_file(
    name: str, alarms: BoolArray, windows: Sequence[Window], profile: CostProfile = STANDARD
) -> FileScore:
    """Score one series' alarms as NAB's `Sweeper` does for a detector whose score is 1 at alarms, else 0."""
    alarms = np.asarray(alarms, dtype=bool)
    n = len(alarms)
    probation = probation_length(n)
    in_window = np.zeros(n, dtype=bool)
    for lo, hi in windows:
        in_window[lo : hi + 1] = True
    scored = np.arange(n) >= probation
    # NAB scores a window only through its points after probation; one wholly inside it is neither TP nor FN.
    scorable = [(lo, hi) for lo, hi in windows if hi >= probation]
    max_tp = scaled_sigmoid(-1.0)
    raw = 0.0
    found = 0
    for lo, hi in scorable:
        hits = np.flatnonzero(alarms[max(lo, probation) : hi + 1])
        if len(hits) == 0:
            raw -= profile.fn
            continue
        found += 1
        i = max(lo, probation) + int(hits[0])  # the earliest alarm scores highest: the sigmoid falls inside
        width = hi - lo + 1
        raw += scaled_sigmoid(-(hi - i + 1) / width) * profile.tp / max_tp
    # Each false alarm point costs fp, less just after a window (NAB counts from the preceding window's end).
    ends = sorted(windows, key=lambda w: w[1])
    for point in np.flatnonzero(alarms & ~in_window & scored):
        i = int(point)
        before = [w for w in ends if w[1] < i]
        if not before:
            position = 3.0
        else:
            lo, hi = before[-1]
            width = hi - lo + 1
            position = abs(hi - i) / float(width - 1) if width > 1 else 3.0
        raw += scaled_sigmoid(position) * profile.fp
    false = alarms & ~in_window & scored
    return FileScore(
        name=name,
        points=int(scored.sum()),
        normal_points=int((scored & ~in_window).sum()),
        windows=len(scorable),
        found=found,
        alarm_points=int((alarms & scored).sum()),
        false_points=int(false.sum()),
        alarm_events=count_runs(alarms & scored),
        false_events=count_runs(false),
        raw=raw,
        null=-profile.fn * len(scorable),
        perfect=profile.tp * len(scorable),
    )


def count_runs(flags: BoolArray) -> int:
    """Runs of consecutive True values (one alarm event per run)."""
    flags = np.asarray(flags, dtype=bool)
    return int(np.count_nonzero(flags[1:] & ~flags[:-1]) + (1 if len(flags) and flags[0] else 0))


@dataclass(frozen=True)
class CorpusScore:
    """A detector's scores summed over a corpus, with the ratios the benchmark reports."""

    files: list[FileScore]

    def _sum(self, attr: str) -> float:
        return float(sum(getattr(f, attr) for f in self.files))

    @property
    def windows(self) -> int:
        return int(self._sum("windows"))

    @property
    def found(self) -> int:
        return int(self._sum("found"))

    @property
    def recall(self) -> float:
        return self.found / self.windows if self.windows else math.nan

    def per_1k(self, attr: str, of: str = "points") -> float:
        """`attr` (false_points, alarm_events, false_events, alarm_points) per 1,000 scored points (`of="points"`)
        or per 1,000 scored points outside every window (`of="normal_points"`)."""
        points = self._sum(of)
        return 1000.0 * self._sum(attr) / points if points else math.nan

    @property
    def nab_score(self) -> float:
        """NAB's normalised score: 100 (raw - null) / (perfect - null), summed over the corpus as NAB does."""
        return nab_normalised(self._sum("raw"), self._sum("null"), self._sum("perfect"))


def nab_normalised(raw: float, null: float, perfect: float) -> float:
    """100 at the perfect detector, 0 at the one that never alarms (negative when worse than silence)."""
    if perfect == null:
        raise ValueError("a corpus with no scorable window has no NAB score: null and perfect coincide")
    return 100.0 * (raw - null) / (perfect - null)


def score_corpus(
    corpus: Sequence[LabelledSeries], alarms: Sequence[BoolArray], profile: CostProfile = STANDARD
) -> CorpusScore:
    """Score each series' alarms and sum them."""
    if len(corpus) != len(alarms):
        raise ValueError(
            f"{len(corpus)} series but {len(alarms)} alarm arrays: give one alarm array per series"
        )
    return CorpusScore(
        [score_file(s.name, a, s.windows, profile) for s, a in zip(corpus, alarms, strict=True)]
    )
