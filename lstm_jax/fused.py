"""A whole-sequence LSTM layer with a hand-written backward pass (custom VJP).

The forward pass is the reference step, :func:`lstm_jax.cells.lstm_gates`,
scanned over time; it keeps each step's pre-activations ``z`` and state. The
backward pass replaces JAX's automatic transpose of the scan with a cheaper
schedule:

* the reverse scan carries only ``(dh, dc)`` and does one small matmul per
  step, ``dh_{t-1} = dz_t W_h^T``; every per-step coefficient it needs is
  computed beforehand for a whole chunk of steps at once (vectorised, not one
  step at a time);
* the weight gradients are large matrix products over all ``T * B`` rows after
  the scan, ``dW_h = sum_t h_{t-1}^T dz_t``, ``dW_x = sum_t x_t^T dz_t``,
  ``db = sum_t dz_t`` (chunk by chunk for long or wide problems, so the
  ``[T, B, G*H]`` gate gradients never all exist at once), instead of a
  ``[R, G*H]`` accumulation inside every step.

Notation of the backward pass for one step (``dh`` the gradient reaching
``h_t``, ``dc_next`` the one reaching ``c_t`` from step ``t+1``; ``s =
act_out(c_t)``, ``c_prev = c_{t-1}``; absent gates drop their term)::

    dc   = dc_next + dh * (o * act_out'(c_t) + s * o(1-o) * p_o)
    dz_i = dc * (g - [coupled] c_prev) * i(1-i)        dz_f = dc * c_prev * f(1-f)
    dz_g = dc * i * act_in'(z_g)                        dz_o = dh * s * o(1-o)
    dc_prev = dc * (f + i(1-i)(g - [coupled] c_prev) p_i + c_prev f(1-f) p_f)
    dh_prev = dz W_h^T

so each step is linear in ``(dh, dc)`` with coefficients fixed by the forward
pass. Padded steps (``t >= lengths[b]``) pass ``(dh, dc)`` through unchanged.

Covered: every :class:`~lstm_jax.cells.LSTMVariant` without gate recurrence
or layer normalisation, with or without biases and peepholes, no projection,
when inputs, parameters and state share one floating dtype. :func:`unsupported`
says why anything else is not covered; :func:`lstm_jax.sequence.scan_layer`
then uses the plain scan. The result equals plain automatic differentiation
of the scanned step to floating-point rounding (tests/test_fused.py).

Forward-mode differentiation (``jax.jvp``, ``jax.jacfwd``) is not defined for
a custom VJP: use ``impl="scan"`` for it. Reverse mode of any order works.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable, Iterable

import jax
import jax.numpy as jnp

from lstm_jax.cells import (Cell, LSTMState, LSTMVariant, Params, lstm_gates_from_preactivations,
                            lstm_preactivations)

Array = jax.Array

CHUNK_BYTES = 8 * 2**20
"""Gate gradients of at most this many bytes are kept for the whole sequence;
larger problems run the backward pass in chunks of steps (:func:`backward_chunk`)."""

CHUNK_ROWS = 1024
"""Rows ``k * B`` a chunk aims at, so its weight-gradient products stay large."""

CHUNK_MIN_STEPS = 8
"""Fewest steps in a chunk."""


def unsupported(cell: Cell, dtypes: Iterable[Any] | None = None) -> str | None:
  """Why the fused layer does not cover a cell, or ``None`` when it does.

  Args:
    cell: the cell.
    dtypes: the dtypes of the inputs, the parameters and the state
      (``None``: not judged).

  Returns:
    ``None``, or a short reason (e.g. ``"layer_norm=True"``).
  """
  if cell.kind != "lstm":
    return f"cell kind {cell.kind!r} (only LSTM cells are fused)"
  v = cell.variant
  if v.gate_recurrence:
    return "gate_recurrence=True"
  if v.layer_norm:
    return "layer_norm=True"
  for field in ("input_activation", "output_activation"):
    if getattr(v, field) not in ("tanh", "identity"):
      return f"{field}={getattr(v, field)!r}"
  if v.block_size > 1:
    return f"block_size={v.block_size}"
  if v.truncated_gradient:
    return "truncated_gradient=True"
  if cell.proj_size:
    return f"proj_size={cell.proj_size}"
  if dtypes is None:
    return None
  kinds = sorted({str(jnp.dtype(d)) for d in dtypes})
  if len(kinds) != 1:
    return f"mixed dtypes {kinds} (inputs, parameters and state must share one)"
  if kinds[0] not in ("float32", "float64"):
    return f"dtype {kinds[0]} (float32 and float64 are fused)"
  return None


def backward_chunk(time: int, batch: int, width: int, itemsize: int) -> int:
  """Steps per chunk of the backward pass for gate gradients ``[T, B, width]``.

  The whole sequence when they fit in :data:`CHUNK_BYTES`, else
  ``clip(ceil(CHUNK_ROWS / B), CHUNK_MIN_STEPS, T)`` steps.
  """
  if time * batch * width * itemsize <= CHUNK_BYTES:
    return time
  return max(1, min(time, max(CHUNK_MIN_STEPS, math.ceil(CHUNK_ROWS / batch))))


def _derivative(name: str, value: Array) -> Array:
  """``act'(z)`` expressed with ``value = act(z)`` (tanh or identity)."""
  return 1.0 - value * value if name == "tanh" else jnp.ones_like(value)


def _forward(variant: LSTMVariant, params: Params, xs: Array, h0: Array, c0: Array,
             valid: Array | None, unroll: int, keep: bool):
  """Scan :func:`lstm_jax.cells.lstm_gates` (as its two halves); with ``keep``
  also return each step's pre-activations and state for the backward pass."""

  def body(carry, inp):
    h, c = carry
    x, v = inp if valid is not None else (inp, None)
    state = LSTMState(h, c)
    z = lstm_preactivations(params, state, x, variant)
    out = lstm_gates_from_preactivations(params, state, z, variant)
    h_new, c_new = out.h, out.c
    if v is not None:
      h_new = jnp.where(v[:, None], h_new, h)
      c_new = jnp.where(v[:, None], c_new, c)
    if not keep:
      y = h_new if v is None else jnp.where(v[:, None], h_new, 0.0)
      return (h_new, c_new), y
    return (h_new, c_new), (h_new, c_new, z)

  seq = xs if valid is None else (xs, valid)
  (h_t, c_t), out = jax.lax.scan(body, (h0, c0), seq, unroll=unroll)
  return (h_t, c_t), out


def _outputs(hs: Array, valid: Array | None) -> Array:
  return hs if valid is None else jnp.where(valid[..., None], hs, 0.0)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 6))
def _layer(variant: LSTMVariant, params: Params, xs: Array, h0: Array, c0: Array,
           valid: Array | None, unroll: int) -> tuple[Array, Array, Array]:
  (h_t, c_t), ys = _forward(variant, params, xs, h0, c0, valid, unroll, keep=False)
  return ys, h_t, c_t


def _layer_fwd(variant, params, xs, h0, c0, valid, unroll):
  (h_t, c_t), (hs, cs, zs) = _forward(variant, params, xs, h0, c0, valid, unroll,
                                      keep=True)
  return (_outputs(hs, valid), h_t, c_t), (params, xs, h0, c0, valid, hs, cs, zs)


def _coefficients(variant: LSTMVariant, params: Params, z: Array, c: Array,
                  c_prev: Array, h_prev: Array, valid: Array | None):
  """Per-step coefficients of the linear backward step, for a chunk ``[k, B, ...]``.

  Returns ``(a, q, fc, pass_h)``: ``a [k, B, G*H]`` with ``dz = [dc, .., dh] * a``
  (``dh`` for the output gate block, ``dc`` for the others), ``q [k, B, H]`` with
  ``dc = dc_next + dh * q``, ``fc [k, B, H]`` with ``dc_prev = dc * fc``, and
  ``pass_h`` (``[k, B, 1]``, 1 at padded steps, or ``None``) with
  ``dh_prev = dz W_h^T + dh * pass_h``. The gate activations are recomputed
  from the stored pre-activations ``z [k, B, G*H]`` for the whole chunk at once.
  """
  blocks = variant.blocks
  gates = lstm_gates_from_preactivations(params, LSTMState(h_prev, c_prev), z, variant)
  i, f, g, o = gates.i, gates.f, gates.g, gates.o
  s = jnp.tanh(c) if variant.output_activation == "tanh" else c
  peep = params.get("w_peep") if variant.peepholes else None

  coef = {}
  if variant.input_gate:
    gi = g - c_prev if variant.forget_gate == "coupled" else g
    coef["i"] = gi * i * (1.0 - i)
  if variant.forget_gate == "learned":
    coef["f"] = c_prev * f * (1.0 - f)
  coef["g"] = i * _derivative(variant.input_activation, g)
  q = o * _derivative(variant.output_activation, s)
  if variant.output_gate:
    coef["o"] = s * o * (1.0 - o)
    if peep is not None:
      q = q + coef["o"] * peep[2]
  fc = f
  if peep is not None:
    if "i" in coef:
      fc = fc + coef["i"] * peep[0]
    if "f" in coef:
      fc = fc + coef["f"] * peep[1]
  pass_h = None
  if valid is not None:  # padded steps: dz = 0, (dh, dc) pass through unchanged
    m = valid[..., None]
    coef = {k: jnp.where(m, v, 0.0) for k, v in coef.items()}
    q = jnp.where(m, q, 0.0)
    fc = jnp.where(m, fc, 1.0)
    pass_h = jnp.where(m, 0.0, 1.0).astype(c.dtype)
  return jnp.concatenate([coef[b] for b in blocks], axis=-1), q, fc, pass_h


def _layer_bwd(variant, unroll, res, cts):
  params, xs, h0, c0, valid, hs, cs, zs = res
  dys, dh_t, dc_t = cts
  time, batch, in_size = xs.shape
  hidden = c0.shape[-1]
  blocks = variant.blocks
  width = len(blocks) * hidden
  if valid is not None:
    dys = jnp.where(valid[..., None], dys, 0.0)
  # W_h^T laid out once: the per-step product dz W_h^T then reads a
  # [G*H, H] matrix row by row (an "NN" dot), which XLA CPU runs faster than
  # contracting W_h along its columns at small batch sizes.
  w_h_t = jax.lax.optimization_barrier(params["w_h"].T)
  has_o = "o" in blocks  # the last block when present (order i, f, g, o)
  peep = variant.peepholes and "w_peep" in params

  def step(carry, inp):
    dh_rec, dc_next = carry
    dy, a, q, fc, ph = inp
    dh = dy + dh_rec
    dc = dc_next + dh * q
    wide = [dc] * len(blocks)
    if has_o:
      wide[-1] = dh
    dz = jnp.concatenate(wide, axis=-1) * a
    dh_prev = dz @ w_h_t
    if ph is not None:
      dh_prev = dh_prev + dh * ph
    return (dh_prev, dc * fc), dz

  def chunk(carry, inp):
    dh_rec, dc_next, grads = carry
    dy, z, c, h, x, v, c_before, h_before = inp
    k = dy.shape[0]
    c_prev = jnp.concatenate([c_before[None], c[:-1]])
    h_prev = jnp.concatenate([h_before[None], h[:-1]])
    a, q, fc, ph = _coefficients(variant, params, z, c, c_prev, h_prev, v)
    (dh_rec, dc_next), dz = jax.lax.scan(step, (dh_rec, dc_next), (dy, a, q, fc, ph),
                                         reverse=True, unroll=unroll)
    rows = k * batch
    dz2 = dz.reshape(rows, width)
    new = dict(grads)
    # Transposed copies, kept apart from the products: folded into them, the
    # products of a vmapped layer (a batch of models) leave XLA CPU's fast
    # matmul path.
    h_t, x_t = jax.lax.optimization_barrier((h_prev.reshape(rows, -1).T,
                                             x.reshape(rows, in_size).T))
    new["w_h"] = grads["w_h"] + h_t @ dz2
    new["w_x"] = grads["w_x"] + x_t @ dz2
    if "b" in grads:
      new["b"] = grads["b"] + dz2.sum(0)
    if peep:
      z_parts = dict(zip(blocks, jnp.split(dz, len(blocks), axis=-1)))
      rows_p = []
      for name, src in (("i", c_prev), ("f", c_prev), ("o", c)):
        rows_p.append((z_parts[name] * src).sum((0, 1)) if name in z_parts
                      else jnp.zeros((hidden,), c.dtype))
      new["w_peep"] = grads["w_peep"] + jnp.stack(rows_p)
    dx = (dz2 @ params["w_x"].T).reshape(k, batch, in_size)
    return (dh_rec, dc_next, new), dx

  grads = jax.tree_util.tree_map(jnp.zeros_like, params)
  carry = (dh_t, dc_t, grads)
  k = backward_chunk(time, batch, width, jnp.dtype(xs.dtype).itemsize)
  n, r = divmod(time, k)
  m = n * k
  dx_parts = []
  if r:  # the last r steps (a partial chunk), processed first
    c_b = cs[m - 1] if m else c0
    h_b = hs[m - 1] if m else h0
    carry, dx_tail = chunk(carry, (dys[m:], zs[m:], cs[m:], hs[m:], xs[m:],
                                   None if valid is None else valid[m:], c_b, h_b))
    dx_parts.append(dx_tail)
  if n:
    def split(a):
      return jax.tree_util.tree_map(lambda a: a[:m].reshape((n, k) + a.shape[1:]), a)
    cs_n, hs_n = split(cs), split(hs)
    c_b = jnp.concatenate([c0[None], cs_n[:-1, -1]])
    h_b = jnp.concatenate([h0[None], hs_n[:-1, -1]])
    carry, dx_main = jax.lax.scan(
        chunk, carry, (split(dys), split(zs), cs_n, hs_n, split(xs), split(valid), c_b, h_b),
        reverse=True)
    dx_parts.insert(0, dx_main.reshape((m, batch, in_size)))
  dh0, dc0, grads = carry
  dxs = dx_parts[0] if len(dx_parts) == 1 else jnp.concatenate(dx_parts)
  return grads, dxs, dh0, dc0, None


_layer.defvjp(_layer_fwd, _layer_bwd)


def _segments(variant: LSTMVariant, params: Params, xs: Array, h0: Array, c0: Array,
              valid: Array | None, unroll: int, segment: int,
              emit: Callable[[Array], Array] | None):
  """The layer over segments of ``segment`` steps, each under ``jax.checkpoint``.

  The outer scan stores one ``(h, c)`` per segment; the backward pass runs
  each segment's forward again (keeping its residuals, ``(G + 2) * H`` numbers
  per step and sequence, for that segment only) and then its fused backward
  pass. The tail is padded to whole segments with masked steps.
  """
  time, batch = xs.shape[:2]
  count = -(-time // segment)
  pad = count * segment - time
  if pad:
    if valid is None:
      valid = jnp.ones((time, batch), bool)
    xs = jnp.concatenate([xs, jnp.zeros((pad,) + xs.shape[1:], xs.dtype)])
    valid = jnp.concatenate([valid, jnp.zeros((pad, batch), bool)])
  split = lambda a: None if a is None else a.reshape((count, segment) + a.shape[1:])

  @jax.checkpoint
  def run(carry, inp):
    x, v = inp
    ys, h_t, c_t = _layer(variant, params, x, carry[0], carry[1], v, unroll)
    return (h_t, c_t), (ys if emit is None else jax.vmap(emit)(ys))

  (h_t, c_t), ys = jax.lax.scan(run, (h0, c0), (split(xs), split(valid)))
  ys = ys.reshape((count * segment,) + ys.shape[2:])
  return ys[:time], h_t, c_t


def fused_layer(cell: Cell, params: Params, xs: Array, state: LSTMState,
                lengths: Array | None = None, *, reverse: bool = False,
                unroll: int = 1, segment: int = 0,
                emit: Callable[[Array], Array] | None = None) -> tuple[Array, LSTMState]:
  """One LSTM layer over a whole sequence with the custom backward pass.

  Same results as :func:`lstm_jax.sequence.scan_layer` (outputs zero and state
  held at padded steps); meant for use inside a caller's ``jit``. Check
  :func:`unsupported` first. For the backward pass it stores ``(G + 2) * H``
  numbers per step and sequence (``z``, ``c``, ``h``); with ``segment = k``
  (``0 < k < T``) only one state per ``k`` steps, plus one segment's
  residuals while its backward pass runs: ``k = ceil(sqrt(T))`` is
  ``remat="sqrt"``, memory ``O(sqrt(T))`` for about one extra forward pass.

  Args:
    cell: an LSTM cell that :func:`unsupported` accepts.
    params: its parameters (``w_x [I, G*H]``, ``w_h [H, G*H]``, ``b``, ``w_peep``).
    xs: ``[T, B, I]`` time-major inputs.
    state: :class:`~lstm_jax.cells.LSTMState` with ``h, c: [B, H]``.
    lengths: ``[B]`` valid lengths, or ``None``.
    reverse: process the sequence from ``t = T-1`` down to 0.
    unroll: ``lax.scan`` unroll factor of both passes.
    segment: steps per recomputed segment (0: store every step).
    emit: applied to each step's output ``[B, H] -> [B, R]`` (inside each
      segment when segmented, so the ``[T, B, H]`` outputs are not stored).

  Returns:
    ``(ys [T, B, R], final LSTMState)`` (``R = H`` without ``emit``).
  """
  time = xs.shape[0]
  valid = None
  if lengths is not None:
    valid = jnp.arange(time, dtype=lengths.dtype)[:, None] < lengths[None, :]
  if reverse:
    xs = xs[::-1]
    valid = None if valid is None else valid[::-1]
  if 0 < segment < time:
    ys, h_t, c_t = _segments(cell.variant, params, xs, state.h, state.c, valid, unroll,
                             segment, emit)
  else:
    ys, h_t, c_t = _layer(cell.variant, params, xs, state.h, state.c, valid, unroll)
    ys = ys if emit is None else jax.vmap(emit)(ys)
  if reverse:
    ys = ys[::-1]
  return ys, LSTMState(h=h_t, c=c_t)
