"""Temporal order: Hochreiter & Schmidhuber 1997, Exp 6a / 6b, and a
lag-parameterised form for lag sweeps (kept apart from the 1997 form).

Eight symbols, one-hot: ``E, B, a, b, c, d, X, Y`` (indices 0..7). A sequence
starts with ``E``, ends with ``B``; its length is drawn uniformly from the
integers ``T .. T + T // 10`` (1997: ``T = 100``, lengths 100..110). All other
elements are random ``a..d`` except two (6a) or three (6b) positions holding
``X`` or ``Y``; the class is their order. Class index: markers read as binary
digits, ``X = 0``, ``Y = 1``, first marker most significant (6a: ``XX = 0,
XY = 1, YX = 2, YY = 3``). The target is given at the final ``B`` step only.

Positions are 1-based as in the paper (``E`` is at position 1, array index
0): 6a ``t1 in [10, 20]``, ``t2 in [50, 60]``; 6b ``t1 in [10, 20]``, ``t2 in
[33, 43]``, ``t3 in [66, 76]``, each uniform on the integers of its window.

The 1997 net had sigmoid outputs trained on squared error; here the outputs
are a softmax trained with cross-entropy (``"softmax_xent"``). Per-sequence
``error`` is the maximum absolute error of the softmax outputs at the end;
``correct`` -- ``error < 0.3`` (every output's absolute error below 0.3, read
strictly: an error of exactly 0.3 is wrong).
Stopping rule: mean training error (mean of ``error`` over the 2,000 most
recent training sequences; the paper does not name the window) < 0.1 and
those 2,000 all correct.
"""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

import jax
import jax.numpy as jnp

from lstm_jax import checks
from lstm_jax.tasks.base import (Batch, PerSequence, Task, at_last_step, draw_lengths,
                                 last_step_mask, softmax_step_error,
                                 time_index, to_int, uniforms, valid_steps)
from lstm_jax.tasks.criteria import Criterion

Array = jax.Array

_E, _B, _X = 0, 1, 6
WINDOWS_1997 = {2: ((10, 20), (50, 60)), 3: ((10, 20), (33, 43), (66, 76))}


def _round(x: float) -> int:
  return int(math.floor(x + 0.5))


def scaled_windows(n_markers: int, length: int) -> tuple[tuple[int, int], ...]:
  """The 1997 marker windows (1-based positions) scaled from length 100 to
  ``length``: each bound ``round(bound * length / 100)``, then pushed so that
  windows start after position 1 (``E``) and after the previous window, and
  end before position ``length`` (``B`` of the shortest sequence).

  Returns ``WINDOWS_1997[n_markers]`` unchanged for ``length = 100``.

  Raises:
    ValueError: ``length`` too short to hold the windows.
  """
  windows, previous_hi = [], 1
  for lo, hi in WINDOWS_1997[n_markers]:
    lo = max(_round(lo * length / 100), previous_hi + 1)
    hi = max(_round(hi * length / 100), lo)
    windows.append((lo, hi))
    previous_hi = hi
  if previous_hi > length - 1:
    raise ValueError(f"temporal_order: lag={length} is not allowed with n_markers={n_markers}; "
                     f"lag must be an integer >= {n_markers + 2} (the shortest sequence "
                     f"must hold E, {n_markers} markers and B)")
  return tuple(windows)


@dataclasses.dataclass(frozen=True)
class _TemporalOrderBase(Task):
  loss_type: ClassVar[str] = "softmax_xent"
  n_markers: ClassVar[int] = 2

  @property
  def windows(self) -> tuple[tuple[int, int], ...]:
    """1-based ``(lo, hi)`` position window of each marker (both included)."""
    return scaled_windows(self.n_markers, self.lag)

  @property
  def input_size(self) -> int:
    return 8

  @property
  def output_size(self) -> int:
    return 2 ** self.n_markers

  @property
  def max_length(self) -> int:
    return self.lag + self.lag // 10

  def _sample(self, key: Array, batch_size: int) -> Batch:
    steps = self.max_length
    u = uniforms(key, batch_size, length=1, fill=steps, pos=self.n_markers,
                 xy=self.n_markers)
    lengths = draw_lengths(u["length"], self.lag, steps)
    symbols = to_int(u["fill"], 2, 6)                                  # a..d
    t = time_index(batch_size, steps)
    bits = (u["xy"] < 0.5).astype(jnp.int32)                           # X = 0, Y = 1
    label = jnp.zeros((batch_size,), jnp.int32)
    for i, (lo, hi) in enumerate(self.windows):
      index = to_int(u["pos"][:, i:i + 1], lo - 1, hi)                  # 0-based
      symbols = jnp.where(t == index, _X + bits[:, i:i + 1], symbols)
      label = 2 * label + bits[:, i]
    symbols = jnp.where(t == 0, _E, symbols)
    symbols = jnp.where(t == lengths[:, None] - 1, _B, symbols)
    valid = valid_steps(lengths, steps)
    inputs = jax.nn.one_hot(jnp.where(valid, symbols, -1), 8, dtype=jnp.float32)
    mask = last_step_mask(lengths, steps)
    return Batch(inputs, (mask * label[:, None]).astype(jnp.int32), mask, lengths)

  def _judge(self, outputs: Array, predictions: Array, batch: Batch) -> PerSequence:
    err = softmax_step_error(predictions, batch, self.output_size)
    error = at_last_step(err, batch.lengths)
    return {"correct": error < 0.3, "error": error}

  def _criterion(self) -> Criterion:
    return Criterion(f"H&S 1997 Exp 6: mean training error < 0.1 over the 2,000 most recent "
                     f"training sequences, all of them correct (every output's absolute "
                     f"error < 0.3); {self.name}",
                     window=2000, max_wrong=0, max_mean_error=0.1)

  def _baseline(self) -> float:
    return math.log(self.output_size)


@dataclasses.dataclass(frozen=True)
class TemporalOrder6a(_TemporalOrderBase):
  """Exp 6a (1997 form): two markers, 4 classes. ``lag`` is fixed at 100 (the
  minimum length; use ``"temporal_order"`` for other lags). [31,390 sequences.]"""
  name: ClassVar[str] = "hs6a"
  min_lag: ClassVar[int] = 100
  lag_meaning: ClassVar[str] = ("fixed at 100 in the 1997 form; use 'temporal_order' "
                                "to vary it")
  n_markers: ClassVar[int] = 2

  lag: int = 100

  def _validate(self) -> None:
    checks.integer(f"{self.name}: lag", self.lag, 100, 100, self.lag_meaning)


@dataclasses.dataclass(frozen=True)
class TemporalOrder6b(TemporalOrder6a):
  """Exp 6b (1997 form): three markers, 8 classes. ``lag`` is fixed at 100.
  [571,100 sequences.]"""
  name: ClassVar[str] = "hs6b"
  n_markers: ClassVar[int] = 3

  lag: int = 100


@dataclasses.dataclass(frozen=True)
class TemporalOrder(_TemporalOrderBase):
  """Temporal order with positions scaled by ``lag`` (not in the paper; for
  lag sweeps). ``lag`` is ``T``, the minimum length (lengths ``T .. T + T //
  10``); the marker windows are the 1997 ones scaled by ``T / 100`` (see
  :func:`scaled_windows`), so the first marker must be held for about
  ``0.8 T .. 0.9 T`` steps. ``lag = 100`` reproduces 6a (``n_markers = 2``)
  or 6b (``n_markers = 3``) exactly. Criterion as Exp 6.
  """
  name: ClassVar[str] = "temporal_order"
  min_lag: ClassVar[int] = 4
  lag_meaning: ClassVar[str] = "T: minimum length; marker windows scale with T / 100"

  lag: int = 100
  n_markers: int = 2      # type: ignore[misc]  (a field here, a class constant above)

  def _validate(self) -> None:
    checks.choice(f"{self.name}: n_markers", self.n_markers, (2, 3))
    scaled_windows(self.n_markers, self.lag)    # raises if lag cannot hold the windows


__all__ = ["TemporalOrder", "TemporalOrder6a", "TemporalOrder6b", "WINDOWS_1997",
           "scaled_windows"]
