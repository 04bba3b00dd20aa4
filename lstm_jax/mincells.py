"""minGRU and minLSTM (Feng et al. 2024, "Were RNNs All We Needed?"): one step, and
the whole sequence at once as a prefix scan.

Their gates see only the input ``x_t``, never ``h_{t-1}``, so every step is a
linear map of the previous state::

    h_t = a_t * h_{t-1} + b_t            (a_t, b_t [B, H], from x_t alone)

minGRU (``w_x [I, 2H]`` in the order z, h~; ``b [2H]``)::

    z_t  = sigmoid(x_t W_z + b_z)
    h~_t = x_t W_h + b_h
    h_t  = (1 - z_t) * h_{t-1} + z_t * h~_t        a_t = 1 - z_t,   b_t = z_t * h~_t

minLSTM (``w_x [I, 3H]`` in the order f, i, h~; ``b [3H]``)::

    f_t  = sigmoid(x_t W_f + b_f),    i_t = sigmoid(x_t W_i + b_i)
    h~_t = x_t W_h + b_h
    f'_t = f_t / (f_t + i_t),         i'_t = i_t / (f_t + i_t)
    h_t  = f'_t * h_{t-1} + i'_t * h~_t            a_t = f'_t,      b_t = i'_t * h~_t

(``f'`` is computed as ``sigmoid(log f - log i)`` with ``log sigmoid(k) =
-softplus(-k)``, which equals the quotient and stays finite for any
pre-activations; ``i' = 1 - f'``.)

**Parallel form.** Each step is the affine map ``h -> a_t h + b_t``; composing
step 1 then step 2 gives ``(a1, b1) o (a2, b2) = (a1 a2, a2 b1 + b2)``, which is
associative, so ``jax.lax.associative_scan`` gives every prefix
``(A_t, B_t) = (prod_{s<=t} a_s, h_t given h_{-1} = 0)`` in ``O(log T)`` depth,
and ``h_t = A_t * h_{-1} + B_t`` for the initial state ``h_{-1}``. The initial
state enters only through ``A_t``, so the parallel form and the step-by-step
scan agree with and without one.

*Plain, not log space.* The paper also gives a log-space form
(``log a = -softplus(k)``, ``h_t = exp(logcumsumexp(log b - log A) + log A)``)
which needs ``b > 0`` and so replaces ``h~`` by ``g(h~) = h~ + 0.5`` for
``h~ >= 0`` else ``sigmoid(h~)``: a different model. The plain combine above
never divides and multiplies only numbers in ``[0, 1]`` (``A_t`` may underflow
to 0, which is its value to float precision), so it is finite and exact for
any sign of ``h~``: it is the form used here, and the model is the one the
sequential step computes.

Padding: at steps ``t >= lengths[b]`` the pair is ``(1, 0)``, so the state is
kept, and the output is zero, as for every other cell
(:mod:`lstm_jax.sequence`).
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from lstm_jax import gates as G

Array = jax.Array
Params = dict[str, Any]

KINDS: tuple[str, ...] = ("mingru", "minlstm")
"""The cell kinds of this module (linear recurrences with a parallel form)."""

NUM_BLOCKS: dict[str, int] = {"mingru": 2, "minlstm": 3}
"""Column blocks of ``w_x`` and ``b``: ``z, h~`` (minGRU), ``f, i, h~`` (minLSTM)."""


def coefficients(kind: str, params: Params, x: Array) -> tuple[Array, Array]:
  """The pair ``(a, b)`` of ``h = a * h_prev + b`` for inputs ``x [..., I]``.

  Equations in the module docstring; works for one step ``[B, I]`` and for a
  whole sequence ``[T, B, I]`` alike (one matmul).

  Args:
    kind: ``"mingru"`` or ``"minlstm"``.
    params: ``w_x [I, G*H]`` and (optionally) ``b [G*H]``, ``G`` = 2 or 3.
    x: ``[..., I]`` inputs.

  Returns:
    ``(a, b)``, each ``[..., H]``; ``a`` in ``[0, 1]``.
  """
  z = x @ params["w_x"]
  if "b" in params:
    z = z + params["b"]
  if kind == "mingru":
    k_z, h_tilde = G.split_gates(z, 2)
    gate = jax.nn.sigmoid(k_z)
    return 1.0 - gate, gate * h_tilde
  k_f, k_i, h_tilde = G.split_gates(z, 3)
  # f / (f + i) = sigmoid(log f - log i), log sigmoid(k) = -softplus(-k).
  forget = jax.nn.sigmoid(jax.nn.softplus(-k_i) - jax.nn.softplus(-k_f))
  return forget, (1.0 - forget) * h_tilde


def mingru_step(params: Params, h_prev: Array, x: Array) -> tuple[Array, Array]:
  """One minGRU step::

      z = sigmoid(x W_z + b_z),  h~ = x W_h + b_h,  h = (1 - z) * h_prev + z * h~

  Args:
    params: ``w_x [I, 2H]`` (z then h~), ``b [2H]``.
    h_prev: ``[B, H]`` previous hidden state.
    x: ``[B, I]`` input.

  Returns:
    ``(h, h)``, each ``[B, H]`` in ``h_prev``'s dtype.
  """
  a, b = coefficients("mingru", params, x)
  h = (a * h_prev + b).astype(h_prev.dtype)
  return h, h


def minlstm_step(params: Params, h_prev: Array, x: Array) -> tuple[Array, Array]:
  """One minLSTM step::

      f = sigmoid(x W_f + b_f),  i = sigmoid(x W_i + b_i),  h~ = x W_h + b_h
      h = f / (f + i) * h_prev + i / (f + i) * h~

  Args:
    params: ``w_x [I, 3H]`` (f, i, h~), ``b [3H]``.
    h_prev: ``[B, H]`` previous hidden state.
    x: ``[B, I]`` input.

  Returns:
    ``(h, h)``, each ``[B, H]`` in ``h_prev``'s dtype.
  """
  a, b = coefficients("minlstm", params, x)
  h = (a * h_prev + b).astype(h_prev.dtype)
  return h, h


STEPS: dict[str, Callable[[Params, Array, Array], tuple[Array, Array]]] = {
    "mingru": mingru_step, "minlstm": minlstm_step}


def _compose(first: tuple[Array, Array], second: tuple[Array, Array]) -> tuple[Array, Array]:
  """``(a1, b1) o (a2, b2) = (a1 a2, a2 b1 + b2)``: step ``first``, then ``second``."""
  a1, b1 = first
  a2, b2 = second
  return a1 * a2, a2 * b1 + b2


def linear_scan(a: Array, b: Array, h0: Array | None = None) -> Array:
  """Every state of ``h_t = a_t * h_{t-1} + b_t``, ``t = 0..T-1``, in parallel.

  ``jax.lax.associative_scan`` over the pairs with :func:`_compose` gives
  ``(A_t, B_t)``; then ``h_t = A_t * h0 + B_t``.

  Args:
    a, b: ``[T, ...]`` coefficients.
    h0: ``[...]`` state before step 0, or ``None`` (zeros).

  Returns:
    ``hs [T, ...]``.
  """
  prod, acc = jax.lax.associative_scan(_compose, (a, b), axis=0)
  return acc if h0 is None else prod * h0 + acc


def parallel_layer(kind: str, params: Params, xs: Array, h0: Array,
                   lengths: Array | None = None, *, reverse: bool = False,
                   emit: Callable[[Array], Array] | None = None) -> tuple[Array, Array]:
  """A whole layer of minGRU or minLSTM by :func:`linear_scan`; the same values
  as scanning :func:`mingru_step` / :func:`minlstm_step` (float rounding).

  Args:
    kind: ``"mingru"`` or ``"minlstm"``.
    params: the cell's parameters.
    xs: ``[T, B, I]`` time-major inputs.
    h0: ``[B, H]`` initial state.
    lengths: ``[B]`` valid lengths, or ``None`` (all ``T``): at ``t >=
      lengths[b]`` the pair is ``(1, 0)`` (state kept) and the output zero.
    reverse: run from ``t = T-1`` down to 0 (each sequence from its last real
      step, as the padded tail keeps the initial state).
    emit: applied to each step's output ``[B, H]`` (mapped over time).

  Returns:
    ``(ys [T, B, H], final [B, H])``; ``ys = emit(y)`` per step with ``emit``.
  """
  if xs.shape[0] == 0:
    ys = jnp.zeros((0,) + h0.shape, h0.dtype)
    return (ys if emit is None else jax.vmap(emit)(ys)), h0
  a, b = coefficients(kind, params, xs)
  dtype = h0.dtype
  a, b = a.astype(jnp.promote_types(a.dtype, dtype)), b.astype(jnp.promote_types(b.dtype, dtype))
  valid = None
  if lengths is not None:
    ts = jnp.arange(xs.shape[0], dtype=lengths.dtype)
    valid = (ts[:, None] < lengths[None, :])[..., None]
    a = jnp.where(valid, a, jnp.ones_like(a))
    b = jnp.where(valid, b, jnp.zeros_like(b))
  if reverse:
    a, b = a[::-1], b[::-1]
  hs = linear_scan(a, b, h0).astype(dtype)
  if reverse:
    hs = hs[::-1]
  final = hs[0] if reverse else hs[-1]
  ys = hs if valid is None else jnp.where(valid, hs, jnp.zeros_like(hs))
  if emit is not None:
    ys = jax.vmap(emit)(ys)
  return ys, final
