"""Hochreiter & Schmidhuber 1997, Exp 3: noise and signal on the same channel
(Bengio et al. 1994's "2-sequence problem"), variants 3a, 3b, 3c.

One real-valued input. The length ``L`` is drawn uniformly from the integers
``T .. T + T // 10``. The first ``N`` elements are +1 (class 1) or -1 (class
2); the others are Gaussian with mean 0 and variance 0.2. The target is given
at the end (step ``L - 1``) only; steps ``>= L`` are zero padding.

The 1997 net had a sigmoid output unit trained on squared error; here the
output is linear and trained on squared error (``"mse"``), so the noisy 3c
targets (which leave [0, 1]) are fitted without saturation.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from lstm_jax import checks
from lstm_jax.tasks.base import (Batch, PerSequence, Task, at_last_step, draw_lengths,
                                 last_step_mask, time_index,
                                 to_normal, uniforms, valid_steps)
from lstm_jax.tasks.criteria import Criterion

Array = jax.Array

_NOISE_VAR = 0.2
_TARGET_NOISE_VAR = 0.1


@dataclasses.dataclass(frozen=True)
class TwoSequence(Task):
  """Exp 3a: targets 1.0 (class 1) / 0.0 (class 2) at the end.

  ``lag`` is ``T`` (default 100; >= 2), the minimum length; ``n`` is ``N``
  (default 3; ``1 <= N < T``), the number of informative elements.

  Per-sequence: ``error`` -- absolute error at the end; ``correct`` -- ``error
  < 0.2`` (below 0.2, read strictly: an error of exactly 0.2 is a
  misclassified sequence). Criterion (on 256 test sequences, ``stop``): ST1 none wrong; ST2
  ST1 and mean absolute test error < 0.01 (default).
  [T=100, N=3: 39,850 sequences; T=1000, N=3: 452,460.]
  """
  name: ClassVar[str] = "hs3a"
  loss_type: ClassVar[str] = "mse"
  unit_targets: ClassVar[bool] = True
  min_lag: ClassVar[int] = 2
  lag_meaning: ClassVar[str] = "T: lengths are drawn from T..T + T // 10"
  variant: ClassVar[str] = "a"
  # (correct threshold, ST1 max wrong of 256, ST2 mean-error bound)
  rule: ClassVar[tuple[float, int, float]] = (0.2, 0, 0.01)

  lag: int = 100
  n: int = 3
  stop: str = "ST2"

  def _validate(self) -> None:
    self._set("n", checks.integer(f"{self.name}: n", self.n, 1, self.lag - 1,
                             "N, the informative first elements; below T = lag"))
    checks.choice(f"{self.name}: stop", self.stop, ("ST1", "ST2"))

  @property
  def input_size(self) -> int:
    return 1

  @property
  def output_size(self) -> int:
    return 1

  @property
  def max_length(self) -> int:
    return self.lag + self.lag // 10

  def _sample(self, key: Array, batch_size: int) -> Batch:
    steps = self.max_length
    u = uniforms(key, batch_size, length=1, cls=1, noise=steps,
                 info=self.n if self.variant == "b" else 0,
                 target=1 if self.variant == "c" else 0)
    lengths = draw_lengths(u["length"], self.lag, steps)
    class1 = u["cls"] < 0.5
    sign = jnp.where(class1, 1.0, -1.0)
    scale = float(np.sqrt(_NOISE_VAR))
    noise = to_normal(u["noise"], scale)
    info = sign
    if self.variant == "b":
      info = info + jnp.pad(to_normal(u["info"], scale), ((0, 0), (0, steps - self.n)))
    t = time_index(batch_size, steps)
    x = jnp.where(t < self.n, info, noise)
    x = jnp.where(valid_steps(lengths, steps), x, 0.0)
    if self.variant == "c":
      target = jnp.where(class1, 0.2, 0.8)
      target = target + to_normal(u["target"], float(np.sqrt(_TARGET_NOISE_VAR)))
    else:
      target = jnp.where(class1, 1.0, 0.0)
    mask = last_step_mask(lengths, steps)
    return Batch(x[..., None].astype(jnp.float32), (mask * target)[..., None], mask, lengths)

  def _clean_target(self, batch: Batch) -> Array:
    """``[B]`` noise-free target. For 3c it is recovered from the (noise-free)
    first input element, since the batch holds the noisy target."""
    if self.variant == "c":
      return jnp.where(batch.inputs[:, 0, 0] > 0, 0.2, 0.8)
    return at_last_step(batch.targets[..., 0], batch.lengths)

  def _judge(self, outputs: Array, predictions: Array, batch: Batch) -> PerSequence:
    final = at_last_step(predictions[..., 0], batch.lengths)
    error = jnp.abs(final - self._clean_target(batch))
    return {"correct": error < self.rule[0], "error": error}

  def _criterion(self) -> Criterion:
    threshold, max_wrong, mean_bound = self.rule
    rules = [("num_wrong", "<=", max_wrong)]
    text = (f"H&S 1997 Exp 3{self.variant} {self.stop}: at most {max_wrong} of 256 test "
            f"sequences wrong (absolute error >= {threshold})")
    if self.stop == "ST2":
      rules.append(("mean_error", "<", mean_bound))
      text += f" and mean absolute test error < {mean_bound}"
    return Criterion(text, eval_size=256, eval_rules=tuple(rules))

  def _baseline(self) -> float:
    # MSE of the best constant (the mean target): class variance (+ target noise).
    if self.variant == "c":
      return 0.3 ** 2 + _TARGET_NOISE_VAR
    return 0.25


@dataclasses.dataclass(frozen=True)
class TwoSequenceNoisy(TwoSequence):
  """Exp 3b: as 3a plus Gaussian noise (mean 0, variance 0.2) on the
  informative elements.

  ``lag`` is ``T`` (default 1000, the published row), ``n`` is ``N`` (default
  1). Criterion on 256 test sequences: ST1 fewer than 6 wrong; ST2 (default)
  ST1 and mean absolute test error < 0.04. [T=1000, N=1: 485,080 sequences.]
  """
  name: ClassVar[str] = "hs3b"
  variant: ClassVar[str] = "b"
  rule: ClassVar[tuple[float, int, float]] = (0.2, 5, 0.04)

  lag: int = 1000
  n: int = 1
  stop: str = "ST2"


@dataclasses.dataclass(frozen=True)
class TwoSequenceNoisyTargets(TwoSequence):
  """Exp 3c: targets 0.2 (class 1) / 0.8 (class 2) plus Gaussian target noise
  (mean 0, variance 0.1); inputs as in 3a.

  A sequence is correct if the output's absolute difference from the
  *noise-free* target (``error``) is below 0.1 (``error < 0.1``; exactly 0.1
  is wrong). Criterion (default ST2, the
  paper's rule): none of 256 test sequences wrong and mean absolute difference
  to the noise-free target < 0.015; ``stop="ST1"`` drops the mean condition
  (not in the paper). ``lag`` is ``T`` (default 100), ``n`` is ``N`` (default
  3). [T=100, N=3: 269,650 sequences.]
  """
  name: ClassVar[str] = "hs3c"
  variant: ClassVar[str] = "c"
  rule: ClassVar[tuple[float, int, float]] = (0.1, 0, 0.015)

  lag: int = 100
  n: int = 3
  stop: str = "ST2"


__all__ = ["TwoSequence", "TwoSequenceNoisy", "TwoSequenceNoisyTargets"]
