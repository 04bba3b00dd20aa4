"""Shared machinery of the long-lag tasks: the :class:`Batch`, the :class:`Task`
base class (losses, predictions, per-sequence metrics, summaries) and helpers
for variable-length batches.

Shapes (``B`` batch, ``T`` the task's static ``max_length``, ``I`` input size,
``O`` output size)::

    inputs    <float32>[B, T, I]
    targets   <float32>[B, T, O]   (loss_type "mse" or "sigmoid_xent")
              <int32>[B, T]        (loss_type "softmax_xent": class indices)
    mask      <float32>[B, T]      1 where a step carries loss and metrics
    lengths   <int32>[B]           real length of each sequence
    outputs   <float32>[B, T, O]   raw model outputs (logits / pre-activations)

Padding: steps ``t >= lengths[b]`` are padding. Their inputs, targets and mask
are all zero, and padding always goes at the *end*, so a model that runs its
recurrence with per-sequence lengths (``lstm_jax.sequence``) ends in the state
after the last real step. Tasks whose answer is given at the end put the
target (and the only mask entry) at step ``lengths[b] - 1``; nothing in the
inputs before that step reveals where the sequence will end.

This module knows nothing of models: it imports only JAX, NumPy and
:mod:`lstm_jax.checks`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import jax.scipy.special  # noqa: F401  (ndtri)
import numpy as np

from lstm_jax import checks
from lstm_jax.tasks.criteria import Criterion, summarize_common

Array = jax.Array
PerSequence = dict[str, Array]

LOSS_TYPES = ("softmax_xent", "mse", "sigmoid_xent")
OUTPUT_UNITS = ("task", "sigmoid")
"""How a task reads the model's raw outputs: ``"task"`` by its ``loss_type``;
``"sigmoid"``: sigmoid output units trained on squared error, the 1997 nets'
error function: ``prediction = sigmoid(output)``, a step's loss
``1/2 sum_units (prediction - target)^2`` against the (one-hot, for class
targets) dense targets, and a batch's training loss the sum over each
sequence's masked steps, averaged over the sequences (so a learning rate
means what it meant for online learning in 1997)."""


class Batch(NamedTuple):
  """One batch of a task (a pytree; every leaf has leading dimension ``B``).

  Attributes:
    inputs: ``<float32>[B, T, I]``.
    targets: ``<float32>[B, T, O]`` for ``"mse"`` / ``"sigmoid_xent"`` tasks,
      ``<int32>[B, T]`` class indices for ``"softmax_xent"`` tasks.
    mask: ``<float32>[B, T]``, 1 where the step carries loss and metrics.
    lengths: ``<int32>[B]``, the real length of each sequence (``<= T``).
  """
  inputs: Array
  targets: Array
  mask: Array
  lengths: Array


# ----------------------------------------------------------------------------
# Array helpers used by the generators and the metrics.


def time_index(batch_size: int, time: int) -> Array:
  """``<int32>[B, T]``: ``t`` at ``[b, t]``."""
  return jnp.broadcast_to(jnp.arange(time, dtype=jnp.int32), (batch_size, time))


def valid_steps(lengths: Array, time: int) -> Array:
  """``<bool>[B, T]``: True for real steps ``t < lengths[b]``."""
  return jnp.arange(time)[None, :] < lengths[:, None]


def last_step_mask(lengths: Array, time: int) -> Array:
  """``<float32>[B, T]``: 1 at ``t = lengths[b] - 1``, else 0."""
  return (jnp.arange(time)[None, :] == lengths[:, None] - 1).astype(jnp.float32)


def at_last_step(values: Array, lengths: Array) -> Array:
  """``values[b, lengths[b] - 1]`` for ``values`` ``[B, T, ...]`` -> ``[B, ...]``."""
  index = jnp.clip(lengths - 1, 0, values.shape[1] - 1)
  return jax.vmap(lambda v, i: v[i])(values, index)


# Every generator makes a single call to jax.random (:func:`uniforms`) and
# derives its integers, coin flips and Gaussians from those uniforms: XLA's
# compile time on CPU grows with the number of random calls in a program.

_TINY = float(np.finfo(np.float32).tiny)


def uniforms(key: Array, batch_size: int, **widths: int) -> dict[str, Array]:
  """One ``jax.random.uniform`` draw on ``(0, 1)`` split into named blocks.

  Args:
    key: a ``jax.random`` key.
    batch_size: ``B``.
    **widths: block name -> number of columns (0 allowed).

  Returns:
    Block name -> ``<float32>[B, width]``, independent uniforms on ``[tiny, 1)``.
  """
  names = list(widths)
  sizes = [int(widths[n]) for n in names]
  u = jax.random.uniform(key, (batch_size, sum(sizes)), jnp.float32, _TINY, 1.0)
  parts = jnp.split(u, np.cumsum(sizes)[:-1].tolist(), axis=1)
  return dict(zip(names, parts))


def to_int(u: Array, low: int | Array, high: int | Array) -> Array:
  """Uniforms -> ``<int32>`` uniform on ``low .. high - 1`` (``high`` may be an array)."""
  span = jnp.asarray(high, jnp.int32) - jnp.asarray(low, jnp.int32)
  offset = jnp.minimum(jnp.floor(u * span).astype(jnp.int32), span - 1)
  return (low + offset).astype(jnp.int32)


def to_normal(u: Array, std: float = 1.0) -> Array:
  """Uniforms on ``(0, 1)`` -> Gaussians with mean 0 and standard deviation ``std``."""
  return std * jax.scipy.special.ndtri(u)


def draw_lengths(u: Array, shortest: int, longest: int) -> Array:
  """Uniforms ``[B, 1]`` -> ``<int32>[B]`` uniform on ``shortest..longest`` (both included)."""
  return to_int(u[:, 0], shortest, longest + 1)


def masked_mean_per_sequence(values: Array, mask: Array) -> Array:
  """``[B, T]`` values -> ``[B]`` mean over the steps where ``mask`` is 1."""
  return jnp.sum(values * mask, axis=1) / jnp.maximum(jnp.sum(mask, axis=1), 1.0)


# Each public Task method calls one jitted program with the (hashable) task as
# a static argument: eager calls compile once per task and shape, calls inside
# an outer jit are inlined.


def _sample_impl(task: Task, key: Array, batch_size: int) -> Batch:
  return task._sample(key, batch_size)


def _loss_impl(task: Task, outputs: Array, batch: Batch) -> Array:
  losses = task.step_losses(outputs, batch)
  if task.output_units == "sigmoid":  # the 1997 error: summed over a sequence's steps
    return jnp.sum(losses * batch.mask) / losses.shape[0]
  return jnp.sum(losses * batch.mask) / jnp.maximum(jnp.sum(batch.mask), 1.0)


def _per_sequence_impl(task: Task, outputs: Array, batch: Batch) -> PerSequence:
  losses = task.step_losses(outputs, batch)
  predictions = task.predict(outputs.astype(jnp.float32))
  dense = task.dense_targets(batch)
  sq = jnp.mean(jnp.square(predictions - dense), axis=-1)
  result = {"loss": masked_mean_per_sequence(losses, batch.mask),
            "mse": masked_mean_per_sequence(sq, batch.mask)}
  result.update(task._judge(outputs, predictions, batch))
  result["correct"] = result["correct"].astype(bool)
  result["error"] = result["error"].astype(jnp.float32)
  return result


_sample_jit = jax.jit(_sample_impl, static_argnums=(0, 2))
_loss_jit = jax.jit(_loss_impl, static_argnums=0)
_per_sequence_jit = jax.jit(_per_sequence_impl, static_argnums=0)


# ----------------------------------------------------------------------------
# The task base class.


@dataclasses.dataclass(frozen=True)
class Task:
  """A task instance: a frozen, hashable description usable as a ``jax.jit``
  static argument. Subclasses add their parameters as dataclass fields and
  implement ``input_size``, ``output_size``, ``max_length``, ``_sample``,
  ``_judge`` and ``_criterion``.

  Class attributes:
    name: registry name.
    loss_type: ``"softmax_xent"`` (int targets), ``"mse"`` (linear outputs) or
      ``"sigmoid_xent"`` (multi-label float targets).
    min_lag: the smallest ``lag`` the generator supports.
    lag_meaning: what ``lag`` is for this task.
    unit_targets: for ``"mse"`` tasks, whether every target lies in
      ``[0, 1]`` (so sigmoid output units can reach it).

  Fields every task has: ``lag``, and ``output_units`` (keyword only; one of
  :data:`OUTPUT_UNITS`).
  """
  name: ClassVar[str] = "task"
  loss_type: ClassVar[str] = "mse"
  min_lag: ClassVar[int] = 1
  lag_meaning: ClassVar[str] = ""
  unit_targets: ClassVar[bool] = False

  lag: int = 1
  output_units: str = dataclasses.field(default="task", kw_only=True)

  def __post_init__(self) -> None:
    self._set("lag", checks.integer(f"{self.name}: lag", self.lag, self.min_lag,
                                    meaning=self.lag_meaning))
    checks.choice(f"{self.name}: output_units", self.output_units, OUTPUT_UNITS)
    if self.output_units == "sigmoid" and self.loss_type == "mse" and not self.unit_targets:
      checks.fail(f"{self.name}: output_units", self.output_units,
                  "this task's targets leave [0, 1], which sigmoid units cannot reach; "
                  "allowed: 'task'")
    self._validate()
    if self.max_length > checks.INT32_MAX:
      raise ValueError(f"{self.name}: lag={self.lag} makes sequences of {self.max_length:,} "
                       f"steps, more than a compiled program can index "
                       f"({checks.INT32_MAX:,}); use a smaller lag")

  # -- hooks for subclasses ---------------------------------------------------

  def _validate(self) -> None:
    """Check and normalise the task parameters (raise ValueError)."""

  def _set(self, field: str, value: Any) -> None:
    object.__setattr__(self, field, value)

  @property
  def input_size(self) -> int:
    raise NotImplementedError

  @property
  def output_size(self) -> int:
    raise NotImplementedError

  @property
  def max_length(self) -> int:
    """The static number of time steps ``T`` of every batch."""
    raise NotImplementedError

  def _sample(self, key: Array, batch_size: int) -> Batch:
    raise NotImplementedError

  def _judge(self, outputs: Array, predictions: Array, batch: Batch) -> PerSequence:
    """Per-sequence ``"correct"`` (bool) and ``"error"`` (float) plus extras."""
    raise NotImplementedError

  def _criterion(self) -> Criterion:
    raise NotImplementedError

  def _baseline(self) -> float | None:
    return None

  def _extra_summary(self, summary: dict[str, float]) -> dict[str, float]:
    return {}

  # -- public API ---------------------------------------------------------------

  @property
  def params(self) -> dict[str, Any]:
    """The task's parameters (lag included) as a JSON-able dict: its fields
    that :func:`~lstm_jax.tasks.make_task` accepts."""
    return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.init}

  @property
  def held_out(self) -> Task:
    """The task that held-out sequences are drawn from: the evaluations of
    the criterion and a run's final metrics
    (:func:`lstm_jax.training.make_eval`). This is the task itself, except
    where a task tests on another distribution than it trains on: the
    length-extrapolation tasks (:mod:`lstm_jax.tasks.formal`) train on short
    sequences and are tested on longer ones. Its :meth:`summarize` and
    :attr:`criterion` are this task's; its :attr:`max_length`, and so the
    shape of the outputs its :meth:`loss` and :meth:`per_sequence` take, may
    differ."""
    return self

  def sample(self, key: Array, batch_size: int) -> Batch:
    """Draw a batch; pure, deterministic in ``key``, static shapes, jit-able.

    Args:
      key: a ``jax.random`` key.
      batch_size: ``B`` (a Python int; static under ``jax.jit``).

    Returns:
      A :class:`Batch` with ``T = self.max_length``.
    """
    batch_size = checks.integer(f"{self.name}: batch_size", batch_size, 1)
    return _sample_jit(self, key, batch_size)

  def predict(self, outputs: Array) -> Array:
    """Raw outputs ``[B, T, O]`` -> predictions in target space: softmax
    probabilities, sigmoid activations, or the outputs themselves (``"mse"``);
    sigmoid activations with ``output_units="sigmoid"``."""
    if self.output_units == "sigmoid":
      return jax.nn.sigmoid(outputs)
    if self.loss_type == "softmax_xent":
      return jax.nn.softmax(outputs, axis=-1)
    if self.loss_type == "sigmoid_xent":
      return jax.nn.sigmoid(outputs)
    return outputs

  def dense_targets(self, batch: Batch) -> Array:
    """``<float32>[B, T, O]`` targets (one-hot for softmax tasks)."""
    if self.loss_type == "softmax_xent":
      return jax.nn.one_hot(batch.targets, self.output_size, dtype=jnp.float32)
    return batch.targets.astype(jnp.float32)

  def step_losses(self, outputs: Array, batch: Batch) -> Array:
    """``[B, T]`` loss of every step (unmasked); mean over output units for
    ``"mse"`` and ``"sigmoid_xent"``, and with ``output_units="sigmoid"``:
    ``1/2 sum_units (sigmoid(outputs) - dense_targets)^2``."""
    self._check_outputs(outputs, batch)
    outputs = outputs.astype(jnp.float32)
    if self.output_units == "sigmoid":
      error = jax.nn.sigmoid(outputs) - self.dense_targets(batch)
      return 0.5 * jnp.sum(jnp.square(error), axis=-1)
    if self.loss_type == "softmax_xent":
      logz = jax.nn.logsumexp(outputs, axis=-1)
      picked = jnp.take_along_axis(outputs, batch.targets[..., None].astype(jnp.int32),
                                   axis=-1)[..., 0]
      return logz - picked
    targets = batch.targets.astype(jnp.float32)
    if self.loss_type == "sigmoid_xent":
      per_unit = (jnp.maximum(outputs, 0.0) - outputs * targets
                  + jnp.log1p(jnp.exp(-jnp.abs(outputs))))
      return jnp.mean(per_unit, axis=-1)
    return jnp.mean(jnp.square(outputs - targets), axis=-1)

  def loss(self, outputs: Array, batch: Batch) -> Array:
    """Scalar training loss: the mean of :meth:`step_losses` over all masked
    steps of the batch (with ``output_units="sigmoid"``: their sum over each
    sequence, averaged over the sequences)."""
    return _loss_jit(self, outputs, batch)

  def per_sequence(self, outputs: Array, batch: Batch) -> PerSequence:
    """Per-sequence metrics, each ``[B]`` (jit-able).

    Always present: ``"correct"`` (bool, the task's correctness rule),
    ``"error"`` (the error measure of the stopping rule), ``"loss"`` (mean
    step loss over the sequence's masked steps) and ``"mse"`` (mean squared
    error of the predictions over masked steps and output units).
    """
    return _per_sequence_jit(self, outputs, batch)

  def summarize(self, per_seq: Mapping[str, Any]) -> dict[str, float]:
    """Host-side summary of per-sequence metrics (NumPy arrays, any number of
    batches concatenated): ``count``, ``accuracy``, ``num_wrong``,
    ``mean_error``, ``max_error``, the mean of every other key (``loss``,
    ``mse``, ...), and ``loss_over_baseline`` where a baseline is defined."""
    summary = summarize_common(per_seq)
    base = self.baseline
    if base is not None and "loss" in summary:
      summary["loss_over_baseline"] = summary["loss"] / base
    summary.update(self._extra_summary(summary))
    return summary

  @property
  def criterion(self) -> Criterion:
    """The stopping rule (see :class:`~lstm_jax.tasks.criteria.Criterion`)."""
    return self._criterion()

  @property
  def baseline(self) -> float | None:
    """Loss of the best memoryless predictor (per masked step, same
    normalisation as :meth:`loss`), or None where not defined (always with
    ``output_units="sigmoid"``: the baselines are in the task's own loss)."""
    return None if self.output_units == "sigmoid" else self._baseline()

  def _check_outputs(self, outputs: Array, batch: Batch) -> None:
    want = (batch.inputs.shape[0], self.max_length, self.output_size)
    if tuple(outputs.shape) != want:
      raise ValueError(f"{self.name}: outputs have shape {tuple(outputs.shape)}; "
                       f"expected [B, T, O] = {want}")


def softmax_step_error(predictions: Array, batch: Batch, n_classes: int) -> Array:
  """``[B, T]``: max over output units of |softmax - one-hot target|."""
  onehot = jax.nn.one_hot(batch.targets, n_classes, dtype=jnp.float32)
  return jnp.max(jnp.abs(predictions - onehot), axis=-1)


__all__ = ["Batch", "LOSS_TYPES", "Task", "at_last_step",
           "draw_lengths", "last_step_mask", "masked_mean_per_sequence", "softmax_step_error",
           "time_index", "to_int", "to_normal", "uniforms", "valid_steps"]
