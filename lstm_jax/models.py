"""Sequence models for experiments: a stack of recurrent layers and a linear readout.

``y_t = h^{(L)}_t W_out + b_out`` where ``h^{(L)}`` is the output of the top
layer of a :func:`lstm_jax.sequence.stacked_rnn` stack, for every step ``t``.
Tasks decide which steps carry loss (``lstm_jax.tasks``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from lstm_jax import init as initializers
from lstm_jax.cells import Cell, make_cell
from lstm_jax.sequence import Remat, check_impl, check_remat, init_stack, scan_layer

Array = jax.Array
Params = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class SequenceModel:
  """A hashable model description (a static argument of jitted code).

  Attributes:
    cell: the recurrent cell of every layer.
    num_layers: stack depth (>= 1).
    output_size: readout width ``O``.
  """
  cell: Cell
  num_layers: int
  output_size: int

  def __post_init__(self):
    for field in ("num_layers", "output_size"):
      value = getattr(self, field)
      if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{field}={value!r}: expected an integer >= 1")

  def init(self, key: Array, input_size: int) -> Params:
    """Params ``{"rnn": [layer, ...], "readout": {"w": [R, O], "b": [O]}}``."""
    k_rnn, k_out = jax.random.split(key)
    return {
        "rnn": init_stack(self.cell, k_rnn, input_size, self.num_layers),
        "readout": {
            "w": initializers.gate_kernel("lecun_normal", k_out, self.cell.output_size,
                                          self.output_size, 1),
            "b": jnp.zeros((self.output_size,), jnp.float32),
        },
    }

  def apply(self, params: Params, inputs: Array, lengths: Array | None = None,
            *, remat: Remat = False, truncate: int = 0, impl: str = "auto") -> Array:
    """Outputs ``[B, T, O]`` for inputs ``[B, T, I]`` and lengths ``[B]``.

    Jit-able and vmap-able; parameter shapes are checked at trace time. The
    readout runs inside the top layer's scan, so only ``[T, B, O]`` outputs
    are stored (with ``remat="sqrt"``, memory is ``O(sqrt(T))`` plus inputs
    and outputs). ``truncate = k > 0`` cuts the gradient through the
    recurrent state every ``k`` steps (truncated BPTT). ``impl`` chooses how
    LSTM layers are differentiated (:data:`lstm_jax.sequence.IMPLS`). Outputs at padded steps
    are the readout bias (the recurrent output there is zero); tasks mask them
    out.
    """
    check_remat(remat)
    check_impl(impl)
    readout = params["readout"]
    h = jnp.swapaxes(inputs, 0, 1)
    batch = h.shape[1]
    for k, layer in enumerate(params["rnn"]):
      try:
        self.cell.check_params(layer, h.shape[-1])
      except ValueError as err:
        raise ValueError(f"params['rnn'][{k}]: {err}") from None
      dtype = jnp.promote_types(jnp.float32, layer["w_h"].dtype)
      top = k == len(params["rnn"]) - 1
      emit = (lambda y: y @ readout["w"] + readout["b"]) if top else None
      h, _ = scan_layer(self.cell, layer, h, self.cell.initial_state(batch, dtype), lengths,
                        remat=remat, emit=emit, truncate=truncate, impl=impl)
    return jnp.swapaxes(h, 0, 1)


def make_model(cell: str, hidden_size: int, output_size: int, *, num_layers: int = 1,
               proj_size: int = 0, **cell_options: Any) -> SequenceModel:
  """Build a :class:`SequenceModel` from a cell name (see :func:`lstm_jax.make_cell`)."""
  return SequenceModel(make_cell(cell, hidden_size, proj_size=proj_size, **cell_options),
                       num_layers, output_size)
