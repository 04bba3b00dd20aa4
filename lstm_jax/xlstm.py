"""sLSTM and mLSTM (Beck et al. 2024, "xLSTM: Extended Long Short-Term Memory"):
one step each, and the mLSTM over a whole sequence in parallel (chunkwise) form.

Both use **exponential gating with a stabiliser**. An input gate ``i = exp(k_i)``
(and, optionally, a forget gate ``f = exp(k_f)``) overflows for large
pre-activations, so the states are kept divided by ``exp(m_t)``::

    log f_t = log sigmoid(k_f) = -softplus(-k_f)    (forget_fn "sigmoid")
            = k_f                                    (forget_fn "exp")
    m_t  = max(log f_t + m_{t-1}, k_i)
    i'_t = exp(k_i - m_t),   f'_t = exp(log f_t + m_{t-1} - m_t)

One of ``i'``, ``f'`` is 1 and neither exceeds 1, so the stabilised states stay
finite; the outputs do not depend on ``m`` (it cancels between numerator and
denominator) except through the mLSTM's lower bound below.

**sLSTM** (``w_x [I, 4H]``, ``w_h [NH, H/NH, 4 H/NH]``, ``b [4H]``; gate blocks in
the order i, f, z, o; ``NH`` heads)::

    k = x_t W_x + h_{t-1} R + b        R block-diagonal: head j's h reaches only head j
    c_t = f' c_{t-1} + i' tanh(k_z)
    n_t = f' n_{t-1} + i'
    h_t = sigmoid(k_o) * c_t / n_t

An empty state (``n = 0``, as the zero initial state) takes ``m_t = k_i`` and
``f' = 0`` (its ``m_{-1}`` is ``-inf``), so ``n_t >= 1`` at every later step
(one of ``f'``, ``i'`` is 1) and ``|h| <= 1`` for any input: finite over any
number of steps and any input size.

**mLSTM** (``w_x [I, 4H]`` in the order q, k, v, o; ``w_if [I, 2 NH]`` in the order
i, f; ``b [4H]``, ``b_if [2 NH]``; head size ``d = H / NH``; per head)::

    q_t = x W_q + b_q,  k_t = (x W_k + b_k) / sqrt(d),  v_t = x W_v + b_v
    C_t = f' C_{t-1} + i' v_t k_t^T              [d, d]
    n_t = f' n_{t-1} + i' k_t                    [d]
    h_t = sigmoid(x W_o + b_o) * (C_t q_t) / (max(|n_t . q_t|, exp(-m_t)) + eps)

with scalar gates per head and ``eps = 1e-6`` (:data:`MLSTM_EPS`);
``max(|n . q|, exp(-m))`` is the stabilised form of the paper's ``max(|n . q|,
1)``. There is no hidden-to-hidden recurrence.

**mLSTM, parallel form.** Unrolled, ``C_t = sum_s D_ts v_s k_s^T`` with ``log D_ts
= F_t - F_s + k_i,s`` for ``s <= t`` (``F_t = sum_{r<=t} log f_r``), and the
initial state enters with weight ``F_t + m_{-1}``; ``m_t`` is the largest of
these logs (the recurrence above unrolled), so :func:`mlstm_chunk` computes a
block of ``L`` steps with ``[L, L]`` matrices, and :func:`mlstm_parallel`
scans over blocks carrying ``(C, n, m)`` (the chunkwise form: ``O(T L)``
memory instead of ``O(T^2)``).

Padding: at steps ``t >= lengths[b]`` the state is kept (``log f = 0``, ``k_i =
-inf`` in the parallel form) and the output is zero, as for every other cell.
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from lstm_jax import gates as G

Array = jax.Array
Params = dict[str, Any]

KINDS: tuple[str, ...] = ("slstm", "mlstm")
"""The cell kinds of this module."""

FORGET_FNS: tuple[str, ...] = ("sigmoid", "exp")
"""The forget gates of sLSTM and mLSTM: ``sigmoid(k_f)`` or ``exp(k_f)``."""

MLSTM_EPS = 1e-6
"""``eps`` in the mLSTM's read-out denominator (module docstring)."""

MLSTM_CHUNK = 64
"""Steps per block of the chunkwise mLSTM form (:func:`mlstm_parallel`)."""


class SLSTMState(NamedTuple):
  """The sLSTM carry, each ``[..., H]``: output ``h``, cell ``c``, normaliser
  ``n`` and stabiliser ``m`` (``c`` and ``n`` are divided by ``exp(m)``)."""
  h: Array
  c: Array
  n: Array
  m: Array


class MLSTMState(NamedTuple):
  """The mLSTM carry per head: matrix memory ``c [..., NH, d, d]`` (value
  index first), normaliser ``n [..., NH, d]``, stabiliser ``m [..., NH]``
  (``c`` and ``n`` divided by ``exp(m)``)."""
  c: Array
  n: Array
  m: Array


def log_forget(k_f: Array, forget_fn: str) -> Array:
  """``log f``: ``-softplus(-k_f)`` (``"sigmoid"``) or ``k_f`` (``"exp"``)."""
  return k_f if forget_fn == "exp" else -jax.nn.softplus(-k_f)


def stabilize(log_f: Array, k_i: Array, m_prev: Array,
              empty: Array | None = None) -> tuple[Array, Array, Array]:
  """The stabilised gates ``(f', i', m_t)`` (module docstring), all shaped like ``k_i``.

  ``m_t = max(log f + m_prev, k_i)``, ``i' = exp(k_i - m_t)``, ``f' = exp(log f +
  m_prev - m_t)``; where ``empty`` is true, ``m_t = k_i`` and ``f' = 0``.
  """
  a = log_f + m_prev
  if empty is None:
    m = jnp.maximum(a, k_i)
    return jnp.exp(a - m), jnp.exp(k_i - m), m
  m = jnp.where(empty, k_i, jnp.maximum(a, k_i))
  # The untaken branch must not overflow either: its gradient would be NaN.
  f = jnp.where(empty, jnp.zeros_like(a), jnp.exp(jnp.where(empty, m, a) - m))
  return f, jnp.exp(k_i - m), m


def _block_recurrence(h: Array, w_h: Array) -> Array:
  """``h R`` for block-diagonal ``R``: ``h [..., H]``, ``w_h [NH, d, 4d]`` ->
  ``[..., 4H]`` in gate-block order (i, f, z, o), each block ``[..., H]``."""
  nh, d, _ = w_h.shape
  lead = h.shape[:-1]
  rec = jnp.einsum("...nd,nde->...ne", h.reshape(lead + (nh, d)), w_h)
  rec = rec.reshape(lead + (nh, 4, d))
  return jnp.moveaxis(rec, -2, -3).reshape(lead + (4 * nh * d,))


def slstm_preactivations(params: Params, carry: SLSTMState, x: Array) -> Array:
  """``k = x W_x + h_{t-1} R + b``: ``[..., 4H]`` (blocks i, f, z, o)."""
  z = x @ params["w_x"] + _block_recurrence(carry.h.astype(x.dtype), params["w_h"])
  if "b" in params:
    z = z + params["b"]
  return z


def slstm_step(params: Params, carry: SLSTMState, x: Array, forget_fn: str = "sigmoid"
               ) -> tuple[SLSTMState, Array]:
  """One sLSTM step (module docstring)::

      m = max(log f + m_prev, k_i),  i' = exp(k_i - m),  f' = exp(log f + m_prev - m)
      c = f' c_prev + i' tanh(k_z),  n = f' n_prev + i',  h = sigmoid(k_o) c / n

  Args:
    params: ``w_x [I, 4H]``, ``w_h [NH, H/NH, 4H/NH]``, optional ``b [4H]``.
    carry: :class:`SLSTMState`, each ``[B, H]``; ``n == 0`` marks an empty state.
    x: ``[B, I]`` input.
    forget_fn: ``"sigmoid"`` or ``"exp"`` (:data:`FORGET_FNS`).

  Returns:
    ``(new_carry, h [B, H])`` in the carry's dtype.
  """
  k_i, k_f, k_z, k_o = G.split_gates(slstm_preactivations(params, carry, x), 4)
  dtype = carry.h.dtype
  f, i, m = stabilize(log_forget(k_f, forget_fn), k_i, carry.m, carry.n == 0)
  c = f * carry.c + i * jnp.tanh(k_z)
  n = f * carry.n + i
  h = jax.nn.sigmoid(k_o) * c / n
  new = SLSTMState(h=h.astype(dtype), c=c.astype(dtype), n=n.astype(dtype),
                   m=m.astype(dtype))
  return new, new.h


def mlstm_inputs(params: Params, x: Array, num_heads: int, forget_fn: str = "sigmoid"
                 ) -> tuple[Array, Array, Array, Array, Array, Array]:
  """The mLSTM's per-step quantities from ``x [..., I]`` (one step or a whole
  sequence: one matmul each).

  Returns:
    ``(q, k, v, o, k_i, log_f)``: ``q, k, v [..., NH, d]`` (``k`` already
    divided by ``sqrt(d)``), output gate ``o [..., H]`` (after the sigmoid),
    ``k_i, log_f [..., NH]``.
  """
  z = x @ params["w_x"]
  g = x @ params["w_if"]
  if "b" in params:
    z, g = z + params["b"], g + params["b_if"]
  q, k, v, o = G.split_gates(z, 4)
  size = q.shape[-1]
  d = size // num_heads
  heads = lambda a: a.reshape(a.shape[:-1] + (num_heads, d))
  k_i, k_f = G.split_gates(g, 2)
  return (heads(q), heads(k) / math.sqrt(d), heads(v), jax.nn.sigmoid(o), k_i,
          log_forget(k_f, forget_fn))


def _readout(num: Array, qn: Array, m: Array, o: Array) -> Array:
  """``o * num / (max(|qn|, exp(-m)) + eps)``, heads ``[..., NH, d]`` joined to ``[..., H]``."""
  h = num / (jnp.maximum(jnp.abs(qn), jnp.exp(-m)) + MLSTM_EPS)[..., None]
  return o * h.reshape(h.shape[:-2] + (-1,))


def mlstm_step(params: Params, carry: MLSTMState, x: Array, num_heads: int = 1,
               forget_fn: str = "sigmoid") -> tuple[MLSTMState, Array]:
  """One mLSTM step (module docstring)::

      m = max(log f + m_prev, k_i),  i' = exp(k_i - m),  f' = exp(log f + m_prev - m)
      C = f' C_prev + i' v k^T,  n = f' n_prev + i' k
      h = o * (C q) / (max(|n . q|, exp(-m)) + eps)

  Args:
    params: ``w_x [I, 4H]`` (q, k, v, o), ``w_if [I, 2NH]`` (i, f), optional
      ``b [4H]`` and ``b_if [2NH]``.
    carry: :class:`MLSTMState` (``c [B, NH, d, d]``, ``n [B, NH, d]``, ``m [B, NH]``).
    x: ``[B, I]`` input.
    num_heads: ``NH``.
    forget_fn: ``"sigmoid"`` or ``"exp"``.

  Returns:
    ``(new_carry, h [B, H])``; ``h`` in the dtype of ``carry.c``.
  """
  q, k, v, o, k_i, log_f = mlstm_inputs(params, x, num_heads, forget_fn)
  dtype = carry.c.dtype
  f, i, m = stabilize(log_f, k_i, carry.m)
  c = f[..., None, None] * carry.c + i[..., None, None] * v[..., :, None] * k[..., None, :]
  n = f[..., None] * carry.n + i[..., None] * k
  num = jnp.einsum("...ij,...j->...i", c, q)
  h = _readout(num, jnp.sum(n * q, axis=-1), m, o)
  return MLSTMState(c=c.astype(dtype), n=n.astype(dtype), m=m.astype(dtype)), h.astype(dtype)


def mlstm_chunk(q: Array, k: Array, v: Array, k_i: Array, log_f: Array,
                state: MLSTMState) -> tuple[Array, Array, Array, MLSTMState]:
  """``L`` mLSTM steps at once from ``state`` (the parallel form of the module
  docstring), per head; time on axis 0.

  Args:
    q, k, v: ``[L, B, NH, d]`` (``k`` divided by ``sqrt(d)``).
    k_i, log_f: ``[L, B, NH]``; a step with ``log_f = 0, k_i = -inf`` keeps the state.
    state: :class:`MLSTMState` before the block.

  Returns:
    ``(num [L, B, NH, d], qn [L, B, NH], m [L, B, NH], final_state)``: the
    read-out's numerator ``C_t q_t`` and ``n_t . q_t`` and the stabiliser
    ``m_t`` (all stabilised by ``m_t``) of every step.
  """
  length = q.shape[0]
  big_f = jnp.cumsum(log_f, axis=0)                                   # F_t  [L, B, NH]
  causal = jnp.tril(jnp.ones((length, length), bool))[:, :, None, None]   # [t, s, 1, 1]
  log_d = jnp.where(causal, big_f[:, None] - big_f[None, :] + k_i[None, :], -jnp.inf)
  log_w0 = big_f + state.m                                            # [L, B, NH]
  m = jnp.maximum(jnp.max(log_d, axis=1), log_w0)
  d = jnp.exp(log_d - m[:, None])                                     # [t, s, B, NH]
  w0 = jnp.exp(log_w0 - m)
  scores = jnp.einsum("tbnj,sbnj->tsbn", q, k) * d
  num = (jnp.einsum("tsbn,sbni->tbni", scores, v)
         + w0[..., None] * jnp.einsum("bnij,tbnj->tbni", state.c, q))
  qn = jnp.sum(scores, axis=1) + w0 * jnp.einsum("bnj,tbnj->tbn", state.n, q)
  last = d[-1]                                                        # [s, B, NH]
  c = (jnp.einsum("sbn,sbni,sbnj->bnij", last, v, k) + w0[-1][..., None, None] * state.c)
  n = jnp.einsum("sbn,sbnj->bnj", last, k) + w0[-1][..., None] * state.n
  return num, qn, m, MLSTMState(c=c, n=n, m=m[-1])


def mlstm_parallel(params: Params, xs: Array, state: MLSTMState,
                   lengths: Array | None = None, *, num_heads: int = 1,
                   forget_fn: str = "sigmoid", chunk_size: int = MLSTM_CHUNK,
                   reverse: bool = False, emit: Callable[[Array], Array] | None = None
                   ) -> tuple[Array, MLSTMState]:
  """A whole mLSTM layer in chunkwise-parallel form: :func:`mlstm_chunk` on
  blocks of ``chunk_size`` steps, scanned with the state in between; equal
  to scanning :func:`mlstm_step` (float rounding).

  Args:
    params: the cell's parameters (:func:`mlstm_step`).
    xs: ``[T, B, I]`` time-major inputs.
    state: :class:`MLSTMState` for batch ``B``.
    lengths: ``[B]`` valid lengths or ``None``: at ``t >= lengths[b]`` the
      state is kept and the output is zero.
    num_heads, forget_fn: as in :func:`mlstm_step`.
    chunk_size: steps per block ``L`` (memory ``O(T L)`` per head); the
      sequence is padded to whole blocks with state-keeping steps.
    reverse: run from ``t = T-1`` down to 0.
    emit: applied to each step's output ``[B, H]``.

  Returns:
    ``(ys [T, B, H], final_state)``.
  """
  time = xs.shape[0]
  dtype = state.c.dtype
  if time == 0:
    ys = jnp.zeros((0, xs.shape[1], params["w_x"].shape[1] // 4), dtype)
    return (ys if emit is None else jax.vmap(emit)(ys)), state
  q, k, v, o, k_i, log_f = mlstm_inputs(params, xs, num_heads, forget_fn)
  work = jnp.promote_types(q.dtype, dtype)
  q, k, v, k_i, log_f = (a.astype(work) for a in (q, k, v, k_i, log_f))
  valid = None
  if lengths is not None:
    ts = jnp.arange(time, dtype=lengths.dtype)
    valid = ts[:, None] < lengths[None, :]                           # [T, B]
    k_i = jnp.where(valid[..., None], k_i, -jnp.inf)
    log_f = jnp.where(valid[..., None], log_f, 0.0)
  if reverse:
    q, k, v, k_i, log_f = (a[::-1] for a in (q, k, v, k_i, log_f))
  size = max(1, min(chunk_size, time))
  blocks = -(-time // size)
  pad = blocks * size - time
  if pad:
    fill = lambda a, value: jnp.concatenate(
        [a, jnp.full((pad,) + a.shape[1:], value, a.dtype)])
    q, k, v, log_f = fill(q, 0), fill(k, 0), fill(v, 0), fill(log_f, 0)
    k_i = fill(k_i, -jnp.inf)
  split = lambda a: a.reshape((blocks, size) + a.shape[1:])
  start = MLSTMState(*(s.astype(work) for s in state))

  def block(carry, inp):
    num, qn, m, carry = mlstm_chunk(*inp, carry)
    return carry, (num, qn, m)

  final, (num, qn, m) = jax.lax.scan(block, start, tuple(map(split, (q, k, v, k_i, log_f))))
  join = lambda a: a.reshape((blocks * size,) + a.shape[2:])[:time]
  num, qn, m = join(num), join(qn), join(m)
  if reverse:
    num, qn, m = num[::-1], qn[::-1], m[::-1]
  ys = _readout(num, qn, m, o.astype(work)).astype(dtype)
  if valid is not None:
    ys = jnp.where(valid[..., None], ys, jnp.zeros_like(ys))
  if emit is not None:
    ys = jax.vmap(emit)(ys)
  return ys, MLSTMState(*(s.astype(dtype) for s in final))
