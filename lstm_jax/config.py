"""Experiment configuration: the default ``ml_collections.ConfigDict``, its
validation, and the objects built from it (task, model, optimizer).

Fields (every one overridable on the command line, e.g. ``--config.lag=1000``)::

    task              registry name (lstm_jax.tasks.TASK_NAMES)
    lag               the task's lag (meaning per task; lstm_jax.tasks)
    task_params       other task parameters (e.g. p for hs2c), and output_units
                      for every task
    model.cell        cell name (lstm_jax.CELL_NAMES)
    model.hidden_size, model.num_layers, model.proj_size
    model.kernel_init, model.recurrent_init, model.bias_init, model.forget_bias,
    model.chrono_t_max (0: 3/2 of the task's max length), model.init_scale
    model.block       "plain" (layers stacked) or "residual" (pre-norm residual
                      blocks with an MLP, as minGRU / xLSTM models stack cells)
    model.num_heads, model.forget_fn  heads and forget gate ("sigmoid" or "exp")
                      of an sLSTM or mLSTM (model.cell "slstm", "mlstm")
    model.<LSTMVariant field>  any option of the step (input_gate, forget_gate,
                      output_gate, input_activation, output_activation,
                      peepholes, gate_recurrence, layer_norm: None keeps the
                      named cell's value), set on top of the named cell; and
    model.block_size  memory cells per block sharing their gates (1997; 1: none)
    model.truncated_gradient  the 1997 truncated gradient (error flows back in
                      time only through the cell state)
    model.input_to_output  direct input-to-readout connections (1997)
    model.readout_init  initialiser of the readout ("uniform": U[-init_scale, init_scale])
    model.gate_bias_steps  (input, output) steps of the "hs1997" gate-bias staircase
                      (None: (1.0, 1.0))
    model.dropout_in, model.dropout_out  dropout on each layer's inputs / outputs
                      at training (rates in [0, 1); 0.0: off, the default)
    model.recurrent_dropout  variational recurrent dropout: one mask of h_{t-1}
                      per sequence, shared over time (LSTM, GRU, Elman)
    model.zoneout_c, model.zoneout_h  zoneout of the cell state c (LSTM) and of
                      h: a unit keeps its previous value with this probability
                      (lstm_jax.Regularization; evaluation is deterministic)
    task_params.output_units  "task" (the task's loss) or "sigmoid" (sigmoid
                      units on squared error, the 1997 nets)
    optimizer.name, optimizer.learning_rate, optimizer.schedule,
    optimizer.warmup_steps, optimizer.grad_clip, optimizer.weight_decay
    batch_size        sequences per update
    budget_sequences  training budget in sequences
    eval_size         held-out sequences per evaluation (at least the criterion's)
    seed, num_seeds   seeds seed..seed+num_seeds-1, trained as one program
    ensemble          how the seeds run (lstm_jax.devices): spread over the
                      devices of every process, and on each device "vmap" (batched),
                      "map" (one after another) or "auto" (map on CPU, vmap
                      on GPU/TPU)
    split_batch       a single seed's batch split over the devices of every process
                      (lstm_jax.devices): "auto" (where the step is big
                      enough to gain, devices.split_pays), "on" or "off"
    log_every, eval_every, checkpoint_every   intervals in updates
    remat             backward-pass memory: "none", "step" (recompute each step),
                      "sqrt" (O(sqrt(T)) stored states) or a segment length ("100")
    tbptt             truncated BPTT: cut gradients through the state every k
                      steps (0: full backpropagation through time)
    impl              how layers are computed: "auto" (the fused LSTM layer of
                      lstm_jax.fused where it applies, the parallel form of
                      minGRU/minLSTM where it pays; the plain scan where a
                      device runs several seeds vmapped, see
                      devices.Placement.layer_impl), "fused" or "parallel" (error
                      where it does not apply) or "scan" (plain autodiff)
    update_every      "sequence": one update per batch (the default); "step": the
                      1997 online learning, weights changed after every time step
                      (lstm_jax.online; batch 1, plain SGD, one layer of LSTM
                      cells with the truncated gradient, sigmoid output units)
    nonfinite         "stop": a NaN/Inf loss, gradient or parameter ends the run
                      (last good checkpoint kept, non-zero exit); "skip": drop
                      that update and count it (metrics "skipped_updates")
    diagnostics.every  memory diagnostics every this many updates (0: off,
                      the default; lstm_jax.runner): forget-gate statistics,
                      cell- or hidden-state norm over time, input-gradient
                      norm by distance, logged with the metrics, to
                      TensorBoard and to diagnostics.jsonl
    diagnostics.num_sequences  sequences of the fixed batch they are measured on
    diagnostics.distances  distances d of the logged input_grad_norm_d{d}
                      scalars (the full curve is in diagnostics.jsonl)
    diagnostics.gradient  what input_grad_norm[d] differentiates with respect
                      to the input d steps before each sequence's last real
                      step: "loss" (the default), the task's training loss on
                      the fixed batch; "output", the sum of the outputs at
                      each sequence's last real step
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple, Sequence

import ml_collections

from lstm_jax import checks
from lstm_jax.cells import INIT_OPTIONS, VARIANT_OPTIONS
from lstm_jax import online
from lstm_jax.devices import Placement
from lstm_jax.diagnostics import GRADIENTS as DIAGNOSTICS_GRADIENTS
from lstm_jax.models import SequenceModel, make_model
from lstm_jax.sequence import Regularization
from lstm_jax.tasks import TASK_NAMES, Task, make_task
from lstm_jax.training import OPTIMIZERS, SCHEDULES


NONFINITE = ("stop", "skip")
UPDATE_EVERY = ("sequence", "step")

# Fields a built object checks itself, and where they live in the config.
_MODEL_FIELDS = {"remat": "remat", "truncate": "tbptt", "impl": "impl",
                 "num_layers": "model.num_layers", "output_size": "model.output_size",
                 "cell": "model.cell", "block": "model.block",
                 "input_to_output": "model.input_to_output"}
_PLACEMENT_FIELDS = {"num_seeds": "num_seeds", "ensemble": "ensemble",
                     "split_batch": "split_batch"}


# Cell options that exist in the defaults as typed placeholders (None: the named
# cell's own value), so the command line can set them on any config.
_UNSET_OPTIONS = {"input_gate": bool, "forget_gate": str, "output_gate": bool,
                  "input_activation": str, "output_activation": str, "peepholes": bool,
                  "gate_recurrence": bool, "layer_norm": bool, "gate_bias_steps": tuple}


class ConfigError(ValueError):
  """A config value is not allowed; the message names field, value and what is allowed."""


class Built(NamedTuple):
  """What a config describes: the task, the model and the run's placement."""
  task: Task
  model: SequenceModel
  placement: Placement


def default_config() -> ml_collections.ConfigDict:
  """The defaults every experiment config starts from."""
  c = ml_collections.ConfigDict()
  c.task = "delayed_recall"
  c.lag = 10
  c.task_params = ml_collections.ConfigDict(dict(output_units="task"))
  c.model = ml_collections.ConfigDict(dict(
      cell="vanilla", hidden_size=32, num_layers=1, proj_size=0,
      kernel_init="lecun_normal", recurrent_init="orthogonal", bias_init="forget",
      forget_bias=1.0, chrono_t_max=0.0, init_scale=0.1, num_heads=1, forget_fn="sigmoid",
      block_size=1,
      truncated_gradient=False, input_to_output=False, readout_init="lecun_normal",
      dropout_in=0.0, dropout_out=0.0, recurrent_dropout=0.0, zoneout_c=0.0, zoneout_h=0.0,
      block="plain"))
  # The other step options and the bias staircase: None keeps the named cell's own value.
  for name, kind in _UNSET_OPTIONS.items():
    c.model[name] = ml_collections.config_dict.placeholder(kind)
  c.optimizer = ml_collections.ConfigDict(dict(
      name="adam", learning_rate=1e-3, schedule="constant", warmup_steps=0,
      grad_clip=1.0, weight_decay=0.0))
  c.batch_size = 32
  c.budget_sequences = 100_000
  c.eval_size = 256
  c.seed = 0
  c.num_seeds = 1
  c.log_every = 50
  c.eval_every = 200
  c.checkpoint_every = 1000
  c.remat = "none"
  c.nonfinite = "stop"
  c.update_every = "sequence"
  c.tbptt = 0
  c.impl = "auto"
  c.ensemble = "auto"
  c.split_batch = "auto"
  c.diagnostics = ml_collections.ConfigDict(dict(
      every=0, num_sequences=16, distances=(0, 1, 4, 16, 64, 256, 1024), gradient="loss"))
  return c


def _error(err: ValueError, fields: dict[str, str], prefix: str) -> ConfigError:
  """The error of a built object as a config error: a message that starts
  with ``name=`` gets the config path of ``name`` (from ``fields``, else
  ``prefix.name``)."""
  message = str(err)
  match = re.match(r"(\w+)=", message)
  if match:
    name = match.group(1)
    path = fields.get(name, f"{prefix}.{name}" if prefix else name)
    return ConfigError(f"config.{path}{message[len(name):]}")
  return ConfigError(f"config{'.' + prefix if prefix else ''}: {message}")


def build(config: ml_collections.ConfigDict, devices: Sequence[Any] | None = None) -> Built:
  """The task, the model and the placement a config describes, or :class:`ConfigError`.

  Fields that exist only in the config (sizes of the run, optimizer,
  intervals) are checked here; the task, the model (its cell included) and
  the placement check their own options when built, and their errors are
  reported under the config field they came from. Runs in milliseconds and
  compiles nothing.

  Args:
    config: an experiment config (:func:`default_config`).
    devices: the run's devices (default ``jax.devices()``: those of every process).
  """
  try:
    checks.choice("task", config.task, TASK_NAMES)
    for field, minimum in (("batch_size", 1), ("budget_sequences", 1), ("eval_size", 1),
                           ("seed", 0), ("log_every", 1), ("eval_every", 1),
                           ("checkpoint_every", 1), ("optimizer.warmup_steps", 0),
                           ("diagnostics.every", 0), ("diagnostics.num_sequences", 1)):
      checks.integer(field, _get(config, field), minimum)
    _check_distances(config.diagnostics.distances)
    checks.choice("diagnostics.gradient", config.diagnostics.get("gradient", "loss"),
                  DIAGNOSTICS_GRADIENTS)
    o = config.optimizer
    checks.choice("optimizer.name", o.name, OPTIMIZERS)
    checks.choice("optimizer.schedule", o.schedule, SCHEDULES)
    checks.choice("nonfinite", config.nonfinite, NONFINITE)
    checks.choice("update_every", config.get("update_every", "sequence"), UPDATE_EVERY)
    checks.number("optimizer.learning_rate", o.learning_rate, 0.0, strict=True)
    checks.number("optimizer.grad_clip", o.grad_clip, 0.0)
    checks.number("optimizer.weight_decay", o.weight_decay, 0.0)
    checks.number("model.chrono_t_max", config.model.chrono_t_max, 0.0)
  except ValueError as err:
    raise ConfigError(f"config.{err}") from None
  try:
    task = make_task(config.task, lag=config.lag, **config.task_params.to_dict())
  except ValueError as err:  # "copy: lag=0 is not allowed; ..."
    message = str(err).removeprefix(f"{config.task}: ")
    raise _error(ValueError(message), {"lag": "lag"}, "task_params") from None
  m = config.model
  options = {name: m[name] for name in (*INIT_OPTIONS, *VARIANT_OPTIONS, "gate_bias_steps")
             if name in m and m[name] is not None}
  if m.bias_init == "chrono":  # T_max defaults to 3/2 of the task's longest sequence
    options["chrono_t_max"] = float(m.chrono_t_max or 1.5 * task.max_length)
  else:
    options.pop("chrono_t_max", None)
  regularization = Regularization(**{name: m.get(name, 0.0)
                                      for name in Regularization._fields})
  try:
    model = make_model(m.cell, m.hidden_size, task.output_size, num_layers=m.num_layers,
                       proj_size=m.proj_size, remat=config.remat, truncate=config.tbptt,
                       impl=config.impl, input_to_output=m.get("input_to_output", False),
                       readout_init=m.get("readout_init", "lecun_normal"),
                       block=m.get("block", "plain"),
                       regularization=regularization, **options)
  except ValueError as err:
    raise _error(err, _MODEL_FIELDS, "model") from None
  if model.block == "residual" and config.diagnostics.every:
    raise ConfigError(f"config.diagnostics.every={config.diagnostics.every} is not allowed "
                      "with model.block='residual' (the diagnostics read the first layer's "
                      "raw inputs); allowed: 0")
  if config.get("update_every", "sequence") == "step":
    _check_per_step(config, task, model)
  try:
    placement = Placement.build(config.num_seeds, config.ensemble, config.split_batch,
                                devices)
  except ValueError as err:
    raise _error(err, _PLACEMENT_FIELDS, "") from None
  return Built(task, model, placement)


def _check_distances(distances: Any) -> None:
  """``diagnostics.distances``: a list of distinct integers >= 0."""
  ok = isinstance(distances, (list, tuple)) and all(
      checks.is_int(d) and 0 <= d <= checks.INT32_MAX for d in distances)
  if not ok or len(set(distances)) != len(distances):
    checks.fail("diagnostics.distances", distances, "expected a list of distinct integers "
                ">= 0 (distances before the output, e.g. [0, 1, 4, 16])")


def _check_per_step(config: ml_collections.ConfigDict, task: Task, model: SequenceModel) -> None:
  """What ``update_every="step"`` (lstm_jax.online) needs, one ConfigError each."""
  o = config.optimizer
  needs = (("batch_size", config.batch_size, 1), ("optimizer.name", o.name, "sgd"),
           ("optimizer.schedule", o.schedule, "constant"), ("optimizer.grad_clip", o.grad_clip, 0),
           ("optimizer.weight_decay", o.weight_decay, 0),
           ("optimizer.warmup_steps", o.warmup_steps, 0))
  for field, value, allowed in needs:
    if value != allowed:
      raise ConfigError(f"config.{field}={value!r} is not allowed with update_every='step' "
                        f"(per-step learning is plain gradient descent on one sequence); "
                        f"allowed: {allowed!r}")
  reason = online.unsupported(model, task)
  if reason is not None:
    raise ConfigError(f"config.update_every='step' does not cover {reason}; allowed: "
                      "'sequence'")


def _get(c: ml_collections.ConfigDict, field: str) -> Any:
  for part in field.split("."):
    c = c[part]
  return c


def use_1997_cell(config: ml_collections.ConfigDict, hidden_size: int) -> None:
  """Set ``config.model`` to Hochreiter & Schmidhuber's 1997 setup: the cell
  without forget gate, small uniform weights U[-0.1, 0.1] and the staircase of
  negative input/output-gate biases (``bias_init="hs1997"``)."""
  m = config.model
  m.cell, m.hidden_size = "lstm1997", hidden_size
  m.kernel_init = m.recurrent_init = "uniform"
  m.bias_init, m.init_scale = "hs1997", 0.1


def shrink_for_tests(config: ml_collections.ConfigDict, lag: int | None = None) -> None:
  """Make ``config`` tiny and quick (the ``get_config("quick")`` variants):
  8 units, batch 8, 800 sequences, 32 eval sequences, short intervals."""
  if lag is not None:
    config.lag = lag
  config.model.hidden_size = 8
  config.batch_size = 8
  config.budget_sequences = 800
  config.eval_size = 32
  config.log_every, config.eval_every, config.checkpoint_every = 10, 20, 50


def total_steps(config: ml_collections.ConfigDict) -> int:
  """Updates in the budget, rounded up to whole ``log_every`` chunks."""
  steps = -(-config.budget_sequences // config.batch_size)
  return -(-steps // config.log_every) * config.log_every


def optimizer_kwargs(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """Keyword arguments of :func:`lstm_jax.training.make_optimizer`."""
  o = config.optimizer
  return dict(name=o.name, learning_rate=float(o.learning_rate), schedule=o.schedule,
              total_steps=total_steps(config), warmup_steps=o.warmup_steps,
              grad_clip=float(o.grad_clip), weight_decay=float(o.weight_decay))
