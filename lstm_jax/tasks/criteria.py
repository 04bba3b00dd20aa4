"""Stopping rules ("success criteria") of the tasks, evaluated on the host with NumPy.

A :class:`Criterion` combines at most two parts:

* a **training-stream rule** over the most recent ``window`` training sequences
  (in the order they were presented): at most ``max_wrong`` of them wrong and,
  optionally, their mean per-sequence ``"error"`` below ``max_mean_error``.
  E.g. H&S 1997 Exp 4: "mean training error < 0.01 and the 2,000 most recent
  training sequences correct" is ``window=2000, max_wrong=0,
  max_mean_error=0.01``; Exp 2a "max abs error < 0.25 on 10,000 successive
  sequences" is ``window=10000, max_wrong=0`` (correct := error < 0.25).
* an **evaluation rule** on ``eval_size`` held-out sequences: conditions
  ``(metric, op, threshold)`` on the summary of their per-sequence metrics,
  e.g. Exp 3a ST1 ``("num_wrong", "<=", 0)`` on 256 test sequences.

The rule holds when both parts hold (a missing part holds trivially).

The stream state is a small dict (counters plus ring buffers, only where the
rule needs them) that can be pickled, or turned into JSON with
:func:`state_to_json` / :func:`state_from_json`, so a training loop can
checkpoint it. Usage::

    crit = task.criterion
    state = crit.new_state()
    for step ...:
      per_seq = jax.device_get(task.per_sequence(outputs, batch))
      state = crit.update(state, per_seq)
      ev = None
      if crit.needs_eval(state):
        ev = ... per_sequence over crit.eval_size fresh sequences ...
      if crit.holds(state, ev): break
"""

from __future__ import annotations

import dataclasses
import operator
from typing import Any, Mapping

import numpy as np

_OPS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}

State = dict[str, Any]


def summarize_common(per_seq: Mapping[str, Any]) -> dict[str, float]:
  """Summary of per-sequence metrics (NumPy or JAX arrays ``[N]``).

  Returns ``count``, ``accuracy`` (mean of ``correct``), ``num_wrong``,
  ``mean_error`` and ``max_error`` (of ``error``), and the mean of every other
  key (``loss``, ``mse``, ``symbol_accuracy``, ...). All values are floats.
  """
  if "correct" not in per_seq:
    raise ValueError(f"per-sequence metrics need a 'correct' entry; got keys {sorted(per_seq)}")
  correct = np.asarray(per_seq["correct"]).astype(bool).reshape(-1)
  n = correct.size
  summary = {"count": float(n),
             "accuracy": float(correct.mean()) if n else float("nan"),
             "num_wrong": float(n - correct.sum())}
  for key, value in per_seq.items():
    if key == "correct":
      continue
    values = np.asarray(value, np.float64).reshape(-1)
    if values.size != n:
      raise ValueError(f"per-sequence metric {key!r} has {values.size} entries, "
                       f"'correct' has {n}")
    if key == "error":
      summary["mean_error"] = float(values.mean()) if n else float("nan")
      summary["max_error"] = float(values.max()) if n else float("nan")
    else:
      summary[key] = float(values.mean()) if n else float("nan")
  return summary


@dataclasses.dataclass(frozen=True)
class Criterion:
  """A stopping rule (frozen, hashable).

  Attributes:
    description: the rule in words, with its source.
    window: number of most recent training sequences the stream rule looks
      at (0: no stream rule).
    max_wrong: at most this many of them may be wrong (``correct`` False).
    max_mean_error: if set, their mean ``error`` must be strictly below it.
    eval_size: number of held-out sequences the evaluation rule needs (0: no
      evaluation rule).
    eval_rules: ``(metric, op, threshold)`` with ``op`` in ``< <= > >=``, on
      the keys of :func:`summarize_common` (or of ``Task.summarize``).
    test_size: size of the final test set the source reports (informational;
      e.g. 2,560 for H&S Exp 4), 0 if none.
  """
  description: str
  window: int = 0
  max_wrong: int = 0
  max_mean_error: float | None = None
  eval_size: int = 0
  eval_rules: tuple[tuple[str, str, float], ...] = ()
  test_size: int = 0

  def __post_init__(self) -> None:
    for metric, op, _ in self.eval_rules:
      if op not in _OPS:
        raise ValueError(f"eval rule on {metric!r}: op={op!r}; allowed: {', '.join(_OPS)}")
    if self.eval_rules and self.eval_size < 1:
      raise ValueError("eval_rules need eval_size >= 1")
    if self.window < 0 or self.max_wrong < 0:
      raise ValueError(f"window={self.window}, max_wrong={self.max_wrong}: must be >= 0")

  # -- stream state -------------------------------------------------------------

  @property
  def _ring_correct(self) -> int:
    return self.window if self.window and self.max_wrong > 0 else 0

  @property
  def _ring_error(self) -> int:
    return self.window if self.window and self.max_mean_error is not None else 0

  def new_state(self) -> State:
    """A fresh stream state: ``seen`` (sequences so far), ``streak`` (correct
    ones in a row at the end of the stream), ``pos`` (ring write position) and
    ring buffers ``correct`` / ``error`` of the most recent ``window`` values
    (empty where the rule does not need them)."""
    return {"seen": 0, "streak": 0, "pos": 0,
            "correct": np.ones(self._ring_correct, bool),
            "error": np.zeros(self._ring_error, np.float64)}

  def update(self, state: State, per_seq: Mapping[str, Any]) -> State:
    """Return the state after the sequences of ``per_seq`` (their order is the
    presentation order). ``per_seq`` needs ``"correct"`` and ``"error"``
    arrays ``[N]``; the input state is not modified."""
    correct = np.asarray(per_seq["correct"]).astype(bool).reshape(-1)
    error = np.asarray(per_seq["error"], np.float64).reshape(-1)
    if correct.size != error.size:
      raise ValueError(f"'correct' has {correct.size} entries, 'error' has {error.size}")
    n = correct.size
    wrong = np.flatnonzero(~correct)
    streak = state["streak"] + n if wrong.size == 0 else n - 1 - int(wrong[-1])
    new = {"seen": int(state["seen"]) + n, "streak": int(streak), "pos": int(state["pos"]),
           "correct": np.array(state["correct"], bool),
           "error": np.array(state["error"], np.float64)}
    if self.window and (new["correct"].size or new["error"].size):
      m = min(n, self.window)
      idx = (state["pos"] + n - m + np.arange(m)) % self.window
      if new["correct"].size:
        new["correct"][idx] = correct[n - m:]
      if new["error"].size:
        new["error"][idx] = error[n - m:]
      new["pos"] = int((state["pos"] + n) % self.window)
    return new

  def train_ok(self, state: State) -> bool:
    """Whether the training-stream part of the rule holds (True if none)."""
    if not self.window:
      return True
    if state["seen"] < self.window:
      return False
    if self.max_wrong == 0:
      if state["streak"] < self.window:
        return False
    elif self.window - int(np.sum(state["correct"])) > self.max_wrong:
      return False
    if self.max_mean_error is not None:
      if not float(np.mean(state["error"])) < self.max_mean_error:
        return False
    return True

  # -- evaluation -----------------------------------------------------------------

  def eval_ok(self, evaluation: Mapping[str, Any]) -> bool:
    """Whether the evaluation part holds (True if none).

    Args:
      evaluation: per-sequence metrics of the held-out sequences (dict of
        arrays with ``"correct"``), or their summary (``Task.summarize``).

    Raises:
      ValueError: fewer than ``eval_size`` sequences, or a metric the rule
        needs is missing.
    """
    if not self.eval_rules:
      return True
    correct = evaluation.get("correct")
    summary = (summarize_common(evaluation) if correct is not None and np.ndim(correct) > 0
               else dict(evaluation))
    count = summary.get("count")
    if count is not None and count < self.eval_size:
      raise ValueError(f"the evaluation has {int(count)} sequences; this rule needs "
                       f"eval_size={self.eval_size}")
    for metric, op, threshold in self.eval_rules:
      if metric not in summary:
        raise ValueError(f"the rule needs metric {metric!r}; the evaluation has "
                         f"{sorted(summary)}")
      if not _OPS[op](float(summary[metric]), threshold):
        return False
    return True

  def solved(self, state: State, evaluation: Mapping[str, Any] | None = None) -> bool:
    """Both parts hold. ``evaluation`` is required when ``eval_size > 0``."""
    if not self.train_ok(state):
      return False
    if not self.eval_rules:
      return True
    if evaluation is None:
      raise ValueError(f"this rule needs an evaluation on eval_size={self.eval_size} "
                       f"held-out sequences ({self.description})")
    return self.eval_ok(evaluation)

  # -- what a training loop asks ------------------------------------------------

  def needs_eval(self, state: State) -> bool:
    """Whether a held-out evaluation can decide the rule now: the rule has an
    evaluation part and the training-stream part holds. A rule without an
    evaluation part never needs one; :meth:`holds` decides it from the
    stream alone."""
    return bool(self.eval_rules) and self.train_ok(state)

  def holds(self, state: State, evaluation: Mapping[str, Any] | None = None) -> bool:
    """Whether the rule holds on what is known: the stream state and, if one
    was run, a held-out evaluation (per-sequence metrics or their summary).

    Unlike :meth:`solved`, a missing evaluation is no error: a rule with an
    evaluation part does not hold without one.
    """
    if self.eval_rules and evaluation is None:
      return False
    return self.solved(state, evaluation)


def state_to_json(state: State) -> dict[str, Any]:
  """A JSON-serialisable copy of a stream state."""
  return {"seen": int(state["seen"]), "streak": int(state["streak"]), "pos": int(state["pos"]),
          "correct": np.asarray(state["correct"], bool).tolist(),
          "error": np.asarray(state["error"], np.float64).tolist()}


def state_from_json(data: Mapping[str, Any]) -> State:
  """Inverse of :func:`state_to_json`."""
  return {"seen": int(data["seen"]), "streak": int(data["streak"]), "pos": int(data["pos"]),
          "correct": np.asarray(data["correct"], bool).reshape(-1),
          "error": np.asarray(data["error"], np.float64).reshape(-1)}


__all__ = ["Criterion", "State", "state_from_json", "state_to_json", "summarize_common"]
