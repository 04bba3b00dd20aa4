"""Grid sweeps over any config field (lstm_jax.sweep: grid_fields, points,
point_name, best_settings, sequences_trained, run_sweep with a grid) and one
tiny real run of configs/sweeps/tune_delayed_recall.py:quick through the CLI.

Expected values are worked out by hand in the comments next to them.
"""

import csv
import importlib
import json
import os
import subprocess
import sys

import ml_collections
import pytest

from lstm_jax import sweep as sweep_lib
from lstm_jax.config import ConfigError
from lstm_jax.sweep import best_markdown, best_settings, point_name, points, sequences_trained

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _sweep(grid=None, labels=("A", "B"), lags=(3, 7), num_seeds=2):
  s = importlib.import_module("configs.sweeps.quickstart").get_config("quick")
  s.models = [{"label": label, "cell": "vanilla", "bias_init": "chrono"} for label in labels]
  s.lags = list(lags)
  s.num_seeds = num_seeds
  if grid is not None:
    s.grid = grid
  return s


# ----------------------------------------------------------------------------
# Points: the product, their configs and their names.


def test_points_are_models_x_lags_x_grid_in_order_with_the_values_applied():
  grid = {"optimizer": {"learning_rate": [1e-3, 3e-3]}, "batch_size": [16, 32],
          "model": {"bias_init": ["forget", "chrono"]}}
  ps = points(_sweep(grid))
  # Fields sorted by dotted name: batch_size, model.bias_init, optimizer.learning_rate;
  # the last varies fastest. 2 models x 2 lags x (2 x 2 x 2) = 32 points.
  settings = [(16, "forget", 1e-3), (16, "forget", 3e-3), (16, "chrono", 1e-3),
              (16, "chrono", 3e-3), (32, "forget", 1e-3), (32, "forget", 3e-3),
              (32, "chrono", 1e-3), (32, "chrono", 3e-3)]
  expected = [(label, lag, s) for label in "AB" for lag in (3, 7) for s in settings]
  assert len(ps) == 32
  got = [(p.model["label"], p.lag, (p.setting["batch_size"], p.setting["model.bias_init"],
                                    p.setting["optimizer.learning_rate"])) for p in ps]
  assert got == expected
  for p, (label, lag, (batch, bias, lr)) in zip(ps, expected):
    c = p.config
    assert (c.lag, c.num_seeds, c.batch_size, c.optimizer.learning_rate) == (lag, 2, batch, lr)
    # The grid value wins over the model's override (bias_init="chrono").
    assert c.model.bias_init == bias and c.model.cell == "vanilla"
    assert c.model.hidden_size == 8 and c.budget_sequences == 160  # base untouched
  names = [p.name for p in ps]
  assert len(set(names)) == 32
  assert all(set(n) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")
             for n in names)


def test_dotted_keys_and_nested_grids_are_the_same_fields():
  nested = _sweep({"optimizer": {"learning_rate": [1e-3, 3e-3]}, "batch_size": [16]})
  dotted = _sweep(ml_collections.ConfigDict(
      {"optimizer.learning_rate": [1e-3, 3e-3], "batch_size": [16]}, allow_dotted_keys=True))
  expected = {"batch_size": [16], "optimizer.learning_rate": [1e-3, 3e-3]}
  assert sweep_lib.grid_fields(nested) == sweep_lib.grid_fields(dotted) == expected
  assert [p.name for p in points(nested)] == [p.name for p in points(dotted)]


def test_point_names_are_stable_and_without_grid_unchanged():
  # No grid, or an empty one: today's <label>_lag<lag> (existing workdirs resume).
  assert [p.name for p in points(_sweep())] == ["A_lag3", "A_lag7", "B_lag3", "B_lag7"]
  assert [p.name for p in points(_sweep({}))] == ["A_lag3", "A_lag7", "B_lag3", "B_lag7"]
  assert point_name("LSTM chrono", 5) == "LSTM_chrono_lag5"
  assert sweep_lib.point_dir("/w", "LSTM chrono", 5) == "/w/LSTM_chrono_lag5"
  # The same name in every process (the hash is of the JSON of the setting).
  setting = {"batch_size": 16, "optimizer.learning_rate": 0.003}
  assert point_name("LSTM chrono", 5, setting) == (
      "LSTM_chrono_lag5_batch_size-16_optimizer.learning_rate-0.003_"
      + __import__("hashlib").sha1(b'[["batch_size", 16], ["optimizer.learning_rate", 0.003]]'
                                   ).hexdigest()[:10])
  # Readable parts that agree ("a b" and "a_b" both read a_b) still differ by the hash.
  one = point_name("m", 1, {"task_params.x": "a b"})
  two = point_name("m", 1, {"task_params.x": "a_b"})
  assert one != two and one[:-10] == two[:-10]
  assert point_name("m", 1, {"x": "y" * 500}).startswith("m_lag1_x-" + "y" * 100)
  assert len(point_name("m", 1, {"x": "y" * 500})) == len("m_lag1_") + 120 + 1 + 10


# ----------------------------------------------------------------------------
# Config errors: one line naming grid[field], the value and what is allowed.


@pytest.mark.parametrize("grid, pattern", [
    ({"optimizer": {"lr": [1e-3]}},
     r"^sweep grid\['optimizer.lr'\] is not allowed; expected a config field of base that "
     r"holds a value: batch_size, .*optimizer.learning_rate"),
    ({"optimizer": {"learning_rate": [1e-3]}, "batch_size": ["16"]},
     r"^sweep grid\['batch_size'\]='16' is not allowed; expected a value of the type of "
     r"base.batch_size=8 \(int\)"),
    ({"model": {"bias_init": [3]}},
     r"^sweep grid\['model.bias_init'\]=3 is not allowed; expected a value of the type of "
     r"base.model.bias_init='forget' \(str\)"),
    ({"lag": [3, 4]}, r"^sweep grid\['lag'\] is not allowed; lag is set by the sweep \(lags\)"),
    ({"num_seeds": [1]}, r"^sweep grid\['num_seeds'\] is not allowed; num_seeds is set by"),
    ({"batch_size": []}, r"^sweep grid\['batch_size'\]=\[\] is not allowed; expected a "
                         r"non-empty list of values"),
    ({"batch_size": 16}, r"^sweep grid\['batch_size'\]=16 is not allowed; expected a "
                         r"non-empty list"),
    ({"batch_size": [16, 16]}, r"^sweep grid\['batch_size'\]=\[16, 16\] is not allowed; "
                               r"expected distinct values"),
    ({"optimizer": [1]}, r"^sweep grid\['optimizer'\] is not allowed; expected a config "
                         r"field of base that holds a value"),
])
def test_bad_grids_are_one_config_error_naming_the_field(grid, pattern):
  with pytest.raises(ConfigError, match=pattern) as err:
    points(_sweep(grid))
  assert "\n" not in str(err.value)


def test_every_point_is_validated_before_the_first_trains(tmp_path, monkeypatch):
  calls = []
  monkeypatch.setattr(sweep_lib, "train_and_evaluate", lambda *a, **k: calls.append(a))
  # Model A's four points are fine; B's are not (hidden_size 0), the first of
  # them the fifth point.
  s = _sweep({"optimizer": {"learning_rate": [1e-3, 3e-3]}})
  s.models[1]["hidden_size"] = 0
  with pytest.raises(ConfigError, match=r"^sweep point B lag=3 "
                     r"optimizer.learning_rate=0.001: config.model.hidden_size=0 is not "
                     r"allowed; expected an integer >= 1$"):
    sweep_lib.run_sweep(s, str(tmp_path), progress=False)
  assert calls == [] and not os.listdir(tmp_path)
  # A value the field takes but build refuses names the point and the field.
  with pytest.raises(ConfigError, match=r"^sweep point A lag=3 "
                     r"optimizer.learning_rate=-1.0: config.optimizer.learning_rate=-1.0 is "
                     r"not allowed; expected a finite number > 0$"):
    points(_sweep({"optimizer": {"learning_rate": [1e-3, -1.0]}}))


# ----------------------------------------------------------------------------
# The best setting and the tuning cost, on hand-made rows and summaries.


def _row(model, lag, batch, lr, fraction, to_crit, median, spent, wall, estimated=False):
  return {"model": model, "lag": lag, "batch_size": batch, "optimizer.learning_rate": lr,
          "seeds": 2, "solved_fraction": fraction, "median_sequences_to_criterion": to_crit,
          "metric": "accuracy", "median": median, "min": median - 0.1, "max": median + 0.1,
          "wall_time_s": wall, "sequences_trained": spent, "sequences_estimated": estimated}


FIELDS = ["batch_size", "optimizer.learning_rate"]
ROWS = [
    # M lag 10: r3 wins: fraction 1 (r1 has 0.5 with fewer sequences), to_crit 400
    # (r4 has 500), and on the tie with r2 the higher accuracy median (0.95 > 0.8).
    _row("M", 10, 16, 1e-3, 0.5, 100.0, 0.99, 1000, 1.5),
    _row("M", 10, 16, 3e-3, 1.0, 400.0, 0.80, 800, 2.0),
    _row("M", 10, 32, 1e-3, 1.0, 400.0, 0.95, 900, 2.5),
    _row("M", 10, 32, 3e-3, 1.0, 500.0, 1.00, 1100, 3.0),
    # M lag 50: nothing solved (to criterion None = infinite): the higher accuracy, r6;
    # r5's summary had no sequences_seen (estimated).
    _row("M", 50, 16, 1e-3, 0.0, None, 0.30, 2000, 4.0, estimated=True),
    _row("M", 50, 16, 3e-3, 0.0, None, 0.40, 2000, 4.0),
    # M lag 100: a NaN metric is the lowest; r8 and r9 tie on everything: the first, r8.
    _row("M", 100, 16, 1e-3, 0.0, None, float("nan"), 3000, 1.0),
    _row("M", 100, 16, 3e-3, 0.0, None, 0.25, 3000, 1.0),
    _row("M", 100, 32, 1e-3, 0.0, None, 0.25, 3000, 1.0),
    # N lag 10: one point, and 0.5 solved with a median beats 0.0 unsolved.
    _row("N", 10, 16, 1e-3, 0.5, 700.0, 0.60, 500, 0.5),
    _row("N", 10, 32, 1e-3, 0.0, None, 0.90, 500, 0.5),
]


def test_best_settings_follow_the_rule_and_sum_the_tuning_cost():
  best = best_settings(ROWS, FIELDS)
  assert [(b["model"], b["lag"]) for b in best] == [("M", 10), ("M", 50), ("M", 100),
                                                    ("N", 10)]
  assert [b["setting"] for b in best] == [
      {"batch_size": 32, "optimizer.learning_rate": 1e-3},
      {"batch_size": 16, "optimizer.learning_rate": 3e-3},
      {"batch_size": 16, "optimizer.learning_rate": 3e-3},
      {"batch_size": 16, "optimizer.learning_rate": 1e-3}]
  assert [b["points"] for b in best] == [4, 2, 3, 2]
  assert [(b["solved_fraction"], b["median_sequences_to_criterion"], b["median"])
          for b in best] == [(1.0, 400.0, 0.95), (0.0, None, 0.40), (0.0, None, 0.25),
                             (0.5, 700.0, 0.60)]
  # Tuning cost over all points of the (model, lag): 1000+800+900+1100, 2000+2000, ...
  assert [b["tuning_sequences"] for b in best] == [3800, 4000, 9000, 1000]
  assert [b["tuning_wall_time_s"] for b in best] == [9.0, 8.0, 3.0, 1.0]
  assert [b["tuning_estimated"] for b in best] == [False, True, False, False]
  assert all(set(b) == set(sweep_lib.BEST_KEYS) for b in best)
  assert best_settings([], FIELDS) == []
  # The rule does not depend on the order of the rows, except for exact ties.
  assert best_settings(ROWS[3::-1], FIELDS)[0]["setting"] == best[0]["setting"]


def test_best_markdown_shows_the_chosen_values_and_the_spend():
  s = _sweep()
  md = best_markdown(best_settings(ROWS, FIELDS), FIELDS, s).splitlines()
  assert md[0] == ("| model | lag | batch_size | optimizer.learning_rate | solved (of 2 seeds) "
                   "| median sequences to criterion | final accuracy: median | points tried | "
                   "tuning spend: sequences (all points) | tuning spend: wall time |")
  assert md[2] == "| M | 10 | 32 | 0.001 | 1.00 | 400 | 0.950 | 4 | 3,800 | 9.0 s |"
  assert md[3] == "| M | 50 | 16 | 0.003 | 0.00 | - | 0.400 | 2 | <= 4,000 | 8.0 s |"
  assert md[5] == "| N | 10 | 16 | 0.001 | 0.50 | 700 | 0.600 | 2 | 1,000 | 1.0 s |"
  assert "then the lowest median sequences to criterion" in md[-1]


def test_sequences_trained_is_seeds_times_sequences_seen():
  per_seed = [{"seed": i} for i in range(3)]
  assert sequences_trained({"per_seed": per_seed, "sequences_seen": 640}, 1000) == (1920, False)
  # Without sequences_seen: seeds x budget, flagged as an estimate.
  assert sequences_trained({"per_seed": per_seed}, 1000) == (3000, True)
  assert sequences_trained({"per_seed": per_seed[:1], "sequences_seen": None}, 50) == (50, True)


# ----------------------------------------------------------------------------
# run_sweep with a grid, the point runner replaced (no training).

# Per (lag, learning rate): per seed (accuracy, sequences_to_criterion or None),
# sequences seen per seed, wall time.
OUTCOMES = {
    (5, 1e-3): ([(1.0, 400), (1.0, 800)], 800, 2.0),    # solved 1.0, median 600
    (5, 3e-3): ([(1.0, 200), (0.9, 320)], 320, 1.0),    # solved 1.0, median 260: best
    (20, 1e-3): ([(0.5, None), (1.0, 960)], 1000, 4.0),  # solved 0.5, median 960: best
    (20, 3e-3): ([(0.4, None), (0.3, None)], 1000, 5.0),  # solved 0.0
}


def _fake_train(calls):
  def train(config, path, progress=True, force=False):
    seeds, seen, wall = OUTCOMES[config.lag, config.optimizer.learning_rate]
    calls.append(os.path.basename(path))
    per_seed = [{"seed": i, "solved": c is not None, "sequences_to_criterion": c,
                 "skipped_updates": 0, "metrics": {"accuracy": a}}
                for i, (a, c) in enumerate(seeds)]
    summary = {"status": "finished", "per_seed": per_seed, "sequences_seen": seen,
               "solved_fraction": sum(p["solved"] for p in per_seed) / len(per_seed),
               "wall_time_s": wall}
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "summary.json"), "w") as f:
      json.dump(summary, f)
    return summary
  return train


def test_run_sweep_with_a_grid_writes_columns_and_best_and_skips_finished(tmp_path,
                                                                          monkeypatch):
  calls = []
  monkeypatch.setattr(sweep_lib, "train_and_evaluate", _fake_train(calls))
  s = _sweep({"optimizer": {"learning_rate": [1e-3, 3e-3]}}, labels=["A"], lags=[5, 20])
  s.base.budget_sequences = 1000
  rows = sweep_lib.run_sweep(s, str(tmp_path), progress=False)
  names = [point_name("A", lag, {"optimizer.learning_rate": lr})
           for lag in (5, 20) for lr in (1e-3, 3e-3)]
  assert calls == names
  lines = (tmp_path / "results.csv").read_text().splitlines()
  assert lines[0] == ("model,lag,optimizer.learning_rate,seeds,solved_fraction,"
                      "median_sequences_to_criterion,metric,median,min,max,wall_time_s,"
                      "sequences_trained,sequences_estimated")
  assert lines[1] == "A,5,0.001,2,1.0,600.0,accuracy,1.0,1.0,1.0,2.0,1600,False"
  assert lines[2] == "A,5,0.003,2,1.0,260.0,accuracy,0.95,0.9,1.0,1.0,640,False"
  assert lines[4] == "A,20,0.003,2,0.0,,accuracy,0.35,0.3,0.4,5.0,2000,False"
  md = (tmp_path / "results.md").read_text().splitlines()
  assert md[0].startswith("| model | lag | optimizer.learning_rate | solved (of 2 seeds) |")
  assert "| A | 20 | 0.001 | 0.50 | 960 | 0.750 [0.500, 1.000] |" in md
  # Any setting solving half the seeds at lag 20 makes 20 the horizon.
  assert md[-1].endswith("within 1,000 sequences): 20")
  best = (tmp_path / "best.md").read_text().splitlines()
  # lag 5: 2 x 800 + 2 x 320 = 2,240 sequences, 2.0 + 1.0 s; lag 20: 4 x 1000, 9.0 s.
  assert best[2] == "| A | 5 | 0.003 | 1.00 | 260 | 0.950 | 2 | 2,240 | 3.0 s |"
  assert best[3] == "| A | 20 | 0.001 | 0.50 | 960 | 0.750 | 2 | 4,000 | 9.0 s |"
  assert (tmp_path / "memory_vs_lag.png").read_bytes()[:4] == b"\x89PNG"
  # Rerun: every point is finished, nothing trains, same rows.
  assert sweep_lib.run_sweep(s, str(tmp_path), progress=False) == rows
  assert calls == names
  # One point lost: only it trains again.
  os.remove(tmp_path / names[2] / "summary.json")
  assert sweep_lib.run_sweep(s, str(tmp_path), progress=False) == rows
  assert calls == names + [names[2]]


# ----------------------------------------------------------------------------
# One tiny real run through the CLI.


def test_cli_runs_the_quick_tuning_config(tmp_path):
  # The lags are a tuple in every shipped sweep config, so the command line can set them.
  res = subprocess.run(
      [sys.executable, "-m", "experiments.sweep",
       "--config=configs/sweeps/tune_delayed_recall.py:quick", "--config.lags=(3,)",
       f"--workdir={tmp_path}"],
      cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert res.returncode == 0, res.stderr[-2000:]
  with open(tmp_path / "results.csv") as f:
    table = list(csv.DictReader(f))
  # 1 model x 1 lag x 2 batch sizes x 2 learning rates, in grid order.
  assert {r["lag"] for r in table} == {"3"}
  assert [(r["batch_size"], r["optimizer.learning_rate"]) for r in table] == [
      ("8", "0.003"), ("8", "0.01"), ("16", "0.003"), ("16", "0.01")]
  spent = 0
  for r in table:
    setting = {"batch_size": int(r["batch_size"]),
               "optimizer.learning_rate": float(r["optimizer.learning_rate"])}
    name = point_name("LSTM chrono", 3, setting)
    summary = json.loads((tmp_path / name / "summary.json").read_text())
    config = json.loads((tmp_path / name / "config.json").read_text())
    assert config["batch_size"] == int(r["batch_size"]) and config["num_seeds"] == 2
    assert config["optimizer"]["learning_rate"] == float(r["optimizer.learning_rate"])
    assert int(r["sequences_trained"]) == 2 * summary["sequences_seen"]
    spent += 2 * summary["sequences_seen"]
  best = (tmp_path / "best.md").read_text().splitlines()
  assert len(best) == 5 and best[2].startswith("| LSTM chrono | 3 | ")
  assert f"| 4 | {spent:,} | " in best[2]
  assert best[0] in res.stdout and best[2] in res.stdout
