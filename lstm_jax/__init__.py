"""lstm_jax: long short-term memory networks as pure JAX functions.

Layers of the library (each imports only the ones before it)::

    gates     the four parts of the cell: i, f, o gates, cell update, h = o * tanh(c)
    cells     one step of an LSTM variant, GRU or Elman RNN; Cell descriptions
    init      initialisers by name (forget bias, chrono, orthogonal, 1997 scheme)
    sequence  lax.scan over time: lengths, reverse, stacks, bidirectional
    linen     flax.linen cells over the same functions
    nnx       flax.nnx cells over the same functions
    interop   parameters from/to torch.nn.LSTM and flax.linen LSTM cells
"""

from lstm_jax import gates
from lstm_jax import init
from lstm_jax.cells import (BASELINES, CELL_NAMES, VARIANTS, Cell, LSTMGates, LSTMState,
                            LSTMVariant, elman_step, gru_step, lstm_gates, lstm_step,
                            make_cell)
from lstm_jax.sequence import (bidirectional_rnn, init_stack, rnn, scan_layer,
                               stacked_rnn)

__version__ = "0.1.0"

__all__ = [
    "BASELINES", "CELL_NAMES", "VARIANTS", "Cell", "LSTMGates", "LSTMState", "LSTMVariant",
    "bidirectional_rnn", "elman_step", "gates", "gru_step", "init", "init_stack",
    "lstm_gates", "lstm_step", "make_cell", "rnn", "scan_layer", "stacked_rnn",
]
