"""Reliability with real processes and files: kills, signals, NaNs, corrupt
checkpoints, config mismatches, locks, reruns of finished runs, and user
mistakes that must end in one line and exit status 2."""

from __future__ import annotations

import importlib
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from lstm_jax import config as config_lib
from lstm_jax import training
from lstm_jax import workdir as wd
from lstm_jax.runner import NonFiniteError, train_and_evaluate

ROOT = pathlib.Path(__file__).resolve().parents[1]
# A run long enough to be killed in the middle: 1,000 updates, a checkpoint every 50.
LONG = ["--config.lag=20", "--config.budget_sequences=8000", "--config.log_every=10",
        "--config.checkpoint_every=50", "--config.eval_every=100000"]


def _cmd(workdir, *extra):
  return [sys.executable, "-m", "experiments.run", "--config=configs/delayed_recall.py:quick",
          f"--workdir={workdir}", *extra]


def _run(workdir, *extra, timeout=300):
  return subprocess.run(_cmd(workdir, *extra), cwd=ROOT, capture_output=True, text=True,
                        timeout=timeout)


def _run_here(workdir, on_config_change="refuse", **fields):
  """The same run as ``_run`` without a new process (flags as config fields)."""
  cfg = importlib_config()
  for key, value in fields.items():
    target = cfg
    *path, last = key.split("__")
    for part in path:
      target = target[part]
    target[last] = value
  return train_and_evaluate(cfg, str(workdir), progress=False,
                            on_config_change=on_config_change)


def _start(workdir, *extra):
  return subprocess.Popen(_cmd(workdir, *extra), cwd=ROOT, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)


def _checkpoint_steps(workdir):
  hashes = pathlib.Path(workdir) / "checkpoint_hashes"
  return sorted(int(p.stem) for p in hashes.glob("*.json")) if hashes.is_dir() else []


def _wait_for_checkpoint(workdir, proc, after=-1, timeout=120):
  """Wait until ``proc`` has written a checkpoint of a step above ``after``."""
  deadline = time.time() + timeout
  while time.time() < deadline:
    if any(step > after for step in _checkpoint_steps(workdir)):
      return
    if proc.poll() is not None:
      raise AssertionError(f"run ended before a checkpoint after step {after}: "
                           f"{proc.stderr.read()}")
    time.sleep(0.05)
  raise AssertionError(f"no checkpoint after step {after} appeared")


def _final_params(workdir):
  """Parameters of the newest checkpoint, as NumPy leaves."""
  cfg = config_lib.default_config()
  cfg.update_from_flattened_dict(wd.flatten(json.loads(
      (pathlib.Path(workdir) / "config.json").read_text())))
  task, model, _ = config_lib.build(cfg)
  opt = training.make_optimizer(**config_lib.optimizer_kwargs(cfg))
  like = training.init_state(model, opt, training.seed_keys(cfg.seed, cfg.num_seeds)[0],
                             task.input_size)
  store = wd.CheckpointStore(workdir)
  try:
    step, state, _ = store.restore_latest(like)
  finally:
    store.close()
  return step, [np.asarray(x) for x in jax.tree_util.tree_leaves(state.params)]


def _train_losses(workdir):
  return [(r["step"], r["loss"]) for r in wd.read_jsonl(os.path.join(workdir, "metrics.jsonl"))
          if r.get("split") == "train"]


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
  """One uninterrupted run of the long configuration."""
  workdir = tmp_path_factory.mktemp("straight")
  fields = {f[len("--config."):].split("=")[0]: int(f.split("=")[1]) for f in LONG}
  assert _run_here(workdir, **fields)["status"] == "finished"
  return workdir


def _assert_same_as_straight(workdir, straight):
  a = json.loads((pathlib.Path(workdir) / "summary.json").read_text())
  b = json.loads((pathlib.Path(straight) / "summary.json").read_text())
  assert a["status"] == b["status"] == "finished"
  assert a["metrics"] == b["metrics"] and a["sequences_seen"] == b["sequences_seen"]
  assert _train_losses(workdir) == _train_losses(straight)
  step_a, params_a = _final_params(workdir)
  step_b, params_b = _final_params(straight)
  assert step_a == step_b
  for x, y in zip(params_a, params_b):
    np.testing.assert_array_equal(x, y)


def test_sigterm_then_sigkill_then_resume_matches_uninterrupted_run(tmp_path, straight):
  """SIGTERM saves a checkpoint, frees the lock and exits 128 + 15; the same
  command resumes from it; SIGKILL in the middle of that leaves a stale lock
  and no summary; the same command again takes the lock over and finishes with
  the uninterrupted run's losses, metrics and parameters."""
  proc = _start(tmp_path, *LONG)
  _wait_for_checkpoint(tmp_path, proc)
  proc.send_signal(signal.SIGTERM)
  _, err = proc.communicate(timeout=120)
  assert proc.returncode == 128 + signal.SIGTERM, err[-2000:]
  assert "SIGTERM" in err and "resume" in err
  assert not (tmp_path / wd.LOCK_NAME).exists()
  saved = _checkpoint_steps(tmp_path)[-1]
  proc = _start(tmp_path, *LONG)
  _wait_for_checkpoint(tmp_path, proc, after=saved)
  proc.kill()
  proc.wait(timeout=60)
  assert proc.returncode == -signal.SIGKILL
  assert not (tmp_path / "summary.json").exists()
  assert (tmp_path / wd.LOCK_NAME).exists()
  resumed = _run(tmp_path, *LONG)  # the same command; the stale lock is taken over
  assert resumed.returncode == 0, resumed.stderr[-2000:]
  assert "stale lock" in resumed.stderr
  _assert_same_as_straight(tmp_path, straight)


def test_truncated_checkpoint_is_detected_and_the_previous_one_used(tmp_path, caplog):
  short = dict(log_every=10, checkpoint_every=20, eval_every=1000)
  _run_here(tmp_path / "run", budget_sequences=480, **short)
  ckpts = sorted(int(p.name) for p in (tmp_path / "run" / "checkpoints").iterdir()
                 if p.name.isdigit())
  assert ckpts[-1] == 60 and len(ckpts) >= 2
  files = [p for p in (tmp_path / "run" / "checkpoints" / "60").rglob("*") if p.is_file()
           and p.stat().st_size > 8]
  victim = max(files, key=lambda p: p.stat().st_size)
  victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
  with caplog.at_level("WARNING"):
    a = _run_here(tmp_path / "run", "overwrite", budget_sequences=800, **short)
  assert "checkpoint 60 is corrupt" in caplog.text
  assert list((tmp_path / "run" / "corrupt_checkpoints").iterdir())
  b = _run_here(tmp_path / "ref", budget_sequences=800, **short)
  assert a["metrics"] == b["metrics"]
  assert _train_losses(tmp_path / "run") == _train_losses(tmp_path / "ref")


def test_planted_nan_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path):
  assert _run_here(tmp_path, checkpoint_every=50)["status"] == "finished"
  # Continue the run with a learning rate that overflows the parameters.
  bad = _run(tmp_path, "--config.budget_sequences=1600", "--on_config_change=overwrite",
             "--config.optimizer.learning_rate=1e38", "--config.optimizer.grad_clip=0")
  assert bad.returncode == 3, bad.stderr[-2000:]
  assert bad.stderr.strip().splitlines()[-1].startswith("error: non-finite")
  summary = json.loads((tmp_path / "summary.json").read_text())
  assert summary["status"] == "nonfinite"
  assert "at step 10" in summary["reason"] and "checkpoint is step 100" in summary["reason"]
  step, params = _final_params(tmp_path)
  assert step == 100 and all(np.isfinite(p).all() for p in params)


def test_skip_mode_drops_nonfinite_updates_and_counts_them(tmp_path):
  cfg = importlib_config()
  cfg.nonfinite = "skip"
  cfg.optimizer.name, cfg.optimizer.learning_rate, cfg.optimizer.grad_clip = "sgd", 1e38, 0.0
  summary = train_and_evaluate(cfg, str(tmp_path), progress=False)
  assert summary["status"] == "finished"
  assert summary["per_seed"][0]["skipped_updates"] > 0
  _, params = _final_params(tmp_path)
  assert all(np.isfinite(p).all() for p in params)
  lines = [r for r in wd.read_jsonl(str(tmp_path / "metrics.jsonl")) if r["split"] == "train"]
  assert lines[-1]["skipped_updates"] == summary["per_seed"][0]["skipped_updates"]


def test_stop_mode_raises_in_process(tmp_path):
  cfg = importlib_config()
  cfg.optimizer.name, cfg.optimizer.learning_rate, cfg.optimizer.grad_clip = "sgd", 1e38, 0.0
  with pytest.raises(NonFiniteError, match=r"non-finite .* at step \d+"):
    train_and_evaluate(cfg, str(tmp_path), progress=False)


def importlib_config():
  return importlib.import_module("configs.delayed_recall").get_config("quick")


def test_checkpoint_of_another_optimizer_is_refused_not_quarantined(tmp_path):
  _run_here(tmp_path, budget_sequences=160)
  other = _run(tmp_path, "--config.budget_sequences=320", "--on_config_change=overwrite",
               "--config.optimizer.name=sgd")
  assert other.returncode == 2
  assert "intact but holds a training state of another shape" in other.stderr
  assert not (tmp_path / "corrupt_checkpoints").exists()


def test_mismatched_config_is_refused_with_the_differing_fields(tmp_path):
  _run_here(tmp_path, budget_sequences=80)
  before = (tmp_path / "summary.json").read_text()
  refused = _run(tmp_path, "--config.budget_sequences=80", "--config.lag=4",
                 "--config.model.hidden_size=6")
  assert refused.returncode == 2
  assert "different config" in refused.stderr
  assert "lag: 3 -> 4" in refused.stderr and "model.hidden_size: 8 -> 6" in refused.stderr
  assert "Traceback" not in refused.stderr
  assert (tmp_path / "summary.json").read_text() == before
  assert _run_here(tmp_path, "fresh", budget_sequences=80, lag=4)["lag"] == 4
  assert json.loads((tmp_path / "summary.json").read_text())["lag"] == 4


def test_a_held_lock_refuses_and_a_stale_lock_is_taken_over(tmp_path):
  holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
  try:
    (tmp_path / wd.LOCK_NAME).write_text(json.dumps(
        {"pid": holder.pid, "host": os.uname().nodename}))
    refused = _run(tmp_path, "--config.budget_sequences=80")
    assert refused.returncode == 2
    assert f"in use by pid {holder.pid}" in refused.stderr
    assert not (tmp_path / "config.json").exists()
  finally:
    holder.kill()
    holder.wait()
  taken = _run(tmp_path, "--config.budget_sequences=80")
  assert taken.returncode == 0, taken.stderr[-2000:]
  assert "stale lock" in taken.stderr
  assert not (tmp_path / wd.LOCK_NAME).exists()


def test_torn_metrics_line_is_dropped_on_read(tmp_path):
  path = tmp_path / "metrics.jsonl"
  path.write_text('{"step": 10, "loss": 1.0}\n{"step": 20, "loss": 0.5}\n{"step": 30, "lo')
  assert [r["step"] for r in wd.read_jsonl(str(path))] == [10, 20]
  wd.truncate_jsonl(str(path), lambda r: r["step"] <= 10)
  assert path.read_text() == '{"step": 10, "loss": 1.0}\n'


def test_a_run_saved_before_a_field_existed_resumes_with_its_default(tmp_path):
  """config.json written before a field was added (here ``ensemble``) is no
  config change while the field keeps its default; another value is."""
  saved = {"lag": 3, "model": {"hidden_size": 8}}
  defaults = {"lag": 10, "ensemble": "auto", "model": {"hidden_size": 32, "cell": "vanilla"}}
  same = {"lag": 3, "ensemble": "auto", "model": {"hidden_size": 8, "cell": "vanilla"}}
  assert wd.config_differences(saved, same, defaults) == []
  other = dict(same, ensemble="vmap", lag=4)
  assert wd.config_differences(saved, other, defaults) == [
      "ensemble: '<absent>' -> 'vmap'", "lag: 3 -> 4"]
  assert wd.config_differences(saved, same) == [
      "ensemble: '<absent>' -> 'auto'", "model.cell: '<absent>' -> 'vanilla'"]
  config = importlib.import_module("configs.delayed_recall").get_config("quick")
  config.budget_sequences = 80
  first = train_and_evaluate(config, str(tmp_path), progress=False)
  old = json.loads((tmp_path / "config.json").read_text())
  del old["ensemble"]
  (tmp_path / "config.json").write_text(json.dumps(old))
  (tmp_path / "summary.json").unlink()  # as if killed after the last checkpoint: resumed
  second = train_and_evaluate(config, str(tmp_path), progress=False)  # rewrites config.json
  assert second["sequences_seen"] == first["sequences_seen"] == 80
  config.ensemble = "vmap"
  with pytest.raises(wd.WorkdirError, match=r"ensemble: 'auto' -> 'vmap'"):
    train_and_evaluate(config, str(tmp_path), progress=False)


def _one_error_line(result, *parts):
  assert result.returncode == 2, result.stderr[-2000:]
  assert "Traceback" not in result.stderr
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: "), lines
  for part in parts:
    assert part in lines[0], lines[0]


def test_a_missing_config_file_is_one_line(tmp_path):
  for module, path in (("experiments.run", "configs/nope.py:quick"),
                       ("experiments.sweep", "configs/sweeps/nope.py")):
    res = subprocess.run([sys.executable, "-m", module, f"--config={path}",
                          "--config.lag=3", f"--workdir={tmp_path}"], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    _one_error_line(res, path.split(":")[0], "does not exist")


def test_an_unusable_workdir_is_one_line(tmp_path):
  afile = tmp_path / "afile"
  afile.write_text("")
  _one_error_line(_run(afile), f"workdir {afile} is an existing file")
  for path, reason in ((afile / "sub", "cannot be created"), ("/proc/nope", "cannot be created"),
                       ("/proc", "is not writable")):
    with pytest.raises(wd.WorkdirError, match=reason):
      wd.ensure_dir(str(path))


def test_a_run_too_big_for_the_memory_is_refused_before_compiling(tmp_path):
  # Its batches alone hold 2.4 TB (training) and 78 TB (evaluation).
  res = subprocess.run([sys.executable, "-m", "experiments.run", "--config=configs/copy.py",
                        "--config.lag=1000000000", f"--workdir={tmp_path}"], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
  _one_error_line(res, "the training step (batch 32 x 1,000,000,020 steps) needs at least",
                  "is available", "--force")
  assert not (tmp_path / "config.json").exists()


def test_rerunning_a_finished_run_changes_nothing(tmp_path):
  _run_here(tmp_path, budget_sequences=80)
  files = lambda: {p.relative_to(tmp_path): p.read_bytes() for p in tmp_path.rglob("*")
                   if p.is_file()}
  before = files()
  again = _run(tmp_path, "--config.budget_sequences=80")
  assert again.returncode == 0, again.stderr[-2000:]
  assert "finished already" in again.stderr
  assert "delayed_recall lag=3 model=vanilla: solved=" in again.stdout
  assert "sequences_seen=80" in again.stdout
  assert files() == before
