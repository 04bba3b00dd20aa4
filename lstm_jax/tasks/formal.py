"""Formal-language tasks with length extrapolation (Delétang et al. 2023,
"Neural Networks and the Chomsky Hierarchy"; Beck et al. 2024, xLSTM):
parity and modular arithmetic. A net trains on short sequences and is
tested on longer ones.

The mechanism: a :class:`LengthExtrapolation` task draws its sequence
lengths from ``train_min .. lag`` (``lag`` is the longest training length),
and its :attr:`~lstm_jax.tasks.base.Task.held_out` version, the task that
held-out evaluations use (:func:`lstm_jax.training.make_eval`: the
criterion's evaluations and a run's final metrics), draws them from
``test_min .. test_max``. The two differ only in the field ``split``
(``"train"`` or ``"test"``; not a parameter of :func:`make_task`) and so in
their static length ``max_length`` (``lag`` or ``test_max``): training
batches stay as short as the training lengths. Every other task's
``held_out`` is the task itself.

Each sequence is answered at its last real step (``lengths[b] - 1``; the
shorter ones are padded at the end, see :mod:`lstm_jax.tasks.base`), one
softmax over the classes, scored there only.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from typing import ClassVar

import jax
import jax.numpy as jnp

from lstm_jax import checks
from lstm_jax.tasks.base import (Batch, PerSequence, Task, at_last_step, draw_lengths,
                                 last_step_mask, softmax_step_error, to_int, uniforms,
                                 valid_steps)
from lstm_jax.tasks.criteria import Criterion
from lstm_jax.tasks.modern import EVAL_SIZE, _strict_argmax_hit

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class LengthExtrapolation(Task):
  """A classification at the last step of a variable-length sequence, trained
  on lengths ``train_min .. lag`` and tested on ``test_min .. test_max``
  (both ranges inclusive, lengths uniform on them).

  Fields: ``lag`` the longest training length (default 40, xLSTM's setup),
  ``train_min`` (default 3; in ``[1, lag]``), ``test_min`` (default 40;
  >= 1), ``test_max`` (default 256; >= ``test_min``), and ``split``
  (``"train"``; ``"test"`` in :attr:`held_out`; set by :attr:`held_out`
  only). ``dataclasses.replace`` gives back a ``"train"`` task.

  Subclasses implement ``input_size``, ``output_size``, ``chance_accuracy``
  and ``_tokens`` (uniforms ``[B, T]``, one per step, and lengths ``[B]`` ->
  ``<int32>[B, T]`` tokens and ``<int32>[B]`` answers), and may round the
  drawn lengths (``_round_lengths``).

  Per-sequence: ``correct`` (the answer's output strictly the largest at the
  last real step), ``error`` (max |softmax - one-hot| there). ``summarize``
  adds ``normalized_accuracy`` = ``(accuracy - chance) / (1 - chance)``
  (xLSTM's scale: 0 chance, 1 perfect). Criterion (this project's): accuracy
  >= 0.99 on 1,024 held-out sequences of the test lengths.
  """
  loss_type: ClassVar[str] = "softmax_xent"
  min_lag: ClassVar[int] = 1
  lag_meaning: ClassVar[str] = "the longest training length"

  lag: int = 40
  train_min: int = 3
  test_min: int = 40
  test_max: int = 256
  split: str = dataclasses.field(default="train", init=False)

  def _validate(self) -> None:
    self._set("train_min", checks.integer(f"{self.name}: train_min", self.train_min, 1,
                                          self.lag, meaning="the shortest training length; "
                                          f"at most lag={self.lag}, the longest"))
    self._set("test_min", checks.integer(f"{self.name}: test_min", self.test_min, 1,
                                         meaning="the shortest test length"))
    self._set("test_max", checks.integer(f"{self.name}: test_max", self.test_max,
                                         self.test_min, meaning="the longest test length; "
                                         f"at least test_min={self.test_min}"))

  @property
  def held_out(self) -> LengthExtrapolation:
    """This task with ``split="test"``: lengths ``test_min .. test_max``."""
    if self.split == "test":
      return self
    test = copy.copy(self)
    object.__setattr__(test, "split", "test")
    return test

  @property
  def length_range(self) -> tuple[int, int]:
    """``(shortest, longest)`` length this task draws (before rounding)."""
    return (self.train_min, self.lag) if self.split == "train" else (self.test_min,
                                                                     self.test_max)

  @property
  def max_length(self) -> int:
    return self.length_range[1]

  @property
  def chance_accuracy(self) -> float:
    raise NotImplementedError

  def _round_lengths(self, lengths: Array) -> Array:
    return lengths

  def _tokens(self, u: Array, lengths: Array) -> tuple[Array, Array]:
    raise NotImplementedError

  def _sample(self, key: Array, batch_size: int) -> Batch:
    steps = self.max_length
    u = uniforms(key, batch_size, length=1, tokens=steps)
    lengths = self._round_lengths(draw_lengths(u["length"], *self.length_range))
    tokens, answers = self._tokens(u["tokens"], lengths)
    valid = valid_steps(lengths, steps)
    inputs = jax.nn.one_hot(tokens, self.input_size, dtype=jnp.float32) * valid[..., None]
    mask = last_step_mask(lengths, steps)
    return Batch(inputs, (mask * answers[:, None]).astype(jnp.int32), mask, lengths)

  def _judge(self, outputs: Array, predictions: Array, batch: Batch) -> PerSequence:
    answers = at_last_step(batch.targets, batch.lengths)
    hit = _strict_argmax_hit(at_last_step(outputs, batch.lengths), answers)
    error = at_last_step(softmax_step_error(predictions, batch, self.output_size),
                         batch.lengths)
    return {"correct": hit, "error": error}

  def _criterion(self) -> Criterion:
    return Criterion(f"{self.name}: accuracy >= 0.99 on 1,024 held-out sequences of lengths "
                     f"{self.test_min}..{self.test_max} (trained on {self.train_min}.."
                     f"{self.lag}; this project's threshold)", eval_size=EVAL_SIZE,
                     eval_rules=(("accuracy", ">=", 0.99),))

  def _extra_summary(self, summary: dict[str, float]) -> dict[str, float]:
    if "accuracy" not in summary:
      return {}
    chance = self.chance_accuracy
    return {"normalized_accuracy": (summary["accuracy"] - chance) / (1.0 - chance)}


@dataclasses.dataclass(frozen=True)
class Parity(LengthExtrapolation):
  """Parity (Delétang et al. 2023 "parity check"; xLSTM's setup): a string of
  bits, each 0 or 1 with probability 1/2, one-hot on 2 input channels; at the
  last real step the target is the parity ``sum_t x_t mod 2`` (class 1: an
  odd number of 1s). Lengths as in :class:`LengthExtrapolation`: training
  ``train_min .. lag`` (default 3..40), held-out test ``test_min ..
  test_max`` (default 40..256).

  Memoryless baseline: accuracy 1/2, cross-entropy ``ln 2`` (the
  ``baseline``; the last bit alone says nothing of the parity).

  Published: Delétang et al. 2023 find that LSTMs solve the regular tasks,
  parity among them, with length generalisation, and Transformers do not.
  State tracking such as parity is where sLSTM's recurrent (memory-mixing)
  state helps and parallel-scan models such as Mamba or minGRU fail to
  extrapolate (Beck et al. 2024, xLSTM).
  """
  name: ClassVar[str] = "parity"

  @property
  def chance_accuracy(self) -> float:
    return 0.5

  @property
  def input_size(self) -> int:
    return 2

  @property
  def output_size(self) -> int:
    return 2

  def _tokens(self, u: Array, lengths: Array) -> tuple[Array, Array]:
    bits = to_int(u, 0, 2) * valid_steps(lengths, u.shape[1])             # [B, T]
    return bits, jnp.sum(bits, axis=1) % 2

  def _baseline(self) -> float:
    return math.log(2.0)


MODULUS = 5
OPERATORS = ("+", "-", "*")
"""Operator tokens ``MODULUS + i`` for ``OPERATORS[i]``."""


def running_value(tokens: Array) -> Array:
  """Value of every prefix of modular expressions, ``*`` before ``+`` and ``-``.

  Args:
    tokens: ``<int32>[B, T]``: numbers ``0..4`` at even steps, operator tokens
      ``5 + i`` (``OPERATORS[i]``) at odd steps.

  Returns:
    ``<int32>[B, T]``: at an even step ``t`` the value mod 5 of the expression
    ``tokens[:, :t+1]`` (at odd steps the value of the expression before it).
    The state is ``(total, sign, term, pending operator)``, the value
    ``total + sign * term``: a number after ``*`` multiplies ``term``, one
    after ``+`` / ``-`` adds ``sign * term`` to ``total`` and starts a new
    term with sign ``+1`` / ``-1``; the state starts as ``0 + ``.
  """
  batch = tokens.shape[0]
  zeros = jnp.zeros((batch,), jnp.int32)

  def step(carry, token):
    total, sign, term, pending = carry
    number = token < MODULUS
    times = pending == MODULUS + 2
    new_total = jnp.where(times, total, (total + sign * term) % MODULUS)
    new_sign = jnp.where(times, sign, jnp.where(pending == MODULUS + 1, -1, 1))
    new_term = jnp.where(times, (term * token) % MODULUS, token)
    total = jnp.where(number, new_total, total)
    sign = jnp.where(number, new_sign, sign)
    term = jnp.where(number, new_term, term)
    pending = jnp.where(number, pending, token)
    return (total, sign, term, pending), (total + sign * term) % MODULUS

  start = (zeros, zeros + 1, zeros, zeros + MODULUS)
  _, values = jax.lax.scan(step, start, tokens.T)
  return values.T


@dataclasses.dataclass(frozen=True)
class ModularArithmetic(LengthExtrapolation):
  """Modular arithmetic, simple form (Delétang et al. 2023, "modular
  arithmetic (simple)"): numbers ``0..4`` at even steps and operators ``+``,
  ``-``, ``*`` at odd steps, each uniform; inputs one-hot over 8 tokens
  (``0..4`` the numbers, ``5, 6, 7`` = ``+ - *``). Target at the last real
  step (always a number): the value of the expression modulo 5, evaluated
  as Delétang et al. do, with the usual precedence (``*`` before ``+`` and
  ``-``); 5 output classes.

  Lengths count tokens and are odd, as in Delétang et al.: a drawn even
  length ``n`` becomes ``n - 1`` (so the default test range 40..256 gives
  lengths 39..255). Ranges as in :class:`LengthExtrapolation`: training
  ``train_min .. lag`` (default 3..40), held-out test ``test_min ..
  test_max`` (default 40..256); ``train_min`` and ``test_min`` >= 1.

  No memoryless baseline is given: the answers are not uniform (products
  with a 0 pull toward 0). Chance accuracy (for ``normalized_accuracy``):
  1/5.

  Published: Delétang et al. 2023 find that LSTMs solve the regular tasks,
  modular arithmetic (simple) among them, with length generalisation, and
  Transformers do not.
  """
  name: ClassVar[str] = "modular_arithmetic"

  @property
  def chance_accuracy(self) -> float:
    return 1.0 / MODULUS

  @property
  def input_size(self) -> int:
    return MODULUS + len(OPERATORS)

  @property
  def output_size(self) -> int:
    return MODULUS

  def _round_lengths(self, lengths: Array) -> Array:
    return jnp.maximum(lengths - (1 - lengths % 2), 1)

  def _tokens(self, u: Array, lengths: Array) -> tuple[Array, Array]:
    steps = u.shape[1]
    odd = (jnp.arange(steps) % 2 == 1)[None, :]
    numbers = to_int(u, 0, MODULUS)
    operators = MODULUS + to_int(u, 0, len(OPERATORS))
    tokens = jnp.where(odd, operators, numbers)
    values = running_value(tokens)
    return tokens * valid_steps(lengths, steps), at_last_step(values, lengths)


__all__ = ["LengthExtrapolation", "MODULUS", "ModularArithmetic", "OPERATORS", "Parity",
           "running_value"]
