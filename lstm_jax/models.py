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
from lstm_jax.sequence import init_stack, stacked_rnn

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
            *, remat: bool = False) -> Array:
    """Outputs ``[B, T, O]`` for inputs ``[B, T, I]`` and lengths ``[B]``.

    Jit-able and vmap-able; shapes are validated at trace time.
    Outputs at padded steps are the readout bias (the recurrent output there is
    zero); tasks mask them out.
    """
    h, _ = stacked_rnn(self.cell, params["rnn"], inputs, lengths=lengths, remat=remat)
    return h @ params["readout"]["w"] + params["readout"]["b"]


def make_model(cell: str, hidden_size: int, output_size: int, *, num_layers: int = 1,
               proj_size: int = 0, **cell_options: Any) -> SequenceModel:
  """Build a :class:`SequenceModel` from a cell name (see :func:`lstm_jax.make_cell`)."""
  return SequenceModel(make_cell(cell, hidden_size, proj_size=proj_size, **cell_options),
                       num_layers, output_size)
