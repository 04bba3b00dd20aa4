"""Experiment layer: configs, a tiny end-to-end run, resume, sweeps, the CLIs."""

from __future__ import annotations

import csv
import importlib
import json
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lstm_jax import config as config_lib
from lstm_jax import memory, runner, training
from lstm_jax.runner import LoopState, SeedProgress, TooBigError, train_and_evaluate
from lstm_jax.sweep import memory_horizons, run_sweep
from lstm_jax.tasks import make_task
from lstm_jax.tasks.criteria import Criterion

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _quick(**overrides):
  c = importlib.import_module("configs.delayed_recall").get_config("quick")
  c.update_from_flattened_dict(overrides)  # dotted keys: "model.cell"
  return c


def _train_lines(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(l) for l in f if '"train"' in l]


def test_every_config_file_builds_its_task_and_model():
  files = sorted((ROOT / "configs").glob("*.py"))
  names = [f.stem for f in files if f.stem != "__init__"]
  assert "delayed_recall" in names
  for name in names:
    module = importlib.import_module(f"configs.{name}")
    assert "Command:" in module.__doc__ and "Expected" in module.__doc__, name
    for arg in (None, "quick"):
      task, model, _ = config_lib.build(module.get_config(arg))
      assert task.name == module.get_config(arg).task and model.output_size == task.output_size


@pytest.mark.parametrize("field,value,pattern", [
    ("model.cell", "lsmt", r"config.model.cell='lsmt' .*vanilla"),
    ("lag", 0, r"config.lag=0 .*integer >= 1"),
    ("lag", 100_000_000_000, r"lag=100000000000 is not allowed.*<= 2147483647"),
    ("lag", 2_147_483_646, r"lag=2147483646 makes sequences of 2,147,483,648 steps"),
    ("batch_size", -3, r"config.batch_size=-3"),
    ("optimizer.name", "adamm", r"optimizer.name='adamm' .*adam"),
    ("task", "copyy", r"config.task='copyy' .*copy"),
    ("model.proj_size", 8, r"model.proj_size=8 .*smaller than hidden_size=8"),
    ("optimizer.learning_rate", -1.0, r"learning_rate=-1.0"),
    ("tbptt", -1, r"config.tbptt=-1 .*integer >= 0"),
    ("remat", "log", r"config.remat='log' .*'sqrt'"),
    ("nonfinite", "ignore", r"config.nonfinite='ignore' .*'stop', 'skip'"),
    ("impl", "fast", r"config.impl='fast' .*'auto', 'fused', 'scan'"),
    ("ensemble", "pmap", r"config.ensemble='pmap' .*'auto', 'vmap', 'map'"),
    ("split_batch", "yes", r"config.split_batch='yes' .*'auto', 'on', 'off'"),
])
def test_bad_config_values_name_the_field(field, value, pattern):
  with pytest.raises(config_lib.ConfigError, match=pattern):
    config_lib.build(_quick(**{field: value}))


def test_fused_impl_refused_where_it_does_not_apply():
  with pytest.raises(config_lib.ConfigError, match=r"config.impl='fused' .*remat='step'"):
    config_lib.build(_quick(impl="fused", remat="step"))
  with pytest.raises(config_lib.ConfigError, match=r"config.impl='fused' .*cell kind 'gru'"):
    cfg = _quick(impl="fused")
    cfg.model.cell = "gru"
    config_lib.build(cfg)
  config_lib.build(_quick(impl="fused"))
  config_lib.build(_quick(impl="fused", remat="sqrt"))


def test_run_with_fused_and_plain_layers_agree(tmp_path):
  """One seed with the fused layer and with the plain scan: same training curve
  up to float32 rounding."""
  a = train_and_evaluate(_quick(impl="fused", budget_sequences=160), str(tmp_path / "f"),
                         progress=False)
  b = train_and_evaluate(_quick(impl="scan", budget_sequences=160), str(tmp_path / "s"),
                         progress=False)
  assert a["status"] == b["status"] == "finished"
  la, lb = _train_lines(str(tmp_path / "f")), _train_lines(str(tmp_path / "s"))
  np.testing.assert_allclose([l["loss"] for l in la], [l["loss"] for l in lb], rtol=1e-4)


def _reference_training(cfg, steps):
  """Per update, the loss and the unclipped gradient norm of seed 0 trained
  outside the runner, one jitted update at a time: the initial parameters of
  its init key, batch ``n`` drawn with ``fold_in(data_key, n)``, and the
  config's optimizer (global-norm clipping, then Adam at a constant rate)
  written out with optax."""
  task, model, _ = config_lib.build(cfg)
  init_keys, data_keys, _ = training.seed_keys(cfg.seed, 1)
  assert cfg.optimizer.name == "adam" and cfg.optimizer.schedule == "constant"
  opt = optax.chain(optax.clip_by_global_norm(cfg.optimizer.grad_clip),
                    optax.adam(cfg.optimizer.learning_rate))
  initial = training.init_state(model, opt, init_keys, task.input_size)
  params = jax.tree_util.tree_map(lambda x: x[0], initial.params)

  @jax.jit
  def update(params, opt_state, n):
    batch = task.sample(jax.random.fold_in(data_keys[0], n), cfg.batch_size)
    loss_fn = lambda p: task.loss(model.apply(p, batch.inputs, batch.lengths), batch)
    loss, grads = jax.value_and_grad(loss_fn)(params)
    norm = jnp.sqrt(sum(jnp.sum(g * g) for g in jax.tree_util.tree_leaves(grads)))
    updates, opt_state = opt.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss, norm

  opt_state, losses, norms = opt.init(params), [], []
  for n in range(steps):
    params, opt_state, loss, norm = update(params, opt_state, n)
    losses.append(float(loss))
    norms.append(float(norm))
  return np.array(losses), np.array(norms)


def test_end_to_end_run_writes_every_output(tmp_path):
  cfg = _quick()
  summary = train_and_evaluate(cfg, str(tmp_path), progress=False)
  for name in ("config.json", "metrics.jsonl", "summary.json"):
    assert (tmp_path / name).is_file()
  assert list((tmp_path / "tensorboard").iterdir())
  assert list((tmp_path / "checkpoints").iterdir())
  on_disk = json.loads((tmp_path / "summary.json").read_text())
  assert on_disk == json.loads(json.dumps(summary))
  for key in ("task", "model", "lag", "solved", "solved_fraction", "sequences_seen",
              "sequences_to_criterion", "metrics", "wall_time_s"):
    assert key in on_disk
  assert (on_disk["task"], on_disk["model"], on_disk["lag"]) == ("delayed_recall", "vanilla", 3)
  assert on_disk["solved"] is on_disk["per_seed"][0]["solved"] is (on_disk["solved_fraction"] == 1)
  # 800 sequences are too few for accuracy 0.99 on 1,024 held-out sequences:
  # the run spends its budget of 100 updates of 8.
  assert on_disk["solved"] is False and on_disk["sequences_to_criterion"] is None
  assert on_disk["step"] == 100 and on_disk["sequences_seen"] == summary["sequences_seen"] == 800
  lines = _train_lines(str(tmp_path))
  assert [l["step"] for l in lines] == list(range(10, 101, 10))
  assert [l["sequences_seen"] for l in lines] == [l["step"] * 8 for l in lines]
  assert all(l["steps_per_s"] > 0 and l["skipped_updates"] == 0 for l in lines)
  # Each line holds the mean over its 10 updates of a reference training's values.
  losses, norms = _reference_training(cfg, 100)
  np.testing.assert_allclose([l["loss"] for l in lines], losses.reshape(10, 10).mean(1),
                             rtol=1e-5)
  np.testing.assert_allclose([l["grad_norm"] for l in lines], norms.reshape(10, 10).mean(1),
                             rtol=1e-5)
  assert lines[-1]["loss"] < lines[0]["loss"]  # it learns something
  # The criterion has no training-stream part: an evaluation every 20 updates,
  # the last of them the final evaluation of the summary.
  with open(tmp_path / "metrics.jsonl") as f:
    evals = [json.loads(l) for l in f if '"eval"' in l]
  assert [e["step"] for e in evals] == list(range(20, 101, 20))
  assert [e["sequences_seen"] for e in evals] == [e["step"] * 8 for e in evals]
  assert all(e["count"] == 1024.0 for e in evals)  # the criterion's eval size, not 32
  assert all(e["criterion_met"] == float(e["accuracy"] >= 0.99) == 0.0 for e in evals)
  assert on_disk["metrics"] == {k: v for k, v in evals[-1].items()
                                if k not in ("step", "seed", "split", "sequences_seen")}
  assert on_disk["metrics"]["num_wrong"] == 1024 * (1 - on_disk["metrics"]["accuracy"])


def test_run_with_sqrt_remat_and_truncated_bptt(tmp_path):
  summary = train_and_evaluate(_quick(remat="sqrt", tbptt=2, budget_sequences=160),
                               str(tmp_path), progress=False)
  assert summary["status"] == "finished" and summary["sequences_seen"] == 160
  saved = json.loads((tmp_path / "config.json").read_text())
  assert saved["remat"] == "sqrt" and saved["tbptt"] == 2


def test_resume_continues_exactly(tmp_path):
  straight = train_and_evaluate(_quick(budget_sequences=800), str(tmp_path / "a"),
                                progress=False)
  train_and_evaluate(_quick(budget_sequences=400), str(tmp_path / "b"), progress=False)
  resumed = train_and_evaluate(_quick(budget_sequences=800), str(tmp_path / "b"),
                               progress=False, on_config_change="overwrite")
  a, b = _train_lines(str(tmp_path / "a")), _train_lines(str(tmp_path / "b"))
  assert [l["step"] for l in b] == [l["step"] for l in a]
  assert [l["loss"] for l in b] == [l["loss"] for l in a]
  assert resumed["metrics"] == straight["metrics"]
  assert resumed["sequences_seen"] == straight["sequences_seen"] == 800


def test_sweep_writes_tables_plot_and_resumes(tmp_path):
  sweep = importlib.import_module("configs.sweeps.quickstart").get_config("quick")
  # One lag (two models, two seeds): rows and horizons over several lags are
  # checked on hand-made summaries in test_experiment_rules.py.
  sweep.lags = [2]
  rows = run_sweep(sweep, str(tmp_path), progress=False)
  assert len(rows) == len(sweep.lags) * len(sweep.models)
  with open(tmp_path / "results.csv") as f:
    table = list(csv.DictReader(f))
  assert [(r["model"], int(r["lag"])) for r in table] == [(r["model"], r["lag"]) for r in rows]
  assert all(0 <= float(r["solved_fraction"]) <= 1 for r in table)
  md = (tmp_path / "results.md").read_text()
  assert "| LSTM chrono | 2 |" in md and "memory horizon" in md
  png = (tmp_path / "memory_vs_lag.png").read_bytes()
  assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
  mtime = (tmp_path / "LSTM_chrono_lag2" / "summary.json").stat().st_mtime
  assert run_sweep(sweep, str(tmp_path), progress=False) == rows
  assert (tmp_path / "LSTM_chrono_lag2" / "summary.json").stat().st_mtime == mtime


def test_memory_horizon_is_the_largest_solved_lag():
  rows = [{"model": "a", "lag": 5, "solved_fraction": 1.0},
          {"model": "a", "lag": 50, "solved_fraction": 0.67},
          {"model": "a", "lag": 500, "solved_fraction": 0.0},
          {"model": "b", "lag": 5, "solved_fraction": 0.0}]
  assert memory_horizons(rows) == {"a": 50, "b": None}


def test_cli_overrides_and_bad_value(tmp_path):
  cmd = [sys.executable, "-m", "experiments.run",
         "--config=configs/delayed_recall.py:quick", f"--workdir={tmp_path}"]
  # Overrides that keep the quick run's programs (loaded from the compilation cache).
  ok = subprocess.run(cmd + ["--config.seed=7", "--config.budget_sequences=80"], cwd=ROOT,
                      capture_output=True, text=True, timeout=300)
  assert ok.returncode == 0, ok.stderr[-2000:]
  saved = json.loads((tmp_path / "config.json").read_text())
  assert saved["seed"] == 7 and saved["budget_sequences"] == 80
  bad = subprocess.run(cmd + ["--config.model.cell=lsmt"], cwd=ROOT, capture_output=True,
                       text=True, timeout=300)
  assert bad.returncode != 0
  assert bad.stderr.strip().splitlines()[-1].startswith("error: config.model.cell='lsmt'")
  assert "Traceback" not in bad.stderr
  for flag, message in (("--config.lagg=3", "error: unknown config field 'lagg'"),
                        ("--config.lag=abc", "error: flag --config.lag=abc"),
                        ("--cpu_devices=-1", "error: flag --cpu_devices=-1")):
    res = subprocess.run(cmd + [flag], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.strip().splitlines() == [res.stderr.strip()]
    assert res.stderr.startswith(message)


def test_criterion_tells_the_loop_when_to_evaluate_and_when_a_seed_is_solved():
  stream = {"correct": np.ones(5, bool), "error": np.zeros(5)}
  by_eval = Criterion("eval", window=4, eval_size=2, eval_rules=(("accuracy", ">=", 0.9),))
  state = by_eval.new_state()
  assert not by_eval.needs_eval(state) and not by_eval.holds(state)
  state = by_eval.update(state, stream)
  assert by_eval.needs_eval(state) and not by_eval.holds(state)  # no evaluation yet
  assert by_eval.holds(state, {"count": 2.0, "accuracy": 1.0})
  assert not by_eval.holds(state, {"count": 2.0, "accuracy": 0.5})
  by_stream = Criterion("stream", window=4)
  state = by_stream.update(by_stream.new_state(), stream)
  assert not by_stream.needs_eval(state) and by_stream.holds(state)


def test_loop_state_round_trips_and_reads_checkpoints_of_parallel_lists():
  crit = make_task("delayed_recall", lag=3).criterion
  loop = LoopState.new(crit, 2)
  loop.seeds[1] = SeedProgress(crit.update(crit.new_state(), {"correct": np.ones(4, bool),
                                                              "error": np.zeros(4)}), 30, 2)
  loop.wall_time_s = 1.5
  back = LoopState.from_json(json.loads(json.dumps(loop.to_json())))
  assert back.to_json() == loop.to_json() and back.seeds[1].solved and not back.all_solved
  old = {"crit": [s["crit"] for s in loop.to_json()["seeds"]], "solved_step": [-1, 30],
         "wall_time_s": 1.5, "skipped": [0, 2]}
  assert LoopState.from_json(old).to_json() == loop.to_json()
  del old["skipped"]  # checkpoints older still had no skipped counts
  assert [s.skipped for s in LoopState.from_json(old).seeds] == [0, 0]


def test_summary_solved_is_all_seeds_and_the_fraction_has_its_own_key():
  cfg = _quick(num_seeds=3)
  task = make_task("delayed_recall", lag=3)
  loop = LoopState.new(task.criterion, 3)
  loop.seeds[0].solved_step, loop.seeds[2].solved_step = 10, 30
  final = [{"accuracy": a} for a in (1.0, 0.5, 0.9)]
  summary = runner._summary(cfg, task, 40, loop, final, 2.0, "finished", None)
  assert summary["solved"] is False and summary["solved_fraction"] == pytest.approx(2 / 3)
  assert [p["solved"] for p in summary["per_seed"]] == [True, False, True]
  assert summary["sequences_to_criterion"] == 160.0 and summary["metrics"]["accuracy"] == 0.9
  loop.seeds[1].solved_step = 20
  assert runner._summary(cfg, task, 40, loop, final, 2.0, "finished", None)["solved"] is True


def test_memory_helpers():
  assert memory.format_bytes(1842565037376) == "1.84 TB" and memory.format_bytes(512) == "512 B"
  assert memory.parse_meminfo("MemTotal: 10 kB\nMemAvailable:  2048 kB\n") == 2048 * 1024
  assert memory.batch_bytes(2, 10, 3, 1) == 320
  free = memory.host_available_bytes()
  assert free is not None and free > 0
  cpu = jax.devices("cpu")
  assert memory.devices_of(jax.device_put(np.zeros(2), cpu[0])) == cpu[:1]
  assert memory.shortfall(1, cpu) is None
  need, have = memory.shortfall(free * 4, cpu[:1])  # CPU devices share the host's memory
  assert need == free * 4 and 0 < have < need
  assert memory.shortfall(free, cpu[:2])[0] == 2 * free  # conftest: two CPU devices


def test_a_run_too_big_for_the_memory_is_refused_unless_forced(tmp_path, monkeypatch):
  """Refused by the batch size alone before compiling, then by XLA's estimate
  of the compiled programs; with force the run trains on the programs compiled
  for the estimate, never compiling through jit."""
  made = []

  def recording(*args, **kwargs):
    chunk = make(*args, **kwargs)
    lower, calls = chunk.lower, []
    chunk.lower = lambda *a: (calls.append(1), lower(*a))[1]
    made.append((chunk, calls))
    return chunk

  make = training.make_train_chunk
  monkeypatch.setattr(training, "make_train_chunk", recording)
  cfg = _quick(budget_sequences=80)
  task = make_task("delayed_recall", lag=3)
  eval_batch = memory.batch_bytes(max(cfg.eval_size, task.criterion.eval_size),
                                  task.max_length, task.input_size, task.output_size)
  monkeypatch.setattr(memory, "host_available_bytes", lambda: 100)
  with pytest.raises(TooBigError, match=r"needs at least .* but 100 B is available; .*--force"):
    train_and_evaluate(cfg, str(tmp_path), progress=False)
  assert made[-1][1] == [] and not (tmp_path / "config.json").exists()  # nothing compiled
  monkeypatch.setattr(memory, "host_available_bytes", lambda: eval_batch + 1)
  with pytest.raises(TooBigError, match=r"needs about .* \(XLA's estimate"):
    train_and_evaluate(cfg, str(tmp_path), progress=False)
  assert made[-1][1] == [1] and not (tmp_path / "config.json").exists()
  summary = train_and_evaluate(cfg, str(tmp_path), progress=False, force=True)
  chunk, calls = made[-1]
  assert summary["status"] == "finished" and summary["sequences_seen"] == 80
  assert calls == [1] and chunk.jitted._cache_size() == 0
