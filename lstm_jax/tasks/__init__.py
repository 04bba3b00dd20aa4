"""Long-lag memory tasks: batch generators, losses, per-sequence metrics and
stopping rules, and a registry by name.

Each task follows the paper it cites (Hochreiter & Schmidhuber 1997 for the
``hs*`` and ``reber`` tasks); its docstring records every difference. Tasks
know nothing of models: this package imports only JAX, NumPy and
:mod:`lstm_jax.checks`.

Quick start::

    from lstm_jax.tasks import make_task
    task = make_task("delayed_recall", lag=20)
    batch = task.sample(jax.random.key(0), 32)     # Batch(inputs, targets, mask, lengths)
    loss = task.loss(outputs, batch)               # outputs: [B, T, O] raw model outputs
    per_seq = task.per_sequence(outputs, batch)    # {"correct", "error", "loss", "mse", ...}
    task.summarize(jax.device_get(per_seq))        # {"accuracy", "mean_error", ...}
    task.criterion                                 # the stopping rule

Registered names (``lag`` meaning in brackets):

====================  ==========================================================
reber                 H&S Exp 1, embedded Reber grammar [not a lag task; fixed 9]
hs2a, hs2b            H&S Exp 2a/2b, noise-free / noisy long lags [p]
hs2c                  H&S Exp 2c, very long lags among distractors [q]
hs3a, hs3b, hs3c      H&S Exp 3, signal and noise on one channel [T, min length]
hs4_adding            H&S Exp 4, adding problem (1997 form) [T, min length]
hs5_multiplication    H&S Exp 5, multiplication problem [T, min length]
hs6a, hs6b            H&S Exp 6, temporal order (1997 form) [fixed 100]
temporal_order        Exp 6 with positions scaled by the length [T, min length]
copy                  copy task (Arjovsky et al. 2016) [T: blanks + delimiter]
adding                adding problem (Le et al. 2015) [T, length]
delayed_recall        one symbol, ``lag`` distractors, a query [distractor steps]
selective_copy        selective copying (Gu & Dao 2023) [L: steps before the answers]
mqar                  multi-query associative recall (Arora et al. 2023) [T, length]
parity                parity, test on longer sequences (Delétang et al. 2023)
                      [longest training length]
modular_arithmetic    modular arithmetic mod 5, test on longer sequences
                      (Delétang et al. 2023) [longest training length]
====================  ==========================================================

``parity`` and ``modular_arithmetic`` train on short sequences and are
evaluated on longer ones: held-out sequences (the criterion's evaluations, a
run's final metrics) come from ``task.held_out``
(:attr:`lstm_jax.tasks.base.Task.held_out`, the task itself for every other
task; :mod:`lstm_jax.tasks.formal`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from lstm_jax.tasks.arithmetic import Adding1997, Multiplication1997
from lstm_jax.tasks.base import LOSS_TYPES, Batch, Task
from lstm_jax.tasks.formal import LengthExtrapolation, ModularArithmetic, Parity
from lstm_jax.tasks.criteria import (Criterion, state_from_json, state_to_json,
                                     summarize_common)
from lstm_jax.tasks.lag_prediction import DistractorLongLag, NoiseFreeLongLag, NoisyLongLag
from lstm_jax.tasks.modern import Adding, Copy, DelayedRecall
from lstm_jax.tasks.recall import MultiQueryRecall, SelectiveCopy
from lstm_jax.tasks.reber import EmbeddedReber, is_embedded_reber, strings_from_batch
from lstm_jax.tasks.temporal_order import TemporalOrder, TemporalOrder6a, TemporalOrder6b
from lstm_jax.tasks.two_sequence import (TwoSequence, TwoSequenceNoisy,
                                         TwoSequenceNoisyTargets)

TASKS: dict[str, type[Task]] = {
    cls.name: cls for cls in (
        EmbeddedReber, NoiseFreeLongLag, NoisyLongLag, DistractorLongLag, TwoSequence,
        TwoSequenceNoisy, TwoSequenceNoisyTargets, Adding1997, Multiplication1997,
        TemporalOrder6a, TemporalOrder6b, TemporalOrder, Copy, Adding, DelayedRecall,
        SelectiveCopy, MultiQueryRecall, Parity, ModularArithmetic)
}
"""Task name -> task class (a frozen dataclass; call it or use :func:`make_task`)."""

TASK_NAMES: tuple[str, ...] = tuple(TASKS)


def task_params(name: str) -> dict[str, Any]:
  """The parameters of task ``name`` and their defaults (``lag`` included)."""
  cls = _lookup(name)
  return {f.name: f.default for f in dataclasses.fields(cls) if f.init}


def _lookup(name: Any) -> type[Task]:
  if not isinstance(name, str) or name not in TASKS:
    raise ValueError(f"task={name!r} is not a known task; allowed names: "
                     f"{', '.join(TASK_NAMES)}")
  return TASKS[name]


def make_task(name: str, lag: int | None = None, **params: Any) -> Task:
  """Build a task by name.

  Args:
    name: one of :data:`TASK_NAMES`.
    lag: the task's lag (see the task's docstring for its meaning); None for
      the task's default.
    **params: other task parameters (e.g. ``p`` for ``hs2c``, ``n`` and
      ``stop`` for ``hs3*``, ``n_seq`` for ``hs5_multiplication``,
      ``n_markers`` for ``temporal_order``, ``n_symbols`` / ``n_distractors``
      for ``delayed_recall``, ``num_tokens`` / ``num_symbols`` for
      ``selective_copy``, ``num_pairs`` / ``vocab_size`` for ``mqar``,
      ``train_min`` / ``test_min`` / ``test_max`` for ``parity`` and
      ``modular_arithmetic``; ``output_units`` for every task).

  Returns:
    The (frozen, hashable) task.

  Raises:
    ValueError: unknown name or parameter, or a value out of range; the
      message names the field, the value and what is allowed.
  """
  cls = _lookup(name)
  # The task's own parameters, then the common ones (not the fields a task sets itself).
  fields = [f for f in dataclasses.fields(cls) if f.init]
  allowed = ([f.name for f in fields if f.name != "lag" and not f.kw_only]
             + [f.name for f in fields if f.kw_only])
  unknown = sorted(set(params) - set(allowed))
  if unknown:
    given = ", ".join(f"{k}={params[k]!r}" for k in unknown)
    options = ", ".join(["lag", *allowed])
    raise ValueError(f"{name}: unknown parameter {given}; allowed parameters: {options}")
  if lag is not None:
    params["lag"] = lag
  return cls(**params)


__all__ = [
    "LOSS_TYPES", "TASKS", "TASK_NAMES", "Adding", "Adding1997", "Batch", "Copy", "Criterion",
    "DelayedRecall", "DistractorLongLag", "EmbeddedReber", "LengthExtrapolation",
    "ModularArithmetic", "Multiplication1997", "MultiQueryRecall", "NoiseFreeLongLag",
    "NoisyLongLag", "Parity", "SelectiveCopy", "Task", "TemporalOrder", "TemporalOrder6a",
    "TemporalOrder6b", "TwoSequence", "TwoSequenceNoisy", "TwoSequenceNoisyTargets",
    "is_embedded_reber", "make_task", "state_from_json", "state_to_json",
    "strings_from_batch", "summarize_common", "task_params",
]
