"""Modern standard long-lag tasks: copy (Arjovsky, Shah & Bengio 2016), adding
(Le, Jaitly & Hinton 2015; Arjovsky et al. 2016) and delayed recall (the
quick-start probe of memory after a gap).

All three have fixed lengths (``lengths = max_length`` for every sequence).
Their stopping rules are evaluation rules on held-out sequences; the
thresholds are this project's choice (the sources report curves, not
stopping rules) and are stated in each criterion's description.
"""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

import jax
import jax.numpy as jnp

from lstm_jax import checks
from lstm_jax.tasks.base import (Batch, PerSequence, Task, at_last_step,
                                 last_step_mask, softmax_step_error, time_index, to_int,
                                 uniforms)
from lstm_jax.tasks.criteria import Criterion

Array = jax.Array

EVAL_SIZE = 1024


def _strict_argmax_hit(outputs: Array, targets: Array) -> Array:
  """``[...]`` True where the target's output is strictly above every other
  output (ties count as wrong, so constant outputs are never right)."""
  picked = jnp.take_along_axis(outputs, targets[..., None].astype(jnp.int32), axis=-1)
  others = jnp.where(jax.nn.one_hot(targets, outputs.shape[-1], dtype=bool), -jnp.inf, outputs)
  return picked[..., 0] > jnp.max(others, axis=-1)


@dataclasses.dataclass(frozen=True)
class Copy(Task):
  """Copy task (Arjovsky, Shah & Bengio 2016).

  Alphabet ``0..9``: 0 blank, 1..8 data, 9 delimiter; inputs one-hot over 10.
  Input: 10 data symbols drawn uniformly from 1..8, ``T - 1`` blanks, the
  delimiter, 10 blanks (length ``T + 20``). Target: blank for ``T + 10``
  steps, then the 10 data symbols. Outputs: 9 classes (0 blank, 1..8 data;
  the delimiter is never a target). Cross-entropy over all steps.

  ``lag`` is ``T`` (default 100; >= 1): the delimiter comes ``T`` steps after
  the last data symbol, and each symbol is recalled ``T + 10`` steps after it
  was shown.

  Memoryless baseline (blank, then uniform over 8): ``10 ln 8 / (T + 20)``
  (0.173 at T = 100); ``summarize`` reports ``loss_over_baseline``.
  Per-sequence: ``symbol_accuracy`` (fraction of the 10 recalled symbols whose
  output is strictly the largest), ``correct`` (all 10), ``error`` (``1 -
  symbol_accuracy``). Criterion (this project's): per-symbol recall accuracy
  >= 0.99 on 1,024 held-out sequences.
  """
  name: ClassVar[str] = "copy"
  loss_type: ClassVar[str] = "softmax_xent"
  min_lag: ClassVar[int] = 1
  lag_meaning: ClassVar[str] = "T: blanks (T - 1) plus the delimiter between data and recall"
  n_data: ClassVar[int] = 10

  lag: int = 100

  @property
  def input_size(self) -> int:
    return 10

  @property
  def output_size(self) -> int:
    return 9

  @property
  def max_length(self) -> int:
    return self.lag + 2 * self.n_data

  def _sample(self, key: Array, batch_size: int) -> Batch:
    data = to_int(uniforms(key, batch_size, data=self.n_data)["data"], 1, 9)
    blanks = lambda n: jnp.zeros((batch_size, n), jnp.int32)   # noqa: E731
    delimiter = jnp.full((batch_size, 1), 9, jnp.int32)
    symbols = jnp.concatenate([data, blanks(self.lag - 1), delimiter, blanks(self.n_data)], 1)
    targets = jnp.concatenate([blanks(self.lag + self.n_data), data], axis=1)
    steps = self.max_length
    return Batch(jax.nn.one_hot(symbols, 10, dtype=jnp.float32), targets,
                 jnp.ones((batch_size, steps), jnp.float32),
                 jnp.full((batch_size,), steps, jnp.int32))

  def _judge(self, outputs: Array, predictions: Array, batch: Batch) -> PerSequence:
    recall = slice(self.max_length - self.n_data, None)
    hits = _strict_argmax_hit(outputs[:, recall], batch.targets[:, recall])
    accuracy = jnp.mean(hits.astype(jnp.float32), axis=1)
    return {"correct": jnp.all(hits, axis=1), "error": 1.0 - accuracy,
            "symbol_accuracy": accuracy}

  def _criterion(self) -> Criterion:
    return Criterion("copy: per-symbol recall accuracy >= 0.99 on 1,024 held-out sequences "
                     "(this project's threshold)", eval_size=EVAL_SIZE,
                     eval_rules=(("symbol_accuracy", ">=", 0.99),))

  def _baseline(self) -> float:
    return self.n_data * math.log(8) / (self.lag + 2 * self.n_data)


@dataclasses.dataclass(frozen=True)
class Adding(Task):
  """Adding problem, modern form (Le, Jaitly & Hinton 2015; Arjovsky et al. 2016).

  Two input channels: values ``U[0, 1]`` and a marker; exactly one marker in
  each half of the sequence (uniform in ``0 .. T//2 - 1`` and ``T//2 .. T -
  1``). Target at the last step: the sum of the two marked values. Linear
  output, squared error (``"mse"``).

  ``lag`` is ``T`` (default 100; >= 2), the sequence length.

  Baseline: always predicting 1 gives MSE ``1/6 = 0.167``; ``summarize``
  reports ``mse_over_baseline``. Per-sequence: ``error`` -- absolute error;
  ``correct`` -- ``error < 0.04`` (the H&S 1997 Exp 4 tolerance; the sources
  use no per-sequence rule). Criterion (this project's): test MSE <= 0.01
  (6% of the baseline) on 1,024 held-out sequences.
  """
  name: ClassVar[str] = "adding"
  loss_type: ClassVar[str] = "mse"
  min_lag: ClassVar[int] = 2
  lag_meaning: ClassVar[str] = "T: the sequence length"

  lag: int = 100

  @property
  def input_size(self) -> int:
    return 2

  @property
  def output_size(self) -> int:
    return 1

  @property
  def max_length(self) -> int:
    return self.lag

  def _sample(self, key: Array, batch_size: int) -> Batch:
    steps, half = self.lag, self.lag // 2
    u = uniforms(key, batch_size, values=steps, i1=1, i2=1)
    values = u["values"]
    i1 = to_int(u["i1"], 0, half)
    i2 = to_int(u["i2"], half, steps)
    t = time_index(batch_size, steps)
    markers = ((t == i1) | (t == i2)).astype(jnp.float32)
    target = (jnp.take_along_axis(values, i1, axis=1)
              + jnp.take_along_axis(values, i2, axis=1))
    lengths = jnp.full((batch_size,), steps, jnp.int32)
    mask = last_step_mask(lengths, steps)
    return Batch(jnp.stack([values, markers], axis=-1), (mask * target)[..., None], mask,
                 lengths)

  def _judge(self, outputs: Array, predictions: Array, batch: Batch) -> PerSequence:
    error = jnp.abs(at_last_step(predictions[..., 0] - batch.targets[..., 0], batch.lengths))
    return {"correct": error < 0.04, "error": error}

  def _criterion(self) -> Criterion:
    return Criterion("adding (Le et al.): test MSE <= 0.01 on 1,024 held-out sequences "
                     "(this project's threshold; baseline 0.167)", eval_size=EVAL_SIZE,
                     eval_rules=(("mse", "<=", 0.01),))

  def _baseline(self) -> float:
    return 1.0 / 6.0

  def _extra_summary(self, summary: dict[str, float]) -> dict[str, float]:
    return {"mse_over_baseline": summary["mse"] / self._baseline()} if "mse" in summary else {}


@dataclasses.dataclass(frozen=True)
class DelayedRecall(Task):
  """Delayed recall: one of ``K`` symbols is shown once, ``lag`` distractor
  steps follow, then a query step; the net must name the symbol.

  Input channels ``K + D + 1``: step 0 one-hot symbol on channels ``0..K-1``;
  steps ``1..lag`` a random distractor token, one-hot on channels ``K ..
  K+D-1`` (all zero if ``D = 0``); step ``lag + 1`` the query channel ``K + D``
  set to 1. Length ``lag + 2``. Target: the symbol (softmax over ``K``) at the
  query step only.

  ``lag`` (default 20; >= 1) is the number of distractor steps.
  Parameters: ``n_symbols`` ``K`` (default 4; >= 2), ``n_distractors`` ``D``
  (default 4; >= 0).

  Memoryless baseline: accuracy ``1/K``, cross-entropy ``ln K`` (the
  ``baseline``). Per-sequence: ``correct`` -- the symbol's output is strictly
  the largest; ``error`` -- max absolute softmax error at the query step.
  Criterion (this project's): accuracy >= 0.99 on 1,024 held-out sequences.
  """
  name: ClassVar[str] = "delayed_recall"
  loss_type: ClassVar[str] = "softmax_xent"
  min_lag: ClassVar[int] = 1
  lag_meaning: ClassVar[str] = "distractor steps between the symbol and the query"

  lag: int = 20
  n_symbols: int = 4
  n_distractors: int = 4

  def _validate(self) -> None:
    self._set("n_symbols", checks.integer(f"{self.name}: n_symbols", self.n_symbols, 2,
                                          meaning="K, the symbols to remember"))
    self._set("n_distractors", checks.integer(f"{self.name}: n_distractors", self.n_distractors,
                                              0, meaning="D, the distractor tokens"))

  @property
  def chance_accuracy(self) -> float:
    """Accuracy of a memoryless guess, ``1/K``."""
    return 1.0 / self.n_symbols

  @property
  def input_size(self) -> int:
    return self.n_symbols + self.n_distractors + 1

  @property
  def output_size(self) -> int:
    return self.n_symbols

  @property
  def max_length(self) -> int:
    return self.lag + 2

  def _sample(self, key: Array, batch_size: int) -> Batch:
    k, d, steps = self.n_symbols, self.n_distractors, self.max_length
    u = uniforms(key, batch_size, symbol=1, tokens=self.lag if d else 0)
    symbol = to_int(u["symbol"][:, 0], 0, k)
    first = jnp.concatenate([jax.nn.one_hot(symbol, k), jnp.zeros((batch_size, d + 1))], -1)
    tokens = to_int(u["tokens"], 0, d) if d else jnp.zeros((batch_size, self.lag), jnp.int32)
    middle = jnp.concatenate([jnp.zeros((batch_size, self.lag, k)),
                              jax.nn.one_hot(tokens, d),
                              jnp.zeros((batch_size, self.lag, 1))], axis=-1)
    query = jnp.zeros((batch_size, 1, k + d + 1)).at[:, :, -1].set(1.0)
    inputs = jnp.concatenate([first[:, None], middle, query], axis=1).astype(jnp.float32)
    lengths = jnp.full((batch_size,), steps, jnp.int32)
    mask = last_step_mask(lengths, steps)
    return Batch(inputs, (mask * symbol[:, None]).astype(jnp.int32), mask, lengths)

  def _judge(self, outputs: Array, predictions: Array, batch: Batch) -> PerSequence:
    hit = _strict_argmax_hit(outputs[:, -1], batch.targets[:, -1])
    error = softmax_step_error(predictions, batch, self.output_size)[:, -1]
    return {"correct": hit, "error": error}

  def _criterion(self) -> Criterion:
    return Criterion("delayed recall: accuracy >= 0.99 on 1,024 held-out sequences "
                     "(this project's threshold)", eval_size=EVAL_SIZE,
                     eval_rules=(("accuracy", ">=", 0.99),))

  def _baseline(self) -> float:
    return math.log(self.n_symbols)


__all__ = ["Adding", "Copy", "DelayedRecall", "EVAL_SIZE"]
