"""Modern recall benchmarks (2023-2025): selective copying (Gu & Dao 2023, the
Mamba paper; Feng et al. 2024) and multi-query associative recall (MQAR;
Arora et al. 2023, "Zoology").

Both have fixed lengths (``lengths = max_length`` for every sequence) and
several scored steps per sequence: the answer region of selective copying,
the query steps of MQAR. Their per-sequence metrics are the fraction of
scored steps answered right and whether all of them are; their stopping
rules are evaluation rules on held-out sequences whose thresholds are this
project's choice (the sources report accuracies, not stopping rules).
"""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

import jax
import jax.numpy as jnp

from lstm_jax import checks
from lstm_jax.tasks.base import (Batch, PerSequence, Task, masked_mean_per_sequence,
                                 softmax_step_error, to_int, uniforms)
from lstm_jax.tasks.criteria import Criterion
from lstm_jax.tasks.modern import EVAL_SIZE, _strict_argmax_hit

Array = jax.Array


def random_subset(u: Array, size: int) -> Array:
  """Uniforms ``[B, N]`` -> ``<int32>[B, size]``: for each row a uniformly
  random ordered choice of ``size`` distinct indices of ``0..N-1`` (the
  indices of the ``size`` largest uniforms, largest first)."""
  return jax.lax.top_k(u, size)[1].astype(jnp.int32)


def _judge_scored_steps(outputs: Array, predictions: Array, batch: Batch,
                        n_classes: int) -> PerSequence:
  """Per-sequence metrics over the masked steps: ``step_accuracy`` (fraction
  whose target output is strictly the largest), ``correct`` (all of them),
  ``error`` (``1 - step_accuracy``) and ``max_softmax_error`` (max over the
  masked steps of max |softmax - one-hot|)."""
  hits = _strict_argmax_hit(outputs, batch.targets).astype(jnp.float32)
  accuracy = masked_mean_per_sequence(hits, batch.mask)
  step_error = softmax_step_error(predictions, batch, n_classes)
  return {"correct": jnp.all((hits > 0) | (batch.mask == 0), axis=1), "error": 1.0 - accuracy,
          "step_accuracy": accuracy,
          "max_softmax_error": jnp.max(step_error * batch.mask, axis=1)}


@dataclasses.dataclass(frozen=True)
class SelectiveCopy(Task):
  """Selective copying (Gu & Dao 2023, the Mamba paper; Feng et al. 2024).

  Tokens: 0 noise, ``1..V`` data symbols, ``V + 1`` the marker; inputs one-hot
  over ``V + 2``. Input: ``L`` steps of noise among which ``K`` data tokens
  (each uniform on ``1..V``, repeats allowed) stand at ``K`` distinct
  positions drawn uniformly among the ``L``, then ``K`` marker steps (the
  answer region). Target at answer step ``L + j``: the ``j``-th data token in
  order of position, as class ``symbol - 1`` of ``V`` outputs. Only the
  answer steps carry loss (cross-entropy) and metrics. Length ``T = L + K``.
  Unlike the copy task the positions vary, so a fixed-delay solution fails.

  ``lag`` is ``L`` (default 4096, the papers' length; >= ``K``), the steps
  before the answer region. Parameters: ``num_tokens`` ``K`` (default 16, as
  in both papers; >= 1), ``num_symbols`` ``V`` (default 16; >= 2). The Mamba
  setup's vocabulary of 16 counts the noise token, so it has 15 data
  symbols (``num_symbols=15``); the default here keeps 16 data symbols
  besides the noise and marker tokens.

  Memoryless baseline (uniform over the ``V`` symbols at each answer step):
  cross-entropy ``ln V`` (2.77 at V = 16), accuracy ``1/V``; ``summarize``
  reports ``loss_over_baseline``. Per-sequence: ``step_accuracy`` (fraction
  of the ``K`` answer steps whose output is strictly the largest),
  ``correct`` (all ``K``), ``error`` (``1 - step_accuracy``). Criterion (this
  project's): per-token accuracy (mean ``step_accuracy``) >= 0.99 on 1,024
  held-out sequences.

  Published (Feng et al. 2024, Table 1, accuracy in %, L = 4096): minGRU
  with 1 / 2 / 3 layers 37.0 / 96.8 / 99.5; minLSTM 37.6 / 85.7 / 96.0; S6
  (Mamba) solves the task, S4, H3 and Hyena do not (Gu & Dao 2023).
  """
  name: ClassVar[str] = "selective_copy"
  loss_type: ClassVar[str] = "softmax_xent"
  min_lag: ClassVar[int] = 1
  lag_meaning: ClassVar[str] = "L: the steps of noise and data before the answer region"

  lag: int = 4096
  num_tokens: int = 16
  num_symbols: int = 16

  def _validate(self) -> None:
    self._set("num_tokens", checks.integer(f"{self.name}: num_tokens", self.num_tokens, 1,
                                           meaning="K, the data tokens to copy"))
    self._set("num_symbols", checks.integer(f"{self.name}: num_symbols", self.num_symbols, 2,
                                            meaning="V, the data symbols"))
    if self.lag < self.num_tokens:
      checks.fail(f"{self.name}: lag", self.lag,
                  f"expected an integer >= num_tokens={self.num_tokens} (L, the steps "
                  f"that hold the {self.num_tokens} data tokens among noise)")

  @property
  def chance_accuracy(self) -> float:
    """Per-token accuracy of a memoryless guess, ``1/V``."""
    return 1.0 / self.num_symbols

  @property
  def input_size(self) -> int:
    return self.num_symbols + 2

  @property
  def output_size(self) -> int:
    return self.num_symbols

  @property
  def max_length(self) -> int:
    return self.lag + self.num_tokens

  def _sample(self, key: Array, batch_size: int) -> Batch:
    k, v, steps = self.num_tokens, self.num_symbols, self.max_length
    u = uniforms(key, batch_size, positions=self.lag, symbols=k)
    positions = jnp.sort(random_subset(u["positions"], k), axis=1)        # [B, K]
    data = to_int(u["symbols"], 1, v + 1)                                  # [B, K]
    rows = jnp.arange(batch_size)[:, None]
    region = jnp.zeros((batch_size, self.lag), jnp.int32).at[rows, positions].set(data)
    markers = jnp.full((batch_size, k), v + 1, jnp.int32)
    tokens = jnp.concatenate([region, markers], axis=1)                   # [B, T]
    mask = jnp.concatenate([jnp.zeros((batch_size, self.lag)), jnp.ones((batch_size, k))],
                           axis=1).astype(jnp.float32)
    targets = jnp.concatenate([jnp.zeros((batch_size, self.lag), jnp.int32), data - 1], 1)
    return Batch(jax.nn.one_hot(tokens, v + 2, dtype=jnp.float32), targets, mask,
                 jnp.full((batch_size,), steps, jnp.int32))

  def _judge(self, outputs: Array, predictions: Array, batch: Batch) -> PerSequence:
    return _judge_scored_steps(outputs, predictions, batch, self.output_size)

  def _criterion(self) -> Criterion:
    return Criterion("selective copy: per-token accuracy >= 0.99 on 1,024 held-out "
                     "sequences (this project's threshold)", eval_size=EVAL_SIZE,
                     eval_rules=(("step_accuracy", ">=", 0.99),))

  def _baseline(self) -> float:
    return math.log(self.num_symbols)


@dataclasses.dataclass(frozen=True)
class MultiQueryRecall(Task):
  """Multi-query associative recall, MQAR (Arora et al. 2023, "Zoology").

  Vocabulary of ``V`` tokens: keys ``0 .. V/2 - 1``, values ``V/2 .. V - 1``
  (disjoint halves), and a blank token ``V``; inputs one-hot over ``V + 1``.
  Input: ``P`` key-value pairs ``k_1 v_1 k_2 v_2 ... k_P v_P`` (``2P``
  steps; the keys distinct, drawn uniformly without replacement, each value
  uniform on the values, repeats allowed), then a query region of ``T - 2P``
  steps, blank except at ``P`` distinct positions drawn uniformly, where
  each of the ``P`` keys is shown once in a random order. Target at a query
  step: the value paired with its key, as class ``value - V/2`` of ``V/2``
  outputs. Only the query steps carry loss (cross-entropy) and metrics.

  Changed from Zoology: inputs are one-hot (no embedding of a large
  vocabulary), the answer is due at the query step itself (Zoology's
  language model predicts it at the next token), every key is queried once,
  the query positions are uniform (Zoology draws the gaps from a power law)
  and the unqueried steps are blank.

  ``lag`` is ``T`` (default 64, Zoology's shortest length; >= ``3P``), the
  sequence length. Parameters: ``num_pairs`` ``P`` (default 8; in ``[1,
  V/2]``), ``vocab_size`` ``V`` (default 64; even, >= 4).

  Memoryless baseline (uniform over the ``V/2`` values at each query step):
  cross-entropy ``ln(V/2)`` (3.47 at V = 64), accuracy ``2/V``; ``summarize``
  reports ``loss_over_baseline``. Per-sequence: ``step_accuracy`` (fraction
  of the ``P`` queries whose value's output is strictly the largest),
  ``correct`` (all ``P``), ``error`` (``1 - step_accuracy``). Criterion (this
  project's): query accuracy (mean ``step_accuracy``) >= 0.99 on 1,024
  held-out sequences.

  Published: recurrent models of fixed state size fail once the pairs exceed
  what their state holds (Arora et al. 2023); a 2025 study ("Revisiting
  associative recall in modern recurrent models") finds they succeed only in
  a narrow learning-rate window, so tune the learning rate per model and
  length.
  """
  name: ClassVar[str] = "mqar"
  loss_type: ClassVar[str] = "softmax_xent"
  min_lag: ClassVar[int] = 3
  lag_meaning: ClassVar[str] = "T: the sequence length (2 P pair steps, then the query region)"

  lag: int = 64
  num_pairs: int = 8
  vocab_size: int = 64

  def _validate(self) -> None:
    v = checks.integer(f"{self.name}: vocab_size", self.vocab_size, 4,
                       meaning="V, keys and values in two halves")
    if v % 2:
      checks.fail(f"{self.name}: vocab_size", v, "expected an even integer >= 4 (V: keys "
                  "0..V/2-1 and values V/2..V-1)")
    self._set("vocab_size", v)
    self._set("num_pairs", checks.integer(f"{self.name}: num_pairs", self.num_pairs, 1, v // 2,
                                          meaning="P, distinct keys from the V/2 keys"))
    if self.lag < 3 * self.num_pairs:
      checks.fail(f"{self.name}: lag", self.lag,
                  f"expected an integer >= 3 * num_pairs = {3 * self.num_pairs} (T: "
                  f"{2 * self.num_pairs} pair steps, then at least {self.num_pairs} query "
                  f"steps)")

  @property
  def num_keys(self) -> int:
    """``V/2``: the keys (and the values)."""
    return self.vocab_size // 2

  @property
  def chance_accuracy(self) -> float:
    """Per-query accuracy of a memoryless guess, ``2/V``."""
    return 1.0 / self.num_keys

  @property
  def input_size(self) -> int:
    return self.vocab_size + 1

  @property
  def output_size(self) -> int:
    return self.num_keys

  @property
  def max_length(self) -> int:
    return self.lag

  def _sample(self, key: Array, batch_size: int) -> Batch:
    p, half, steps = self.num_pairs, self.num_keys, self.lag
    region = steps - 2 * p
    u = uniforms(key, batch_size, keys=half, values=p, order=p, positions=region)
    keys = random_subset(u["keys"], p)                                     # [B, P]
    values = to_int(u["values"], 0, half)                                  # [B, P] classes
    pairs = jnp.stack([keys, half + values], axis=-1).reshape(batch_size, 2 * p)
    order = random_subset(u["order"], p)            # query j asks pair order[j]
    positions = jnp.sort(random_subset(u["positions"], p), axis=1)       # [B, P]
    asked = jnp.take_along_axis(keys, order, axis=1)
    answer = jnp.take_along_axis(values, order, axis=1)
    rows = jnp.arange(batch_size)[:, None]
    queries = jnp.full((batch_size, region), self.vocab_size, jnp.int32)
    queries = queries.at[rows, positions].set(asked)
    tokens = jnp.concatenate([pairs, queries], axis=1)                    # [B, T]
    at = 2 * p + positions
    mask = jnp.zeros((batch_size, steps), jnp.float32).at[rows, at].set(1.0)
    targets = jnp.zeros((batch_size, steps), jnp.int32).at[rows, at].set(answer)
    return Batch(jax.nn.one_hot(tokens, self.vocab_size + 1, dtype=jnp.float32), targets,
                 mask, jnp.full((batch_size,), steps, jnp.int32))

  def _judge(self, outputs: Array, predictions: Array, batch: Batch) -> PerSequence:
    return _judge_scored_steps(outputs, predictions, batch, self.output_size)

  def _criterion(self) -> Criterion:
    return Criterion("MQAR: query accuracy >= 0.99 on 1,024 held-out sequences "
                     "(this project's threshold)", eval_size=EVAL_SIZE,
                     eval_rules=(("step_accuracy", ">=", 0.99),))

  def _baseline(self) -> float:
    return math.log(self.num_keys)


__all__ = ["MultiQueryRecall", "SelectiveCopy", "random_subset"]
