"""H&S 1997 Exp 5: the multiplication problem. As Exp 4 (adding, 1997 form)
but values in U[0, 1], X1 := 1 if the first pair is marked, and the target is
X1 * X2; lengths drawn from T..T + T/10 (T = lag).

Command:
  python -m experiments.run --config=configs/hs5_multiplication.py --workdir=/tmp/hs5_multiplication
Expected (published, H&S 1997, Table 8): T = 100: 482,000 sequences with
n_seq = 140 (stop when fewer than 140 of the 2,000 most recent sequences have
absolute error > 0.04); 1,273,000 with n_seq = 13
(``--config.task_params.n_seq=13``, and raise the budget).
Model close to the paper: the 1997 cell (no forget gate), 8 cells, small uniform
weights (U[-0.1, 0.1]), staircase of negative input/output-gate biases
(bias_init "hs1997").
Changed from the paper: minibatches of 16 sequences and Adam (lr 1e-3, clip
1.0) instead of online SGD; linear output unit. The final evaluation uses
2,560 fresh sequences, the paper's test set size.
Measured with this config on a 2-core CPU (seed 0; not a published figure):
solved (n_seq = 140) after 1,064,800 sequences in 90 s.
Paper setup (``:paper``; ``configs.use_1997_setup``): the 1997 cell (no forget
gate) with the truncated gradient, cell input g = 4 sigmoid - 2, cell output h =
2 sigmoid - 1, 2 blocks of 2 cells, weights U[-0.1, 0.1], input-gate biases -3
and -6, zero output-gate biases, learning rate 0.1, sigmoid output units on
squared error, online learning (plain gradient descent, the weights changed
after every time step). These values are this project's reading of the paper's
Table 10 and Sec. 5; they could not be checked against the paper here. Measured
(configs/tables/paper1997.py, 5 seeds, 2-core CPU): 5 of 5 seeds, median 585,500
sequences (430,000-762,000; the paper: 482,000); 53-191 of 2,560 test sequences
wrong.
Tiny variants for tests: ``--config=configs/hs5_multiplication.py:quick`` and ``:paper_quick``.
"""

from configs import finish
from lstm_jax.config import default_config, use_1997_cell

# The 1997 setup of ``:paper`` (configs.use_1997_setup).
PAPER = dict(blocks=2, block_size=2, learning_rate=0.1, init_scale=0.1,
             gate_bias_steps=(3.0, 0.0))


def get_config(arg: str | None = None):
  c = default_config()
  c.task = "hs5_multiplication"
  c.lag = 100
  c.task_params.update(dict(n_seq=140))
  use_1997_cell(c, hidden_size=8)
  c.optimizer.learning_rate = 1e-3
  c.optimizer.grad_clip = 1.0
  c.batch_size = 16
  c.budget_sequences = 2_000_000
  c.eval_size = 2560
  c.log_every = 50
  c.eval_every = 500
  c.checkpoint_every = 2000
  return finish(c, arg, paper=PAPER, quick_lag=10)
