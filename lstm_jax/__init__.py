"""lstm_jax: long short-term memory networks as pure JAX functions.

Layers of the library (each imports only the ones before it)::

    checks    the argument checks every layer uses (one line: field, value, allowed)
    gates     the four parts of the cell: i, f, o gates, cell update, h = o * tanh(c)
    init      initialisers by name (forget bias, chrono, orthogonal, 1997 scheme)
    mincells  minGRU and minLSTM: one step, and the sequence as a parallel prefix scan
    cells     one step of an LSTM variant, GRU, Elman RNN, minGRU or minLSTM; Cell
              descriptions
    fused     a whole LSTM layer with a hand-written backward pass (the default
              where it applies; see sequence.IMPLS)
    sequence  lax.scan over time (or a linear cell's prefix scan): lengths, reverse,
              stacks, bidirectional; impl chosen in one place (resolve_impl)
    interop   parameters and carries from/to torch.nn.LSTM and Flax's LSTM cells
    linen     flax.linen cells over the same functions (drop-ins for Flax's LSTM cells)
    nnx       flax.nnx cells over the same functions
    devices   a function with a leading axis (seeds, or batch rows) split over
              devices; the placement of a run; how many CPU devices JAX makes
    models, training, config, runner, sweep, horizon, tasks   the experiment layer
    diagnostics  memory diagnostics on one batch (forget gates, cell norms,
              input gradients by distance)

``lstm_jax.linen``, ``lstm_jax.nnx``, ``devices`` and the
experiment modules are imported on first use, so ``import lstm_jax`` stays
light.
"""

import importlib

from lstm_jax import checks
from lstm_jax import fused
from lstm_jax import gates
from lstm_jax import init
from lstm_jax import interop
from lstm_jax import mincells
from lstm_jax.cells import (BASELINES, CELL_NAMES, MIN_CELLS, VARIANTS, Cell, LSTMGates,
                            LSTMState, LSTMVariant, elman_step, gru_step, lstm_gates,
                            lstm_gates_from_preactivations, lstm_preactivations, lstm_step,
                            make_cell)
from lstm_jax.mincells import mingru_step, minlstm_step
from lstm_jax.sequence import (Regularization, bidirectional_rnn, init_stack, rnn,
                               scan_layer, stacked_rnn)

__version__ = "0.1.0"

_LAZY = ("linen", "nnx", "devices", "models", "training", "config", "runner",
         "sweep", "horizon", "tasks", "diagnostics")


def __getattr__(name: str):
  if name in _LAZY:
    return importlib.import_module(f"lstm_jax.{name}")
  raise AttributeError(f"module 'lstm_jax' has no attribute {name!r}")

__all__ = [
    "BASELINES", "CELL_NAMES", "MIN_CELLS", "VARIANTS", "Cell", "LSTMGates", "LSTMState",
    "LSTMVariant", "Regularization", "bidirectional_rnn", "checks", "elman_step", "fused",
    "gates", "gru_step", "init", "interop", "init_stack", "lstm_gates",
    "lstm_gates_from_preactivations", "lstm_preactivations", "lstm_step", "make_cell",
    "mincells", "mingru_step", "minlstm_step", "rnn", "scan_layer", "stacked_rnn",
]
