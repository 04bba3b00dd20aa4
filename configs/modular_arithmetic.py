"""Modular arithmetic with length extrapolation (Delétang et al. 2023, "modular
arithmetic (simple)"; the length split of xLSTM, Beck et al. 2024): numbers
0..4 and operators + - * alternate; at the last step (a number) the net must
give the expression's value mod 5, with * before + and -. Trained on lengths
3..40 (odd: an even drawn length n becomes n - 1; lag = 40), evaluated on
held-out expressions of lengths 40..256 (39..255 once odd): the criterion
and the final metrics see only these longer ones (``task.held_out``).

Command:
  python -m experiments.run --config=configs/modular_arithmetic.py --workdir=/tmp/modarith
Expected (published, qualitative): Delétang et al. 2023 find that LSTMs solve
the regular tasks, modular arithmetic (simple) among them, and generalise to
longer inputs, while Transformers do not. Chance is 20%;
``normalized_accuracy`` rescales accuracy to 0 (chance) .. 1. The criterion
(accuracy >= 0.99 on 1,024 held-out expressions of lengths 40..256) is this
project's.
Model: modern LSTM (forget gate, forget bias 1), 64 units, LeCun-normal input
and orthogonal recurrent weights; other cells with ``--config.model.cell``.
Changed from the sources: Adam with lr 1e-3, gradient clipping 1.0,
minibatches of 32; lengths uniform over each range.
Tiny variant for tests: ``--config=configs/modular_arithmetic.py:quick``
(train 3..6, test 6..12).
"""

from configs import modern_benchmark


def get_config(arg: str | None = None):
  return modern_benchmark("modular_arithmetic", 40, arg, hidden_size=64,
                          budget_sequences=1_000_000, quick_lag=6,
                          task_params=dict(train_min=3, test_min=40, test_max=256),
                          quick_params=dict(train_min=3, test_min=6, test_max=12))
