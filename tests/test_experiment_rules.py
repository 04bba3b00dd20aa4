"""The rules of the experiment layer, on runs and sweeps whose answers are
known in advance: when a seed counts as solved, when a run stops and
evaluates, sequences to criterion and its median over seeds, the sweep's
per-point statistics and the memory horizon at its boundary.

The runs train a real (tiny) model on a task whose per-sequence verdict does
not depend on the model: either a constant, or a function of the sampled data
alone, so the step at which the criterion first holds follows from the rule
and the data stream, worked out here with plain NumPy.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
from typing import ClassVar

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from lstm_jax import config as config_lib
from lstm_jax import runner, tasks, training
from lstm_jax import workdir as wd
from lstm_jax.runner import train_and_evaluate
from lstm_jax.sweep import memory_horizons, run_sweep
from lstm_jax.tasks import DelayedRecall
from lstm_jax.tasks.criteria import Criterion

BATCH = 8


@dataclasses.dataclass(frozen=True)
class Planted(DelayedRecall):
  """Delayed recall judged without looking at the model's outputs.

  ``verdict``: ``"always"`` (every sequence correct) or ``"low"`` (correct
  iff the sequence's symbol is 0 or 1 of the 4). The
  criterion is a training-stream rule over ``window`` sequences with at most
  ``max_wrong`` wrong, plus, if ``eval_size`` > 0, the evaluation rule
  ``accuracy >= 0.5`` on ``eval_size`` held-out sequences.
  """
  name: ClassVar[str] = "planted"

  verdict: str = "always"
  window: int = 0
  max_wrong: int = 0
  eval_size: int = 0

  def _judge(self, outputs, predictions, batch):
    symbol = batch.targets[:, -1]
    correct = {"always": jnp.ones(symbol.shape, bool), "low": symbol < 2}[self.verdict]
    return {"correct": correct, "error": jnp.zeros(symbol.shape, jnp.float32)}

  def _criterion(self):
    rules = (("accuracy", ">=", 0.5),) if self.eval_size else ()
    return Criterion("planted", window=self.window, max_wrong=self.max_wrong,
                     eval_size=self.eval_size, eval_rules=rules)


def _register(monkeypatch):
  monkeypatch.setitem(tasks.TASKS, "planted", Planted)
  monkeypatch.setattr(config_lib, "TASK_NAMES", config_lib.TASK_NAMES + ("planted",))


@pytest.fixture
def planted(monkeypatch):
  """Register :class:`Planted` as task ``"planted"`` for the test."""
  _register(monkeypatch)


def _config(steps, num_seeds=1, eval_every=1000, seed=0, **task_params):
  """A run of at most ``steps`` updates, logged after every update; the
  shapes of ``configs/delayed_recall.py:quick`` (lag 3, 8 units, batch 8)."""
  c = importlib.import_module("configs.delayed_recall").get_config("quick")
  c.task = "planted"
  c.task_params = ml_collections.ConfigDict(task_params)
  c.budget_sequences, c.eval_size = steps * BATCH, 8
  c.seed, c.num_seeds = seed, num_seeds
  c.log_every, c.eval_every, c.checkpoint_every = 1, eval_every, 1000
  assert c.batch_size == BATCH
  return c


def _lines(workdir, split):
  return [r for r in wd.read_jsonl(str(workdir / "metrics.jsonl")) if r["split"] == split]


def test_a_run_stops_at_the_first_evaluation_after_its_stream_rule_holds(planted, tmp_path):
  """Every sequence is correct; the rule: the last three batches all correct,
  then ``accuracy >= 0.5`` on 8 held-out sequences; an evaluation is due every
  second update. The stream rule holds from update 3 (24 sequences seen), the
  next evaluation is due at update 4 and passes: the seed is solved at 4 and
  the run stops there, 16 updates before its budget. No evaluation runs
  before the stream rule holds (none at 2), and the final one is the one at 4."""
  cfg = _config(20, eval_every=2, verdict="always", window=3 * BATCH, eval_size=8)
  summary = train_and_evaluate(cfg, str(tmp_path), progress=False)
  assert json.loads((tmp_path / "summary.json").read_text()) == json.loads(json.dumps(summary))
  assert summary["status"] == "finished" and summary["reason"] is None
  assert summary["task"] == "planted" and summary["step"] == 4
  assert summary["solved"] is True and summary["solved_fraction"] == 1.0
  assert summary["sequences_seen"] == 32
  assert summary["sequences_to_criterion"] == 32  # solved_step x batch_size, an int
  assert type(summary["sequences_to_criterion"]) is int
  [seed] = summary["per_seed"]
  assert seed["solved"] is True and seed["sequences_to_criterion"] == 32
  train = _lines(tmp_path, "train")
  assert [r["step"] for r in train] == [1, 2, 3, 4]
  assert [r["sequences_seen"] for r in train] == [8, 16, 24, 32]
  assert [r["accuracy"] for r in train] == [1.0] * 4
  [ev] = _lines(tmp_path, "eval")
  assert ev["step"] == 4 and ev["count"] == 8.0 and ev["accuracy"] == 1.0
  assert ev["criterion_met"] == 1.0
  assert summary["metrics"] == {k: v for k, v in ev.items()
                                if k not in ("step", "seed", "split", "sequences_seen")}


def _first_solved_steps(seed, num_seeds, steps, window, max_wrong):
  """Per seed, the first update after which at most ``max_wrong`` of the last
  ``window`` training sequences had a symbol >= 2 (-1 if none within
  ``steps``), from the seed's data stream: batch ``n`` drawn with
  ``fold_in(data_key, n)``."""
  task = tasks.make_task("delayed_recall", lag=3)
  data_keys = training.seed_keys(seed, num_seeds)[1]
  out = []
  for s in range(num_seeds):
    symbols = np.concatenate([
        np.asarray(task.sample(jax.random.fold_in(data_keys[s], n), BATCH).targets[:, -1])
        for n in range(steps)])
    correct = symbols < 2
    solved = [n for n in range(1, steps + 1) if n * BATCH >= window
              and np.sum(~correct[n * BATCH - window:n * BATCH]) <= max_wrong]
    out.append(solved[0] if solved else -1)
  return out


def test_seeds_solved_at_different_steps(planted, tmp_path):
  """Two seeds, correct iff the symbol is 0 or 1, and a stream rule alone: at
  most 4 wrong in the last 12 sequences, a window across batch boundaries.
  Each seed is solved at the first update after which its data stream meets
  the rule; the run goes on until the last seed is solved and reports the
  median over the seeds of solved_step x batch_size."""
  window, max_wrong, budget = 12, 4, 12
  expected = _first_solved_steps(0, 2, budget, window, max_wrong)
  assert min(expected) > 0 and len(set(expected)) == 2  # the test needs both, apart
  cfg = _config(budget, num_seeds=2, verdict="low", window=window, max_wrong=max_wrong)
  summary = train_and_evaluate(cfg, str(tmp_path), progress=False)
  to_crit = [step * BATCH for step in expected]
  assert [p["seed"] for p in summary["per_seed"]] == [0, 1]
  assert [p["solved"] for p in summary["per_seed"]] == [True, True]
  assert [p["sequences_to_criterion"] for p in summary["per_seed"]] == to_crit
  assert summary["sequences_to_criterion"] == (to_crit[0] + to_crit[1]) / 2
  assert summary["solved"] is True and summary["solved_fraction"] == 1.0
  assert summary["step"] == max(expected) < budget
  assert summary["sequences_seen"] == max(expected) * BATCH
  assert [r["step"] for r in _lines(tmp_path, "train")] == [
      step for step in range(1, max(expected) + 1) for _ in range(2)]
  # No evaluation rule: the only evaluations are the final ones.
  evals = _lines(tmp_path, "eval")
  assert [(r["step"], r["seed"]) for r in evals] == [(max(expected), 0), (max(expected), 1)]
  accuracy = [r["accuracy"] for r in evals]
  assert summary["metrics"]["accuracy"] == (accuracy[0] + accuracy[1]) / 2


def test_summary_of_hand_made_loop_states():
  """Four seeds, three solved: the median over the solved seeds (not their
  mean, min or max; the unsolved seed left out); the metrics' median over
  all four; then none solved, and one seed."""
  cfg = _config(10, num_seeds=4, seed=7)
  task = Planted(lag=3, window=BATCH)
  loop = runner.LoopState.new(task.criterion, 4)
  for seed, step in zip(loop.seeds, (7, -1, 2, 3)):
    seed.solved_step = step
  final = [{"accuracy": a, "loss": l} for a, l in ((0.1, 4.0), (0.9, 1.0), (0.3, 2.0),
                                                   (0.4, 8.0))]
  summary = runner._summary(cfg, task, 10, loop, final, 2.5, "finished", None)
  assert [p["seed"] for p in summary["per_seed"]] == [7, 8, 9, 10]
  assert [p["solved"] for p in summary["per_seed"]] == [True, False, True, True]
  assert [p["sequences_to_criterion"] for p in summary["per_seed"]] == [56, None, 16, 24]
  assert summary["sequences_to_criterion"] == 24.0  # of 16, 24, 56; the mean is 32
  assert summary["solved"] is False and summary["solved_fraction"] == 0.75
  assert summary["metrics"] == {"accuracy": pytest.approx(0.35), "loss": 3.0}
  assert summary["sequences_seen"] == 80 and summary["step"] == 10
  assert summary["per_seed"][3]["metrics"] == {"accuracy": 0.4, "loss": 8.0}
  for seed in loop.seeds:
    seed.solved_step = -1
  none = runner._summary(cfg, task, 10, loop, None, 2.5, "nonfinite", "why")
  assert none["sequences_to_criterion"] is None and none["solved_fraction"] == 0.0
  assert none["solved"] is False and none["metrics"] == {}
  assert none["status"] == "nonfinite" and none["reason"] == "why"
  one = runner._summary(_config(10), task, 5, runner.LoopState.new(task.criterion, 1),
                        [{"accuracy": 0.5}], 1.0, "finished", None)
  assert one["solved"] is False and one["sequences_to_criterion"] is None
  one_loop = runner.LoopState([runner.SeedProgress(task.criterion.new_state(), 5)])
  one = runner._summary(_config(10), task, 5, one_loop, [{"accuracy": 0.5}], 1.0,
                        "finished", None)
  assert one["sequences_to_criterion"] == 40 and type(one["sequences_to_criterion"]) is int
  assert one["solved"] is True and one["metrics"] == {"accuracy": 0.5}


# ----------------------------------------------------------------------------
# Sweeps, from hand-made per-seed results.


def _sweep(lags, labels, num_seeds=4):
  s = importlib.import_module("configs.sweeps.quickstart").get_config("quick")
  s.lags = lags
  s.models = [{"label": label, "cell": "vanilla"} for label in labels]
  s.num_seeds = num_seeds
  return s


def _write_point(workdir, name, seeds, wall=1.0):
  """A finished point: ``seeds`` is one ``(accuracy, sequences_to_criterion
  or None)`` per seed."""
  per_seed = [{"seed": i, "solved": to_crit is not None, "sequences_to_criterion": to_crit,
               "skipped_updates": 0, "metrics": {"accuracy": acc, "loss": 1.0}}
              for i, (acc, to_crit) in enumerate(seeds)]
  solved = [p["solved"] for p in per_seed]
  summary = {"status": "finished", "solved": all(solved),
             "solved_fraction": sum(solved) / len(solved), "per_seed": per_seed,
             "wall_time_s": wall}
  (workdir / name).mkdir()
  (workdir / name / "summary.json").write_text(json.dumps(summary))


# Four seeds per point; per model and lag: (accuracy, sequences_to_criterion).
POINTS = {
    # A: solved by 4, 2 and 1 of 4 seeds at lags 5, 20, 50: horizon 20.
    ("A", 5): [(0.9, 800), (0.2, 240), (0.5, 400), (0.4, 1600)],
    ("A", 20): [(0.7, 320), (0.3, None), (0.6, 960), (0.1, None)],
    ("A", 50): [(0.3, None), (0.3, None), (0.8, 480), (0.3, None)],
    # B: 3 of 4 at lag 5 only: horizon 5.
    ("B", 5): [(1.0, 160), (1.0, 80), (0.0, None), (1.0, 2400)],
    ("B", 20): [(0.5, None), (0.5, 560), (0.5, None), (0.5, None)],
    ("B", 50): [(0.0, None)] * 4,
    # C: at most 1 of 4 anywhere: no horizon.
    ("C", 5): [(0.25, None), (0.75, 720), (0.25, None), (0.25, None)],
    ("C", 20): [(0.0, None)] * 4,
    ("C", 50): [(0.5, None), (0.0, None), (0.0, None), (0.0, 40)],
}

# Worked out by hand: (solved fraction, median sequences to criterion over the
# solved seeds, accuracy median / min / max over all four seeds).
EXPECTED = {
    ("A", 5): (1.0, 600.0, 0.45, 0.2, 0.9),     # to_crit 240 400 | 800 1600
    ("A", 20): (0.5, 640.0, 0.45, 0.1, 0.7),    # 320 960; acc 0.1 0.3 | 0.6 0.7
    ("A", 50): (0.25, 480.0, 0.3, 0.3, 0.8),
    ("B", 5): (0.75, 160.0, 1.0, 0.0, 1.0),     # 80 160 2400
    ("B", 20): (0.25, 560.0, 0.5, 0.5, 0.5),
    ("B", 50): (0.0, None, 0.0, 0.0, 0.0),
    ("C", 5): (0.25, 720.0, 0.25, 0.25, 0.75),
    ("C", 20): (0.0, None, 0.0, 0.0, 0.0),
    ("C", 50): (0.25, 40.0, 0.0, 0.0, 0.5),
}


def test_sweep_rows_medians_and_memory_horizons_from_per_seed_results(tmp_path):
  """Points with a summary.json are not trained; their rows and results.md
  come from the per-seed results."""
  sweep = _sweep([5, 20, 50], ["A", "B", "C"])
  for (label, lag), seeds in POINTS.items():
    _write_point(tmp_path, f"{label}_lag{lag}", seeds, wall=float(lag))
  rows = run_sweep(sweep, str(tmp_path), progress=False)
  assert [(r["model"], r["lag"]) for r in rows] == list(POINTS)
  for r in rows:
    fraction, to_crit, med, lo, hi = EXPECTED[r["model"], r["lag"]]
    assert r["seeds"] == 4 and r["metric"] == "accuracy" and r["wall_time_s"] == r["lag"]
    assert r["solved_fraction"] == fraction, r
    assert r["median_sequences_to_criterion"] == to_crit, r
    assert r["median"] == pytest.approx(med) and r["min"] == lo and r["max"] == hi, r
  assert memory_horizons(rows) == {"A": 20, "B": 5, "C": None}
  md = (tmp_path / "results.md").read_text().splitlines()
  assert "| A | 5 | 1.00 | 600 | 0.450 [0.200, 0.900] |" in md
  assert "| A | 20 | 0.50 | 640 | 0.450 [0.100, 0.700] |" in md
  assert "| B | 50 | 0.00 | - | 0.000 [0.000, 0.000] |" in md
  assert "| C | 50 | 0.25 | 40 | 0.000 [0.000, 0.500] |" in md
  budget = f"{sweep.base.budget_sequences:,}"
  horizon = ("- memory horizon of **{}** (largest lag solved by at least half the seeds "
             f"within {budget} sequences): {{}}")
  assert md[-3:] == [horizon.format("A", 20), horizon.format("B", 5),
                     horizon.format("C", "none")]
  csv_lines = (tmp_path / "results.csv").read_text().splitlines()
  assert csv_lines[1].startswith("A,5,4,1.0,600.0,accuracy,0.45,0.2,0.9,")
  assert csv_lines[6].startswith("B,50,4,0.0,,accuracy,0.0,0.0,0.0,")


def test_memory_horizon_boundary_is_at_least_half_the_seeds():
  """Exactly half counts; just under half does not; the largest qualifying
  lag wins even after a lag that fails."""
  row = lambda model, lag, solved, seeds: {"model": model, "lag": lag,
                                           "solved_fraction": float(np.mean(
                                               [1] * solved + [0] * (seeds - solved)))}
  rows = [row("half", 10, 4, 4), row("half", 100, 2, 4), row("half", 1000, 1, 4),
          row("under", 10, 3, 5), row("under", 100, 2, 5),
          row("gap", 10, 1, 2), row("gap", 100, 0, 2), row("gap", 1000, 1, 2),
          row("one", 10, 1, 3), row("one", 100, 0, 3)]
  assert memory_horizons(rows) == {"half": 100, "under": 10, "gap": 1000, "one": None}
  assert memory_horizons(rows, threshold=0.6) == {"half": 10, "under": 10, "gap": None,
                                                  "one": None}
