"""Memory diagnostics logged by a run (config.diagnostics, lstm_jax.runner) and
plotted by the sweep and horizon commands: the logged values against a NumPy
LSTM loop on the run's own parameters (the gradient of the task's loss by
default, of the last outputs with gradient="output"), training unchanged with
them on, resume without duplicates, bad config values, and diagnostics.png."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys

import jax
import ml_collections
import numpy as np
import pytest

from configs import delayed_recall
from lstm_jax import config as config_lib
from lstm_jax import diagnostics as D
from lstm_jax import horizon as hz
from lstm_jax import runner
from lstm_jax import sweep as sweep_lib
from lstm_jax import training
from lstm_jax import workdir as wd
from test_diagnostics import _numpy_trace

ROOT = pathlib.Path(__file__).resolve().parents[1]
DISTANCES = [0, 1, 4]


def _config(every=10, num_seeds=2, cell="vanilla"):
  """Quick delayed recall (8 units, lag 3): 20 updates of 8 sequences, a
  checkpoint every 10; diagnostics on 4 sequences every ``every`` updates."""
  c = delayed_recall.get_config("quick")
  c.budget_sequences = 160
  c.checkpoint_every = 10
  c.num_seeds = num_seeds
  c.model.cell = cell
  c.diagnostics.every = every
  c.diagnostics.num_sequences = 4
  c.diagnostics.distances = DISTANCES
  return c


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """The same two-seed run with diagnostics off and on (every 10 updates)."""
  off, on = (str(tmp_path_factory.mktemp(name)) for name in ("off", "on"))
  runner.train_and_evaluate(_config(every=0), off, progress=False)
  runner.train_and_evaluate(_config(every=10), on, progress=False)
  return off, on


def _records(workdir, name="metrics.jsonl"):
  return wd.read_jsonl(os.path.join(workdir, name))


def _params_at(workdir, config, step):
  """Per seed, the first layer's parameters at ``step``: the initial ones
  (step 0) or the newest checkpoint's (which must be ``step``)."""
  task, model, _ = config_lib.build(config)
  opt = training.make_optimizer(**config_lib.optimizer_kwargs(config))
  state = training.init_state(model, opt, training.seed_keys(config.seed, config.num_seeds)[0],
                              task.input_size)
  if step:
    store = wd.CheckpointStore(workdir)
    try:
      saved, state, _ = store.restore_latest(state)
    finally:
      store.close()
    assert saved == step
  return model, [jax.tree_util.tree_map(lambda x: np.asarray(x[s]), state.params)
                 for s in range(config.num_seeds)]


def _loss_gradient(task, model, params, batch):
  """``||dL / dx[b, len_b - 1 - d]||`` over rows b, L the task's loss on
  ``batch``: the full input gradient, then a loop over rows and distances."""
  lengths = np.asarray(batch.lengths)
  grad = np.asarray(jax.grad(lambda x: task.loss(model.apply(params, x, batch.lengths),
                                                 batch))(batch.inputs), np.float64)
  squares = np.zeros(grad.shape[1])
  for b, n in enumerate(lengths):
    for d in range(n):
      squares[d] += (grad[b, n - 1 - d] ** 2).sum()
  return np.sqrt(squares)


def _numpy_diagnostics(model, params, xs, lengths):
  """The logged quantities in float64 NumPy: a vanilla LSTM loop per row
  (test_diagnostics._numpy_trace) for the forget gate and the cell state; the
  output gradient (gradient="output") per row cut at its length, with the
  NumPy-tested input_gradient_by_distance."""
  fs, cs = [], []
  for b, n in enumerate(lengths):
    f, c = _numpy_trace(params["rnn"][0], xs[b, :n])
    fs.append(f.reshape(n, -1))
    cs.append(c.reshape(n, -1))
  f_all = np.concatenate(fs)  # real (t, b) entries x units
  tau = (1.0 / np.maximum(1.0 - f_all, D.EPS)).mean(axis=0)  # per unit
  time = xs.shape[1]
  norms = [[np.linalg.norm(c[t]) for c in cs if t < len(c)] for t in range(time)]
  squares = np.zeros(time)
  for b, n in enumerate(lengths):
    row = np.asarray(D.input_gradient_by_distance(model, params, xs[b:b + 1, :n], n - 1))
    squares[:n] += row.astype(np.float64) ** 2
  return {"forget_mean": f_all.mean(), "forget_frac_above_0_99": (f_all > 0.99).mean(),
          "time_scale_mean": tau.mean(), "time_scale_median": np.median(tau),
          "cell_norm": np.array([np.mean(n) for n in norms]),
          "cell_norm_end": np.mean([np.linalg.norm(c[-1]) for c in cs]),
          "input_grad_norm": np.sqrt(squares)}


def test_logged_values_match_numpy_on_the_runs_parameters(runs):
  _, on = runs
  config = _config()
  assert config.diagnostics.gradient == "loss"  # the default
  lines = _records(on, runner.DIAGNOSTICS_FILE)
  assert [(r["step"], r["seed"]) for r in lines] == [(s, k) for s in (0, 10, 20) for k in (0, 1)]
  assert {r["gradient"] for r in lines} == {"loss"}
  task = config_lib.build(config).task
  batch = runner.diagnostics_batch(task, 4)
  xs, lengths = np.asarray(batch.inputs), np.asarray(batch.lengths)
  for step in (0, 20):
    model, params = _params_at(on, config, step)
    for s in range(2):
      got = [r for r in lines if r["step"] == step and r["seed"] == s][0]
      ref = _numpy_diagnostics(model, params[s], xs, lengths)
      for key in ("forget_mean", "forget_frac_above_0_99", "time_scale_mean",
                  "time_scale_median", "cell_norm_end"):
        assert got[key] == pytest.approx(ref[key], rel=1e-4, abs=1e-6), key
      np.testing.assert_allclose(got["cell_norm"], ref["cell_norm"], rtol=1e-4)
      grads = _loss_gradient(task, model, params[s], batch)
      np.testing.assert_allclose(got["input_grad_norm"], grads, rtol=1e-4)
      assert got["cell_norm_mean"] == pytest.approx(ref["cell_norm"].mean(), rel=1e-4)
      for d in DISTANCES:
        assert got[f"input_grad_norm_d{d}"] == pytest.approx(grads[d], 1e-4)
  # metrics.jsonl holds the same scalars (no curves, cell or gradient), split "diagnostics".
  logged = [r for r in _records(on) if r["split"] == "diagnostics"]
  assert len(logged) == len(lines)
  for r, line in zip(logged, lines):
    assert r == {k: v for k, v in line.items()
                 if not isinstance(v, list) and k not in ("cell", "gradient")} | {
        "split": "diagnostics"}
  events = list(pathlib.Path(on, "tensorboard").glob("events.out.tfevents.*"))
  assert events and any(b"diagnostics/time_scale_median/seed1" in e.read_bytes()
                        for e in events)


def test_output_gradient_gives_the_last_outputs_gradient(runs):
  """gradient="output": the run's diagnostics program gives the gradient of the
  summed last outputs (as before the loss became the default) on the saved
  parameters, the other entries unchanged."""
  _, on = runs
  config = _config()
  config.diagnostics.gradient = "output"
  settings = runner.DiagnosticsSettings.of(config)
  assert settings.gradient == "output"
  assert runner.DiagnosticsSettings.of(_config()).gradient == "loss"
  task, model, placement = config_lib.build(config)
  model, params = _params_at(on, config, 20)
  stacked = jax.tree_util.tree_map(lambda *p: np.stack(p), *params)
  measured = jax.device_get(runner.make_diagnose(model, task, 4, placement, "output")(stacked))
  batch = runner.diagnostics_batch(task, 4)
  xs, lengths = np.asarray(batch.inputs), np.asarray(batch.lengths)
  lines = [r for r in _records(on, runner.DIAGNOSTICS_FILE) if r["step"] == 20]
  for s in range(2):
    ref = _numpy_diagnostics(model, params[s], xs, lengths)
    np.testing.assert_allclose(measured["input_grad_norm"][s], ref["input_grad_norm"], rtol=1e-4)
    np.testing.assert_allclose(measured["cell_norm"][s], lines[s]["cell_norm"], rtol=1e-6)
    assert not np.allclose(measured["input_grad_norm"][s], lines[s]["input_grad_norm"])


def test_training_is_the_same_with_diagnostics_on(runs):
  off, on = runs
  strip = lambda rs: [{k: v for k, v in r.items() if k != "steps_per_s"} for r in rs
                      if r["split"] != "diagnostics"]
  assert strip(_records(off)) == strip(_records(on))
  assert not os.path.exists(os.path.join(off, runner.DIAGNOSTICS_FILE))
  assert not any(r["split"] == "diagnostics" for r in _records(off))
  summary = lambda w: json.loads(pathlib.Path(w, "summary.json").read_text())
  assert summary(off)["per_seed"] == summary(on)["per_seed"]
  _, params_off = _params_at(off, _config(every=0), 20)
  _, params_on = _params_at(on, _config(), 20)
  for a, b in zip(jax.tree_util.tree_leaves(params_off), jax.tree_util.tree_leaves(params_on)):
    np.testing.assert_array_equal(a, b)


def test_resume_logs_each_step_once_with_the_same_values(runs, tmp_path):
  _, on = runs
  work = str(tmp_path / "resumed")
  shutil.copytree(on, work)
  # As if killed after step 20's records but before its checkpoint and summary,
  # with step 10's diagnostics written for seed 0 only.
  shutil.rmtree(os.path.join(work, "checkpoints", "20"))
  os.remove(os.path.join(work, "checkpoint_hashes", "20.json"))
  os.remove(os.path.join(work, "summary.json"))
  path = os.path.join(work, runner.DIAGNOSTICS_FILE)
  wd.truncate_jsonl(path, lambda r: not (r["step"] == 10 and r["seed"] == 1))
  summary = runner.train_and_evaluate(_config(), work, progress=False)
  assert summary["status"] == "finished"
  assert _records(work, runner.DIAGNOSTICS_FILE) == _records(on, runner.DIAGNOSTICS_FILE)
  strip = lambda rs: [{k: v for k, v in r.items() if k != "steps_per_s"} for r in rs]
  assert strip(_records(work)) == strip(_records(on))


def test_resume_drops_records_after_the_checkpoint_and_incomplete_steps(tmp_path):
  work = str(tmp_path)
  diag = [{"step": s, "seed": k, "x": 1.0} for s in (0, 10, 20) for k in (0, 1)][:-1]
  metrics = [{"step": s, "seed": k, "split": split} for s in (0, 10, 20) for k in (0, 1)
             for split in ("train", "diagnostics")]
  for name, records in ((runner.DIAGNOSTICS_FILE, diag), ("metrics.jsonl", metrics)):
    pathlib.Path(work, name).write_text("".join(json.dumps(r) + "\n" for r in records))
  # Checkpoint at 20, whose seed 1 is missing: step 20 is measured again.
  assert runner._resume_diagnostics(work, 20, 2) == 10
  assert [(r["step"], r["seed"]) for r in _records(work, runner.DIAGNOSTICS_FILE)] == [
      (0, 0), (0, 1), (10, 0), (10, 1)]
  kept = [(r["step"], r["split"]) for r in _records(work)]
  assert (20, "train") in kept and (20, "diagnostics") not in kept and (10, "diagnostics") in kept
  assert runner._resume_diagnostics(work, 5, 2) == 0  # checkpoint at 5: only step 0 stays


def test_elman_logs_hidden_state_norm_and_gradient_not_forget_gate(tmp_path):
  summary = runner.train_and_evaluate(_config(num_seeds=1, cell="elman"), str(tmp_path),
                                      progress=False)
  assert summary["status"] == "finished"
  lines = _records(str(tmp_path), runner.DIAGNOSTICS_FILE)
  assert [r["step"] for r in lines] == [0, 10, 20]
  assert set(lines[0]) == {"step", "seed", "sequences_seen", "cell", "gradient", "hidden_norm",
                           "hidden_norm_mean", "hidden_norm_max", "hidden_norm_end",
                           "input_grad_norm", *(f"input_grad_norm_d{d}" for d in DISTANCES)}
  config = _config(num_seeds=1, cell="elman")
  task = config_lib.build(config).task
  batch = runner.diagnostics_batch(task, 4)
  model, params = _params_at(str(tmp_path), config, 20)
  h, mask = D.hidden_trace(model.cell, params[0]["rnn"][0], batch.inputs,
                           lengths=batch.lengths)
  norms = np.linalg.norm(np.asarray(h, np.float64), axis=-1)  # [T, B]
  m = np.asarray(mask)
  ref = [norms[t][m[t]].mean() for t in range(norms.shape[0])]
  np.testing.assert_allclose(lines[-1]["hidden_norm"], ref, rtol=1e-5)


@pytest.mark.parametrize("field, value, pattern", [
    ("every", -1, r"^config\.diagnostics\.every=-1 is not allowed; expected an integer >= 0$"),
    ("num_sequences", 0, r"^config\.diagnostics\.num_sequences=0 is not allowed; "),
    ("distances", [0, -2], r"^config\.diagnostics\.distances=\(0, -2\) is not allowed; "),
    ("distances", [3, 3], r"^config\.diagnostics\.distances=\(3, 3\) is not allowed; "),
    ("gradient", "grad",
     r"^config\.diagnostics\.gradient='grad' is not allowed; allowed: 'loss', 'output'$"),
])
def test_bad_diagnostics_values_are_one_line_naming_the_field(tmp_path, field, value, pattern):
  c = _config()
  c.diagnostics[field] = value
  with pytest.raises(config_lib.ConfigError, match=pattern) as err:
    runner.train_and_evaluate(c, str(tmp_path / "w"), progress=False)
  assert "\n" not in str(err.value)
  assert not (tmp_path / "w").exists()


def test_bad_diagnostics_value_on_the_command_line(tmp_path):
  proc = subprocess.run(
      [sys.executable, "-m", "experiments.run", "--config=configs/delayed_recall.py:quick",
       "--config.diagnostics.every=-1", f"--workdir={tmp_path}"],
      cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert proc.returncode == 2
  assert proc.stderr.strip() == ("error: config.diagnostics.every=-1 is not allowed; "
                                 "expected an integer >= 0")


def _sweep_config(every):
  c = ml_collections.ConfigDict()
  c.base = _config(every=every, num_seeds=1)
  c.base.budget_sequences = 80
  c.lags = [3]
  c.models = [{"label": "LSTM", "cell": "vanilla"}, {"label": "Elman", "cell": "elman"}]
  c.num_seeds = 1
  c.metric = "accuracy"
  return c


def test_tiny_sweep_plots_diagnostics(tmp_path):
  sweep_lib.run_sweep(_sweep_config(every=10), str(tmp_path), progress=False)
  png = (tmp_path / "diagnostics.png").read_bytes()
  assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
  final = sweep_lib.final_diagnostics(str(tmp_path / "LSTM_lag3"))
  last = [r for r in _records(str(tmp_path / "LSTM_lag3"), runner.DIAGNOSTICS_FILE)
          if r["step"] == 10]
  assert final["step"] == 10 and final["seeds"] == 1 and final["gradient"] == "loss"
  np.testing.assert_allclose(final["input_grad_norm"], last[0]["input_grad_norm"])
  assert "hidden_norm" in sweep_lib.final_diagnostics(str(tmp_path / "Elman_lag3"))


def test_diagnostics_png_only_where_points_logged_them_sweep_and_horizon(tmp_path, monkeypatch):
  def fake(point, path, *, progress=True, force=False):
    per_seed = [{"seed": 0, "solved": True, "sequences_to_criterion": 8, "skipped_updates": 0,
                 "metrics": {"accuracy": 1.0}}]
    summary = {"status": "finished", "solved": True, "solved_fraction": 1.0,
               "per_seed": per_seed, "wall_time_s": 1.0, "sequences_seen": 80}
    wd.ensure_dir(path)
    wd.write_json_atomic(os.path.join(path, "config.json"), point.to_dict())
    wd.write_json_atomic(os.path.join(path, "summary.json"), summary)
    if point.diagnostics.every:  # one measurement per lag: gradient decays as 0.5^d
      T = point.lag + 2
      record = {"step": 10, "seed": 0, "cell": point.model.cell, "time_scale_median": 2.0,
                "cell_norm": [1.0] * T, "input_grad_norm": [0.5 ** d for d in range(T)]}
      pathlib.Path(path, runner.DIAGNOSTICS_FILE).write_text(json.dumps(record) + "\n")
    return summary

  monkeypatch.setattr(sweep_lib, "train_and_evaluate", fake)
  sweep_lib.run_sweep(_sweep_config(every=0), str(tmp_path / "off"), progress=False)
  assert (tmp_path / "off" / "memory_vs_lag.png").exists()
  assert not (tmp_path / "off" / "diagnostics.png").exists()
  # A horizon search over points that logged diagnostics plots them.
  h = ml_collections.ConfigDict({
      "base": _config(every=10, num_seeds=1), "models": [{"label": "LSTM", "cell": "vanilla"}],
      "num_seeds": 1, "metric": "accuracy", "start_lag": 2, "growth": 2.0, "max_lag": 4,
      "resolution": 0.25, "threshold": 0.5, "budget_rule": "constant", "max_budget": 0})
  hz.run_horizon(h, str(tmp_path / "horizon"), progress=False)
  assert (tmp_path / "horizon" / "diagnostics.png").read_bytes()[:4] == b"\x89PNG"
  final = sweep_lib.final_diagnostics(str(tmp_path / "horizon" / "LSTM_lag4"))
  np.testing.assert_allclose(final["input_grad_norm"], 0.5 ** np.arange(6))
  assert final["gradient"] == "output"  # records that do not say are the output gradient
