"""Multi-query associative recall, MQAR (Arora et al. 2023, "Zoology"): 8
key-value pairs (keys and values from disjoint halves of a vocabulary of 64,
one-hot), then a query region where each key is shown once at a random step;
at each query the net must output the key's value. Length T = lag = 64.
Cross-entropy on the query steps only.

Command:
  python -m experiments.run --config=configs/mqar.py --workdir=/tmp/mqar
Expected (published, qualitative): Arora et al. 2023 find that recurrent
models of fixed state size fail once the pairs exceed what their state can
hold, while attention solves MQAR; a 2025 study ("Revisiting associative
recall in modern recurrent models") finds recurrent models succeed only in a
narrow learning-rate window, so sweep the learning rate per model and length
(``--config.optimizer.learning_rate=3e-3``). A memoryless predictor has loss
ln 32 = 3.47 and query accuracy 1/32. The criterion (query accuracy >= 0.99
on 1,024 held-out sequences) is this project's. Harder: more pairs and longer
sequences (``--config.task_params.num_pairs=16 --config.lag=128``).
Model: modern LSTM (forget gate, forget bias 1), 128 units, LeCun-normal input
and orthogonal recurrent weights; other cells with ``--config.model.cell``
(e.g. ``gru``, ``mingru``, ``minlstm``).
Changed from Zoology: one-hot inputs instead of an embedded vocabulary of
8,192, the answer due at the query step itself, every key queried once at
uniform positions; Adam with lr 1e-3, gradient clipping 1.0, minibatches of 32.
Tiny variant for tests: ``--config=configs/mqar.py:quick`` (T = 12, 2 pairs
from a vocabulary of 8).
"""

from configs import modern_benchmark


def get_config(arg: str | None = None):
  return modern_benchmark("mqar", 64, arg, hidden_size=128,
                          budget_sequences=2_000_000, quick_lag=12,
                          task_params=dict(num_pairs=8, vocab_size=64),
                          quick_params=dict(num_pairs=2, vocab_size=8))
