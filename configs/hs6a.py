"""H&S 1997 Exp 6a: two markers X/Y at positions t1 in [10, 20] and t2 in [50, 60] of a
sequence of length 100..110 over E, B, a..d; the class (XX, XY, YX, YY) is
their order.

Command:
  python -m experiments.run --config=configs/hs6a.py --workdir=/tmp/hs6a
Expected (published, H&S 1997, Table 9): 31,390 sequences (stop when the mean
training error is < 0.1 and the 2,000 most recent sequences were all correct).
Model close to the paper: the 1997 cell (no forget gate), 8 cells, small uniform
weights (U[-0.1, 0.1]), staircase of negative input/output-gate biases
(bias_init "hs1997").
Changed from the paper: minibatches of 16 sequences and Adam (lr 1e-3, clip
1.0) instead of online SGD; softmax outputs with cross-entropy. lag is fixed
at 100 in this 1997 form (the quick variant too); configs/temporal_order.py
varies it.
Measured with this config on a 2-core CPU (seed 0; not a published figure):
solved after 129,600 sequences in 14 s.
Paper setup (``:paper``; ``configs.use_1997_setup``): the 1997 cell (no forget
gate) with the truncated gradient, cell input g = 4 sigmoid - 2, cell output h =
2 sigmoid - 1, 2 blocks of 2 cells, weights U[-0.1, 0.1], input-gate biases -2
and -4, zero output-gate biases, learning rate 0.5, sigmoid output units on
squared error, online learning (plain gradient descent, the weights changed
after every time step). These values are this project's reading of the paper's
Table 10 and Sec. 5; they could not be checked against the paper here. Measured
(configs/tables/paper1997.py, 5 seeds, 2-core CPU): 5 of 5 seeds, median 17,000
sequences (12,000-42,500; the paper: 31,390).
Tiny variants for tests: ``--config=configs/hs6a.py:quick`` and ``:paper_quick``.
"""

from configs import finish
from lstm_jax.config import default_config, use_1997_cell

# The 1997 setup of ``:paper`` (configs.use_1997_setup).
PAPER = dict(blocks=2, block_size=2, learning_rate=0.5, init_scale=0.1, gate_bias_steps=(2.0, 0.0))


def get_config(arg: str | None = None):
  c = default_config()
  c.task = "hs6a"
  c.lag = 100
  use_1997_cell(c, hidden_size=8)
  c.optimizer.learning_rate = 1e-3
  c.optimizer.grad_clip = 1.0
  c.batch_size = 16
  c.budget_sequences = 300_000
  c.eval_size = 256
  c.log_every = 50
  c.eval_every = 500
  c.checkpoint_every = 2000
  return finish(c, arg, paper=PAPER)
