"""``flax.nnx`` cells over the pure functions of :mod:`lstm_jax.cells`.

A :class:`RecurrentCell` is a thin :class:`flax.nnx.RNNCellBase`: it builds a
:class:`lstm_jax.Cell` with :func:`lstm_jax.make_cell`, holds every entry of
``cell.init(key, I)`` as an ``nnx.Param`` attribute of the same name
(``self.w_x [I, G*H]``, ``self.w_h [R, G*H]``, ``self.b [G*H]``, ...), and its
``__call__`` is ``cell.step``. It works with ``flax.nnx.RNN``,
``flax.nnx.Bidirectional`` and ``flax.nnx.scan``::

    import jax, jax.numpy as jnp
    from flax import nnx
    import lstm_jax
    from lstm_jax import interop, nnx as lnnx

    xs = jnp.ones((2, 5, 3))                                   # [B, T, I]
    cell = lnnx.RecurrentCell(3, 4, cell="cifg", rngs=nnx.Rngs(0))
    (c, h), ys = nnx.RNN(cell)(xs, return_carry=True)          # ys: [B, T, 4]

    ys2, state = lstm_jax.rnn(cell.core, cell.core_params(), xs)  # same numbers;
    c2, h2 = interop.carry_to_flax(state)                      # LSTMState(h, c) -> (c, h)
    same = lnnx.RecurrentCell.from_core_params(cell.core, cell.core_params())

**Drop-in for** ``flax.nnx.OptimizedLSTMCell``: :class:`LSTMCell` takes its
arguments (``in_features``, ``hidden_features``, ``gate_fn``,
``activation_fn``, ``kernel_init``, ``recurrent_kernel_init``, ``bias_init``,
``dtype``, ``param_dtype``, ``carry_init``, ``promote_dtype``, ``keep_rngs``,
``rngs`` and the ``*_metadata`` dicts) and carries ``(c, h)``, so
``nnx.OptimizedLSTMCell(3, 64, rngs=rngs)`` becomes
``lnnx.LSTMCell(3, 64, rngs=rngs)``. With params converted by
:func:`lstm_jax.interop.from_flax_lstm` the outputs and carries equal
Flax's (float32 rounding)::

    flax_cell = nnx.OptimizedLSTMCell(3, 4, rngs=nnx.Rngs(0))
    ours = lnnx.LSTMCell(3, 4, params=interop.from_flax_lstm(nnx.state(flax_cell, nnx.Param)))
    nnx.RNN(ours)(xs)                                          # == nnx.RNN(flax_cell)(xs)

The carry, seen from Flax, is the one of :mod:`lstm_jax.linen`: ``(c, h)``
for an LSTM, ``(c, h, gates)`` for full gate recurrence, ``h`` for a GRU,
Elman RNN, minGRU or minLSTM; an :class:`lstm_jax.LSTMState` given as carry comes back as one.

Padding: ``nnx.RNN(...)(xs, seq_lengths=lengths, return_carry=True)`` returns
the carry after each sequence's last real step, like
``lstm_jax.rnn(lengths=...)``; unlike ``lstm_jax.rnn``, flax does not zero the
outputs at padded steps, and a length of 0 selects the carry after the last
(padded) step rather than the initial one.
"""

from __future__ import annotations

import itertools
from types import MappingProxyType
from typing import Any, Callable, Iterator, Mapping

import jax
import jax.numpy as jnp
from flax import nnx
from flax.nnx.nn import dtypes as nnx_dtypes

from lstm_jax import _flax
from lstm_jax.cells import CELL_NAMES, INIT_OPTIONS, Cell, LSTMVariant, Params, require_lstm

Array = jax.Array
Dtype = Any
Initializer = Callable[..., Array]

_NO_METADATA: Mapping[str, Any] = MappingProxyType({})


class RecurrentCell(nnx.RNNCellBase):
  """Any :mod:`lstm_jax` cell (an LSTM variant, ``"gru"``, ``"elman"``, ``"mingru"`` or
  ``"minlstm"``) as an NNX cell.

  ``cell(carry, x [..., I]) -> (carry, y [..., R])`` is
  ``self.core.step(self.core_params(), carry, x)``, with Flax's carry
  (module docstring).

  Attributes:
    core: the :class:`lstm_jax.Cell` (static).
    param_names: names of the ``nnx.Param`` attributes, in ``core.init`` order.
    in_features, hidden_features: ``I`` and ``H``.
    gate_fn, activation_fn, dtype, param_dtype, promote_dtype, carry_init,
      rngs: as given (``rngs`` is the kept carry stream, or ``None``).
    carry_dtype: dtype of the carry made by :meth:`initialize_carry`.
    w_x, w_h, b, ...: one ``nnx.Param`` per entry of the core params dict.
  """

  def __init__(self, in_features: int, hidden_features: int | None = None, *,
               cell: str | LSTMVariant = "vanilla", proj_size: int = 0,
               gate_fn: Callable[..., Any] | str = jax.nn.sigmoid,
               activation_fn: Callable[..., Any] | str | None = None,
               recurrent_kernel_init: str | Initializer | None = None,
               dtype: Dtype | None = None, param_dtype: Dtype = jnp.float32,
               carry_dtype: Dtype | None = None, carry_init: Initializer | None = None,
               promote_dtype: Callable[..., Any] = nnx_dtypes.promote_dtype,
               keep_rngs: bool = False, rngs: nnx.Rngs | None = None,
               params: Params | None = None,
               kernel_metadata: Mapping[str, Any] = _NO_METADATA,
               recurrent_kernel_metadata: Mapping[str, Any] = _NO_METADATA,
               bias_metadata: Mapping[str, Any] = _NO_METADATA,
               features: int | None = None, **init_options: Any):
    """Build the core cell and its params.

    Args:
      in_features: input size ``I``.
      hidden_features: hidden size ``H`` (Flax NNX's name).
      cell: one of :data:`lstm_jax.CELL_NAMES`, or an :class:`lstm_jax.LSTMVariant`.
      proj_size: LSTMP projection size ``P < H`` (``R = P``); 0 for none.
      gate_fn: Flax's gate activation; only the sigmoid (``jax.nn.sigmoid`` =
        ``nnx.sigmoid``, or ``"sigmoid"``) is allowed.
      activation_fn: Flax's activation of the candidate and of the output:
        ``jnp.tanh`` (= ``nnx.tanh``) or ``jax.nn.identity`` (or their names),
        which set the variant's ``input_activation`` and
        ``output_activation``; ``None`` keeps the variant's own.
      recurrent_kernel_init: Flax's name for ``recurrent_init`` (give one).
      dtype: computation dtype (``None``: inferred), as in Flax: inputs,
        params and an LSTM's ``h`` enter the matmuls in it; the carry keeps
        its dtype.
      param_dtype: dtype of freshly initialised params (drawn in float32, then cast).
      carry_dtype: dtype of the carry made by :meth:`initialize_carry`;
        ``None`` follows Flax's rule: ``param_dtype``.
      carry_init: default initialiser of the carry for
        :meth:`initialize_carry` (zeros when ``None``).
      promote_dtype: Flax's ``(arrays, *, dtype) -> arrays`` applied to the
        input and the params at each step.
      keep_rngs: keep ``rngs.carry`` (forked) for :meth:`initialize_carry`
        calls without ``rngs``, as Flax's deprecated option does.
      rngs: ``nnx.Rngs``; the params are ``core.init(rngs.params(), I)``.
        Not needed when ``params`` is given.
      params: a core params dict to hold instead of fresh ones (checked
        against the cell and ``in_features``).
      kernel_metadata, recurrent_kernel_metadata, bias_metadata: metadata of
        the ``nnx.Param`` of ``w_x``, ``w_h`` and ``b`` (e.g. sharding).
      features: the linen name of ``hidden_features`` (give one of the two).
      **init_options: the :data:`lstm_jax.cells.INIT_OPTIONS` (``kernel_init``,
        ``recurrent_init``, ``bias_init``, ``forget_bias``, ``chrono_t_max``,
        ``init_scale``, ``use_bias``); defaults those of :class:`lstm_jax.Cell`.
        The initialisers may be Flax callables or the names of
        :mod:`lstm_jax.init`.

    Raises:
      ValueError: unknown ``cell`` name (the message lists the allowed
        names), a ``gate_fn``/``activation_fn`` without counterpart,
        incompatible options, or ``params`` of the wrong layout.
      TypeError: an unknown keyword, no hidden size, or neither ``rngs`` nor
        ``params`` given.
    """
    name = type(self).__name__
    if features is not None:
      if hidden_features is not None and hidden_features != features:
        raise TypeError(f"{name}: hidden_features={hidden_features} and features={features} "
                        "name the same size; give one")
      hidden_features = features
    if hidden_features is None:
      raise TypeError(f"{name}: missing hidden_features (the hidden size H)")
    unknown = sorted(set(init_options) - set(INIT_OPTIONS))
    if unknown:
      raise TypeError(f"{name}: unexpected keyword argument(s) {', '.join(unknown)}; "
                      f"the initialisation options are {', '.join(INIT_OPTIONS)}")
    core = _flax.make_core(cell, hidden_features, proj_size=proj_size,
                           init_options=init_options, gate_fn=gate_fn,
                           activation_fn=activation_fn,
                           recurrent_kernel_init=recurrent_kernel_init)
    if params is None:
      if rngs is None:
        raise TypeError("rngs: an nnx.Rngs is needed to initialise the params "
                        "(or pass params=)")
      # Drawn in float32 and cast: LAPACK's QR (orthogonal init) has no
      # bfloat16/float16 kernel on CPU.
      drawn = core.init(rngs.params(), in_features, jnp.float32)
      params = {k: value.astype(param_dtype) for k, value in drawn.items()}
    else:
      core.check_params(params, in_features)
    if keep_rngs and rngs is None:
      raise TypeError("rngs: keep_rngs=True needs an nnx.Rngs to keep")
    self.core = core
    self.in_features = in_features
    self.hidden_features = hidden_features
    self.gate_fn = gate_fn
    self.activation_fn = activation_fn
    self.dtype = dtype
    self.param_dtype = param_dtype
    self.carry_dtype = param_dtype if carry_dtype is None else carry_dtype
    self.carry_init = carry_init
    self.promote_dtype = promote_dtype
    self.rngs = rngs.carry.fork() if keep_rngs else nnx.data(None)
    self.param_names = tuple(params)
    metadata = {"w_x": kernel_metadata, "w_h": recurrent_kernel_metadata, "b": bias_metadata}
    for k, value in params.items():
      setattr(self, k, nnx.Param(jnp.asarray(value), **metadata.get(k, _NO_METADATA)))

  @classmethod
  def from_core_params(cls, core: Cell, params: Params, **kwargs: Any) -> RecurrentCell:
    """The NNX cell for ``core`` holding ``params`` (a core params dict,
    ``in_features`` read from ``params["w_x"]``); ``kwargs``: other
    constructor arguments (``carry_dtype``, ``dtype``, ``carry_init``, ...)."""
    name = core.name if core.name in CELL_NAMES else core.variant
    return cls(int(params["w_x"].shape[0]), core.hidden_size, cell=name,
               proj_size=core.proj_size, params=params, **core.init_options(), **kwargs)

  def core_params(self) -> Params:
    """The params as the core dict ``{"w_x": [I, G*H], "w_h": [R, G*H], ...}``."""
    return {name: getattr(self, name).get_value() for name in self.param_names}

  def __call__(self, carry: Any, inputs: Array) -> tuple[Any, Array]:
    """One step.

    Args:
      carry: from :meth:`initialize_carry`, from a Flax LSTM cell, or a
        previous step (module docstring).
      inputs: ``[..., I]`` input of this step.

    Returns:
      ``(new_carry, y)`` with ``y: [..., R]``, the carry in the structure it
      came in.
    """
    return _flax.step(self.core, self.core_params(), carry, inputs, self.dtype,
                      self.promote_dtype)

  def initialize_carry(self, input_shape: tuple[int, ...],
                       rngs: nnx.Rngs | nnx.RngStream | None = None,
                       carry_init: Initializer | None = None) -> Any:
    """Initial carry for inputs of shape ``input_shape = (*batch, I)``.

    Every leaf is ``carry_init(rngs(), shape, dtype)``, drawn in Flax's order
    (``c`` then ``h``, then ``gates`` for FGR), so with the same stream and
    initialiser the carry equals ``flax.nnx.OptimizedLSTMCell``'s.

    Args:
      input_shape: shape of one step's input.
      rngs: used only with an initialiser (an ``nnx.Rngs`` uses its ``carry``
        stream); ``None`` falls back on the stream kept with ``keep_rngs``.
      carry_init: initialiser ``(key, shape, dtype) -> array`` of every leaf;
        ``None`` uses the one given at construction, else zeros.

    Returns:
      ``(c [*batch, H], h [*batch, R])`` (``(c, h, gates [*batch, 3H])`` for
      FGR), or ``h [*batch, H]`` for the other cells, of dtype ``carry_dtype``.

    Raises:
      ValueError: an initialiser but no ``rngs`` to draw from.
    """
    if rngs is None:
      rngs = self.rngs
    if isinstance(rngs, nnx.Rngs):
      rngs = rngs.carry
    init = self.carry_init if carry_init is None else carry_init
    keys: Iterator[Any]
    if init is None:
      init, keys = jax.nn.initializers.zeros, itertools.repeat(None)  # zeros need no key
    elif rngs is None:
      raise ValueError("rngs: carry_init needs an nnx.Rngs or RngStream to draw from")
    else:
      keys = (rngs() for _ in itertools.count())  # a fresh key per leaf, drawn lazily
    return _flax.initial_carry(self.core, tuple(input_shape[:-1]), self.carry_dtype, init,
                               keys)

  @property
  def num_feature_axes(self) -> int:
    """One feature axis: inputs are ``[..., I]``."""
    return 1


class LSTMCell(RecurrentCell):
  """A :class:`RecurrentCell` restricted to LSTM variants (default ``"vanilla"``):
  the drop-in for ``flax.nnx.OptimizedLSTMCell`` (and ``flax.nnx.LSTMCell``).

  It takes their arguments (``in_features``, ``hidden_features``,
  ``gate_fn``, ``activation_fn``, ``kernel_init``, ``recurrent_kernel_init``,
  ``bias_init``, ``dtype``, ``param_dtype``, ``carry_init``,
  ``promote_dtype``, ``keep_rngs``, ``rngs``, ``*_metadata``; initialisers
  as Flax callables or as the names of :mod:`lstm_jax.init`), carries
  ``(c, h)`` like them and, with params converted by
  :func:`lstm_jax.interop.from_flax_lstm`, gives their outputs and carries
  (float32 rounding) in ``nnx.RNN``, ``nnx.Bidirectional``, ``nnx.scan`` and
  ``jax.lax.scan``::

      cell = lnnx.LSTMCell(3, 64, rngs=rngs)   # was nnx.OptimizedLSTMCell(3, 64, rngs=rngs)

  **Initialisation differs from Flax's in one default.** The bias scheme
  defaults to ``bias_init="forget"`` with ``forget_bias=1.0``: the
  forget-gate bias starts at 1 (Gers et al. 2000; Jozefowicz et al. 2015),
  which keeps the memory from being wiped at the start of training, where
  Flax starts every bias at 0. Flax's bias is one argument away:
  ``bias_init=nnx.initializers.zeros_init()`` (Flax's own default) or,
  equally, ``forget_bias=0.0``. Kernels are drawn one gate block at a time,
  as ``flax.nnx.LSTMCell`` and the linen cells draw them:
  ``lecun_normal`` per ``[I, H]`` block (the same distribution as
  ``OptimizedLSTMCell``'s fused ``[I, 4H]`` draw, whose fan-in is also ``I``)
  and ``orthogonal`` per ``[H, H]`` block (``OptimizedLSTMCell`` draws one
  orthogonal ``[H, 4H]`` matrix instead).

  The params are ``w_x [I, 4H]``, ``w_h [H, 4H]``, ``b [4H]`` -- the values
  of ``OptimizedLSTMCell``'s ``dense_i.kernel``, ``dense_h.kernel`` and
  ``dense_h.bias`` under other names.

  Raises:
    ValueError: ``cell`` names a GRU, Elman RNN, minGRU or minLSTM (and see
      :class:`RecurrentCell`).
  """

  def __init__(self, in_features: int, hidden_features: int | None = None, *,
               cell: str | LSTMVariant = "vanilla", **kwargs: Any):
    """Same arguments as :class:`RecurrentCell`."""
    require_lstm(cell)
    super().__init__(in_features, hidden_features, cell=cell, **kwargs)
