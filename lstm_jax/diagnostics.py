"""Memory diagnostics on one batch, as pure (jit-able) functions.

How an LSTM remembers, measured from one batch of inputs:

    gate_trace                   per step forget gate f_t and cell state c_t of
                                 one LSTM layer ([T, B, H] each) and the mask of
                                 real steps ([T, B])
    forget_gate_stats            mean f, fraction of f above 0.99, implied time
                                 scale 1 / (1 - f) (mean and median over units)
    cell_norm_over_time          ||c_t||_2 over units, averaged over the batch, [T]
    input_gradient_by_distance   ||d sum(y_{t_out}) / d x_{t_out - d}||_F for
                                 d = 0..t_out: how fast the error signal decays
                                 with lag (any fn(params, xs) -> ys [B, T, O])
    diagnose                     all of the above for a SequenceModel's first
                                 layer, as plain floats and lists (JSON-ready)

and, for training runs (:mod:`lstm_jax.runner` logs them; batches of a task,
with per-sequence lengths):

    hidden_trace                 per step hidden state of one layer of any cell
    norm_at_end                  mean over rows b of ||state[lengths[b] - 1, b]||_2
    loss_gradient_from_end       ||dL / dx[b, lengths[b] - 1 - d]|| by distance d:
                                 the gradient of the task's training loss L
                                 with respect to the input d steps before each
                                 sequence's last real step (what runs log by
                                 default)
    input_gradient_from_end      the same for the sum of each sequence's outputs
                                 at its last real step instead of the loss
    measure                      the arrays of one seed (jit-able), per cell kind
    summarize                    one seed's measured arrays as logged scalars and
                                 JSON curves

Nothing here changes a model or its training; the functions only read.
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from lstm_jax.cells import Cell, LSTMState, Params, lstm_gates
from lstm_jax.models import SequenceModel
from lstm_jax.tasks.base import Batch, Task

Array = jax.Array

EPS = 1e-6
"""Lower clip of ``1 - f`` in the time scale ``1 / (1 - f)`` (so ``f = 1``
gives ``1e6`` steps instead of infinity)."""

SATURATED = 0.99
"""``forget_gate_stats`` counts the fraction of forget-gate values ``f > 0.99``."""

GRADIENTS = ("loss", "output")
"""What :func:`measure`'s ``input_grad_norm`` differentiates: ``"loss"`` the
task's training loss (:func:`loss_gradient_from_end`), ``"output"`` the sum of
the outputs at each sequence's last real step (:func:`input_gradient_from_end`)."""


class GateTrace(NamedTuple):
  """What :func:`gate_trace` keeps per step.

  Attributes:
    f: ``[T, B, H]`` forget gate at each step.
    c: ``[T, B, H]`` cell state after each step.
    mask: ``[T, B]`` boolean, ``True`` at real steps ``t < lengths[b]``.
  """
  f: Array
  c: Array
  mask: Array


def _scan_inputs(cell: Cell, xs: Array, state: Any, lengths: Array | None
                 ) -> tuple[Any, Array]:
  """``xs [B, T, I]`` checked; the initial state (zeros for ``None``) and the
  ``[B]`` lengths (``T`` for ``None``) of a one-layer trace."""
  if getattr(xs, "ndim", None) != 3:
    raise ValueError(f"xs: expected rank 3 [batch, time, features], got shape "
                     f"{tuple(getattr(xs, 'shape', ()))}")
  batch, time = xs.shape[0], xs.shape[1]
  if state is None:
    state = cell.initial_state(batch, xs.dtype)
  lengths = jnp.full((batch,), time, jnp.int32) if lengths is None else jnp.asarray(lengths)
  return state, lengths


def gate_trace(cell: Cell, params: Params, xs: Array, state: LSTMState | None = None,
               lengths: Array | None = None) -> GateTrace:
  """Forget gate and cell state of one LSTM layer at every step.

  Scans :func:`lstm_jax.cells.lstm_gates` over time (the cell's own step, so
  every variant is covered): ``f_t`` is the forget gate of step ``t`` (``1``
  for a cell without forget gate, ``1 - i_t`` for the coupled CIFG cell) and
  ``c_t = f_t * c_{t-1} + i_t * g_t``. Padded steps (``t >= lengths[b]``) hold
  the state, as :func:`lstm_jax.sequence.scan_layer` does: there ``c`` repeats
  the last real cell state and ``f`` is what the gate would compute; both are
  excluded by ``mask``.

  Args:
    cell: an LSTM :class:`~lstm_jax.cells.Cell` (``kind == "lstm"``).
    params: that layer's parameters.
    xs: ``[B, T, I]`` inputs, batch-major (as :func:`lstm_jax.rnn`).
    state: initial :class:`LSTMState` (``h [B, R]``, ``c [B, H]``), or ``None``
      for zeros.
    lengths: ``[B]`` integer lengths in ``[0, T]``, or ``None`` (all ``T``).

  Returns:
    :class:`GateTrace` ``(f [T, B, H], c [T, B, H], mask [T, B])``.

  Raises:
    ValueError: a cell that is not an LSTM, or ``xs`` not of rank 3.
  """
  if not isinstance(cell, Cell) or cell.kind != "lstm":
    raise ValueError(f"cell: gate_trace needs an LSTM cell, got "
                     f"{cell.describe() if isinstance(cell, Cell) else type(cell).__name__}")
  state, lengths = _scan_inputs(cell, xs, state, lengths)
  variant = cell.variant

  def body(carry: LSTMState, inp: tuple[Array, Array]):
    x, t = inp
    v = lstm_gates(params, carry, x, variant)
    gates = None
    if variant.gate_recurrence:
      gates = jnp.concatenate([v.i, v.f, v.o], axis=-1).astype(carry.gates.dtype)
    new = LSTMState(h=v.h, c=v.c, gates=gates)
    valid = t < lengths
    keep = jax.tree_util.tree_map(
        lambda n, o: jnp.where(valid.reshape(valid.shape + (1,) * (n.ndim - 1)), n, o),
        new, carry)
    return keep, (v.f, keep.c, valid)

  ts = jnp.arange(xs.shape[1], dtype=lengths.dtype)
  _, (f, c, mask) = jax.lax.scan(body, state, (jnp.swapaxes(xs, 0, 1), ts))
  return GateTrace(f=f, c=c, mask=mask)


def _weights(shape: tuple[int, ...], mask: Array | None, dtype: Any) -> Array:
  """``mask`` as ``[T, B, 1]`` weights of ``dtype`` (all ones for ``None``)."""
  if mask is None:
    return jnp.ones(shape[:2] + (1,), dtype)
  return jnp.asarray(mask).astype(dtype)[..., None]


def forget_gate_stats(f: Array, mask: Array | None = None, eps: float = EPS) -> dict[str, Array]:
  """Summary statistics of forget-gate values over the real steps.

  With ``M`` the real entries ``(t, b)`` (``mask[t, b]``; all when ``mask`` is
  ``None``) and ``H`` units::

      mean               = mean over (t, b) in M and units j of f[t, b, j]
      frac_above_0_99    = fraction of those values with f > 0.99 (strictly)
      tau_j              = mean over (t, b) in M of 1 / max(1 - f[t, b, j], eps)
      time_scale_mean    = (1 / H) sum_j tau_j
      time_scale_median  = median over units j of tau_j

  ``tau_j`` is the number of steps over which unit ``j`` keeps ``1/e`` of its
  cell content at a constant forget gate (``f^tau ~ e^{-1}`` for f near 1),
  averaged over steps and batch before the average over units;
  ``eps = 1e-6`` caps it at a million steps where ``f = 1``. With no real
  entry every value is NaN.

  Args:
    f: ``[T, B, H]`` forget gate (:func:`gate_trace`).
    mask: ``[T, B]`` boolean, or ``None``.
    eps: lower clip of ``1 - f``.

  Returns:
    ``{"mean", "frac_above_0_99", "time_scale_mean", "time_scale_median"}``,
    scalar arrays.
  """
  f = jnp.asarray(f)
  w = _weights(f.shape, mask, f.dtype)
  n = jnp.sum(w)
  hidden = f.shape[-1]
  mean = jnp.sum(w * f) / (n * hidden)
  frac = jnp.sum(w * (f > SATURATED)) / (n * hidden)
  tau = jnp.sum(w * (1.0 / jnp.maximum(1.0 - f, eps)), axis=(0, 1)) / n  # [H]
  return {"mean": mean, "frac_above_0_99": frac, "time_scale_mean": jnp.mean(tau),
          "time_scale_median": jnp.median(tau)}


def cell_norm_over_time(c: Array, mask: Array | None = None) -> Array:
  """``n_t = mean over real rows b of ||c[t, b, :]||_2`` (2-norm over units).

  Args:
    c: ``[T, B, H]`` cell states (:func:`gate_trace`).
    mask: ``[T, B]`` boolean, or ``None`` (every row real).

  Returns:
    ``[T]``; NaN at a step with no real row.
  """
  c = jnp.asarray(c)
  norms = jnp.sqrt(jnp.sum(c * c, axis=-1))  # [T, B]
  w = _weights(c.shape, mask, c.dtype)[..., 0]
  return jnp.sum(w * norms, axis=1) / jnp.sum(w, axis=1)


def input_gradient_by_distance(model_or_fn: SequenceModel | Callable[[Any, Array], Array],
                               params: Any, xs: Array, t_out: int) -> Array:
  """How strongly the output at ``t_out`` depends on the input ``d`` steps back.

  With ``s(xs) = sum over batch b and output units o of y[b, t_out, o]``::

      norms[d] = || d s / d xs[:, t_out - d, :] ||_F      for d = 0 .. t_out

  the Frobenius norm over batch and input units of the gradient (rows of a
  batch do not interact, so this is the root of the sum over rows of each
  row's squared gradient norm). The decay of ``norms`` with ``d`` is the decay
  of the error signal with lag.

  Args:
    model_or_fn: a :class:`~lstm_jax.models.SequenceModel` (its ``apply``) or
      any ``fn(params, xs) -> ys [B, T, O]``.
    params: its parameters.
    xs: ``[B, T, I]`` inputs.
    t_out: the output step, a Python integer in ``[0, T)`` (static under jit).

  Returns:
    ``[t_out + 1]`` norms, index ``d``.
  """
  fn = model_or_fn.apply if isinstance(model_or_fn, SequenceModel) else model_or_fn
  time = xs.shape[1]
  if not isinstance(t_out, (int, np.integer)) or isinstance(t_out, bool) \
      or not 0 <= t_out < time:
    raise ValueError(f"t_out: expected an integer in [0, T={time}), got {t_out!r}")
  t_out = int(t_out)
  grad = jax.grad(lambda x: jnp.sum(fn(params, x)[:, t_out]))(xs)  # [B, T, I]
  per_step = jnp.sqrt(jnp.sum(grad * grad, axis=(0, 2)))  # [T]
  return per_step[t_out::-1]


def diagnose(model: SequenceModel, params: Params, batch_xs: Array,
             t_out: int | None = None) -> dict[str, Any]:
  """All memory diagnostics of a model on one batch, as plain Python values.

  For an LSTM cell (measured on the first layer, from zero state, every step
  real)::

      forget_mean           forget_gate_stats(...)["mean"]
      forget_frac_above_0_99, time_scale_mean, time_scale_median   likewise
      cell_norm             cell_norm_over_time(c), a list of T floats
      input_grad_norm       input_gradient_by_distance(model, ..., t_out), a list
                            of t_out + 1 floats, index d

  For a GRU or Elman cell (no forget gate, no cell state) only
  ``input_grad_norm``.

  Args:
    model: the model.
    params: its parameters (``model.init``).
    batch_xs: ``[B, T, I]`` inputs.
    t_out: output step of the gradient entry; ``None``: the last, ``T - 1``.

  Returns:
    A dict of floats and lists of floats (``json.dumps`` takes it).
  """
  time = batch_xs.shape[1]
  t_out = time - 1 if t_out is None else t_out
  out: dict[str, Any] = {}
  if model.cell.kind == "lstm":
    trace = gate_trace(model.cell, params["rnn"][0], batch_xs)
    stats = forget_gate_stats(trace.f, trace.mask)
    out["forget_mean"] = float(stats["mean"])
    out["forget_frac_above_0_99"] = float(stats["frac_above_0_99"])
    out["time_scale_mean"] = float(stats["time_scale_mean"])
    out["time_scale_median"] = float(stats["time_scale_median"])
    out["cell_norm"] = [float(v) for v in np.asarray(cell_norm_over_time(trace.c, trace.mask))]
  norms = input_gradient_by_distance(model, params, batch_xs, t_out)
  out["input_grad_norm"] = [float(v) for v in np.asarray(norms)]
  return out


# ----------------------------------------------------------------------------
# What a training run logs (lstm_jax.runner).


def hidden_trace(cell: Cell, params: Params, xs: Array, state: Any = None,
                 lengths: Array | None = None) -> tuple[Array, Array]:
  """Hidden state (the output ``h``) of one layer of any cell at every step.

  Scans ``cell.step``; padded steps (``t >= lengths[b]``) hold the state, as
  :func:`lstm_jax.sequence.scan_layer` does, and are excluded by ``mask``.

  Args:
    cell: any :class:`~lstm_jax.cells.Cell`.
    params: that layer's parameters.
    xs: ``[B, T, I]`` inputs, batch-major.
    state: initial state (``cell.initial_state(B)`` layout), or ``None`` for zeros.
    lengths: ``[B]`` integer lengths in ``[0, T]``, or ``None`` (all ``T``).

  Returns:
    ``(h [T, B, R], mask [T, B])``: ``R`` the cell's output size, ``mask``
    ``True`` at real steps (padded steps repeat the last real step's ``h``).
  """
  state, lengths = _scan_inputs(cell, xs, state, lengths)

  def body(carry: Any, inp: tuple[Array, Array]):
    x, t = inp
    state, y_prev = carry
    new, y = cell.step(params, state, x)  # y is h (an mLSTM has no h in its state)
    valid = t < lengths
    keep = jax.tree_util.tree_map(
        lambda n, o: jnp.where(valid.reshape(valid.shape + (1,) * (n.ndim - 1)), n, o),
        (new, y), (state, y_prev))
    return keep, (keep[1], valid)

  ts = jnp.arange(xs.shape[1], dtype=lengths.dtype)
  y0 = jnp.zeros((xs.shape[0], cell.output_size), xs.dtype)
  _, (h, mask) = jax.lax.scan(body, (state, y0), (jnp.swapaxes(xs, 0, 1), ts))
  return h, mask


def norm_at_end(states: Array, lengths: Array) -> Array:
  """``mean over rows b with lengths[b] >= 1 of ||states[lengths[b] - 1, b, :]||_2``.

  Args:
    states: ``[T, B, H]`` per-step states (:func:`gate_trace` ``c`` or
      :func:`hidden_trace` ``h``).
    lengths: ``[B]`` integer lengths.

  Returns:
    A scalar (NaN when no row has a real step).
  """
  states, lengths = jnp.asarray(states), jnp.asarray(lengths)
  last = jnp.clip(lengths - 1, 0, states.shape[0] - 1)
  rows = states[last, jnp.arange(states.shape[1])]  # [B, H]
  w = (lengths >= 1).astype(states.dtype)
  return jnp.sum(w * jnp.sqrt(jnp.sum(rows * rows, axis=-1))) / jnp.sum(w)


def input_gradient_from_end(model_or_fn: SequenceModel | Callable[..., Array], params: Any,
                            xs: Array, lengths: Array | None = None) -> Array:
  """Gradient norm of each sequence's last output with respect to the input
  ``d`` steps before it.

  With ``e_b = lengths[b] - 1`` the last real step of row ``b`` and
  ``s = sum over b and output units o of y[b, e_b, o]`` (rows do not
  interact, so ``d s / d xs[b]`` is row ``b``'s own gradient)::

      norms[d] = sqrt( sum over rows b with e_b - d >= 0 of
                       || d s / d xs[b, e_b - d, :] ||_2^2 )      d = 0 .. T - 1

  NaN at a distance no row reaches. With every length ``T`` this is
  :func:`input_gradient_by_distance` at ``t_out = T - 1``.

  Args:
    model_or_fn: a :class:`~lstm_jax.models.SequenceModel` or any
      ``fn(params, xs, lengths) -> ys [B, T, O]``.
    params: its parameters.
    xs: ``[B, T, I]`` inputs.
    lengths: ``[B]`` integer lengths in ``[1, T]``, or ``None`` (all ``T``).

  Returns:
    ``[T]`` norms, index ``d``.
  """
  fn = model_or_fn.apply if isinstance(model_or_fn, SequenceModel) else model_or_fn
  batch, time = xs.shape[0], xs.shape[1]
  lengths = jnp.full((batch,), time, jnp.int32) if lengths is None else jnp.asarray(lengths)
  last = jnp.clip(lengths - 1, 0, time - 1)
  rows = jnp.arange(batch)

  def total(x: Array) -> Array:
    return jnp.sum(fn(params, x, lengths)[rows, last])

  return _norms_from_end(jax.grad(total)(xs), lengths)


def loss_gradient_from_end(model_or_fn: SequenceModel | Callable[..., Array], params: Any,
                           task: Task, batch: Batch) -> Array:
  """Gradient norm of the task's training loss with respect to the input ``d``
  steps before each sequence's last real step.

  With ``L = task.loss(fn(params, x, lengths), batch)`` the scalar training
  loss on ``batch`` (its targets and mask; :meth:`lstm_jax.tasks.base.Task.loss`)
  and ``e_b = lengths[b] - 1`` the last real step of row ``b``::

      norms[d] = sqrt( sum over rows b with e_b - d >= 0 of
                       || dL / dx[b, e_b - d, :] ||_2^2 )          d = 0 .. T - 1

  aggregated as :func:`input_gradient_from_end` (rows do not interact, so
  ``dL / dx[b]`` is row ``b``'s own share; NaN at a distance no row reaches).
  ``d`` counts back from the end of the sequence whichever steps carry loss:
  where the loss sits only at the last step (``mask[b, e_b]``) this is how
  fast the error signal decays with lag; where every step carries loss,
  ``dL / dx[b, e_b - d]`` sums the signal of the losses at steps ``e_b - d ..
  e_b``. The loss is a mean over the batch's masked steps (for
  ``output_units="sigmoid"`` a sum over each sequence's steps averaged over
  the sequences), so the norms scale as ``1 / B`` with the batch size.

  Args:
    model_or_fn: a :class:`~lstm_jax.models.SequenceModel` or any
      ``fn(params, xs, lengths) -> outputs [B, T, O]``.
    params: its parameters.
    task: the task whose ``loss(outputs, batch)`` is differentiated.
    batch: ``(inputs [B, T, I], targets, mask [B, T], lengths [B])`` of that
      task, lengths in ``[1, T]``.

  Returns:
    ``[T]`` norms, index ``d``.
  """
  fn = model_or_fn.apply if isinstance(model_or_fn, SequenceModel) else model_or_fn
  lengths = jnp.asarray(batch.lengths)

  def loss(x: Array) -> Array:
    return task.loss(fn(params, x, lengths), batch)

  return _norms_from_end(jax.grad(loss)(jnp.asarray(batch.inputs)), lengths)


def _norms_from_end(grad: Array, lengths: Array) -> Array:
  """``grad [B, T, I]`` -> ``[T]``: ``sqrt(sum over rows b with lengths[b] - 1 - d
  >= 0 of ||grad[b, lengths[b] - 1 - d]||^2)``, NaN where no row reaches ``d``."""
  time = grad.shape[1]
  last = jnp.clip(lengths - 1, 0, time - 1)
  sq = jnp.sum(grad * grad, axis=-1)  # [B, T]
  index = last[:, None] - jnp.arange(time)[None, :]  # [B, d]: the step d before the end
  reached = (index >= 0) & (lengths[:, None] >= 1)
  picked = jnp.take_along_axis(sq, jnp.clip(index, 0, time - 1), axis=1)
  norms = jnp.sqrt(jnp.sum(jnp.where(reached, picked, 0.0), axis=0))
  return jnp.where(jnp.any(reached, axis=0), norms, jnp.nan)


def measure(model: SequenceModel, params: Params, batch: Batch, task: Task | None = None,
            gradient: str = "loss") -> dict[str, Array]:
  """The diagnostics of one model (one seed) on one batch, as arrays (jit-able;
  ``model``, ``task`` and ``gradient`` static).

  Measured on the first layer from zero state, with the batch's lengths:

  LSTM cells::

      forget_mean, forget_frac_above_0_99, time_scale_mean, time_scale_median
                        forget_gate_stats over the real steps (scalars)
      cell_norm         cell_norm_over_time(c, mask)            [T]
      cell_norm_end     norm_at_end(c, lengths)                 scalar

  GRU and Elman cells (no forget gate, no cell state; the hidden state is
  their memory)::

      hidden_norm       cell_norm_over_time(h, mask)            [T]
      hidden_norm_end   norm_at_end(h, lengths)                 scalar

  every cell, by ``gradient``::

      input_grad_norm   "loss":   loss_gradient_from_end(model, params, task, batch)
                        "output": input_gradient_from_end(model, params, xs, lengths)
                                                                [T], index d

  Args:
    model: the model.
    params: one seed's parameters.
    batch: a :class:`~lstm_jax.tasks.base.Batch` (``inputs [B, T, I]``,
      ``lengths [B]`` in ``[1, T]`` or ``None`` for all ``T``; ``targets`` and
      ``mask`` are read only for ``gradient="loss"``).
    task: the task of the batch, whose loss ``"loss"`` differentiates (unused
      for ``"output"``).
    gradient: one of :data:`GRADIENTS`.

  Returns:
    ``{name: array}`` as above.

  Raises:
    ValueError: an unknown ``gradient``, or ``"loss"`` without a task.
  """
  if gradient not in GRADIENTS:
    raise ValueError(f"gradient: expected one of {GRADIENTS}, got {gradient!r}")
  if gradient == "loss" and task is None:
    raise ValueError("task: gradient='loss' needs the task whose loss it differentiates")
  xs = jnp.asarray(batch.inputs)
  rows, time = xs.shape[0], xs.shape[1]
  lengths = (jnp.full((rows,), time, jnp.int32) if batch.lengths is None
             else jnp.asarray(batch.lengths))
  layer = params["rnn"][0]
  out: dict[str, Array] = {}
  if model.cell.kind == "lstm":
    trace = gate_trace(model.cell, layer, xs, lengths=lengths)
    stats = forget_gate_stats(trace.f, trace.mask)
    out.update({"forget_mean": stats["mean"], "forget_frac_above_0_99": stats["frac_above_0_99"],
                "time_scale_mean": stats["time_scale_mean"],
                "time_scale_median": stats["time_scale_median"]})
    states, mask, name = trace.c, trace.mask, "cell_norm"
  else:
    states, mask = hidden_trace(model.cell, layer, xs, lengths=lengths)
    name = "hidden_norm"
  out[name] = cell_norm_over_time(states, mask)
  out[f"{name}_end"] = norm_at_end(states, lengths)
  if gradient == "loss":
    out["input_grad_norm"] = loss_gradient_from_end(model, params, task,
                                                    batch._replace(lengths=lengths))
  else:
    out["input_grad_norm"] = input_gradient_from_end(model, params, xs, lengths)
  return out


CURVES = ("cell_norm", "hidden_norm", "input_grad_norm")
"""The entries of :func:`measure` that are curves over time or distance."""


def _finite_or_none(value: float) -> float | None:
  return value if math.isfinite(value) else None


def summarize(measured: dict[str, Any], distances: Sequence[int]
              ) -> tuple[dict[str, float], dict[str, list[float | None]]]:
  """One seed's :func:`measure` arrays as the scalars a run logs and the curves.

  Scalars: every scalar entry of ``measured`` as a float, and per curve
  ``x`` of ``cell_norm`` / ``hidden_norm``::

      x_mean   mean over the steps with a real row of x[t]
      x_max    max over those steps of x[t]

  and ``input_grad_norm_d{d}`` = ``input_grad_norm[d]`` for every ``d`` in
  ``distances`` below ``T`` (larger ones are left out). Curves: the curve
  entries as lists of floats, ``None`` where NaN (no real row at that step or
  distance), so the JSON is standard.

  Args:
    measured: :func:`measure`'s dict for one seed (NumPy or JAX arrays).
    distances: the distances of the ``input_grad_norm_d{d}`` scalars.

  Returns:
    ``(scalars, curves)``.
  """
  scalars: dict[str, float] = {}
  curves: dict[str, list[float | None]] = {}
  for key, value in measured.items():
    value = np.asarray(value, np.float64)
    if key not in CURVES:
      scalars[key] = float(value)
      continue
    curves[key] = [_finite_or_none(float(v)) for v in value]
    if key != "input_grad_norm":
      real = value[np.isfinite(value)]
      scalars[f"{key}_mean"] = float(real.mean()) if real.size else float("nan")
      scalars[f"{key}_max"] = float(real.max()) if real.size else float("nan")
  grads = np.asarray(measured["input_grad_norm"], np.float64)
  for d in distances:
    if d < grads.shape[0]:
      scalars[f"input_grad_norm_d{d}"] = float(grads[d])
  return scalars, curves
