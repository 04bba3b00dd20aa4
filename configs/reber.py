"""Embedded Reber grammar (H&S 1997, Exp 1): next-symbol prediction; the second
symbol (T or P) must be remembered until the second-to-last one.

Command:
  python -m experiments.run --config=configs/reber.py --workdir=/tmp/reber
Expected (published, H&S 1997, Table 1): LSTM solved 100% of trials, 8,440
training sequences at best.
Model close to the paper: the 1997 cell (no forget gate), a few cells (8 here),
small uniform weights (U[-0.1, 0.1]) and the staircase of negative input- and
output-gate biases (bias_init "hs1997").
Changed from the paper: minibatches of 16 freshly drawn strings and Adam (lr
1e-2, clip 1.0) instead of online SGD on a fixed 256-string training set; the
rule is checked on 512 fresh strings (see lstm_jax/tasks/reber.py). Not a lag
task: lag is fixed at 9.
Measured with this config on a 2-core CPU (seed 0; not a published figure):
solved after 41,600 sequences in 7 s.
Tiny variant for tests: ``--config=configs/reber.py:quick``.
"""

from lstm_jax.config import default_config, shrink_for_tests, use_1997_cell


def get_config(arg: str | None = None):
  c = default_config()
  c.task = "reber"
  c.lag = 9
  use_1997_cell(c, hidden_size=8)
  c.optimizer.learning_rate = 1e-2
  c.optimizer.grad_clip = 1.0
  c.batch_size = 16
  c.budget_sequences = 200_000
  c.eval_size = 512
  c.log_every = 50
  c.eval_every = 100
  c.checkpoint_every = 2000
  if arg == "quick":
    shrink_for_tests(c)
  return c
