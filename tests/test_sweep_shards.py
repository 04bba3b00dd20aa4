"""Sweeps and horizon searches over many jobs: shard_points, parse_shard,
shard_from_env (SLURM job arrays), the flags' choice of shard, run_sweep and
run_horizon on shards with merge_sweep and merge_horizon (training replaced
by a deterministic fake, so a sharded then merged sweep must give the very
files of an unsharded one), and one tiny real sharded sweep through the CLI.
"""

from __future__ import annotations

import csv
import filecmp
import importlib
import json
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

from experiments import cli
from lstm_jax import horizon as hz
from lstm_jax import sweep as sweep_lib
from lstm_jax import workdir as wd
from lstm_jax.config import ConfigError
from lstm_jax.sweep import merge_sweep, parse_shard, run_sweep, shard_from_env, shard_points

ROOT = pathlib.Path(__file__).resolve().parents[1]
SWEEP_FILES = ("results.csv", "results.md", "best.md")
HORIZON_FILES = ("horizons.csv", "horizons.md", "horizons.json")


# ----------------------------------------------------------------------------
# Shards of a list, the i/n strings and the SLURM variables.


@pytest.mark.parametrize("size", [0, 1, 2, 5, 7, 12])
@pytest.mark.parametrize("count", [1, 2, 3, 4, 8])
def test_shards_are_disjoint_cover_every_item_once_and_keep_the_order(size, count):
  items = [f"p{k}" for k in range(size)]
  shards = [shard_points(items, i, count) for i in range(count)]
  flat = [x for s in shards for x in s]
  assert sorted(flat) == sorted(items) and len(set(flat)) == size  # disjoint, covering
  assert all(s == [x for x in items if x in s] for s in shards)  # each in the items' order
  assert max(map(len, shards)) - min(map(len, shards)) <= 1
  # Round-robin: item k is in shard k % count.
  assert all(items.index(x) % count == i for i, s in enumerate(shards) for x in s)
  # The split depends only on the order and the count (every job computes the same).
  assert [shard_points(list(items), i, count) for i in range(count)] == shards


def test_shards_of_a_grid_sweeps_points():
  ps = sweep_lib.points(_sweep({"optimizer": {"learning_rate": [1e-3, 3e-3, 1e-2]}}))
  names = [p.name for p in ps]  # 2 models x 2 lags x 3 settings
  shards = [[p.name for p in shard_points(ps, i, 5)] for i in range(5)]
  assert [len(s) for s in shards] == [3, 3, 2, 2, 2]
  assert sorted(n for s in shards for n in s) == sorted(names)
  assert shards[0] == [names[0], names[5], names[10]]


@pytest.mark.parametrize("index, count", [(2, 2), (-1, 2), (0, 0), (1.0, 2), (True, 2)])
def test_a_shard_outside_its_count_is_refused(index, count):
  with pytest.raises(ConfigError, match=r"^shard .* is not allowed; expected i/n with "
                     r"integers 0 <= i < n \(0-based: two jobs are shards 0/2 and 1/2\)$"):
    shard_points([1, 2, 3], index, count)


def test_parse_shard_reads_zero_based_i_of_n():
  assert parse_shard("0/2") == (0, 2)
  assert parse_shard("1/2") == (1, 2)
  assert parse_shard(" 3 / 4 ") == (3, 4)
  assert parse_shard("0/1") == (0, 1)


@pytest.mark.parametrize("text", ["3/2", "2/2", "a/b", "0/0", "1", "1/2/3", "-1/2", "", "/",
                                  "0.5/2", "1/x", "0/-1"])
def test_bad_shard_strings_are_one_line(text):
  with pytest.raises(ConfigError) as err:
    parse_shard(text)
  assert str(err.value) == (f"shard {text!r} is not allowed; expected i/n with integers "
                            "0 <= i < n (0-based: two jobs are shards 0/2 and 1/2)")


@pytest.mark.parametrize("env, shard", [
    ({}, None),
    ({"SLURM_JOB_ID": "7"}, None),  # a job, not an array
    ({"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_COUNT": "4"}, (3, 4)),
    # --array=1-4: IDs 1..4 are shards 0..3.
    ({"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_MIN": "1",
      "SLURM_ARRAY_TASK_MAX": "4"}, (0, 4)),
    ({"SLURM_ARRAY_TASK_ID": "4", "SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_MAX": "4"},
     (3, 4)),
    # --array=0-9:3: IDs 0, 3, 6, 9.
    ({"SLURM_ARRAY_TASK_ID": "6", "SLURM_ARRAY_TASK_MIN": "0", "SLURM_ARRAY_TASK_MAX": "9",
      "SLURM_ARRAY_TASK_STEP": "3"}, (2, 4)),
    ({"SLURM_ARRAY_TASK_ID": "9", "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_MIN": "0",
      "SLURM_ARRAY_TASK_STEP": "3"}, (3, 4)),
])
def test_shard_from_the_slurm_array_variables(env, shard):
  assert shard_from_env(env) == shard


@pytest.mark.parametrize("env, pattern", [
    ({"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_COUNT": "2"},
     r"^SLURM job array with SLURM_ARRAY_TASK_ID=5 SLURM_ARRAY_TASK_COUNT=2 does not give a "
     r"shard i/n with 0 <= i < n .*give --shard=i/n$"),
    ({"SLURM_ARRAY_TASK_ID": "x", "SLURM_ARRAY_TASK_COUNT": "2"},
     r"^SLURM_ARRAY_TASK_ID='x' is not allowed; expected an integer"),
    ({"SLURM_ARRAY_TASK_ID": "1"}, r"no SLURM_ARRAY_TASK_COUNT or SLURM_ARRAY_TASK_MAX"),
    # --array=1,5,7: not a range; ID 7 - MIN 1 = 6 >= 3 tasks.
    ({"SLURM_ARRAY_TASK_ID": "7", "SLURM_ARRAY_TASK_COUNT": "3", "SLURM_ARRAY_TASK_MIN": "1",
      "SLURM_ARRAY_TASK_MAX": "7"}, r"does not give a shard"),
    ({"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_STEP": "2"},
     r"does not give a shard"),
])
def test_slurm_variables_that_give_no_shard_are_one_line(env, pattern):
  with pytest.raises(ConfigError, match=pattern) as err:
    shard_from_env(env)
  assert "\n" not in str(err.value)


def test_the_flag_wins_over_slurm_and_a_merge_ignores_it(monkeypatch):
  for name in sweep_lib.SLURM_VARIABLES:
    monkeypatch.delenv(name, raising=False)
  assert cli.chosen_shard(None) == (0, 1)
  monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "2")
  monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "3")
  assert cli.chosen_shard(None) == (2, 3)  # read from os.environ
  assert cli.chosen_shard((0, 1)) == (0, 1)  # --shard=0/1: the whole sweep inside the array
  assert cli.chosen_shard(None, merge=True) == (0, 1)
  with pytest.raises(ConfigError, match=r"^--shard is not allowed with --merge"):
    cli.chosen_shard((1, 3), merge=True)
  with pytest.raises(ConfigError, match=r"^--partial is not allowed without --merge$"):
    cli.chosen_shard(None, partial=True)
  with pytest.raises(ConfigError, match=r"^--merge_from is not allowed without --merge$"):
    cli.chosen_shard(None, merge_from=["/x"])
  assert cli._ShardParser().parse("1/3") == (1, 3)
  with pytest.raises(ValueError, match=r"^expected i/n with integers 0 <= i < n"):
    cli._ShardParser().parse("3/3")


# ----------------------------------------------------------------------------
# Sharded sweeps and their merge, the training replaced by a deterministic fake.


def _sweep(grid=None, labels=("A", "B"), lags=(3, 7)):
  s = importlib.import_module("configs.sweeps.quickstart").get_config("quick")
  s.models = [{"label": label, "cell": "vanilla", "bias_init": "chrono"} for label in labels]
  s.lags = list(lags)
  if grid is not None:
    s.grid = grid
  return s


def _outcome(config):
  """A point's result as a function of its config alone: per seed (accuracy,
  sequences to criterion or None), sequences seen, wall time."""
  lr = config.optimizer.learning_rate
  good = config.lag * lr < 0.02 + (0.01 if config.model.bias_init == "chrono" else 0.0)
  seeds = [(0.95, 40 * config.lag), (0.9 if good else 0.4, 60 * config.lag if good else None)]
  return seeds, 80 * config.lag, config.lag + 1000 * lr


@pytest.fixture
def fake_train(monkeypatch):
  """Replace training: writes config.json and summary.json as the runner
  does; records the run directory names trained."""
  calls = []

  def train(config, path, progress=True, force=False):
    seeds, seen, wall = _outcome(config)
    calls.append(os.path.basename(path))
    per_seed = [{"seed": i, "solved": c is not None, "sequences_to_criterion": c,
                 "skipped_updates": 0, "metrics": {"accuracy": a}}
                for i, (a, c) in enumerate(seeds)]
    summary = {"status": "finished", "per_seed": per_seed, "sequences_seen": seen,
               "solved_fraction": sum(p["solved"] for p in per_seed) / len(per_seed),
               "wall_time_s": wall}
    wd.ensure_dir(path)
    wd.write_json_atomic(os.path.join(path, "config.json"), config.to_dict())
    wd.write_json_atomic(os.path.join(path, "summary.json"), summary)
    return summary

  monkeypatch.setattr(sweep_lib, "train_and_evaluate", train)
  return calls


def _same_files(a, b, names):
  for name in names:
    assert (a / name).read_text() == (b / name).read_text(), name


GRID = {"optimizer": {"learning_rate": [1e-3, 3e-3]}, "model": {"bias_init": ["chrono",
                                                                            "forget"]}}


@pytest.mark.parametrize("count", [2, 3])
def test_shards_in_their_own_workdirs_then_merge_equal_the_unsharded_sweep(tmp_path, fake_train,
                                                                          count):
  s = _sweep(GRID)
  whole = run_sweep(s, str(tmp_path / "whole"), progress=False)
  names = [p.name for p in sweep_lib.points(s)]
  assert fake_train == names and len(names) == 16
  fake_train.clear()
  shard_rows = []
  for i in range(count):
    rows = run_sweep(s, str(tmp_path / f"shard{i}"), progress=False, shard=(i, count))
    # A shard trains its points only, in their run directories, and writes no tables.
    assert fake_train[-len(rows):] == names[i::count]
    assert sorted(os.listdir(tmp_path / f"shard{i}")) == sorted(names[i::count])
    shard_rows.append(rows)
  assert sorted(fake_train) == sorted(names)  # every point trained once
  fake_train.clear()
  merged = merge_sweep(s, str(tmp_path / "merged"),
                       [str(tmp_path / f"shard{i}") for i in range(count)])
  assert fake_train == []  # a merge trains nothing
  assert merged.missing == [] and merged.written and merged.rows == whole
  assert merged.sources[names[1]] == str(tmp_path / ("shard1" if count > 1 else "shard0"))
  assert sorted(r for rows in shard_rows for r in map(json.dumps, rows)) == sorted(
      map(json.dumps, whole))
  _same_files(tmp_path / "whole", tmp_path / "merged", SWEEP_FILES)
  assert (tmp_path / "merged" / "memory_vs_lag.png").read_bytes()[:4] == b"\x89PNG"


def test_shards_sharing_one_workdir_then_merge_equal_the_unsharded_sweep(tmp_path, fake_train):
  s = _sweep()  # no grid: run directories <label>_lag<lag>
  run_sweep(s, str(tmp_path / "whole"), progress=False)
  shared = tmp_path / "shared"
  assert [r["lag"] for r in run_sweep(s, str(shared), progress=False, shard=(1, 2))] == [7, 7]
  assert sorted(os.listdir(shared)) == ["A_lag7", "B_lag7"]
  assert run_sweep(s, str(shared), progress=False, shard=(0, 2))[0]["model"] == "A"
  assert not (shared / "results.csv").exists()
  merged = merge_sweep(s, str(shared))
  assert merged.written and not merged.missing
  _same_files(tmp_path / "whole", shared, ("results.csv", "results.md"))
  # A rerun of a shard reuses its finished points.
  fake_train.clear()
  run_sweep(s, str(shared), progress=False, shard=(0, 2))
  assert fake_train == []


def test_a_merge_reports_missing_points_and_writes_only_when_partial(tmp_path, fake_train):
  s = _sweep(GRID)
  ps = sweep_lib.points(s)
  run_sweep(s, str(tmp_path / "s0"), progress=False, shard=(0, 2))
  merged = merge_sweep(s, str(tmp_path / "out"), [str(tmp_path / "s0")])
  assert [p.name for p in merged.missing] == [p.name for p in ps[1::2]]
  assert not merged.written and not (tmp_path / "out").exists()
  # An unfinished run directory (no summary.json) is missing too.
  run_sweep(s, str(tmp_path / "s1"), progress=False, shard=(1, 2))
  os.remove(tmp_path / "s1" / ps[3].name / "summary.json")
  merged = merge_sweep(s, str(tmp_path / "out"), [str(tmp_path / "s0"), str(tmp_path / "s1")])
  assert [p.name for p in merged.missing] == [ps[3].name] and not merged.written
  partial = merge_sweep(s, str(tmp_path / "out"), [str(tmp_path / "s0"), str(tmp_path / "s1")],
                        partial=True)
  assert partial.written and len(partial.rows) == len(ps) - 1
  with open(tmp_path / "out" / "results.csv") as f:
    table = list(csv.DictReader(f))
  assert len(table) == len(ps) - 1
  assert ps[3].name not in partial.sources and len(partial.sources) == len(ps) - 1
  assert partial.rows == [r for p, r in zip(ps, run_sweep(s, str(tmp_path / "s1"),
                                                          progress=False)) if p != ps[3]]
  # Nothing finished anywhere: nothing to write, even when partial.
  empty = merge_sweep(s, str(tmp_path / "none"), partial=True)
  assert len(empty.missing) == len(ps) and not empty.written


def test_a_merge_refuses_a_point_run_with_another_config(tmp_path, fake_train):
  s = _sweep()
  run_sweep(s, str(tmp_path), progress=False, shard=(0, 2))
  s.base.budget_sequences = 320
  with pytest.raises(wd.WorkdirError, match=r"A_lag3 holds a finished run with a different "
                     r"config \(budget_sequences: 160 -> 320\)"):
    merge_sweep(s, str(tmp_path))


# ----------------------------------------------------------------------------
# Horizon searches sharded by model.

SOLVED_UP_TO = {"LSTM chrono": 6, "LSTM b_f=1": 1, "GRU": 100, "Elman RNN": 3}
"""Per model, the largest lag the fake solves (both seeds), searched over lags 2..8."""


@pytest.fixture
def fake_search(monkeypatch):
  calls = []

  def train(point, path, *, progress=True, force=False):
    label = next(l for l in SOLVED_UP_TO if sweep_lib.point_name(l, point.lag) ==
                 os.path.basename(path))
    calls.append(os.path.basename(path))
    solved = point.lag <= SOLVED_UP_TO[label]
    per_seed = [{"seed": i, "solved": solved, "sequences_to_criterion": 8 if solved else None,
                 "skipped_updates": 0, "metrics": {"accuracy": 0.9 if solved else 0.3}}
                for i in range(2)]
    summary = {"status": "finished", "solved": solved, "solved_fraction": float(solved),
               "per_seed": per_seed, "wall_time_s": float(point.lag)}
    wd.ensure_dir(path)
    wd.write_json_atomic(os.path.join(path, "config.json"), point.to_dict())
    wd.write_json_atomic(os.path.join(path, "summary.json"), summary)
    return summary

  monkeypatch.setattr(sweep_lib, "train_and_evaluate", train)
  return calls


def _horizon_config(all_models=True):
  module = importlib.import_module("configs.sweeps.horizon_quickstart")
  c = module.get_config("quick")
  if all_models:
    c.models = module.get_config().models  # chrono, b_f=1, GRU, Elman
  return c


def test_horizon_shards_split_the_models_and_merge_equals_the_unsharded_search(tmp_path,
                                                                              fake_search):
  c = _horizon_config()
  whole = hz.run_horizon(c, str(tmp_path / "whole"), progress=False)
  assert {k: str(r["horizon"]) for k, r in whole.items()} == {
      "LSTM chrono": "6", "LSTM b_f=1": "none", "GRU": ">= 8", "Elman RNN": "3"}
  fake_search.clear()
  first = hz.run_horizon(c, str(tmp_path / "s0"), progress=False, shard=(0, 2))
  second = hz.run_horizon(c, str(tmp_path / "s1"), progress=False, shard=(1, 2))
  assert list(first) == ["LSTM chrono", "GRU"] and list(second) == ["LSTM b_f=1", "Elman RNN"]
  assert {**first, **second} == whole
  assert not (tmp_path / "s0" / "horizons.csv").exists()
  assert all(n.startswith(("LSTM_chrono", "GRU")) for n in os.listdir(tmp_path / "s0"))
  trained = list(fake_search)
  merged = hz.merge_horizon(c, str(tmp_path / "merged"), [str(tmp_path / "s0"),
                                                          str(tmp_path / "s1")])
  assert fake_search == trained  # the merge trains nothing
  assert merged.missing == {} and merged.written
  assert merged.results == whole and list(merged.results) == list(whole)
  _same_files(tmp_path / "whole", tmp_path / "merged", HORIZON_FILES)
  assert (tmp_path / "merged" / "horizon.png").read_bytes()[:4] == b"\x89PNG"
  # More shards than models: the last shard searches nothing.
  assert hz.run_horizon(c, str(tmp_path / "s4"), progress=False, shard=(4, 5)) == {}


def test_horizon_merge_reports_the_lag_an_unfinished_search_needs(tmp_path, fake_search):
  c = _horizon_config()
  hz.run_horizon(c, str(tmp_path), progress=False, shard=(0, 2))  # chrono, GRU
  # LSTM chrono tried 2, 4, 8, 6: lose its last point.
  os.remove(tmp_path / "LSTM_chrono_lag6" / "summary.json")
  merged = hz.merge_horizon(c, str(tmp_path))
  assert merged.missing == {"LSTM chrono": 6, "LSTM b_f=1": 2, "Elman RNN": 2}
  assert not merged.written and not (tmp_path / "horizons.csv").exists()
  partial = hz.merge_horizon(c, str(tmp_path), partial=True)
  assert partial.written
  assert str(partial.results["LSTM chrono"]["horizon"]) == "open"
  assert [r["lag"] for r in partial.results["LSTM chrono"]["rows"]] == [2, 4, 8]
  assert str(partial.results["GRU"]["horizon"]) == ">= 8"
  md = (tmp_path / "horizons.md").read_text()
  assert "- **LSTM chrono**: open (the search has not finished)" in md


def test_horizon_cli_merge_lists_missing_models_then_merges(tmp_path, fake_search):
  c = _horizon_config(all_models=False)  # the quick config: chrono, Elman
  whole = tmp_path / "whole"
  hz.run_horizon(c, str(whole), progress=False)
  hz.run_horizon(c, str(tmp_path / "s0"), progress=False, shard=(0, 2))
  cmd = [sys.executable, "-m", "experiments.horizon",
         "--config=configs/sweeps/horizon_quickstart.py:quick", f"--workdir={tmp_path / 'm'}",
         "--merge", f"--merge_from={tmp_path / 's0'}"]
  res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert res.returncode == cli.MISSING_EXIT, res.stderr[-2000:]
  assert res.stderr.strip().splitlines() == [
      "missing: Elman RNN: the search needs lag 2 (run directory Elman_RNN_lag2)",
      f"error: 1 of 2 models not finished in {tmp_path / 'm'}, {tmp_path / 's0'}; nothing "
      "written. Run their shards again (finished points are reused), or merge with --partial"]
  assert not (tmp_path / "m").exists()
  hz.run_horizon(c, str(tmp_path / "s1"), progress=False, shard=(1, 2))
  res = subprocess.run(cmd[:-1] + [f"--merge_from={tmp_path / 's0'},{tmp_path / 's1'}"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert res.returncode == 0, res.stderr[-2000:]
  _same_files(whole, tmp_path / "m", HORIZON_FILES)
  assert "memory horizon LSTM chrono: 6" in res.stdout


# ----------------------------------------------------------------------------
# A tiny real sweep in two shards (one via the SLURM variables) and the merge.


def test_cli_two_real_shards_then_merge_equal_the_unsharded_tables(tmp_path, monkeypatch):
  config = tmp_path / "tiny.py"  # the quick sweep at one lag: two points
  config.write_text("from configs.sweeps import quickstart\n\n\ndef get_config(arg=None):\n"
                    "  c = quickstart.get_config('quick')\n  c.lags = [2]\n  return c\n")
  shared = tmp_path / "shared"
  cmd = [sys.executable, "-m", "experiments.sweep", f"--config={config}",
         f"--workdir={shared}"]
  env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
  res = subprocess.run(cmd + ["--shard=0/2"], cwd=ROOT, capture_output=True, text=True,
                       timeout=300, env=env)
  assert res.returncode == 0, res.stderr[-2000:]
  assert "shard 0/2: LSTM chrono lag=2: solved by" in res.stdout
  assert sorted(os.listdir(shared)) == ["LSTM_chrono_lag2"]
  merge = subprocess.run(cmd + ["--merge"], cwd=ROOT, capture_output=True, text=True,
                         timeout=300, env=env)
  assert merge.returncode == cli.MISSING_EXIT
  assert merge.stderr.startswith("missing: Elman RNN lag=2 (run directory Elman_RNN_lag2)\n")
  assert not (shared / "results.csv").exists()
  # Shard 1 of 2 as task 1 of a SLURM job array --array=0-1.
  slurm = {**env, "SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_COUNT": "2",
           "SLURM_ARRAY_TASK_MIN": "0", "SLURM_ARRAY_TASK_MAX": "1"}
  res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, env=slurm)
  assert res.returncode == 0, res.stderr[-2000:]
  assert "shard 1/2: Elman RNN lag=2: solved by" in res.stdout
  assert not (shared / "results.csv").exists()
  merge = subprocess.run(cmd + ["--merge"], cwd=ROOT, capture_output=True, text=True,
                         timeout=300, env=slurm)  # a merge ignores the SLURM variables
  assert merge.returncode == 0, merge.stderr[-2000:]
  assert "merged 2 finished points" in merge.stdout
  assert "memory horizon Elman RNN:" in merge.stdout
  # The unsharded sweep over the same run directories writes the same tables.
  whole = tmp_path / "whole"
  shutil.copytree(shared, whole, ignore=shutil.ignore_patterns("results.*", "*.png"))
  monkeypatch.setattr(sweep_lib, "train_and_evaluate", None)  # every point is finished
  rows = run_sweep(_tiny_sweep(), str(whole), progress=False)
  assert [(r["model"], r["lag"]) for r in rows] == [("LSTM chrono", 2), ("Elman RNN", 2)]
  assert filecmp.cmp(shared / "results.csv", whole / "results.csv", shallow=False)
  assert filecmp.cmp(shared / "results.md", whole / "results.md", shallow=False)
  summary = json.loads((shared / "Elman_RNN_lag2" / "summary.json").read_text())
  assert summary["lag"] == 2 and summary["num_seeds"] == 2


def _tiny_sweep():
  s = importlib.import_module("configs.sweeps.quickstart").get_config("quick")
  s.lags = [2]
  return s


def test_only_process_zero_writes_the_tables(tmp_path, monkeypatch):
  """Over several processes every process runs the sweep, horizon or table
  command; only process 0 (devices.is_primary) writes their tables and plots."""
  from lstm_jax import devices, tables
  monkeypatch.setattr(devices.jax, "process_index", lambda: 1)
  sweep_cfg = importlib.import_module("configs.sweeps.quickstart").get_config("quick")
  sweep_lib.write_results([], str(tmp_path), sweep_cfg)
  search_cfg = importlib.import_module("configs.sweeps.horizon_quickstart").get_config("quick")
  hz.write_results({}, str(tmp_path), search_cfg, hz._check_config(search_cfg))
  table = importlib.import_module("configs.tables.paper1997").get_config("quick")
  text, entries, unfinished = tables.write_table(table, tables.table_rows(table),
                                                 str(tmp_path), command="cmd")
  assert "# H&S 1997" in text and entries == [] and len(unfinished) == 2
  assert list(tmp_path.iterdir()) == []
