"""Parity with length extrapolation (Delétang et al. 2023, "Neural Networks
and the Chomsky Hierarchy"; xLSTM's setup, Beck et al. 2024): a string of
random bits; at its last step the net must say whether the number of 1s is
odd. Trained on lengths 3..40 (lag = 40, the longest), evaluated on held-out
strings of lengths 40..256: the criterion and the final metrics see only
these longer strings (``task.held_out``).

Command:
  python -m experiments.run --config=configs/parity.py --workdir=/tmp/parity
Expected (published, qualitative): Delétang et al. 2023 find that LSTMs solve
the regular tasks, parity among them, and generalise to longer strings,
while Transformers do not; xLSTM (Beck et al. 2024) finds parity is where
sLSTM's recurrent state tracking helps and parallel-scan models (Mamba, the
linear recurrences of minGRU / minLSTM: ``--config.model.cell=mingru``) fail
to extrapolate. Chance is 50%; ``normalized_accuracy`` rescales accuracy to
0 (chance) .. 1 (xLSTM's scale). The criterion (accuracy >= 0.99 on 1,024
held-out strings of lengths 40..256) is this project's.
Model: modern LSTM (forget gate, forget bias 1), 64 units, LeCun-normal input
and orthogonal recurrent weights.
Changed from the sources: Adam with lr 1e-3, gradient clipping 1.0,
minibatches of 32; lengths uniform over each range (Delétang et al. evaluate
every test length separately and average, the same in expectation).
Tiny variant for tests: ``--config=configs/parity.py:quick`` (train 3..6,
test 6..12).
"""

from configs import modern_benchmark


def get_config(arg: str | None = None):
  return modern_benchmark("parity", 40, arg, hidden_size=64,
                          budget_sequences=1_000_000, quick_lag=6,
                          task_params=dict(train_min=3, test_min=40, test_max=256),
                          quick_params=dict(train_min=3, test_min=6, test_max=12))
