"""Initialisers for recurrent cells, selected by name.

Kernels of fused gates ``[fan_in, G*H]`` are initialised one gate block
``[fan_in, H]`` at a time, so every gate sees the same scale whatever ``G`` is
(this matches ``flax.linen.LSTMCell``'s separate dense layers).

Kernel initialisers (:data:`KERNEL_INITS`):

* ``lecun_normal`` (default for input kernels), ``lecun_uniform``,
  ``glorot_normal``, ``glorot_uniform``, ``he_normal``;
* ``orthogonal`` (default for recurrent kernels; Saxe et al. 2014);
* ``uniform``: ``U[-scale, scale]`` with ``scale`` = ``init_scale`` (0.1), the
  small uniform weights of Hochreiter & Schmidhuber 1997;
* ``zeros``.

Any initialiser ``(key, shape, dtype) -> array`` (a Flax or ``jax.nn``
initialiser such as ``flax.linen.initializers.orthogonal()``) may be given
instead of a name; it is called once per gate block ``[fan_in, H]``, as
``flax.linen.LSTMCell`` calls it once per gate.

LSTM bias schemes (:data:`BIAS_INITS`), gate order i, f, g, o:

* ``forget`` -- all zero except ``b_f = forget_bias`` (default 1.0; Gers et al.
  2000, recommended by Jozefowicz, Zaremba & Sutskever 2015);
* ``chrono`` -- ``b_f ~ log(U[1, T_max - 1])``, ``b_i = -b_f``, others zero
  (Tallec & Ollivier 2018, eq. 16); ``T_max`` is the longest dependency
  expected;
* ``hs1997`` -- Hochreiter & Schmidhuber 1997: negative input- and output-gate
  biases in a staircase over memory blocks (units are split into up to four
  contiguous blocks; block ``k`` gets ``b_i = -(k+1) * input_step`` and
  ``b_o = -(k+1) * output_step``), so that memory cells start closed and are
  recruited one after another; ``b_f = forget_bias`` if the cell has a forget
  gate; the candidate bias is zero.

An initialiser ``(key, shape, dtype) -> array`` may be given instead of a
scheme name; it is called once per gate with shape ``[H]`` (as
``flax.linen.LSTMCell`` calls its ``bias_init``), see :func:`bias_blocks`.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from lstm_jax import checks

Array = jax.Array
KernelInit = Callable[[Array, tuple[int, ...], jnp.dtype], Array]


def _uniform(scale: float) -> KernelInit:
  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -scale, scale)
  return init


def _kernel_fn(name: str | KernelInit, scale: float) -> KernelInit:
  if callable(name):
    return name
  inits = jax.nn.initializers
  table: dict[str, Callable[[], KernelInit]] = {
      "lecun_normal": inits.lecun_normal,
      "lecun_uniform": inits.lecun_uniform,
      "glorot_normal": inits.glorot_normal,
      "glorot_uniform": inits.glorot_uniform,
      "he_normal": inits.he_normal,
      "orthogonal": inits.orthogonal,
      "uniform": lambda: _uniform(scale),
      "zeros": lambda: inits.zeros,
  }
  if name not in table:  # a Cell checks its names; this is a direct call's last word
    checks.fail("kernel_init", name, "allowed: " + ", ".join(KERNEL_INITS))
  return table[name]()


KERNEL_INITS: tuple[str, ...] = ("lecun_normal", "lecun_uniform", "glorot_normal",
                                 "glorot_uniform", "he_normal", "orthogonal",
                                 "uniform", "zeros")
"""Names accepted for ``kernel_init`` and ``recurrent_init``."""

BIAS_INITS: tuple[str, ...] = ("forget", "chrono", "hs1997")
"""Names accepted for an LSTM's ``bias_init``."""


def gate_kernel(name: str | KernelInit, key: Array, fan_in: int, hidden_size: int,
                num_gates: int, *, scale: float = 0.1,
                dtype: jnp.dtype = jnp.float32) -> Array:
  """A fused kernel ``[fan_in, num_gates * hidden_size]``, one gate block at a time.

  Args:
    name: one of :data:`KERNEL_INITS`, or an initialiser
      ``(key, shape, dtype) -> array`` called once per block with shape
      ``[fan_in, hidden_size]`` and dtype float32.
    key: PRNG key.
    fan_in: rows (input size, or recurrent size).
    hidden_size: columns per gate block ``H``.
    num_gates: number of gate blocks ``G`` (4 for an LSTM, 3 for a GRU, 1 for
      an Elman RNN).
    scale: half-width of the ``uniform`` initialiser.
    dtype: parameter dtype.

  Returns:
    ``[fan_in, G*H]`` kernel.
  """
  fn = _kernel_fn(name, scale)
  keys = jax.random.split(key, num_gates)
  # Drawn in float32 and cast: CPU linear algebra has no half-precision QR (orthogonal).
  blocks = [fn(k, (fan_in, hidden_size), jnp.float32) for k in keys]
  return jnp.concatenate(blocks, axis=-1).astype(dtype)


def bias_blocks(init: KernelInit, key: Array, hidden_size: int, num_blocks: int, *,
                dtype: jnp.dtype = jnp.float32) -> Array:
  """A fused bias ``[num_blocks * hidden_size]`` drawn one block ``[H]`` at a time.

  Args:
    init: an initialiser ``(key, shape, dtype) -> array`` (e.g.
      ``flax.linen.initializers.zeros_init()``), called once per block with
      shape ``[hidden_size]`` and dtype float32, each with its own key.
    key: PRNG key, split into one key per block.
    hidden_size: ``H``.
    num_blocks: number of blocks (4 for the full LSTM bias).
    dtype: parameter dtype.

  Returns:
    ``[num_blocks * H]`` bias.
  """
  keys = jax.random.split(key, num_blocks)
  return jnp.concatenate([init(k, (hidden_size,), jnp.float32) for k in keys]).astype(dtype)


def _blocks(hidden_size: int, num_blocks: int) -> np.ndarray:
  """Block index 0..num_blocks-1 for each of ``hidden_size`` units, contiguous."""
  n = max(1, min(num_blocks, hidden_size))
  return (np.arange(hidden_size) * n) // hidden_size


def lstm_bias(name: str | KernelInit, key: Array, hidden_size: int, *, forget_bias: float = 1.0,
              t_max: float | None = None, input_step: float = 1.0,
              output_step: float = 1.0, dtype: jnp.dtype = jnp.float32) -> Array:
  """The fused LSTM bias ``[4H]`` (order i, f, g, o) for a named scheme.

  Schemes (see the module docstring for sources):

  * ``forget``: ``b = [0, forget_bias, 0, 0]`` per unit.
  * ``chrono``: ``b_f = log(u), u ~ U[1, t_max - 1]``; ``b_i = -b_f``;
    ``b_g = b_o = 0``. Needs ``t_max > 2`` (a :class:`lstm_jax.Cell` checks
    its options when built; this function trusts them).
  * ``hs1997``: ``b_i = -(k+1) * input_step`` and ``b_o = -(k+1) * output_step``
    for the unit's memory block ``k`` in 0..3; ``b_f = forget_bias``.

  An initialiser given as ``name`` draws each gate's ``[H]`` block
  (:func:`bias_blocks`); ``forget_bias`` is not added to it.

  Args:
    name: one of :data:`BIAS_INITS`, or an initialiser ``(key, shape, dtype)``.
    key: PRNG key (used by ``chrono`` and by an initialiser).
    hidden_size: ``H``.
    forget_bias: forget-gate bias for ``forget`` and ``hs1997``.
    t_max: longest expected dependency for ``chrono``.
    input_step, output_step: staircase steps for ``hs1997``.
    dtype: parameter dtype.

  Returns:
    ``[4H]`` bias.
  """
  h = hidden_size
  if callable(name):
    return bias_blocks(name, key, h, 4, dtype=dtype)
  zeros = jnp.zeros((h,), dtype)
  if name == "forget":
    return jnp.concatenate([zeros, jnp.full((h,), forget_bias, dtype), zeros, zeros])
  if name == "chrono":
    b_f = jnp.log(jax.random.uniform(key, (h,), jnp.float32, 1.0, t_max - 1.0)).astype(dtype)
    return jnp.concatenate([-b_f, b_f, zeros, zeros])
  if name != "hs1997":
    checks.fail("bias_init", name, "allowed: " + ", ".join(BIAS_INITS))
  stair = -(jnp.asarray(_blocks(h, 4), dtype) + 1)
  return jnp.concatenate([stair * input_step, jnp.full((h,), forget_bias, dtype), zeros,
                          stair * output_step])
