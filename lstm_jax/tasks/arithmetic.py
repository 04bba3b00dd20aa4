"""Hochreiter & Schmidhuber 1997, Exp 4 (adding problem, the 1997 form) and
Exp 5 (multiplication problem).

Each step is a pair ``(value, marker)``. The length ``L`` is drawn uniformly
from the integers ``T .. T + T // 10``. Exactly two pairs are marked 1: one
among the first 10 pairs (its value is ``X1``), one among the first
``T/2 - 1`` pairs not yet marked (``X2``). The first and the last pair carry
marker -1 unless marked; all other markers are 0. The target is given at the
end (step ``L - 1``) only.

Details and deviations:

* Positions are 0-based: ``X1`` at a uniform index in ``0 .. n1 - 1`` with
  ``n1 = min(10, T)``; ``X2`` at a uniform index in ``0 .. n2 - 1`` other than
  ``X1``'s, with ``n2 = max(T // 2 - 1, 2)`` (``T // 2 - 1`` as in the paper;
  widened to 2 for ``T < 6``, where the paper's window would be too small).
* "If the first pair is marked, X1 := 0" (Exp 4; ``:= 1`` in Exp 5) is
  applied to the *input value* too, so the target is always computed from the
  marked input values. It applies to ``X1`` only, as the paper states.
* The 1997 net had a sigmoid output unit trained on squared error; here the
  output is linear, trained on squared error (``"mse"``).
* "Mean training error" in the stopping rule is read as the mean absolute
  end error over the same 2,000 most recent training sequences (the paper does
  not name the averaging window).
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp

from lstm_jax import checks
from lstm_jax.tasks.base import (Batch, PerSequence, Task, at_last_step,
                                 draw_lengths, last_step_mask, time_index, to_int, uniforms,
                                 valid_steps)
from lstm_jax.tasks.criteria import Criterion

Array = jax.Array

_TOLERANCE = 0.04


@dataclasses.dataclass(frozen=True)
class Adding1997(Task):
  """Exp 4: adding problem. Values ``U[-1, 1]``; target ``0.5 + (X1 + X2) / 4``
  (in [0, 1]); a sequence is correct if the absolute end error is below 0.04
  (``error < 0.04``; an error of exactly 0.04 is wrong).

  ``lag`` is ``T`` (default 100; >= 2), the minimum length.
  Criterion: mean training error (mean absolute end error of the 2,000 most
  recent training sequences) < 0.01 and those 2,000 all correct; the paper
  then tests on 2,560 fresh sequences (``criterion.test_size``).
  [T = 100, 500, 1000: 74k, 209k, 853k sequences; 1, 0, 1 wrong of 2,560.]
  """
  name: ClassVar[str] = "hs4_adding"
  loss_type: ClassVar[str] = "mse"
  unit_targets: ClassVar[bool] = True
  min_lag: ClassVar[int] = 2
  lag_meaning: ClassVar[str] = "T: lengths are drawn from T..T + T // 10"
  multiply: ClassVar[bool] = False
  # The paper words the two rules differently. Exp 4: a sequence is correct if
  # its error is below 0.04 (False: error < 0.04). Exp 5: it is wrong if its
  # error is exceeding 0.04 (True: correct iff error <= 0.04).
  tolerance_inclusive: ClassVar[bool] = False

  lag: int = 100

  @property
  def input_size(self) -> int:
    return 2

  @property
  def output_size(self) -> int:
    return 1

  @property
  def max_length(self) -> int:
    return self.lag + self.lag // 10

  @property
  def windows(self) -> tuple[int, int]:
    """``(n1, n2)``: X1 is among the first ``n1`` pairs, X2 among the first ``n2``."""
    return min(10, self.lag), min(max(self.lag // 2 - 1, 2), self.lag)

  def _sample(self, key: Array, batch_size: int) -> Batch:
    steps = self.max_length
    n1, n2 = self.windows
    u = uniforms(key, batch_size, length=1, values=steps, i1=1, i2=1)
    lengths = draw_lengths(u["length"], self.lag, steps)
    values = u["values"] if self.multiply else 2.0 * u["values"] - 1.0
    i1 = to_int(u["i1"][:, 0], 0, n1)
    inside = i1 < n2                         # X1 lies in X2's window: skip its index
    j = to_int(u["i2"][:, 0], 0, n2 - inside.astype(jnp.int32))
    i2 = j + (inside & (j >= i1)).astype(jnp.int32)
    t = time_index(batch_size, steps)
    marked = (t == i1[:, None]) | (t == i2[:, None])
    ends = (t == 0) | (t == lengths[:, None] - 1)
    markers = jnp.where(marked, 1.0, jnp.where(ends, -1.0, 0.0))
    first_is_x1 = (t == 0) & (i1[:, None] == 0)
    values = jnp.where(first_is_x1, 1.0 if self.multiply else 0.0, values)
    valid = valid_steps(lengths, steps)
    inputs = jnp.where(valid[..., None], jnp.stack([values, markers], axis=-1), 0.0)
    x1 = jnp.take_along_axis(values, i1[:, None], axis=1)
    x2 = jnp.take_along_axis(values, i2[:, None], axis=1)
    target = x1 * x2 if self.multiply else 0.5 + (x1 + x2) / 4.0
    mask = last_step_mask(lengths, steps)
    return Batch(inputs.astype(jnp.float32), (mask * target)[..., None], mask, lengths)

  def _judge(self, outputs: Array, predictions: Array, batch: Batch) -> PerSequence:
    error = jnp.abs(at_last_step(predictions[..., 0] - batch.targets[..., 0], batch.lengths))
    correct = error <= _TOLERANCE if self.tolerance_inclusive else error < _TOLERANCE
    return {"correct": correct, "error": error}

  def _criterion(self) -> Criterion:
    return Criterion("H&S 1997 Exp 4: mean absolute training error < 0.01 over the 2,000 "
                     "most recent training sequences, all of them correct (|error| < 0.04)",
                     window=2000, max_wrong=0, max_mean_error=0.01, test_size=2560)

  def _baseline(self) -> float:
    # MSE of predicting 0.5: Var(X1 + X2) / 16 with X1 := 0 w.p. 1 / n1.
    n1, _ = self.windows
    return ((1.0 - 1.0 / n1) / 3.0 + 1.0 / 3.0) / 16.0


@dataclasses.dataclass(frozen=True)
class Multiplication1997(Adding1997):
  """Exp 5: multiplication problem. As Exp 4 but values ``U[0, 1]``, ``X1 :=
  1`` if the first pair is marked, and the target is ``X1 * X2``.

  ``lag`` is ``T`` (default 100; >= 2); ``n_seq`` (default 140; the paper also
  uses 13; 1..2000). Per-sequence: ``error`` -- absolute end error;
  ``correct`` -- ``error <= 0.04``: the paper counts as wrong the sequences
  whose absolute error is *exceeding* 0.04, so an error of exactly 0.04 is
  correct (unlike Exp 4, where the error must be below 0.04). Criterion: fewer
  than ``n_seq`` of the 2,000 most recent training sequences wrong.
  [T = 100: 482k (n_seq 140), 1,273k (n_seq 13).]
  """
  name: ClassVar[str] = "hs5_multiplication"
  multiply: ClassVar[bool] = True
  tolerance_inclusive: ClassVar[bool] = True

  lag: int = 100
  n_seq: int = 140

  def _validate(self) -> None:
    self._set("n_seq", checks.integer(f"{self.name}: n_seq", self.n_seq, 1, 2000,
                                 "stop when fewer than n_seq of the last 2,000 are wrong"))

  def _criterion(self) -> Criterion:
    return Criterion(f"H&S 1997 Exp 5: fewer than {self.n_seq} of the 2,000 most recent "
                     "training sequences with absolute error > 0.04",
                     window=2000, max_wrong=self.n_seq - 1, test_size=2560)

  def _baseline(self) -> float:
    # MSE of predicting E[X1 X2]: Var(X1 X2) with X1 := 1 w.p. 1 / n1.
    n1, _ = self.windows
    q = 1.0 / n1
    mean_x1 = (1 - q) * 0.5 + q
    second_x1 = (1 - q) / 3.0 + q
    return second_x1 / 3.0 - (mean_x1 * 0.5) ** 2


__all__ = ["Adding1997", "Multiplication1997"]
