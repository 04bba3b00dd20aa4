"""``flax.linen`` cells over the pure functions of :mod:`lstm_jax.cells`.

A :class:`RecurrentCell` is a thin :class:`flax.linen.RNNCellBase`: it builds a
:class:`lstm_jax.Cell` with :func:`lstm_jax.make_cell` from its attributes,
creates one flax param per entry of ``cell.init(key, I)`` (same names and
shapes: ``w_x [I, G*H]``, ``w_h [R, G*H]``, ``b [G*H]``, ...), and calls
``cell.step``. So it works with ``flax.linen.RNN``, ``flax.linen.Bidirectional``
and ``flax.linen.scan``, and the params a cell owns *are* the core params
dict::

    import jax, jax.numpy as jnp
    import flax.linen as nn
    import lstm_jax
    from lstm_jax import interop, linen as lnn

    xs = jnp.ones((2, 5, 3))                                # [B, T, I]
    layer = nn.RNN(lnn.RecurrentCell(features=4, cell="peephole"))
    variables = layer.init(jax.random.key(0), xs)
    (c, h), ys = layer.apply(variables, xs, return_carry=True)  # ys: [B, T, 4]

    params = lnn.to_core_params(variables)                  # the core params dict
    ys2, state = lstm_jax.rnn(layer.cell.core, params, xs)  # same numbers;
    c2, h2 = interop.carry_to_flax(state)                   # LSTMState(h, c) -> (c, h)

**Drop-in for Flax's LSTM cells.** :class:`LSTMCell` takes the fields of
``flax.linen.OptimizedLSTMCell`` / ``LSTMCell`` (``features``, ``gate_fn``,
``activation_fn``, ``kernel_init``, ``recurrent_kernel_init``, ``bias_init``,
``dtype``, ``param_dtype``, ``carry_init``) and has Flax's carry ``(c, h)``,
so ``nn.RNN(nn.OptimizedLSTMCell(64))`` becomes ``nn.RNN(lnn.LSTMCell(64))``
with no other change. Its params are the fused core dict rather than Flax's
``ii, ..., ho`` tree; :func:`lstm_jax.interop.from_flax_lstm` converts one
into the other, and with converted params the outputs and carries equal
Flax's (float32 rounding)::

    flax_vars = nn.RNN(nn.OptimizedLSTMCell(4)).init(jax.random.key(0), xs)
    ours = lnn.to_variables(interop.from_flax_lstm(flax_vars), "rnn")
    nn.RNN(lnn.LSTMCell(4)).apply(ours, xs)     # == nn.RNN(nn.OptimizedLSTMCell(4))
                                                #    .apply(flax_vars, xs)

The one default that differs is the forget-gate bias (see :class:`LSTMCell`).

Carry, seen from Flax: ``(c [..., H], h [..., R])`` for an LSTM (so
``c, h = carry`` and, without projection, ``np.asarray(carry)`` of shape
``[2, ..., H]`` work, and a carry made by Flax's cells is accepted);
``(c, h, gates [..., 3H])`` for full gate recurrence (FGR, which Flax lacks);
``h [..., H]`` for a GRU, Elman RNN, minGRU or minLSTM. An
:class:`lstm_jax.LSTMState` (as :func:`lstm_jax.rnn` returns) given as carry
is accepted too and comes back as one. :func:`lstm_jax.interop.carry_from_flax` and
:func:`~lstm_jax.interop.carry_to_flax` turn one form into the other.

Bidirectional layers: ``nn.Bidirectional(nn.RNN(cell), nn.RNN(cell.clone()))``
gives each direction its own params (``forward_rnn/cell``,
``backward_rnn/cell``); passing the *same* cell instance to both ``nn.RNN``
makes linen share one set of params (stored under ``forward_rnn/cell``), as it
does for its own cells. :func:`to_core_params` turns either into the
``{"fwd", "bwd"}`` dict of :func:`lstm_jax.bidirectional_rnn`, and
:func:`to_variables` goes back.

Padding: ``nn.RNN(..., seq_lengths=lengths, return_carry=True)`` returns the
carry after each sequence's last real step, like ``lstm_jax.rnn(lengths=...)``;
unlike ``lstm_jax.rnn``, flax does not zero the outputs at padded steps, and a
length of 0 selects the carry after the last (padded) step rather than the
initial one.
"""

from __future__ import annotations

from typing import Any, Callable, Literal, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.linen.dtypes import promote_dtype

from lstm_jax import _flax, checks
from lstm_jax.cells import (CELL_NAMES, INIT_OPTIONS, XLSTM_CELLS, Cell, LSTMVariant, Params,
                            require_lstm)

Array = jax.Array
Dtype = Any
Initializer = Callable[..., Array]

_LAYOUTS = ("cell", "rnn", "bidirectional")


def _promote(arrays: tuple[Array, ...], *, dtype: Dtype | None) -> tuple[Array, ...]:
  """linen's ``promote_dtype`` with NNX's calling convention."""
  return tuple(promote_dtype(*arrays, dtype=dtype))


class RecurrentCell(nn.RNNCellBase):
  """Any :mod:`lstm_jax` cell (an LSTM variant, ``"gru"``, ``"elman"``, ``"mingru"`` or
  ``"minlstm"``) as a linen cell.

  ``__call__(carry, x [..., I]) -> (carry, y [..., R])`` is
  ``self.core.step(params, carry, x)`` with ``params`` the module's params:
  one flax param per entry of ``self.core.init(key, I)`` (same names and
  shapes; see :mod:`lstm_jax.cells`), all from one ``core.init`` call with the
  key flax hands the first of them, cast to ``param_dtype``. The carry is
  Flax's: ``(c [..., H], h [..., R])`` for an LSTM, ``(c, h, gates [..., 3H])``
  for FGR, ``h [..., H]`` for a GRU, Elman RNN, minGRU or minLSTM (module
  docstring).

  Attributes:
    features: hidden size ``H``.
    cell: one of :data:`lstm_jax.CELL_NAMES`, or an :class:`lstm_jax.LSTMVariant`.
    proj_size: LSTMP projection size ``P < H`` (``R = P``); 0 for none.
    kernel_init, recurrent_init: names from :data:`lstm_jax.init.KERNEL_INITS`,
      or initialisers ``(key, shape, dtype) -> array`` (Flax's), called once
      per gate block ``[I, H]`` / ``[R, H]`` as ``flax.linen.LSTMCell`` does.
    bias_init: LSTM bias scheme from :data:`lstm_jax.init.BIAS_INITS`, or an
      initialiser called once per gate block ``[H]`` (then ``forget_bias`` is
      not used).
    forget_bias: forget-gate bias of the ``forget`` and ``hs1997`` schemes.
    chrono_t_max: ``T_max`` of the ``chrono`` scheme.
    init_scale: half-width of the ``uniform`` kernel initialiser.
    use_bias: whether the cell has biases.
    num_heads, forget_fn: heads and forget gate (``"sigmoid"`` or ``"exp"``)
      of an sLSTM or mLSTM.
    gate_fn: Flax's gate activation; only the sigmoid (``jax.nn.sigmoid`` =
      ``nn.sigmoid``, or ``"sigmoid"``) is allowed.
    activation_fn: Flax's activation of the candidate and of the output:
      ``jnp.tanh`` (= ``nn.tanh``) or ``jax.nn.identity`` (or their names),
      which set the variant's ``input_activation`` and ``output_activation``;
      ``None`` (default) keeps the variant's own (tanh but for ``niaf``/``noaf``).
    recurrent_kernel_init: Flax's name for ``recurrent_init`` (give one of the two).
    dtype: computation dtype (``None``: inferred from inputs and params), as in
      Flax: inputs, params and an LSTM's ``h`` enter the matmuls in it; the
      carry keeps its dtype.
    param_dtype: dtype of the params (drawn in float32, then cast).
    carry_dtype: dtype of the carry made by :meth:`initialize_carry`;
      ``None`` (default) follows Flax's rule: ``param_dtype``.
    carry_init: Flax's initialiser ``(key, shape, dtype)`` of every carry leaf
      in :meth:`initialize_carry` (default zeros).

  Raises:
    ValueError: at construction, for an unknown ``cell`` name (the message
      lists the allowed names), a ``gate_fn``/``activation_fn`` without
      counterpart, or incompatible options (from :func:`lstm_jax.make_cell`).
  """
  features: int
  cell: str | LSTMVariant = "vanilla"
  proj_size: int = 0
  kernel_init: str | Initializer = "lecun_normal"
  recurrent_init: str | Initializer = "orthogonal"
  bias_init: str | Initializer = "forget"
  forget_bias: float = 1.0
  chrono_t_max: float | None = None
  init_scale: float = 0.1
  use_bias: bool = True
  num_heads: int = 1
  forget_fn: str = "sigmoid"
  gate_fn: Callable[..., Any] | str = jax.nn.sigmoid
  activation_fn: Callable[..., Any] | str | None = None
  recurrent_kernel_init: str | Initializer | None = None
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32
  carry_dtype: Dtype | None = None
  carry_init: Initializer = nn.initializers.zeros_init()

  def __post_init__(self) -> None:
    _ = self.core  # Validate the options (make_cell) at construction.
    super().__post_init__()

  @property
  def core(self) -> Cell:
    """The :class:`lstm_jax.Cell` these attributes describe (hashable, static)."""
    return _flax.make_core(self.cell, self.features, proj_size=self.proj_size,
                           init_options={name: getattr(self, name) for name in INIT_OPTIONS},
                           gate_fn=self.gate_fn, activation_fn=self.activation_fn,
                           recurrent_kernel_init=self.recurrent_kernel_init)

  @classmethod
  def from_core(cls, core: Cell, **kwargs: Any) -> RecurrentCell:
    """The linen cell with every option of ``core`` (``kwargs``: other attributes,
    e.g. ``param_dtype``, ``dtype``, ``carry_init``, ``name``)."""
    return cls(**core_options(core), **kwargs)

  @nn.compact
  def __call__(self, carry: Any, inputs: Array) -> tuple[Any, Array]:
    """One step.

    Args:
      carry: from :meth:`initialize_carry`, from a Flax LSTM cell, or a
        previous step (module docstring).
      inputs: ``[..., I]`` input of this step.

    Returns:
      ``(new_carry, y)`` with ``y: [..., R]``, the carry in the structure
      it came in.
    """
    core = self.core
    input_size = inputs.shape[-1]
    names = tuple(core.param_shapes(input_size))
    drawn: dict[str, Params] = {}

    def entry(name: str):
      def init_fn(rng: Array) -> Array:
        # The first param's key draws the whole dict (one core.init), so the
        # params are exactly core.init(key, I). Drawn in float32 and cast:
        # LAPACK's QR (orthogonal init) has no bfloat16/float16 kernel on CPU.
        if "all" not in drawn:
          drawn["all"] = core.init(rng, input_size, jnp.float32)
        return drawn["all"][name].astype(self.param_dtype)
      return init_fn

    params = {name: self.param(name, entry(name)) for name in names}
    return _flax.step(core, params, carry, inputs, self.dtype, _promote)

  @nn.nowrap
  def initialize_carry(self, rng: Array | None, input_shape: tuple[int, ...]) -> Any:
    """Initial carry for inputs of shape ``input_shape = (*batch, I)``.

    Every leaf is ``carry_init(key, shape, dtype)`` with the keys Flax's cells
    use: ``c`` and ``h`` from ``jax.random.split(rng)`` (``gates`` of FGR from
    ``fold_in(rng, 2)``), ``rng`` itself for a GRU or Elman RNN. So with the
    same ``rng`` and ``carry_init`` the carry equals Flax's.

    Args:
      rng: PRNG key for ``carry_init``; ``None`` means ``jax.random.key(0)``
        (enough for the default zeros).
      input_shape: shape of one step's input.

    Returns:
      ``(c [*batch, H], h [*batch, R])`` (``(c, h, gates [*batch, 3H])`` for
      FGR), or ``h [*batch, H]`` for the other cells, of dtype ``carry_dtype``
      (``param_dtype`` when unset).
    """
    core = self.core
    rng = jax.random.key(0) if rng is None else rng

    def keys():
      if core.kind in XLSTM_CELLS:  # one key per state leaf
        yield from (jax.random.fold_in(rng, i) for i in range(len(core.initial_state())))
        return
      if core.kind != "lstm":
        yield rng
        return
      k_c, k_h = jax.random.split(rng)
      yield k_c
      yield k_h
      yield jax.random.fold_in(rng, 2)

    dtype = self.param_dtype if self.carry_dtype is None else self.carry_dtype
    return _flax.initial_carry(core, tuple(input_shape[:-1]), dtype, self.carry_init, keys())

  @property
  def num_feature_axes(self) -> int:
    """One feature axis: inputs are ``[..., I]``."""
    return 1


class LSTMCell(RecurrentCell):
  """A :class:`RecurrentCell` restricted to LSTM variants (default ``"vanilla"``):
  the drop-in for ``flax.linen.OptimizedLSTMCell`` and ``flax.linen.LSTMCell``.

  It takes their fields (``features``, ``gate_fn``, ``activation_fn``,
  ``kernel_init``, ``recurrent_kernel_init``, ``bias_init``, ``dtype``,
  ``param_dtype``, ``carry_init``; the initialisers as Flax callables or as
  the names of :mod:`lstm_jax.init`), carries ``(c, h)`` like them and, with
  params converted by :func:`lstm_jax.interop.from_flax_lstm`, gives their
  outputs and carries (float32 rounding) in ``nn.RNN``, ``nn.Bidirectional``,
  ``nn.scan`` and ``jax.lax.scan``::

      layer = nn.RNN(lnn.LSTMCell(64))     # was nn.RNN(nn.OptimizedLSTMCell(64))

  **Initialisation differs from Flax's in one default.** The kernels are
  drawn as Flax draws them (``lecun_normal`` per gate block ``[I, H]``,
  ``orthogonal`` per gate block ``[H, H]``), but the bias scheme defaults to
  ``bias_init="forget"`` with ``forget_bias=1.0``: the forget-gate bias
  starts at 1 (Gers et al. 2000; Jozefowicz et al. 2015), which keeps the
  memory from being wiped at the start of training, where Flax starts every
  bias at 0. Flax's initialisation is one argument away:
  ``LSTMCell(64, bias_init=nn.initializers.zeros_init())`` (Flax's own
  default value) or, equally, ``LSTMCell(64, forget_bias=0.0)``.

  The params are the fused core dict (``w_x [I, 4H]``, ``w_h [H, 4H]``,
  ``b [4H]``), not Flax's ``ii, ..., ho`` tree; a checkpoint of a Flax cell
  loads through :func:`lstm_jax.interop.from_flax_lstm` and
  :func:`to_variables`.

  Raises:
    ValueError: ``cell`` names a GRU, Elman RNN, minGRU or minLSTM (and see
      :class:`RecurrentCell`).
  """

  def __post_init__(self) -> None:
    require_lstm(self.cell)
    super().__post_init__()


def core_options(core: Cell) -> dict[str, Any]:
  """The :class:`RecurrentCell` attributes (and :mod:`lstm_jax.nnx` constructor
  options) that rebuild ``core``: ``features``, ``cell``, ``proj_size`` and the
  :data:`lstm_jax.cells.INIT_OPTIONS`."""
  return dict(features=core.hidden_size,
              cell=core.name if core.name in CELL_NAMES else core.variant,
              proj_size=core.proj_size, **core.init_options())


def _plain(tree: Any) -> Any:
  """Nested mappings (``FrozenDict`` included) as plain dicts."""
  if isinstance(tree, Mapping):
    return {k: _plain(v) for k, v in tree.items()}
  return tree


def to_core_params(variables: Mapping[str, Any]) -> Params:
  """The core params dict from the variables of a cell, an ``nn.RNN`` or an
  ``nn.Bidirectional`` of two ``nn.RNN``.

  Args:
    variables: ``{"params": ...}`` as returned by ``init``, or its
      ``"params"`` collection alone. Layouts understood:
      ``{w_x, w_h, ...}`` (a :class:`RecurrentCell`),
      ``{"cell": {...}}`` (``nn.RNN``), and
      ``{"forward_rnn": {"cell": ...}, "backward_rnn": {"cell": ...}}``
      (``nn.Bidirectional``), or ``{"forward_rnn": {"cell": ...}}`` alone
      (both directions built on one cell instance, which linen shares).

  Returns:
    ``params`` for :func:`lstm_jax.rnn` (``{"w_x", "w_h", ...}``), or
    ``{"fwd": params, "bwd": params}`` for :func:`lstm_jax.bidirectional_rnn`.

  Raises:
    ValueError: an unrecognised layout.
  """
  tree = _plain(variables)
  if "params" in tree and isinstance(tree["params"], dict):
    tree = tree["params"]
  if set(tree) == {"forward_rnn", "backward_rnn"}:
    return {"fwd": to_core_params(tree["forward_rnn"]),
            "bwd": to_core_params(tree["backward_rnn"])}
  if set(tree) == {"forward_rnn"}:  # One cell instance in both directions: shared.
    shared = to_core_params(tree["forward_rnn"])
    return {"fwd": shared, "bwd": shared}
  if set(tree) == {"cell"}:
    return to_core_params(tree["cell"])
  if "w_x" in tree and not any(isinstance(v, dict) for v in tree.values()):
    return tree
  raise ValueError(f"variables: expected the params of a RecurrentCell, an nn.RNN or an "
                   f"nn.Bidirectional, got entries {sorted(tree)}")


def to_variables(params: Params,
                 layout: Literal["cell", "rnn", "bidirectional"] = "cell") -> dict[str, Any]:
  """Linen variables holding core ``params``; the inverse of :func:`to_core_params`.

  Args:
    params: the core params dict (``{"fwd": ..., "bwd": ...}`` for
      ``layout="bidirectional"``).
    layout: ``"cell"`` for a bare :class:`RecurrentCell`, ``"rnn"`` for
      ``nn.RNN(cell)``, ``"bidirectional"`` for
      ``nn.Bidirectional(nn.RNN(cell), nn.RNN(cell))``.

  Returns:
    ``{"params": ...}`` to pass to ``module.apply``.

  Raises:
    ValueError: an unknown layout, or a bidirectional layout without ``fwd``
      and ``bwd`` entries.
  """
  checks.choice("layout", layout, _LAYOUTS)
  if layout == "cell":
    return {"params": dict(params)}
  if layout == "rnn":
    return {"params": {"cell": dict(params)}}
  if not (hasattr(params, "keys") and set(params) == {"fwd", "bwd"}):
    raise ValueError("params: layout='bidirectional' needs {'fwd': params, 'bwd': params}")
  return {"params": {"forward_rnn": {"cell": dict(params["fwd"])},
                     "backward_rnn": {"cell": dict(params["bwd"])}}}
