"""Experiment configs (``get_config(arg)`` files for ``--config=configs/<name>.py[:arg]``)
and the settings they share."""

import ml_collections

from lstm_jax.config import default_config, shrink_for_tests, use_1997_cell

ARGS = ("quick", "paper", "paper_quick")
"""What ``--config=configs/<name>.py:<arg>`` selects: the modern setup (no
argument), the 1997 setup (``paper``), or a tiny variant of either for tests."""


def use_1997_setup(config: ml_collections.ConfigDict, *, blocks: int, block_size: int,
                   learning_rate: float, init_scale: float = 0.1,
                   input_to_output: bool = False, output_gate: bool = True,
                   input_activation: str = "hs1997_input",
                   output_activation: str = "hs1997_output",
                   gate_bias_steps: tuple[float, float] = (1.0, 1.0),
                   use_bias: bool = True, update_every: str = "step") -> None:
  """Set ``config`` to Hochreiter & Schmidhuber's 1997 training setup
  (TASKS.md, "Reproducing the 1997 setup faithfully"): the 1997 cell (no
  forget gate; no output gate with ``output_gate=False``) in ``blocks``
  memory-cell blocks of ``block_size`` cells that share their gates, its
  squashing functions (by default cell input ``g = 4 sigmoid - 2`` in [-2, 2],
  cell output ``h = 2 sigmoid - 1`` in [-1, 1]), the truncated gradient,
  weights ``U[-init_scale, init_scale]`` (the readout too), the staircase of
  negative gate biases over the blocks (block ``k``: ``-(k+1)`` times
  ``gate_bias_steps`` for the input and the output gate; ``bias_init
  "hs1997"``), optional input-to-output connections, sigmoid output units on
  squared error, and online learning: one sequence at a time, plain
  gradient descent at ``learning_rate``, no clipping, the weights changed
  after every time step (``update_every="step"``, lstm_jax.online; on tasks
  whose error comes only at the end this is one update per sequence).

  Args:
    config: an experiment config (changed in place).
    blocks, block_size: memory-cell blocks and cells per block.
    learning_rate: the online learning rate.
    init_scale: half-width of the uniform weight initialisation.
    input_to_output: direct input-to-output connections.
    output_gate: whether the cells have output gates.
    input_activation, output_activation: names from ``lstm_jax.gates.ACTIVATIONS``.
    gate_bias_steps: ``(input, output)`` steps of the bias staircase.
    use_bias: whether the net has bias weights.
    update_every: ``"step"`` (the weights change after every time step) or
      ``"sequence"`` (one update per sequence on its summed error).
  """
  use_1997_cell(config, hidden_size=blocks * block_size)
  m = config.model
  m.block_size, m.truncated_gradient = block_size, True
  m.output_gate = output_gate
  m.input_activation, m.output_activation = input_activation, output_activation
  m.gate_bias_steps, m.use_bias = tuple(gate_bias_steps), use_bias
  m.init_scale, m.readout_init = init_scale, "uniform"
  m.input_to_output = input_to_output
  config.task_params.output_units = "sigmoid"
  config.batch_size = 1
  config.optimizer.name, config.optimizer.learning_rate = "sgd", learning_rate
  o = config.optimizer
  o.grad_clip, o.schedule, o.warmup_steps, o.weight_decay = 0.0, "constant", 0, 0.0
  config.update_every = update_every


def finish(config: ml_collections.ConfigDict, arg: str | None, *, paper: dict,
           quick_lag: int | None = None) -> ml_collections.ConfigDict:
  """Apply a config file's argument: ``paper`` sets the 1997 setup
  (:func:`use_1997_setup` with ``paper``, online-learning intervals of 500
  updates per log and 5,000 per evaluation); ``quick`` and ``paper_quick``
  shrink the run for tests (``paper_quick`` keeps the 1997 net and batch 1).

  Raises:
    ValueError: an argument not in :data:`ARGS`.
  """
  if arg not in (None, "", *ARGS):
    raise ValueError(f"config argument {arg!r} is not allowed; allowed: none (the modern "
                     f"setup), {', '.join(ARGS)}")
  if arg in ("paper", "paper_quick"):
    use_1997_setup(config, **paper)
    config.log_every, config.eval_every = 500, 5000
    config.checkpoint_every = 20_000
  if arg in ("quick", "paper_quick"):
    hidden, batch = config.model.hidden_size, config.batch_size
    shrink_for_tests(config, lag=quick_lag)
    if arg == "paper_quick":
      config.model.hidden_size, config.batch_size = hidden, batch
  return config


def modern_benchmark(task: str, lag: int, arg: str | None, *, hidden_size: int,
                     budget_sequences: int, quick_lag: int, task_params: dict,
                     quick_params: dict) -> ml_collections.ConfigDict:
  """The setup the modern memory benchmarks share (selective copying, MQAR,
  parity, modular arithmetic): the modern LSTM (forget gate, forget bias 1)
  of ``hidden_size`` units, Adam with lr 1e-3, clipping 1.0, minibatches of
  32, 1,024 held-out sequences, evaluation every 500 updates; ``arg`` none
  or ``"quick"`` (a tiny variant at ``quick_lag`` with ``quick_params``).

  Raises:
    ValueError: any other ``arg``.
  """
  if arg not in (None, "", "quick"):
    raise ValueError(f"config argument {arg!r} is not allowed; allowed: none, 'quick'")
  c = default_config()
  c.task = task
  c.lag = lag
  c.task_params.update(task_params)
  c.model.cell = "vanilla"
  c.model.hidden_size = hidden_size
  c.model.bias_init = "forget"
  c.model.forget_bias = 1.0
  c.optimizer.learning_rate = 1e-3
  c.optimizer.grad_clip = 1.0
  c.batch_size = 32
  c.budget_sequences = budget_sequences
  c.eval_size = 1024
  c.log_every = 50
  c.eval_every = 500
  c.checkpoint_every = 1000
  if arg == "quick":
    shrink_for_tests(c, lag=quick_lag)
    c.task_params.update(quick_params)
  return c
