"""``flax.linen`` cells over the pure functions of :mod:`lstm_jax.cells`.

A :class:`RecurrentCell` is a thin :class:`flax.linen.RNNCellBase`: it builds a
:class:`lstm_jax.Cell` with :func:`lstm_jax.make_cell` from its attributes,
creates one flax param per entry of ``cell.init(key, I)`` (same names and
shapes: ``w_x [I, G*H]``, ``w_h [R, G*H]``, ``b [G*H]``, ...), and calls
``cell.step``. So it works with ``flax.linen.RNN`` and
``flax.linen.Bidirectional``, and the params a cell owns *are* the core params
dict::

    import jax, jax.numpy as jnp
    import flax.linen as nn
    import lstm_jax
    from lstm_jax import linen as lnn

    xs = jnp.ones((2, 5, 3))                                # [B, T, I]
    layer = nn.RNN(lnn.RecurrentCell(features=4, cell="peephole"))
    variables = layer.init(jax.random.key(0), xs)
    carry, ys = layer.apply(variables, xs, return_carry=True)  # ys: [B, T, 4]

    params = lnn.to_core_params(variables)                  # the core params dict
    ys2, carry2 = lstm_jax.rnn(layer.cell.core, params, xs)  # same numbers

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

from typing import Any, Literal, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from lstm_jax.cells import CELL_NAMES, Cell, LSTMVariant, Params, make_cell, require_lstm

Array = jax.Array
Dtype = Any

_LAYOUTS = ("cell", "rnn", "bidirectional")


class RecurrentCell(nn.RNNCellBase):
  """Any :mod:`lstm_jax` cell (an LSTM variant, ``"gru"`` or ``"elman"``) as a linen cell.

  ``__call__(carry, x [..., I]) -> (carry, y [..., R])`` is
  ``self.core.step(params, carry, x)`` with ``params`` the module's params:
  one flax param per entry of ``self.core.init(key, I)`` (same names and
  shapes; see :mod:`lstm_jax.cells`), all from one ``core.init`` call with the
  key flax hands the first of them, cast to ``param_dtype``.
  The carry is :class:`lstm_jax.LSTMState` ``(h [..., R], c [..., H], gates)``
  for an LSTM and ``h [..., H]`` for a GRU or Elman RNN.

  Attributes:
    features: hidden size ``H``.
    cell: one of :data:`lstm_jax.CELL_NAMES`, or an :class:`lstm_jax.LSTMVariant`.
    proj_size: LSTMP projection size ``P < H`` (``R = P``); 0 for none.
    kernel_init, recurrent_init: names from :data:`lstm_jax.init.KERNEL_INITS`.
    bias_init: LSTM bias scheme from :data:`lstm_jax.init.BIAS_INITS`.
    forget_bias: forget-gate bias of the ``forget`` and ``hs1997`` schemes.
    chrono_t_max: ``T_max`` of the ``chrono`` scheme.
    init_scale: half-width of the ``uniform`` kernel initialiser.
    use_bias: whether the cell has biases.
    param_dtype: dtype of the params (drawn in float32, then cast).
    carry_dtype: dtype of the carry made by :meth:`initialize_carry`.

  Raises:
    ValueError: at construction, for an unknown ``cell`` name (the message
      lists the allowed names) or incompatible options (from
      :func:`lstm_jax.make_cell`).
  """
  features: int
  cell: str | LSTMVariant = "vanilla"
  proj_size: int = 0
  kernel_init: str = "lecun_normal"
  recurrent_init: str = "orthogonal"
  bias_init: str = "forget"
  forget_bias: float = 1.0
  chrono_t_max: float | None = None
  init_scale: float = 0.1
  use_bias: bool = True
  param_dtype: Dtype = jnp.float32
  carry_dtype: Dtype = jnp.float32

  def __post_init__(self) -> None:
    _ = self.core  # Validate the options (make_cell) at construction.
    super().__post_init__()

  @property
  def core(self) -> Cell:
    """The :class:`lstm_jax.Cell` these attributes describe (hashable, static)."""
    return make_cell(self.cell, self.features, proj_size=self.proj_size,
                     kernel_init=self.kernel_init, recurrent_init=self.recurrent_init,
                     bias_init=self.bias_init, forget_bias=self.forget_bias,
                     chrono_t_max=self.chrono_t_max, init_scale=self.init_scale,
                     use_bias=self.use_bias)

  @classmethod
  def from_core(cls, core: Cell, **kwargs: Any) -> RecurrentCell:
    """The linen cell with every option of ``core`` (``kwargs``: other attributes,
    e.g. ``param_dtype``, ``carry_dtype``, ``name``)."""
    return cls(**core_options(core), **kwargs)

  @nn.compact
  def __call__(self, carry: Any, inputs: Array) -> tuple[Any, Array]:
    """One step.

    Args:
      carry: from :meth:`initialize_carry` (or a previous step).
      inputs: ``[..., I]`` input of this step.

    Returns:
      ``(new_carry, y)`` with ``y: [..., R]``.
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
    return core.step(params, carry, inputs)

  @nn.nowrap
  def initialize_carry(self, rng: Array, input_shape: tuple[int, ...]) -> Any:
    """Zero carry for inputs of shape ``input_shape = (*batch, I)``.

    Args:
      rng: unused (the carry is zero); kept for the linen API.
      input_shape: shape of one step's input.

    Returns:
      :class:`lstm_jax.LSTMState` with ``h [*batch, R]``, ``c [*batch, H]``
      (and ``gates [*batch, 3H]`` for FGR), or ``[*batch, H]`` for GRU/Elman,
      of dtype ``carry_dtype``.
    """
    del rng
    return self.core.initial_state(tuple(input_shape[:-1]), self.carry_dtype)

  @property
  def num_feature_axes(self) -> int:
    """One feature axis: inputs are ``[..., I]``."""
    return 1


class LSTMCell(RecurrentCell):
  """A :class:`RecurrentCell` restricted to LSTM variants (default ``"vanilla"``).

  Raises:
    ValueError: ``cell`` names a GRU or Elman RNN.
  """

  def __post_init__(self) -> None:
    require_lstm(self.cell)
    super().__post_init__()


def core_options(core: Cell) -> dict[str, Any]:
  """The :class:`RecurrentCell` attributes (and :mod:`lstm_jax.nnx` constructor
  options) that rebuild ``core``: ``features``, ``cell``, ``proj_size``, the
  initialiser options and ``use_bias``."""
  return dict(features=core.hidden_size,
              cell=core.name if core.name in CELL_NAMES else core.variant,
              proj_size=core.proj_size, kernel_init=core.kernel_init,
              recurrent_init=core.recurrent_init, bias_init=core.bias_init,
              forget_bias=core.forget_bias, chrono_t_max=core.chrono_t_max,
              init_scale=core.init_scale, use_bias=core.use_bias)


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
  if layout not in _LAYOUTS:
    raise ValueError(f"layout={layout!r} is not a known name; allowed: {', '.join(_LAYOUTS)}")
  if layout == "cell":
    return {"params": dict(params)}
  if layout == "rnn":
    return {"params": {"cell": dict(params)}}
  if not (hasattr(params, "keys") and set(params) == {"fwd", "bwd"}):
    raise ValueError("params: layout='bidirectional' needs {'fwd': params, 'bwd': params}")
  return {"params": {"forward_rnn": {"cell": dict(params["fwd"])},
                     "backward_rnn": {"cell": dict(params["bwd"])}}}
