"""What the Flax cells of :mod:`lstm_jax.linen` and :mod:`lstm_jax.nnx` share.

Flax's constructor fields mapped onto a :class:`lstm_jax.Cell`
(:func:`make_core`), the carry Flax sees (:func:`to_core_carry`,
:func:`from_core_carry`, :func:`initial_carry`) and one step with a
computation dtype (:func:`step`).

Carry seen from Flax: ``(c [..., H], h [..., R])`` for an LSTM, as
``flax.linen.LSTMCell`` has it; ``(c, h, gates [..., 3H])`` for full gate
recurrence (FGR, which Flax has no cell for); ``h [..., H]`` for a GRU,
Elman RNN, minGRU or minLSTM. A carry given as an :class:`lstm_jax.LSTMState`
(what :func:`lstm_jax.rnn` returns) is accepted too and comes back as one.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterator, Mapping

import jax
import jax.numpy as jnp

from lstm_jax import checks
from lstm_jax import gates as G
from lstm_jax.cells import (BASELINES, CELL_NAMES, MIN_CELLS, VARIANTS, XLSTM_CELLS, Cell,
                            LSTMState,
                            LSTMVariant, Params, lstm_gates_from_preactivations,
                            lstm_preactivations, make_cell)
from lstm_jax.interop import carry_from_flax, carry_to_flax

Array = jax.Array
Dtype = Any
Initializer = Callable[..., Array]
Promote = Callable[..., Any]
"""Flax's ``promote_dtype`` as NNX has it: ``(arrays, *, dtype) -> arrays``."""

_SIGMOIDS: tuple[Callable[..., Any], ...] = (jax.nn.sigmoid, jax.scipy.special.expit)
_ACTIVATIONS: tuple[tuple[Callable[..., Any], str], ...] = (
    (jnp.tanh, "tanh"), (jax.nn.identity, "identity"), (G.identity, "identity"))
GATE_FN_ALLOWED = ("jax.nn.sigmoid (= flax.linen.sigmoid = flax.nnx.sigmoid) or 'sigmoid'; "
                   "every lstm_jax gate is a sigmoid")
ACTIVATION_FN_ALLOWED = ("jnp.tanh (= flax.linen.tanh = flax.nnx.tanh), jax.nn.identity, "
                         "'tanh', 'identity', or None for the cell's own")


class _Shown(str):
  """A function's name that ``checks.fail`` prints without quotes."""

  def __repr__(self) -> str:
    return str(self)


def _shown(fn: Any) -> Any:
  return fn if isinstance(fn, str) else _Shown(getattr(fn, "__name__", None) or repr(fn))


def check_gate_fn(gate_fn: Any) -> None:
  """Raise ValueError unless ``gate_fn`` is the logistic sigmoid."""
  if gate_fn == "sigmoid" or any(gate_fn is f for f in _SIGMOIDS):
    return
  checks.fail("gate_fn", _shown(gate_fn), "allowed: " + GATE_FN_ALLOWED)


def activation_name(activation_fn: Any) -> str | None:
  """The :data:`lstm_jax.gates.ACTIVATIONS` name of ``activation_fn`` (``None``: unset).

  Raises:
    ValueError: a function without counterpart.
  """
  if activation_fn is None:
    return None
  if isinstance(activation_fn, str) and activation_fn in G.ACTIVATIONS:
    return activation_fn
  for fn, name in _ACTIVATIONS:
    if activation_fn is fn:
      return name
  checks.fail("activation_fn", _shown(activation_fn), "allowed: " + ACTIVATION_FN_ALLOWED)
  return None  # unreachable


def _with_activation(cell: str | LSTMVariant, activation_fn: Any) -> str | LSTMVariant:
  """``cell`` with Flax's ``activation_fn`` (candidate and output) applied."""
  name = activation_name(activation_fn)
  if name is None:
    return cell
  if isinstance(cell, str):
    checks.choice("cell", cell, CELL_NAMES)
    if cell in MIN_CELLS or cell == "mlstm":
      checks.fail("activation_fn", _shown(activation_fn),
                  f"cell={cell!r} has no activation (its candidate is linear); allowed: None")
    if cell in BASELINES:
      if name != "tanh":
        checks.fail("activation_fn", _shown(activation_fn),
                    f"cell={cell!r} has a fixed tanh; allowed: jnp.tanh or None")
      return cell
  variant = VARIANTS[cell] if isinstance(cell, str) else cell
  acts = (variant.input_activation, variant.output_activation)
  if acts == (name, name):
    return cell
  if acts != ("tanh", "tanh"):
    checks.fail("activation_fn", _shown(activation_fn),
                f"cell={cell!r} sets input_activation={acts[0]!r} and output_activation="
                f"{acts[1]!r}; allowed: None (keep them) or a matching function")
  return dataclasses.replace(variant, input_activation=name, output_activation=name)


def make_core(cell: str | LSTMVariant, features: int, *, proj_size: int,
              init_options: Mapping[str, Any], gate_fn: Any = jax.nn.sigmoid,
              activation_fn: Any = None, recurrent_kernel_init: Any = None) -> Cell:
  """The :class:`lstm_jax.Cell` of a Flax-facing cell.

  Args:
    cell: a name from :data:`lstm_jax.CELL_NAMES` or an :class:`lstm_jax.LSTMVariant`.
    features: hidden size ``H``.
    proj_size: LSTMP projection size (0 for none).
    init_options: the :data:`lstm_jax.cells.INIT_OPTIONS` values.
    gate_fn: Flax's gate activation; must be the sigmoid.
    activation_fn: Flax's activation of the candidate and of the output
      (``tanh`` or ``identity``), or ``None`` for the variant's own.
    recurrent_kernel_init: Flax's name for ``recurrent_init``; ``None`` leaves
      ``init_options["recurrent_init"]``.

  Raises:
    ValueError: a function without counterpart, both ``recurrent_init`` and
      ``recurrent_kernel_init`` given, or options :func:`lstm_jax.make_cell`
      rejects.
  """
  check_gate_fn(gate_fn)
  options = dict(init_options)
  if recurrent_kernel_init is not None:
    if options.get("recurrent_init", "orthogonal") != "orthogonal":
      checks.fail("recurrent_kernel_init", _shown(recurrent_kernel_init),
                  f"it is Flax's name for recurrent_init={options['recurrent_init']!r}; "
                  "give one of the two")
    options["recurrent_init"] = recurrent_kernel_init
  return make_cell(_with_activation(cell, activation_fn), features, proj_size=proj_size,
                   **options)


# ----------------------------------------------------------------------------
# Carry.


def to_core_carry(core: Cell, carry: Any) -> Any:
  """Flax's carry -> the core's (``LSTMState`` for an LSTM; ``h`` otherwise).

  Raises:
    ValueError: an LSTM carry that is not ``(c, h)`` (``(c, h, gates)`` for FGR).
  """
  if core.kind != "lstm" or isinstance(carry, LSTMState):
    return carry
  want = 3 if core.variant.gate_recurrence else 2
  if not isinstance(carry, (tuple, list)) or len(carry) != want:
    size = f" of {len(carry)}" if isinstance(carry, (tuple, list)) else ""
    raise ValueError(f"carry: expected {'(c, h, gates)' if want == 3 else '(c, h)'} for "
                     f"{core.describe()}, got {type(carry).__name__}{size}")
  return carry_from_flax(carry)


def from_core_carry(core: Cell, state: Any, like: Any) -> Any:
  """The core's carry -> Flax's, or an ``LSTMState`` when ``like`` is one."""
  if core.kind != "lstm" or isinstance(like, LSTMState):
    return state
  return carry_to_flax(state)


def initial_carry(core: Cell, batch_shape: tuple[int, ...], dtype: Dtype,
                  carry_init: Initializer, keys: Iterator[Any]) -> Any:
  """Flax's initial carry, every leaf ``carry_init(key, shape, dtype)``.

  Args:
    core: the cell.
    batch_shape: ``(*batch)``.
    dtype: carry dtype.
    carry_init: initialiser ``(key, shape, dtype) -> array``.
    keys: one key per leaf, taken in the order c, h, gates (LSTM) or h (GRU,
      Elman, minGRU, minLSTM) -- Flax's order.

  Returns:
    ``(c [*batch, H], h [*batch, R])``, ``(c, h, gates [*batch, 3H])`` for
    FGR, the core's state tuple for an sLSTM or mLSTM (leaves in field order),
    or ``h [*batch, H]``.
  """
  shape = lambda n: tuple(batch_shape) + (n,)
  if core.kind in XLSTM_CELLS:  # the core's state tuple, leaf by leaf in field order
    zeros = core.initial_state(tuple(batch_shape), dtype)
    return type(zeros)(*(carry_init(next(keys), leaf.shape, dtype) for leaf in zeros))
  if core.kind != "lstm":
    return carry_init(next(keys), shape(core.hidden_size), dtype)
  c = carry_init(next(keys), shape(core.hidden_size), dtype)
  h = carry_init(next(keys), shape(core.output_size), dtype)
  if core.variant.gate_recurrence:
    return c, h, carry_init(next(keys), shape(3 * core.hidden_size), dtype)
  return c, h


# ----------------------------------------------------------------------------
# Step.


def step(core: Cell, params: Params, carry: Any, x: Array, dtype: Dtype | None,
         promote: Promote) -> tuple[Any, Array]:
  """One step with Flax's carry and Flax's dtype rule.

  ``x`` and the params go through ``promote((x, *params), dtype=dtype)``
  (Flax's ``promote_dtype``). With a computation ``dtype``, an LSTM's recurrent
  matmul also takes ``h`` in ``dtype`` (as Flax's dense layers cast their
  input), while the cell update and the output mix in the carry's dtype, and
  the new carry keeps the carry's dtypes.

  Args:
    core: the cell.
    params: the core params dict.
    carry: Flax's carry (module docstring) or an ``LSTMState``.
    x: ``[..., I]`` input.
    dtype: computation dtype, or ``None`` (inferred from ``x`` and params).
    promote: ``(arrays, *, dtype) -> arrays`` of the same length.

  Returns:
    ``(new_carry, y [..., R])``, the carry in the structure it came in.
  """
  state = to_core_carry(core, carry)
  names = tuple(params)
  x, *values = promote((x, *(params[n] for n in names)), dtype=dtype)
  params = dict(zip(names, values))
  if core.kind == "lstm" and dtype is not None:
    v = core.variant
    z = lstm_preactivations(params, state._replace(h=state.h.astype(dtype)), x, v)
    out = lstm_gates_from_preactivations(params, state, z, v)
    gates = None
    if v.gate_recurrence:
      gates = jnp.concatenate([out.i, out.f, out.o], axis=-1).astype(state.gates.dtype)
    new, y = LSTMState(h=out.h, c=out.c, gates=gates), out.h
  else:
    new, y = core.step(params, state, x)
  return from_core_carry(core, new, carry), y
