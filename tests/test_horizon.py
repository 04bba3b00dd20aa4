"""Memory-horizon search: the search rule on hand-made oracles (no training),
run_horizon with a fake point runner, config checks, and one tiny CLI run."""

from __future__ import annotations

import csv
import importlib
import json
import math
import os
import pathlib
import subprocess
import sys

import ml_collections
import pytest

from lstm_jax import config as config_lib
from lstm_jax import horizon as hz
from lstm_jax import sweep as sweep_lib
from lstm_jax import workdir as wd
from lstm_jax.horizon import Horizon, Search

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _search_with(oracle, search):
  """Run the search with ``oracle(lag) -> solved fraction`` as the evaluator:
  the lags asked for, in order, and the horizon."""
  evidence, asked = {}, []
  while (lag := hz.next_lag(evidence, search)) is not None:
    assert lag not in evidence, "a lag is never tried twice"
    assert search.start_lag <= lag <= search.max_lag
    asked.append(lag)
    evidence[lag] = oracle(lag)
    assert len(asked) < 100
  return asked, hz.horizon_of(evidence, search)


def _below(h):
  return lambda lag: 1.0 if lag <= h else 0.0


# ----------------------------------------------------------------------------
# The search rule on oracles.


def test_solved_iff_lag_at_most_37_grows_then_bisects_to_within_resolution():
  """Doubling from 5: 5, 10, 20 solved, 40 failed. Bisection at the rounded
  geometric midpoint: sqrt(20*40)=28.3 -> 28 solved, sqrt(28*40)=33.5 -> 33
  solved, sqrt(33*40)=36.3 -> 36 solved; 40/36=1.11 > 1.1 so once more:
  sqrt(36*40)=37.9 -> 38 failed; 38/36=1.056 <= 1.1: stop at (36, 38)."""
  search = Search(start_lag=5, growth=2, max_lag=1000, resolution=0.1)
  asked, h = _search_with(_below(37), search)
  assert asked == [5, 10, 20, 40, 28, 33, 36, 38]
  assert h == Horizon("bounded", 36, 38) and h.lag == 36 and str(h) == "36"
  assert h.solved <= 37 < h.failed and h.failed <= h.solved * 1.1


@pytest.mark.parametrize("resolution", [0.0, 0.1, 0.25, 1.0])
def test_bisection_brackets_every_true_horizon(resolution):
  """For every true horizon h in [5, 600): solved at the reported lag, failed
  at the bound, within the resolution (resolution 0: exactly h, h + 1), in
  at most ~2 log2(max_lag) points."""
  search = Search(start_lag=5, growth=2, max_lag=1000, resolution=resolution)
  for true in range(5, 600):
    asked, h = _search_with(_below(true), search)
    assert h.kind == "bounded", (true, h)
    assert h.solved <= true < h.failed, (true, h)
    assert h.failed - h.solved <= 1 or h.failed <= h.solved * (1 + resolution), (true, h)
    if resolution == 0:
      assert (h.solved, h.failed) == (true, true + 1)
    assert len(asked) <= 2 * math.log2(1000) + 2, (true, asked)
    assert len(set(asked)) == len(asked)


def test_first_lag_failing_is_no_horizon():
  asked, h = _search_with(_below(3), Search(start_lag=5, max_lag=100))
  assert asked == [5]
  assert h == Horizon("none", None, 5) and h.lag is None and str(h) == "none"
  assert h.explain() == "none (failed at the first lag, 5)"


def test_never_failing_up_to_max_lag_is_unbounded():
  """Doubling from 5 reaches 160, then the next lag is capped at max_lag=300."""
  asked, h = _search_with(lambda lag: 1.0, Search(start_lag=5, growth=2, max_lag=300))
  assert asked == [5, 10, 20, 40, 80, 160, 300]
  assert h == Horizon("unbounded", 300, None) and str(h) == ">= 300" and h.lag == 300
  # start_lag == max_lag: one point.
  assert _search_with(lambda lag: 1.0, Search(start_lag=7, max_lag=7)) == (
      [7], Horizon("unbounded", 7, None))


def test_failing_at_the_capped_max_lag_bisects_below_it():
  search = Search(start_lag=5, growth=2, max_lag=300, resolution=0.25)
  asked, h = _search_with(_below(250), search)
  # (160, 300): sqrt(48000)=219.1 -> 219 solved; (219, 300): 256.3 -> 256
  # failed; (219, 256): 256/219=1.17 <= 1.25.
  assert asked == [5, 10, 20, 40, 80, 160, 300, 219, 256]
  assert h == Horizon("bounded", 219, 256)


def test_threshold_boundary_counts_exactly_the_threshold_as_solved():
  search = Search(start_lag=5, max_lag=100, threshold=0.5)
  assert hz.next_lag({5: 0.5}, search) == 10
  assert hz.next_lag({5: 0.49}, search) is None
  assert hz.horizon_of({5: 0.49}, search).kind == "none"
  strict = Search(start_lag=5, max_lag=100, threshold=1.0)
  assert hz.next_lag({5: 0.75}, strict) is None and hz.next_lag({5: 1.0}, strict) == 10


def test_grow_and_midpoint_rounding():
  s = lambda growth, max_lag=10**6: Search(start_lag=1, growth=growth, max_lag=max_lag)
  assert [hz.grow(l, s(1.5)) for l in (3, 5, 8)] == [5, 8, 12]  # 4.5, 7.5 round up
  assert hz.grow(2, s(1.1)) == 3  # 2.2 rounds to 2: at least one step more
  assert hz.grow(10, s(1.1)) == 11  # 11.000000000000002
  assert hz.grow(100, s(10, max_lag=300)) == 300
  assert [hz.midpoint(*b) for b in ((20, 40), (2, 8), (1, 3), (4, 6), (10, 12))] == [
      28, 4, 2, 5, 11]
  assert hz.midpoint(1, 100) == 10 and hz.midpoint(1, 1000) == 32  # 31.6
  big = hz.midpoint(2**30, 2**31 - 1)
  assert 2**30 < big < 2**31 - 1 and abs(big - math.sqrt(2**30 * (2**31 - 1))) <= 0.5


def test_next_lag_is_a_function_of_the_evidence_alone():
  """Every prefix of a finished search's evidence asks for the lag the search
  tried next, whatever the order of the dict; lags off the search's path
  change nothing."""
  search = Search(start_lag=5, growth=2, max_lag=1000, resolution=0.1)
  oracle = _below(37)
  asked, _ = _search_with(oracle, search)
  for k in range(len(asked) + 1):
    prefix = {lag: oracle(lag) for lag in asked[:k]}
    expected = asked[k] if k < len(asked) else None
    assert hz.next_lag(prefix, search) == expected
    assert hz.next_lag(dict(reversed(list(prefix.items()))), search) == expected
    noisy = {**prefix, 7: 0.0, 500: 1.0, 1: 0.0}
    assert hz.next_lag(noisy, search) == expected
    assert hz.search_path(noisy, search) == asked[:k]
    assert (hz.horizon_of(prefix, search).kind == "open") == (k < len(asked))


def test_budget_rules():
  const = Search(start_lag=5, budget_sequences=16_000)
  assert [hz.budget_for(l, const) for l in (5, 7, 320)] == [16_000] * 3
  linear = Search(start_lag=5, budget_rule="linear", budget_sequences=16_000)
  assert [hz.budget_for(l, linear) for l in (5, 7, 10, 320)] == [16_000, 22_400, 32_000,
                                                                 1_024_000]
  assert hz.budget_for(4, Search(start_lag=3, budget_rule="linear",
                                 budget_sequences=1000)) == 1334  # 1333.3 rounded up
  capped = Search(start_lag=5, budget_rule="linear", budget_sequences=16_000,
                  max_budget=50_000)
  assert [hz.budget_for(l, capped) for l in (5, 15, 16, 20)] == [16_000, 48_000, 50_000,
                                                                 50_000]
  assert "ceil(16,000 x lag / 5) sequences, at most 50,000" in capped.describe()


# ----------------------------------------------------------------------------
# run_horizon with a fake point runner.


QUICK = "configs.sweeps.horizon_quickstart"

# Per run directory prefix: solved fraction of the two seeds at a lag.
FAKE = {
    "LSTM_chrono": lambda lag: 1.0 if lag <= 6 else 0.0,   # 2 4 8x 6   -> 6
    "GRU": lambda lag: 1.0,                                # 2 4 8      -> >= 8
    "Elman_RNN": lambda lag: 0.5 if lag <= 3 else 0.0,     # 2 4x 3     -> 3
    "LSTM_b_f_1": lambda lag: 0.0,                         # 2x         -> none
}
EXPECTED_LAGS = {"LSTM chrono": [2, 4, 8, 6], "GRU": [2, 4, 8], "Elman RNN": [2, 4, 3],
                 "LSTM b_f=1": [2]}
# Linear budget from 160 at lag 2, capped at 500.
BUDGET = {2: 160, 3: 240, 4: 320, 6: 480, 8: 500}


def _fake_config(**overrides):
  c = importlib.import_module(QUICK).get_config("quick")
  full = importlib.import_module(QUICK).get_config()
  c.models = [full.models[0], full.models[2], full.models[3], full.models[1]]
  c.budget_rule, c.max_budget = "linear", 500
  for key, value in overrides.items():
    c[key] = value
  return c


@pytest.fixture
def fake_runner(monkeypatch):
  """Replace training with the FAKE oracles: writes config.json and a
  summary.json as the runner does; records (run directory, budget)."""
  calls = []

  def fake(point, path, *, progress=True, force=False):
    name = os.path.basename(path)
    prefix, lag = name.rsplit("_lag", 1)
    assert int(lag) == point.lag
    calls.append((name, point.budget_sequences))
    fraction = FAKE[prefix](point.lag)
    solved = [True, fraction == 1.0] if fraction >= 0.5 else [False, False]
    per_seed = [{"seed": i, "solved": s, "sequences_to_criterion": 8 * (i + 1) if s else None,
                 "skipped_updates": 0,
                 "metrics": {"accuracy": (0.9 if s else 0.3) + 0.05 * i, "loss": 1.0}}
                for i, s in enumerate(solved)]
    summary = {"status": "finished", "solved": all(solved),
               "solved_fraction": sum(solved) / 2, "per_seed": per_seed,
               "wall_time_s": float(point.lag)}
    wd.ensure_dir(path)
    wd.write_json_atomic(os.path.join(path, "config.json"), point.to_dict())
    wd.write_json_atomic(os.path.join(path, "summary.json"), summary)
    return summary

  monkeypatch.setattr(sweep_lib, "train_and_evaluate", fake)
  return calls


def test_run_horizon_searches_each_model_and_writes_every_output(tmp_path, fake_runner):
  results = hz.run_horizon(_fake_config(), str(tmp_path), progress=False)
  expected_calls = [(f"{prefix}_lag{lag}", BUDGET[lag])
                    for prefix, (label, lags) in zip(FAKE, EXPECTED_LAGS.items())
                    for lag in lags]
  assert fake_runner == expected_calls
  assert {k: str(r["horizon"]) for k, r in results.items()} == {
      "LSTM chrono": "6", "GRU": ">= 8", "Elman RNN": "3", "LSTM b_f=1": "none"}
  assert results["LSTM chrono"]["horizon"] == Horizon("bounded", 6, 8)
  assert [r["lag"] for r in results["Elman RNN"]["rows"]] == [2, 4, 3]

  with open(tmp_path / "horizons.csv") as f:
    table = list(csv.DictReader(f))
  assert tuple(table[0]) == hz.COLUMNS
  assert [(r["model"], int(r["order"]), int(r["lag"]), int(r["budget_sequences"]))
          for r in table] == [(label, i, lag, BUDGET[lag])
                              for label, lags in EXPECTED_LAGS.items()
                              for i, lag in enumerate(lags)]
  # Elman at lag 3: one of two seeds solved (0.5 >= threshold 0.5), after 8
  # sequences; accuracies 0.9 and 0.35: median 0.625.
  elman3 = [r for r in table if r["model"] == "Elman RNN" and r["lag"] == "3"][0]
  assert (elman3["solved_fraction"], elman3["solved"]) == ("0.5", "True")
  assert elman3["median_sequences_to_criterion"] == "8.0"
  assert float(elman3["median"]) == pytest.approx(0.625)
  assert (float(elman3["min"]), float(elman3["max"])) == (0.35, 0.9)

  saved = json.loads((tmp_path / "horizons.json").read_text())
  assert saved["search"]["budget_rule"] == "linear" and saved["search"]["max_budget"] == 500
  chrono = saved["models"]["LSTM chrono"]
  assert (chrono["horizon"], chrono["kind"], chrono["solved_lag"], chrono["failed_lag"]) == (
      "6", "bounded", 6, 8)
  assert [(e["lag"], e["budget_sequences"]) for e in chrono["evidence"]] == [
      (2, 160), (4, 320), (8, 500), (6, 480)]
  assert saved["models"]["GRU"]["horizon"] == ">= 8"
  assert saved["models"]["LSTM b_f=1"]["kind"] == "none"

  md = (tmp_path / "horizons.md").read_text().splitlines()
  assert "- **LSTM chrono**: 6 (solved at lag 6, failed at lag 8)" in md
  assert "- **GRU**: >= 8 (solved at every lag tried, up to max_lag=8)" in md
  assert "- **LSTM b_f=1**: none (failed at the first lag, 2)" in md
  assert "## Elman RNN: horizon 3" in md
  start = md.index("## LSTM chrono: horizon 6")
  assert md[start + 4:start + 8] == [
      "| 2 | 160 | 1.00 | 12 | 0.925 [0.900, 0.950] |",
      "| 4 | 320 | 1.00 | 12 | 0.925 [0.900, 0.950] |",
      "| 8 | 500 | 0.00 | - | 0.325 [0.300, 0.350] |",
      "| 6 | 480 | 1.00 | 12 | 0.925 [0.900, 0.950] |"]
  assert any("ceil(160 x lag / 2) sequences, at most 500" in line for line in md)
  png = (tmp_path / "horizon.png").read_bytes()
  assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


def test_run_horizon_reuses_finished_points_and_continues_an_interrupted_search(
    tmp_path, fake_runner):
  config = _fake_config()
  first = hz.run_horizon(config, str(tmp_path), progress=False)
  fake_runner.clear()
  assert hz.run_horizon(config, str(tmp_path), progress=False) == first
  assert fake_runner == []  # every point loaded from its summary.json
  # An interrupted search: its last point of LSTM chrono and all of GRU never finished.
  for name in ("LSTM_chrono_lag6", "GRU_lag4", "GRU_lag8"):
    os.remove(tmp_path / name / "summary.json")
  assert hz.run_horizon(config, str(tmp_path), progress=False) == first
  assert fake_runner == [("LSTM_chrono_lag6", 480), ("GRU_lag4", 320), ("GRU_lag8", 500)]


def test_a_finished_point_of_another_budget_is_refused(tmp_path, fake_runner):
  hz.run_horizon(_fake_config(), str(tmp_path), progress=False)
  with pytest.raises(wd.WorkdirError,
                     match=r"LSTM_chrono_lag4 holds a finished run with a different config "
                           r"\(budget_sequences: 320 -> 160\)"):
    hz.run_horizon(_fake_config(budget_rule="constant"), str(tmp_path), progress=False)


def test_a_metric_the_runs_do_not_report_is_a_config_error(tmp_path, fake_runner):
  with pytest.raises(config_lib.ConfigError,
                     match=r"config.metric='acc' is not allowed; .*'accuracy', 'loss'"):
    hz.run_horizon(_fake_config(metric="acc"), str(tmp_path), progress=False)
  assert fake_runner == [("LSTM_chrono_lag2", 160)]


# ----------------------------------------------------------------------------
# Config checks: one ConfigError naming field, value and what is allowed,
# before anything is written.


def _bad(**overrides):
  c = importlib.import_module(QUICK).get_config("quick")
  c.update_from_flattened_dict(overrides)  # dotted keys: "model.cell"
  return c


@pytest.mark.parametrize("overrides,pattern", [
    ({"start_lag": 0}, r"^config.start_lag=0 is not allowed; expected an integer >= 1$"),
    ({"growth": 1.0}, r"^config.growth=1.0 is not allowed; expected a finite number > 1$"),
    ({"max_lag": 1}, r"config.max_lag=1 is not allowed; .*>= 2 \(at least start_lag=2\)"),
    ({"resolution": -0.1}, r"config.resolution=-0.1 .*finite number >= 0"),
    ({"threshold": 0.0}, r"config.threshold=0.0 .*> 0"),
    ({"threshold": 1.5}, r"config.threshold=1.5 .*in \(0, 1\]"),
    ({"budget_rule": "quadratic"}, r"config.budget_rule='quadratic' .*'constant', 'linear'"),
    ({"max_budget": 10}, r"config.max_budget=10 .*0 \(no cap\) or .*base.budget_sequences=160"),
    ({"num_seeds": 0}, r"config.num_seeds=0 .*integer >= 1"),
    ({"metric": ""}, r"config.metric='' .*name of a summary metric"),
    ({"models": []}, r"config.models=\[\] is not allowed"),
    ({"models": [{"label": "a"}, {"label": "a"}]}, r"labels=\['a', 'a'\]"),
    ({"models": [{"label": "a b"}, {"label": "a_b"}]}, r"distinct as directory names"),
    ({"models": [{"label": "x", "cel": "gru"}]}, r"config.models\['x'\].cel .*cell"),
    ({"models": [{"label": "x", "cell": "gruu"}]},
     r"horizon point x lag=2 .*config.model.cell='gruu'"),
    ({"base.batch_size": -1}, r"horizon point LSTM chrono lag=2 .*config.batch_size=-1"),
    # Only the largest lag is too long for int32 steps: checked up front too.
    ({"max_lag": 2_147_483_646}, r"lag=2147483646 .*makes sequences of 2,147,483,648"),
])
def test_bad_horizon_config_values_name_the_field(tmp_path, overrides, pattern):
  with pytest.raises(config_lib.ConfigError, match=pattern):
    hz.run_horizon(_bad(**overrides), str(tmp_path / "out"), progress=False)
  assert not (tmp_path / "out").exists()


def test_a_config_without_a_search_field_is_refused(tmp_path):
  c = ml_collections.ConfigDict({k: v for k, v in _bad().items() if k != "growth"})
  with pytest.raises(config_lib.ConfigError, match=r"horizon config has no field 'growth'"):
    hz.run_horizon(c, str(tmp_path), progress=False)


# ----------------------------------------------------------------------------
# The command, end to end on the tiny config.


def test_cli_quick_search_end_to_end_and_bad_argument(tmp_path):
  cmd = [sys.executable, "-m", "experiments.horizon",
         "--config=configs/sweeps/horizon_quickstart.py:quick", f"--workdir={tmp_path}"]
  res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert res.returncode == 0, res.stderr[-2000:]
  saved = json.loads((tmp_path / "horizons.json").read_text())
  search = Search(**saved["search"])
  assert (search.start_lag, search.max_lag, search.budget_sequences) == (2, 8, 160)
  with open(tmp_path / "horizons.csv") as f:
    table = list(csv.DictReader(f))
  assert list(saved["models"]) == ["LSTM chrono", "Elman RNN"]
  for label, model in saved["models"].items():
    evidence = {e["lag"]: e["solved_fraction"] for e in model["evidence"]}
    # The search the run made is the rule's: finished, in the rule's order,
    # with the horizon the rule gives; every point a run directory whose
    # summary holds the fraction reported.
    assert hz.next_lag(evidence, search) is None
    assert hz.search_path(evidence, search) == [e["lag"] for e in model["evidence"]]
    assert hz.horizon_of(evidence, search).to_json() == {
        k: model[k] for k in ("horizon", "kind", "lag", "solved_lag", "failed_lag")}
    assert f"memory horizon {label}: {model['horizon']}" in res.stdout
    for lag, fraction in evidence.items():
      summary = json.loads((pathlib.Path(sweep_lib.point_dir(str(tmp_path), label, lag))
                            / "summary.json").read_text())
      assert summary["solved_fraction"] == fraction and summary["lag"] == lag
      assert summary["num_seeds"] == 2
    assert [int(r["lag"]) for r in table if r["model"] == label] == list(evidence)
  assert (tmp_path / "horizon.png").read_bytes()[:4] == b"\x89PNG"
  assert "# Memory horizons: delayed_recall" in (tmp_path / "horizons.md").read_text()
  # Rerun: every point is reused (the saved configs match), nothing retrains.
  mtimes = {p: p.stat().st_mtime for p in tmp_path.glob("*/summary.json")}
  again = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert again.returncode == 0, again.stderr[-2000:]
  assert {p: p.stat().st_mtime for p in tmp_path.glob("*/summary.json")} == mtimes
  assert json.loads((tmp_path / "horizons.json").read_text()) == saved
  # A bad value: one line on stderr, exit 2, nothing trained.
  bad = subprocess.run(cmd[:4] + [f"--workdir={tmp_path / 'bad'}", "--config.growth=0.5"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert bad.returncode == 2 and "Traceback" not in bad.stderr
  assert bad.stderr.strip().splitlines() == [
      "error: config.growth=0.5 is not allowed; expected a finite number > 1"]
  assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize("search", ["delayed_recall", "exp2c", "chrono_long"])
def test_variant_horizon_configs_build_every_model_at_their_end_lags(search):
  """configs/sweeps/horizon_variants.py: every model builds at the first and
  the largest lag of each search (full and quick); the chrono search grows
  1,250 -> 10,000 by doubling."""
  module = importlib.import_module("configs.sweeps.horizon_variants")
  for arg in (search, search + ",quick"):
    cfg = module.get_config(arg)
    s = Search.of(cfg)
    for m in cfg.models:
      for lag in (s.start_lag, s.max_lag):
        config_lib.build(hz.point_config(cfg, m, lag, s))
  full = module.get_config(search)
  cells = [m["cell"] for m in full.models]
  if search == "chrono_long":
    assert cells == ["vanilla"] and full.models[0]["bias_init"] == "chrono"
    lags = [full.start_lag]
    while lags[-1] < full.max_lag:
      lags.append(hz.grow(lags[-1], Search.of(full)))
    assert lags == [1250, 2500, 5000, 10_000]
  else:
    assert set(cells) == {"vanilla", "gru", "elman", "lstm1997", "peephole", "nig", "nfg", "nog",
                          "niaf", "noaf", "np", "cifg", "fgr"}
  if search == "exp2c":  # the 1997 cell keeps hs2c's init, the others get the defaults
    inits = {m["label"]: m.get("kernel_init") for m in full.models}
    assert inits.pop("LSTM 1997") is None and set(inits.values()) == {"lecun_normal"}
  with pytest.raises(ValueError, match=r"config argument 'exp3' is not allowed"):
    module.get_config("exp3")
