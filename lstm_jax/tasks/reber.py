"""Embedded Reber grammar (Hochreiter & Schmidhuber 1997, Exp 1; grammar from
Reber 1967 as used by Smith & Zipser 1989, Cleeremans et al. 1989, Fahlman 1991).

Alphabet ``B T P S X V E`` (indices 0..6), one-hot in and out. Reber graph (every
branch has probability 0.5)::

    state 0: T -> 1 | P -> 2        state 3: X -> 2 | S -> end
    state 1: S -> 1 | X -> 3        state 4: P -> 3 | V -> end
    state 2: T -> 2 | V -> 4

A Reber string is ``B``, the path from state 0 to the end, ``E``. An embedded
Reber string is ``B``, ``T`` or ``P``, a Reber string, the same ``T``/``P``
again, ``E``; its second-to-last symbol can only be predicted by remembering
the second one.

Batch layout for a string ``s_0 .. s_{L-1}`` (``s_0 = B``, ``s_{L-1} = E``)::

    inputs[b, t]   one-hot(s_t)                       t < L - 1
    targets[b, t]  multi-hot set of legal next symbols after s_0..s_t
    mask[b, t]     1 for t < L - 1
    lengths[b]     L - 1  (the final E is only ever a target)

Strings have unbounded length in principle. The generator caps them at
``max_symbols`` symbols (default 40: ``P(L > 40) = 5.7e-5``, mean length 12,
minimum 9); near the cap it takes the branch that still lets the string
finish within the cap. The *targets* always list both grammatical branches,
so every generated string is grammatical and its targets are exact.

Deviation from the paper: the paper trains on a fixed set of 256 strings and
tests on a disjoint set of 256; here training draws fresh strings, and the
rule is checked on ``eval_size = 512`` freshly drawn strings (standing in for
the training plus test sets; short strings recur, so the sets are not
guaranteed disjoint). The 1997 net used sigmoid output units; here the loss is
sigmoid cross-entropy over the 7 outputs (``"sigmoid_xent"``) -- the
correctness rule (legal symbols most active) does not depend on that choice.
"""

from __future__ import annotations

import dataclasses
import re
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from lstm_jax import checks
from lstm_jax.tasks.base import Batch, PerSequence, Task, uniforms, valid_steps
from lstm_jax.tasks.criteria import Criterion

Array = jax.Array

SYMBOLS = "BTPSXVE"
_B, _T, _P, _S, _X, _V, _E = range(7)

# Automaton of the embedded string. Each state has two (symbol, next) options
# (identical where there is no choice); EMB stores its symbol, EMB2 repeats it.
(_START, _EMB, _IB, _G0, _G1, _G2, _G3, _G4, _GEND, _EMB2, _FINAL, _DONE) = range(12)
_OPTIONS = np.array([
    [(_B, _EMB), (_B, _EMB)],        # START
    [(_T, _IB), (_P, _IB)],          # EMB: embedded symbol
    [(_B, _G0), (_B, _G0)],          # IB: inner B
    [(_T, _G1), (_P, _G2)],          # Reber state 0
    [(_S, _G1), (_X, _G3)],          # Reber state 1
    [(_T, _G2), (_V, _G4)],          # Reber state 2
    [(_X, _G2), (_S, _GEND)],        # Reber state 3
    [(_P, _G3), (_V, _GEND)],        # Reber state 4
    [(_E, _EMB2), (_E, _EMB2)],      # inner E
    [(-1, _FINAL), (-1, _FINAL)],    # EMB2: repeat the stored symbol
    [(_E, _DONE), (_E, _DONE)],      # final E
    [(-1, _DONE), (-1, _DONE)],      # padding
], np.int32)


def _min_symbols_to_finish() -> np.ndarray:
  """Symbols still to emit (this state's one included) on the shortest way to the end."""
  need = np.full(len(_OPTIONS), 10 ** 6, np.int64)
  need[_DONE] = 0
  for _ in range(len(_OPTIONS)):
    for s in range(len(_OPTIONS)):
      if s != _DONE:
        need[s] = min(need[s], 1 + min(need[n] for _, n in _OPTIONS[s]))
  return need.astype(np.int32)


_NEED = _min_symbols_to_finish()          # _NEED[_START] == 9: the shortest string
_LEGAL = np.zeros((len(_OPTIONS), 7), np.float32)   # symbols a state can emit
for _s, _opts in enumerate(_OPTIONS):
  for _sym, _ in _opts:
    if _sym >= 0:
      _LEGAL[_s, _sym] = 1.0

# Regular expression of the same language, written from the graph:
#   from 3: (X T* V P)* (S | X T* V V);  from 4: V | P <from 3>.
_FROM3 = "(?:XT*VP)*(?:S|XT*VV)"
_FROM4 = f"(?:V|P{_FROM3})"
_REBER = f"B(?:TS*X{_FROM3}|PT*V{_FROM4})E"
_EMBEDDED_RE = re.compile(f"B(?:T{_REBER}T|P{_REBER}P)E")


def is_embedded_reber(string: str) -> bool:
  """Pure-Python acceptor: whether ``string`` (over ``BTPSXVE``) is an embedded
  Reber string."""
  return _EMBEDDED_RE.fullmatch(string) is not None


def strings_from_batch(batch: Batch) -> list[str]:
  """Host-side decoding of a Reber batch into its strings (final ``E`` included)."""
  inputs = np.asarray(batch.inputs)
  lengths = np.asarray(batch.lengths)
  return ["".join(SYMBOLS[k] for k in inputs[b, :lengths[b]].argmax(-1)) + "E"
          for b in range(inputs.shape[0])]


@dataclasses.dataclass(frozen=True)
class EmbeddedReber(Task):
  """Embedded Reber grammar, next-symbol prediction (H&S 1997 Exp 1).

  Not a lag task: ``lag`` is fixed at 9 (the length of the shortest embedded
  string, TASKS.md's "lag >= 9") and only ``None`` or 9 are accepted.

  Attributes:
    max_symbols: cap on the string length (``max_length = max_symbols - 1``).

  Per-sequence: ``correct`` -- at every step the legal next symbols are the
  most active outputs (every legal output strictly above every illegal one,
  i.e. the top-|legal| outputs are the legal set); ``error`` -- max absolute
  error of the sigmoid outputs over all steps.
  Criterion: all of ``eval_size = 512`` held-out strings correct.
  """
  name: ClassVar[str] = "reber"
  loss_type: ClassVar[str] = "sigmoid_xent"
  min_lag: ClassVar[int] = 9
  lag_meaning: ClassVar[str] = "not a lag task; lag is fixed at 9, the shortest string"

  lag: int = 9
  max_symbols: int = 40

  def _validate(self) -> None:
    checks.integer(f"{self.name}: lag", self.lag, 9, 9, self.lag_meaning)
    self._set("max_symbols", checks.integer(
        f"{self.name}: max_symbols", self.max_symbols, 9,
        meaning="cap on the string length; 9 is the shortest string"))

  @property
  def input_size(self) -> int:
    return 7

  @property
  def output_size(self) -> int:
    return 7

  @property
  def max_length(self) -> int:
    return self.max_symbols - 1

  def _sample(self, key: Array, batch_size: int) -> Batch:
    m = self.max_symbols
    bits = (uniforms(key, batch_size, bits=m)["bits"] < 0.5).astype(jnp.int32).T   # [M, B]
    options, need, legal = jnp.asarray(_OPTIONS), jnp.asarray(_NEED), jnp.asarray(_LEGAL)

    def step(carry, xs):
      state, stored = carry
      bit, t = xs
      room = m - t                       # slots left, this one included
      fits = 1 + need[options[state, bit, 1]] <= room
      choice = jnp.where(fits, bit, 1 - bit)
      symbol = options[state, choice, 0]
      symbol = jnp.where(state == _EMB2, stored, symbol)
      stored = jnp.where(state == _EMB, symbol, stored)
      nxt = options[state, choice, 1]
      allowed = jnp.where((nxt == _EMB2)[:, None], jax.nn.one_hot(stored, 7), legal[nxt])
      return (nxt, stored), (symbol, allowed)

    init = (jnp.full((batch_size,), _START, jnp.int32), jnp.zeros((batch_size,), jnp.int32))
    _, (symbols, allowed) = jax.lax.scan(step, init, (bits, jnp.arange(m)))
    symbols, allowed = symbols.T, jnp.swapaxes(allowed, 0, 1)     # [B, M], [B, M, 7]
    lengths = (jnp.sum(symbols >= 0, axis=1) - 1).astype(jnp.int32)
    steps = self.max_length
    valid = valid_steps(lengths, steps)
    inputs = jax.nn.one_hot(jnp.where(valid, symbols[:, :steps], -1), 7, dtype=jnp.float32)
    targets = jnp.where(valid[..., None], allowed[:, :steps], 0.0).astype(jnp.float32)
    return Batch(inputs, targets, valid.astype(jnp.float32), lengths)

  def _judge(self, outputs: Array, predictions: Array, batch: Batch) -> PerSequence:
    legal = batch.targets > 0.5
    lowest_legal = jnp.min(jnp.where(legal, outputs, jnp.inf), axis=-1)
    highest_illegal = jnp.max(jnp.where(legal, -jnp.inf, outputs), axis=-1)
    step_ok = (lowest_legal > highest_illegal) | (batch.mask == 0)
    err = jnp.max(jnp.abs(predictions - batch.targets), axis=-1)
    return {"correct": jnp.all(step_ok, axis=1),
            "error": jnp.max(jnp.where(batch.mask > 0, err, 0.0), axis=1)}

  def _criterion(self) -> Criterion:
    return Criterion(
        "H&S 1997 Exp 1: on every string the legal next symbols are always the most "
        "active outputs; checked on 512 fresh strings (paper: 256 training + 256 test)",
        eval_size=512, eval_rules=(("num_wrong", "<=", 0),))


__all__ = ["EmbeddedReber", "SYMBOLS", "is_embedded_reber", "strings_from_batch"]
