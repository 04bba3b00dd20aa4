"""Learning curves of a sweep (lstm_jax.sweep: learning_curve, learning_curves,
plot_learning_curves, curve_metric, learning_curves.png from write_results and
merge_sweep) and one tiny real run of configs/sweeps/copy_chrono.py:quick.

The expected medians and ranges are computed here with plain Python from the
hand-written lines.
"""

import importlib
import json
import math
import os
import statistics

import ml_collections
import numpy as np
import pytest

from lstm_jax import sweep as sweep_lib
from lstm_jax.config import ConfigError

PNG = b"\x89PNG"

# Per seed, (sequences_seen, loss_over_baseline) of the eval lines of one run.
CURVES = {
    0: [(320, 40.0), (640, 1.2), (960, 0.5)],
    1: [(320, 38.0), (640, 0.9), (960, 0.05)],
    2: [(320, 45.0), (640, 1.1), (960, 0.2)],
}


def _write_run(path, curves=CURVES, metric="loss_over_baseline", extra=()):
  """A run directory whose metrics.jsonl has train and eval lines for ``curves``."""
  os.makedirs(path, exist_ok=True)
  lines = []
  for seed, points in curves.items():
    for seen, value in points:
      step = seen // 32
      lines.append({"step": step, "seed": seed, "split": "train", "sequences_seen": seen,
                    "loss": 99.0, metric: 1e6})  # train lines must be ignored
      lines.append({"step": step, "seed": seed, "split": "eval", "sequences_seen": seen,
                    "loss": value / 10, "symbol_accuracy": 0.5, metric: value})
  lines += list(extra)
  with open(os.path.join(path, "metrics.jsonl"), "w") as f:
    f.write("".join(json.dumps(line) + "\n" for line in lines))
  return str(path)


def _expected(curves):
  """Per sequences_seen, (median, min, max) over the seeds, in plain Python."""
  by_seen = {}
  for points in curves.values():
    for seen, value in points:
      by_seen.setdefault(seen, []).append(value)
  return {seen: (statistics.median(v), min(v), max(v)) for seen, v in sorted(by_seen.items())}


def test_learning_curve_is_median_min_max_over_seeds_of_the_eval_lines(tmp_path):
  run = _write_run(tmp_path / "run")
  curve = sweep_lib.learning_curve(run)
  expected = _expected(CURVES)
  assert curve["seeds"] == 3
  assert curve["sequences_seen"].tolist() == list(expected)
  for i, (median, low, high) in enumerate(expected.values()):
    assert curve["median"][i] == pytest.approx(median)
    assert curve["min"][i] == pytest.approx(low)
    assert curve["max"][i] == pytest.approx(high)
  # 960: values 0.5, 0.05, 0.2 -> median 0.2, range [0.05, 0.5].
  assert curve["median"][2] == pytest.approx(0.2)
  # Another eval metric of the same lines.
  other = sweep_lib.learning_curve(run, "symbol_accuracy")
  assert other["median"].tolist() == [0.5, 0.5, 0.5]


def test_learning_curve_counts_a_repeated_line_once_and_skips_nonfinite_values(tmp_path):
  curves = {0: [(100, 4.0), (200, 2.0)], 1: [(100, 6.0), (200, 8.0)]}
  extra = [
      # A resumed run logged seed 1 at 200 again: the last line counts.
      {"step": 2, "seed": 1, "split": "eval", "sequences_seen": 200,
       "loss_over_baseline": 3.0},
      # A non-finite value is left out of the statistics; a line without the
      # metric, or of another split, is not read.
      {"step": 3, "seed": 0, "split": "eval", "sequences_seen": 300,
       "loss_over_baseline": float("nan")},
      {"step": 3, "seed": 1, "split": "eval", "sequences_seen": 300,
       "loss_over_baseline": 5.0},
      {"step": 4, "seed": 0, "split": "eval", "sequences_seen": 400, "loss": 1.0},
      {"step": 4, "seed": 0, "split": "diagnostics", "sequences_seen": 400,
       "loss_over_baseline": 7.0},
  ]
  run = _write_run(tmp_path / "run", curves, extra=extra)
  with open(os.path.join(run, "metrics.jsonl"), "a") as f:
    f.write('{"step": 5, "seed": 0, "split": "ev')  # a torn last line (a kill mid-write)
  curve = sweep_lib.learning_curve(run)
  assert curve["sequences_seen"].tolist() == [100, 200, 300]
  # 100: {4, 6}; 200: {2, 3} (seed 1's last line); 300: {5} (seed 0 NaN left out).
  assert curve["median"].tolist() == [statistics.median([4.0, 6.0]),
                                      statistics.median([2.0, 3.0]), 5.0]
  assert curve["min"].tolist() == [4.0, 2.0, 5.0]
  assert curve["max"].tolist() == [6.0, 3.0, 5.0]


def test_no_curve_without_the_metric_or_without_a_log(tmp_path):
  run = _write_run(tmp_path / "run", metric="other_metric")
  assert sweep_lib.learning_curve(run) is None
  assert sweep_lib.learning_curve(str(tmp_path / "nowhere")) is None
  assert sweep_lib.learning_curve(run, "other_metric") is not None


def test_learning_curves_keep_the_order_and_drop_directories_without_the_metric(tmp_path):
  a = _write_run(tmp_path / "a")
  b = _write_run(tmp_path / "b", metric="other_metric")
  c = _write_run(tmp_path / "c", {0: [(64, 2.0)]})
  found = sweep_lib.learning_curves([("A", 100, a), ("B", 100, b), ("A", 200, c)])
  assert [(label, lag) for label, lag, _ in found] == [("A", 100), ("A", 200)]
  assert found[1][2]["median"].tolist() == [2.0]


def test_the_plot_is_written_with_the_metric_and_not_without(tmp_path):
  runs = [("LSTM chrono", 100, _write_run(tmp_path / "c100")),
          ("LSTM b_f=1", 100, _write_run(tmp_path / "f100", {0: [(320, 50.0), (640, 1.0)]})),
          ("LSTM chrono", 200, _write_run(tmp_path / "c200", {0: [(320, 2.0)], 1: [(320, 3.0)]}))]
  path = str(tmp_path / "learning_curves.png")
  assert sweep_lib.plot_learning_curves(runs, path, "copy: learning curves")
  with open(path, "rb") as f:
    assert f.read(4) == PNG
  assert not os.path.exists(path + ".tmp.png")
  # A metric no run logged: no figure, no error.
  other = str(tmp_path / "other.png")
  assert not sweep_lib.plot_learning_curves(runs, other, "t", metric="nope")
  assert not os.path.exists(other)
  # Values that are not all positive (linear y axis) still plot.
  neg = [("M", 5, _write_run(tmp_path / "neg", {0: [(8, -1.0), (16, 0.0)]}, metric="m"))]
  assert sweep_lib.plot_learning_curves(neg, str(tmp_path / "neg.png"), "t", metric="m")


def test_curve_metric_defaults_and_is_checked():
  s = importlib.import_module("configs.sweeps.copy_chrono").get_config("quick")
  assert sweep_lib.curve_metric(s) == "loss_over_baseline"
  del s["curve_metric"]
  assert sweep_lib.curve_metric(s) == sweep_lib.CURVE_METRIC == "loss_over_baseline"
  s.curve_metric = "symbol_accuracy"
  assert sweep_lib.curve_metric(s) == "symbol_accuracy"
  s = ml_collections.ConfigDict(s.to_dict())
  s.curve_metric = ""
  with pytest.raises(ConfigError, match=r"^sweep curve_metric='' is not allowed"):
    sweep_lib.points(s)


def test_copy_chrono_config_is_the_copy_task_at_large_t():
  module = importlib.import_module("configs.sweeps.copy_chrono")
  s = module.get_config()
  ps = sweep_lib.points(s)  # builds every point's config
  assert s.lags == (100, 200, 500, 1000, 2000) and len(ps) == 15
  assert s.base.task == "copy" and s.base.model.hidden_size == 128
  assert s.base.budget_sequences == module.BUDGET_SEQUENCES
  assert (s.base.optimizer.learning_rate, s.base.optimizer.grad_clip) == (1e-3, 1.0)
  inits = {p.model["label"]: (p.config.model.bias_init, p.config.model.forget_bias)
           for p in ps}
  assert inits["LSTM b_f=0"] == ("forget", 0.0) and inits["LSTM b_f=1"] == ("forget", 1.0)
  assert inits["LSTM chrono"][0] == "chrono"
  quick = module.get_config("quick")
  assert quick.lags == (3, 5) and len(quick.models) == 2
  assert quick.base.model.hidden_size == 8
  long = module.get_config("long")
  assert long.lags == (100, 500) and long.base.budget_sequences == module.LONG_BUDGET
  assert [m["label"] for m in long.models] == ["LSTM b_f=1", "LSTM chrono"]
  assert len(sweep_lib.points(long)) == 4
  with pytest.raises(ValueError, match="not allowed"):
    module.get_config("slow")


def _rows_and_dirs(tmp_path, values):
  """Fake finished points of a one-model sweep: per lag a run directory."""
  s = importlib.import_module("configs.sweeps.copy_chrono").get_config("quick")
  s.models = [s.models[0]]
  rows, label = [], s.models[0]["label"]
  for lag in s.lags:
    _write_run(sweep_lib.point_dir(str(tmp_path), label, lag), values)
    rows.append({"model": label, "lag": lag, "seeds": 1, "solved_fraction": 0.0,
                 "median_sequences_to_criterion": None, "metric": s.metric, "median": 0.3,
                 "min": 0.3, "max": 0.3, "wall_time_s": 1.0})
  return s, rows


def test_write_results_writes_learning_curves_only_when_logged(tmp_path):
  s, rows = _rows_and_dirs(tmp_path / "with", {0: [(16, 9.0), (32, 0.8)]})
  sweep_lib.write_results(rows, str(tmp_path / "with"), s)
  with open(tmp_path / "with" / "learning_curves.png", "rb") as f:
    assert f.read(4) == PNG
  s2, rows2 = _rows_and_dirs(tmp_path / "without", {0: [(16, 9.0)]})
  s2.curve_metric = "not_logged"
  sweep_lib.write_results(rows2, str(tmp_path / "without"), s2)
  assert (tmp_path / "without" / "results.md").exists()
  assert not (tmp_path / "without" / "learning_curves.png").exists()


def test_quick_copy_chrono_sweep_writes_learning_curves(tmp_path):
  s = importlib.import_module("configs.sweeps.copy_chrono").get_config("quick")
  rows = sweep_lib.run_sweep(s, str(tmp_path), progress=False)
  assert [(r["model"], r["lag"]) for r in rows] == [
      ("LSTM b_f=1", 3), ("LSTM b_f=1", 5), ("LSTM chrono", 3), ("LSTM chrono", 5)]
  for name in ("results.csv", "results.md", "memory_vs_lag.png", "learning_curves.png"):
    assert (tmp_path / name).exists(), name
  with open(tmp_path / "learning_curves.png", "rb") as f:
    assert f.read(4) == PNG
  curve = sweep_lib.learning_curve(str(tmp_path / "LSTM_chrono_lag5"))
  # eval every 2 updates of 8 sequences, 48 sequences: 6 updates, evals at 16, 32, 48.
  assert curve["sequences_seen"].tolist()[-1] == 48 and curve["seeds"] == s.num_seeds
  assert np.isfinite(curve["median"]).all() and (curve["median"] > 0).all()
  # The merge of the finished points writes the same plot again.
  os.remove(tmp_path / "learning_curves.png")
  merged = sweep_lib.merge_sweep(s, str(tmp_path))
  assert merged.written and not merged.missing
  assert (tmp_path / "learning_curves.png").exists()
  assert math.isfinite(rows[0]["median"])
