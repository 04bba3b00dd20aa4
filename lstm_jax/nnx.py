"""``flax.nnx`` cells over the pure functions of :mod:`lstm_jax.cells`.

A :class:`RecurrentCell` is a thin :class:`flax.nnx.RNNCellBase`: it builds a
:class:`lstm_jax.Cell` with :func:`lstm_jax.make_cell`, holds every entry of
``cell.init(key, I)`` as an ``nnx.Param`` attribute of the same name
(``self.w_x [I, G*H]``, ``self.w_h [R, G*H]``, ``self.b [G*H]``, ...), and its
``__call__`` is ``cell.step``. It works with ``flax.nnx.RNN`` and
``flax.nnx.Bidirectional``::

    import jax, jax.numpy as jnp
    from flax import nnx
    import lstm_jax
    from lstm_jax import nnx as lnnx

    xs = jnp.ones((2, 5, 3))                                   # [B, T, I]
    cell = lnnx.RecurrentCell(3, 4, cell="cifg", rngs=nnx.Rngs(0))
    carry, ys = nnx.RNN(cell)(xs, return_carry=True)           # ys: [B, T, 4]

    ys2, carry2 = lstm_jax.rnn(cell.core, cell.core_params(), xs)  # same numbers
    same = lnnx.RecurrentCell.from_core_params(cell.core, cell.core_params())

Padding: ``nnx.RNN(...)(xs, seq_lengths=lengths, return_carry=True)`` returns
the carry after each sequence's last real step, like
``lstm_jax.rnn(lengths=...)``; unlike ``lstm_jax.rnn``, flax does not zero the
outputs at padded steps, and a length of 0 selects the carry after the last
(padded) step rather than the initial one.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from lstm_jax.cells import CELL_NAMES, Cell, LSTMVariant, Params, make_cell, require_lstm

Array = jax.Array
Dtype = Any
Initializer = Any


class RecurrentCell(nnx.RNNCellBase):
  """Any :mod:`lstm_jax` cell (an LSTM variant, ``"gru"`` or ``"elman"``) as an NNX cell.

  ``cell(carry, x [..., I]) -> (carry, y [..., R])`` is
  ``self.core.step(self.core_params(), carry, x)``. The carry is
  :class:`lstm_jax.LSTMState` ``(h [..., R], c [..., H], gates)`` for an LSTM
  and ``h [..., H]`` for a GRU or Elman RNN.

  Attributes:
    core: the :class:`lstm_jax.Cell` (static).
    param_names: names of the ``nnx.Param`` attributes, in ``core.init`` order.
    carry_dtype: dtype of the carry made by :meth:`initialize_carry`.
    w_x, w_h, b, ...: one ``nnx.Param`` per entry of the core params dict.
  """

  def __init__(self, in_features: int, features: int, *,
               cell: str | LSTMVariant = "vanilla", proj_size: int = 0,
               kernel_init: str = "lecun_normal", recurrent_init: str = "orthogonal",
               bias_init: str = "forget", forget_bias: float = 1.0,
               chrono_t_max: float | None = None, init_scale: float = 0.1,
               use_bias: bool = True, param_dtype: Dtype = jnp.float32,
               carry_dtype: Dtype = jnp.float32, rngs: nnx.Rngs | None = None,
               params: Params | None = None):
    """Build the core cell and its params.

    Args:
      in_features: input size ``I``.
      features: hidden size ``H``.
      cell: one of :data:`lstm_jax.CELL_NAMES`, or an :class:`lstm_jax.LSTMVariant`.
      proj_size: LSTMP projection size ``P < H`` (``R = P``); 0 for none.
      kernel_init, recurrent_init: names from :data:`lstm_jax.init.KERNEL_INITS`.
      bias_init: LSTM bias scheme from :data:`lstm_jax.init.BIAS_INITS`.
      forget_bias: forget-gate bias of the ``forget`` and ``hs1997`` schemes.
      chrono_t_max: ``T_max`` of the ``chrono`` scheme.
      init_scale: half-width of the ``uniform`` kernel initialiser.
      use_bias: whether the cell has biases.
      param_dtype: dtype of freshly initialised params (drawn in float32, then cast).
      carry_dtype: dtype of the carry made by :meth:`initialize_carry`.
      rngs: ``nnx.Rngs``; the params are ``core.init(rngs.params(), I)``.
        Not needed when ``params`` is given.
      params: a core params dict to hold instead of fresh ones (checked
        against the cell and ``in_features``).

    Raises:
      ValueError: unknown ``cell`` name (the message lists the allowed
        names), incompatible options, or ``params`` of the wrong layout.
      TypeError: neither ``rngs`` nor ``params`` given.
    """
    core = make_cell(cell, features, proj_size=proj_size, kernel_init=kernel_init,
                     recurrent_init=recurrent_init, bias_init=bias_init,
                     forget_bias=forget_bias, chrono_t_max=chrono_t_max,
                     init_scale=init_scale, use_bias=use_bias)
    if params is None:
      if rngs is None:
        raise TypeError("rngs: an nnx.Rngs is needed to initialise the params "
                        "(or pass params=)")
      # Drawn in float32 and cast: LAPACK's QR (orthogonal init) has no
      # bfloat16/float16 kernel on CPU.
      drawn = core.init(rngs.params(), in_features, jnp.float32)
      params = {name: value.astype(param_dtype) for name, value in drawn.items()}
    else:
      core.check_params(params, in_features)
    self.core = core
    self.carry_dtype = carry_dtype
    self.param_names = tuple(params)
    for name, value in params.items():
      setattr(self, name, nnx.Param(jnp.asarray(value)))

  @classmethod
  def from_core_params(cls, core: Cell, params: Params, *,
                       carry_dtype: Dtype = jnp.float32) -> RecurrentCell:
    """The NNX cell for ``core`` holding ``params`` (a core params dict,
    ``in_features`` read from ``params["w_x"]``)."""
    name = core.name if core.name in CELL_NAMES else core.variant
    return cls(int(params["w_x"].shape[0]), core.hidden_size, cell=name,
               proj_size=core.proj_size, kernel_init=core.kernel_init,
               recurrent_init=core.recurrent_init, bias_init=core.bias_init,
               forget_bias=core.forget_bias, chrono_t_max=core.chrono_t_max,
               init_scale=core.init_scale, use_bias=core.use_bias,
               carry_dtype=carry_dtype, params=params)

  def core_params(self) -> Params:
    """The params as the core dict ``{"w_x": [I, G*H], "w_h": [R, G*H], ...}``."""
    return {name: getattr(self, name).get_value() for name in self.param_names}

  def __call__(self, carry: Any, inputs: Array) -> tuple[Any, Array]:
    """One step.

    Args:
      carry: from :meth:`initialize_carry` (or a previous step).
      inputs: ``[..., I]`` input of this step.

    Returns:
      ``(new_carry, y)`` with ``y: [..., R]``.
    """
    return self.core.step(self.core_params(), carry, inputs)

  def initialize_carry(self, input_shape: tuple[int, ...],
                       rngs: nnx.Rngs | nnx.RngStream | None = None,
                       carry_init: Initializer | None = None) -> Any:
    """Initial carry for inputs of shape ``input_shape = (*batch, I)``.

    Args:
      input_shape: shape of one step's input.
      rngs: used only with ``carry_init`` (an ``nnx.Rngs`` uses its ``carry``
        stream).
      carry_init: optional initialiser ``(key, shape, dtype) -> array`` for
        every leaf of the carry; zeros when ``None``.

    Returns:
      :class:`lstm_jax.LSTMState` with ``h [*batch, R]``, ``c [*batch, H]``
      (and ``gates [*batch, 3H]`` for FGR), or ``[*batch, H]`` for GRU/Elman,
      of dtype ``carry_dtype``.

    Raises:
      ValueError: ``carry_init`` without ``rngs``.
    """
    zeros = self.core.initial_state(tuple(input_shape[:-1]), self.carry_dtype)
    if carry_init is None:
      return zeros
    if isinstance(rngs, nnx.Rngs):
      rngs = rngs.carry
    if rngs is None:
      raise ValueError("rngs: carry_init needs an nnx.Rngs or RngStream to draw from")
    return jax.tree_util.tree_map(lambda z: carry_init(rngs(), z.shape, z.dtype), zeros)

  @property
  def num_feature_axes(self) -> int:
    """One feature axis: inputs are ``[..., I]``."""
    return 1


class LSTMCell(RecurrentCell):
  """A :class:`RecurrentCell` restricted to LSTM variants (default ``"vanilla"``).

  Raises:
    ValueError: ``cell`` names a GRU or Elman RNN.
  """

  def __init__(self, in_features: int, features: int, *,
               cell: str | LSTMVariant = "vanilla", **kwargs: Any):
    """Same arguments as :class:`RecurrentCell`."""
    require_lstm(cell)
    super().__init__(in_features, features, cell=cell, **kwargs)
