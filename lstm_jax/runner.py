"""The experiment loop: train a model on a task until the task's criterion
holds or the budget ends; log, checkpoint, resume and summarise.

``train_and_evaluate(config, workdir)`` writes into ``workdir``::

    config.json      the full config
    metrics.jsonl    one line per seed per log interval: step, sequences_seen,
                     loss, grad_norm, task metrics, steps_per_s; and eval lines
    tensorboard/     TensorBoard event files (tensorboardX)
    diagnostics.jsonl  with config.diagnostics.every > 0: one line per seed
                     per diagnostics step with the curves (see below)
    checkpoints/     orbax checkpoints: train state + loop state
                     (:class:`LoopState`: per seed the criterion's stream
                     state, solved step and skipped updates; wall time), with
                     integrity manifests in checkpoint_hashes/
    summary.json     status, task, model, lag, solved, solved_fraction,
                     sequences_seen, sequences_to_criterion, metrics,
                     wall_time_s, and per_seed
    .lock            pid and host of the process using the directory

In ``summary.json``, ``solved`` is always a bool: every seed met the
criterion. ``solved_fraction`` is the fraction of seeds that did, and
``per_seed[i]["solved"]`` says it for seed ``i``. ``sequences_to_criterion``
is the count for one seed, the median over the solved seeds for several
(``None`` if none solved); ``metrics`` the final evaluation, for several
seeds the median of each metric.

Rerunning with the same ``workdir`` resumes from the latest checkpoint; the
per-step data keys (``fold_in(key, step)``) make the resumed run see the same
batches as an uninterrupted one. Rerunning a run that finished with the same
config changes nothing and returns its summary.

Memory diagnostics (``config.diagnostics``, off by default: ``every=0``):
every ``every`` updates (at the end of each ``log_every`` chunk in which a
multiple of ``every`` falls), at step 0 and at the end of training, each
seed's parameters are measured on one fixed batch of
``num_sequences`` sequences (:func:`diagnostics_batch`, the same for every
seed, run and resume) by :func:`lstm_jax.diagnostics.measure`: for LSTM
cells the forget-gate statistics and the cell-state norm over time, for GRU
and Elman cells (no forget gate, no cell state) the hidden-state norm over
time, and for every cell the gradient norm by distance ``d``,
``input_grad_norm[d]``: with ``gradient="loss"`` (the default) the norm over
the batch of ``dL / dx[b, lengths[b] - 1 - d]``, the gradient of the task's
training loss ``L`` on that batch (its targets and mask) with respect to the
input ``d`` steps before each sequence's last real step
(:func:`lstm_jax.diagnostics.loss_gradient_from_end`); with
``gradient="output"`` the same for the sum of the outputs at each sequence's
last real step instead of ``L``
(:func:`lstm_jax.diagnostics.input_gradient_from_end`). The scalars
(:func:`lstm_jax.diagnostics.summarize`; ``input_grad_norm_d{d}`` for
``d`` in ``distances``) are logged to metrics.jsonl (``split:
"diagnostics"``) and TensorBoard (``diagnostics/...``); diagnostics.jsonl has
the same scalars, ``gradient`` (``"loss"`` or ``"output"``) and the curves
``cell_norm`` or ``hidden_norm`` (index ``t``) and ``input_grad_norm``
(index ``d``), ``None`` where undefined. The
measurement only reads the parameters: training is the same with
diagnostics on or off. After a resume, records past the checkpoint and
steps not logged for every seed are dropped and measured again, so each step
appears once per seed.

Several processes (``jax.distributed``, :func:`lstm_jax.devices.initialize_distributed`):
every process runs this same loop on its part of the devices (the run's mesh
spans all of them) and gets every result it logs (:func:`lstm_jax.devices.to_host`),
so all make the same decisions. Process 0 alone holds the lock and writes
the workdir: config.json, metrics.jsonl, TensorBoard, diagnostics.jsonl,
summary.json and the checkpoints. A checkpoint holds the whole state as
NumPy arrays, gathered from all processes; process 0 saves it through orbax
(``active_processes={0}``) while the others wait at a barrier, and on a resume
process 0 restores it and broadcasts it to the others. It does not depend on
the number of processes, so a run can be resumed with another count, or by
one process.

Before training, the training step and the evaluation are compiled once,
ahead of time, and XLA's estimate of their memory is compared with what the
devices have free (:mod:`lstm_jax.memory`); a run that would not fit is
refused with :class:`TooBigError` unless ``force=True``. The loop then calls
these compiled programs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import signal
import time
from typing import Any, Callable, Iterator, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from lstm_jax import config as config_lib
from lstm_jax import devices as devices_lib
from lstm_jax import diagnostics as diag_lib
from lstm_jax import memory
from lstm_jax import online
from lstm_jax import training
from lstm_jax import workdir as wd
from lstm_jax.devices import Placement
from lstm_jax.tasks import Task, state_from_json, state_to_json
from lstm_jax.tasks.criteria import Criterion, State


def _model_name(config: ml_collections.ConfigDict) -> str:
  m = config.model
  name = m.cell if m.bias_init == "forget" else f"{m.cell}-{m.bias_init}"
  return name if m.num_layers == 1 else f"{name}x{m.num_layers}"


class _Writers:
  """metrics.jsonl plus TensorBoard scalars."""

  def __init__(self, workdir: str, num_seeds: int):
    from tensorboardX import SummaryWriter  # imported lazily: heavy
    self.jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a")
    self.tb = SummaryWriter(os.path.join(workdir, "tensorboard"))
    self.num_seeds = num_seeds

  def write(self, record: dict[str, Any], prefix: str) -> None:
    self.jsonl.write(json.dumps(wd.to_jsonable(record)) + "\n")
    self.jsonl.flush()
    seed = record.get("seed", 0)
    for key, value in record.items():
      if key in ("step", "seed", "split") or not isinstance(value, (int, float)):
        continue
      tag = f"{prefix}/{key}" + (f"/seed{seed}" if self.num_seeds > 1 else "")
      self.tb.add_scalar(tag, value, record["step"])

  def close(self) -> None:
    self.jsonl.close()
    self.tb.close()


class _NoWriters:
  """What the processes other than process 0 log: nothing."""

  def write(self, record: dict[str, Any], prefix: str) -> None:
    del record, prefix

  def close(self) -> None:
    pass


class _Checkpoints:
  """The run's checkpoints: :class:`lstm_jax.workdir.CheckpointStore` in a
  one-process run; with several processes, process 0's store of the whole
  state gathered to NumPy, the others waiting for its saves and receiving
  its restores (module docstring)."""

  def __init__(self, workdir: str):
    self.multi = jax.process_count() > 1
    self.primary = devices_lib.is_primary()
    self.store = (wd.CheckpointStore(workdir, only_this_process=self.multi)
                  if self.primary else None)
    self._last: int | None = None

  @property
  def notes(self) -> list[str]:
    return self.store.notes if self.store is not None else []

  def last_step(self) -> int | None:
    """The newest checkpoint's step (``None``: none)."""
    if self.store is not None:
      return max(self.store.manager.all_steps(), default=None)
    return self._last

  def save(self, step: int, state: Any, loop: Any) -> None:
    if not self.multi:
      self.store.save(step, state, loop)
      return
    whole = devices_lib.to_host(state)  # every process takes part in the gather
    if self.store is not None:
      self.store.save(step, whole, loop)
    devices_lib.barrier(f"checkpoint {step} saved")
    self._last = step

  def restore_latest(self, state_like: Any) -> tuple[int, Any, Any] | None:
    if not self.multi:
      return self.store.restore_latest(state_like)
    like = devices_lib.to_host(state_like)
    restored = self.store.restore_latest(like) if self.store is not None else None
    step = int(devices_lib.broadcast(np.int64(-1 if restored is None else restored[0])))
    if step < 0:
      return None
    state = devices_lib.broadcast(like if restored is None else restored[1])
    text = json.dumps(wd.to_jsonable(restored[2])).encode() if restored is not None else b""
    size = int(devices_lib.broadcast(np.int64(len(text))))
    data = np.zeros(size, np.uint8)
    data[:len(text)] = np.frombuffer(text, np.uint8)
    loop = json.loads(bytes(devices_lib.broadcast(data)).decode())
    self._last = step
    return step, state, loop

  def close(self) -> None:
    if self.store is not None:
      self.store.close()


class NonFiniteError(RuntimeError):
  """Training produced a NaN/Inf loss, gradient or parameter (``nonfinite="stop"``)."""


class TooBigError(config_lib.ConfigError):
  """The run's training step or evaluation needs more memory than the devices
  have free (estimated before training; ``force=True`` runs anyway)."""


class Interrupted(RuntimeError):
  """SIGTERM or SIGINT arrived; a checkpoint was saved first."""

  def __init__(self, signum: int, step: int):
    super().__init__(f"stopped by {signal.Signals(signum).name} at step {step}; "
                     "a checkpoint was saved, rerun the same command to resume")
    self.signum = signum


@contextlib.contextmanager
def _catch_signals() -> Iterator[list[int]]:
  """Record SIGTERM/SIGINT instead of dying; the loop saves and stops."""
  caught: list[int] = []
  handler = lambda signum, frame: caught.append(signum)
  old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
  try:
    yield caught
  finally:
    for s, h in old.items():
      signal.signal(s, h)


# ----------------------------------------------------------------------------
# The loop state.


@dataclasses.dataclass
class SeedProgress:
  """Where one seed of a run stands.

  Attributes:
    crit: the criterion's training-stream state (:meth:`Criterion.new_state`).
    solved_step: the update at which the criterion first held; -1 while not.
    skipped: updates dropped for non-finite values (``nonfinite="skip"``).
  """
  crit: State
  solved_step: int = -1
  skipped: int = 0

  @property
  def solved(self) -> bool:
    return self.solved_step >= 0


@dataclasses.dataclass
class LoopState:
  """What a checkpoint holds besides the train state.

  Attributes:
    seeds: one :class:`SeedProgress` per seed.
    wall_time_s: training time spent before this process started.
  """
  seeds: list[SeedProgress]
  wall_time_s: float = 0.0

  @classmethod
  def new(cls, criterion: Criterion, num_seeds: int) -> LoopState:
    """The state of a run that has not started."""
    return cls([SeedProgress(criterion.new_state()) for _ in range(num_seeds)])

  @property
  def all_solved(self) -> bool:
    return all(seed.solved for seed in self.seeds)

  def to_json(self) -> dict[str, Any]:
    """A JSON-serialisable dict (:meth:`from_json` reads it back)."""
    return {"seeds": [{"crit": state_to_json(s.crit), "solved_step": int(s.solved_step),
                       "skipped": int(s.skipped)} for s in self.seeds],
            "wall_time_s": float(self.wall_time_s)}

  @classmethod
  def from_json(cls, data: Mapping[str, Any]) -> LoopState:
    """Read :meth:`to_json`'s dict, or the parallel lists ``crit``,
    ``solved_step``, ``skipped`` (optional) and ``wall_time_s`` that
    checkpoints held before this class existed."""
    if "seeds" in data:
      seeds = [SeedProgress(state_from_json(s["crit"]), int(s["solved_step"]),
                            int(s.get("skipped", 0))) for s in data["seeds"]]
    else:
      n = len(data["crit"])
      skipped = data.get("skipped") or [0] * n
      seeds = [SeedProgress(state_from_json(c), int(step), int(skip))
               for c, step, skip in zip(data["crit"], data["solved_step"], skipped)]
    return cls(seeds, float(data.get("wall_time_s", 0.0)))


# ----------------------------------------------------------------------------
# The run directory.


ON_CONFIG_CHANGE = ("refuse", "overwrite", "fresh")


def _prepare_workdir(config: ml_collections.ConfigDict, workdir: str,
                     on_config_change: str) -> bool:
  """Compare the saved config with ``config`` (before anything is written).

  Returns:
    Whether ``workdir`` holds a run of this same config.
  """
  if on_config_change not in ON_CONFIG_CHANGE:
    raise ValueError(f"on_config_change={on_config_change!r}; allowed: "
                     f"{', '.join(ON_CONFIG_CHANGE)}")
  saved_path = os.path.join(workdir, "config.json")
  if not os.path.exists(saved_path):
    return False
  with open(saved_path) as f:
    saved = json.load(f)
  diff = wd.config_differences(saved, config.to_dict(), config_lib.default_config().to_dict())
  if not diff:
    return True
  if on_config_change == "refuse":
    raise wd.WorkdirError(
        f"workdir {workdir} holds a run with a different config:\n  " + "\n  ".join(diff)
        + "\nuse a new workdir, or --on_config_change=overwrite (continue from its "
        "checkpoints with the new config) or --on_config_change=fresh (discard it)")
  if on_config_change == "fresh":
    for name in os.listdir(workdir):
      if name == wd.LOCK_NAME:
        continue
      path = os.path.join(workdir, name)
      shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
  return False


def _finished_summary(workdir: str) -> dict[str, Any] | None:
  """The saved summary if ``workdir``'s run finished, else ``None``."""
  try:
    with open(os.path.join(workdir, "summary.json")) as f:
      summary = json.load(f)
  except (OSError, json.JSONDecodeError):
    return None
  return summary if summary.get("status") == "finished" else None


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       progress: bool = True, on_config_change: str = "refuse",
                       force: bool = False) -> dict[str, Any]:
  """Train ``config.num_seeds`` models on ``config.task``; return the summary.

  Args:
    config: an experiment config (:func:`lstm_jax.config.default_config`).
    workdir: output directory; an existing one with checkpoints is resumed,
      one whose run finished with this config is left as it is.
    progress: show a progress bar with rate and ETA on stderr.
    on_config_change: what to do when ``workdir`` holds a run with another
      config: ``"refuse"`` (default), ``"overwrite"`` (continue from its
      checkpoints with the new config), ``"fresh"`` (discard it).
    force: run even when the memory estimate says the run does not fit.

  Returns:
    The contents of ``summary.json``.

  Raises:
    lstm_jax.config.ConfigError: a bad config value (before anything compiles).
    TooBigError: the run would not fit in memory (a ``ConfigError``; nothing
      is written to ``workdir``).
    lstm_jax.workdir.WorkdirError: the workdir is not a writable directory,
      is locked or holds another config.
    NonFiniteError: NaN/Inf with ``nonfinite="stop"`` (summary.json says where).
    Interrupted: SIGTERM/SIGINT (after saving a checkpoint).
  """
  task, model, placement = config_lib.build(config)
  primary = devices_lib.is_primary()
  with wd.locked(workdir) if primary else contextlib.nullcontext([]) as notes:
    for note in notes:
      logging.warning("%s: %s", workdir, note)
    # Process 0 prepares the workdir; the others only read it, and decide alike.
    same = _prepare_workdir(config, workdir, on_config_change if primary else
                            {"fresh": "overwrite"}.get(on_config_change, on_config_change))
    devices_lib.barrier("workdir prepared")
    if same:
      finished = _finished_summary(workdir)
      if finished is not None:
        logging.warning("%s: this run finished already; nothing to do (use a new "
                        "workdir to train again)", workdir)
        return finished
    with _catch_signals() as caught:
      return _train(config, workdir, task, model, placement, progress, caught, force)


# ----------------------------------------------------------------------------
# The programs.


def _eval_size(config: ml_collections.ConfigDict, task: Task) -> int:
  return max(config.eval_size, task.criterion.eval_size)


def _programs(config: ml_collections.ConfigDict, task: Task, model: Any,
              placement: Placement, optimizer: Any) -> tuple[Any, Any]:
  """The run's train chunk (``log_every`` updates) and evaluation, not yet
  compiled (:func:`lstm_jax.training.make_train_chunk`, or
  :func:`lstm_jax.online.make_online_chunk` with ``update_every="step"``;
  ``make_eval``)."""
  skip = config.nonfinite == "skip"
  if config.get("update_every", "sequence") == "step":
    chunk = online.make_online_chunk(model, task, float(config.optimizer.learning_rate),
                                     config.log_every, placement, skip_nonfinite=skip)
  else:
    chunk = training.make_train_chunk(model, task, optimizer, config.batch_size,
                                      config.log_every, placement, skip_nonfinite=skip)
  evaluate = training.make_eval(model, task, _eval_size(config, task), placement)
  return chunk, evaluate


@dataclasses.dataclass(frozen=True)
class _Keys:
  init: jax.Array
  data: jax.Array
  eval: jax.Array


@dataclasses.dataclass(frozen=True)
class _Programs:
  """The run's programs, each called on unplaced arguments (``diagnose``:
  ``None`` when diagnostics are off)."""
  chunk: Callable[[training.TrainState, jax.Array], tuple[training.TrainState, dict, dict]]
  evaluate: Callable[[Any, jax.Array], tuple[jax.Array, dict]]
  diagnose: Callable[[Any], dict[str, jax.Array]] | None = None


# ----------------------------------------------------------------------------
# Memory diagnostics.


DIAGNOSTICS_FILE = "diagnostics.jsonl"


@dataclasses.dataclass(frozen=True)
class DiagnosticsSettings:
  """``config.diagnostics``: ``every`` (updates between measurements, 0 off),
  ``num_sequences`` (rows of the fixed batch), ``distances`` (of the
  ``input_grad_norm_d{d}`` scalars) and ``gradient`` (what ``input_grad_norm``
  differentiates: ``"loss"`` or ``"output"``, :data:`lstm_jax.diagnostics.GRADIENTS`)."""
  every: int
  num_sequences: int
  distances: tuple[int, ...]
  gradient: str = "loss"

  @classmethod
  def of(cls, config: ml_collections.ConfigDict) -> DiagnosticsSettings:
    """The settings of a config (the defaults, off, for a config without
    ``diagnostics``; ``gradient="loss"`` for one without ``diagnostics.gradient``)."""
    d = config.get("diagnostics") or config_lib.default_config().diagnostics
    return cls(int(d.every), int(d.num_sequences), tuple(int(x) for x in d.distances),
               str(d.get("gradient", "loss")))

  @property
  def on(self) -> bool:
    return self.every > 0


DIAGNOSTICS_KEY = 0xD1A6
"""The diagnostics batch is ``task.sample(fold_in(key(0), DIAGNOSTICS_KEY), n)``."""


def diagnostics_batch(task: Task, num_sequences: int) -> Any:
  """The fixed batch the diagnostics measure: ``task.sample(fold_in(key(0),
  DIAGNOSTICS_KEY), num_sequences)``, the same for every seed, run and resume
  (independent of the training data keys)."""
  key = jax.random.fold_in(jax.random.key(0), DIAGNOSTICS_KEY)
  return task.sample(key, num_sequences)


def make_diagnose(model: Any, task: Task, num_sequences: int, placement: Placement,
                  gradient: str = "loss") -> Callable[[Any], dict[str, jax.Array]]:
  """The jitted diagnostics program of a run: ``params [S] -> {name: [S, ...]}``,
  :func:`lstm_jax.diagnostics.measure` of every seed on
  :func:`diagnostics_batch` (drawn inside the program; seeds spread over the
  devices as the run's ``placement`` says; the parameters are first put
  where the seeds run), with ``gradient`` (``"loss"``: of ``task``'s loss on
  that batch; ``"output"``). Made once per run; it compiles on its first
  call and is reused."""
  model = dataclasses.replace(model, impl=placement.layer_impl(model.impl))

  def one(params: Any, batch: Any) -> dict[str, jax.Array]:
    return diag_lib.measure(model, params, batch, task, gradient)

  def program(params: Any) -> dict[str, jax.Array]:
    batch = diagnostics_batch(task, num_sequences)
    seeds = jax.tree_util.tree_leaves(params)[0].shape[0]
    tile = lambda x: jnp.broadcast_to(x, (seeds,) + x.shape)
    return placement.over_seeds(one)(params, jax.tree_util.tree_map(tile, batch))

  jitted = jax.jit(program)
  where = placement.input_sharding()
  return lambda params: jitted(devices_lib.put(params, where))


def _diagnostics_due(config: ml_collections.ConfigDict, every: int, step: int) -> bool:
  """Whether the chunk that ended at ``step`` holds a multiple of ``every``."""
  return step % every < config.log_every


def _resume_diagnostics(workdir: str, step: int, num_seeds: int) -> int:
  """Drop diagnostics records the resumed run measures again: those after
  ``step`` (the checkpoint) and those of a step not logged for all
  ``num_seeds`` seeds, from diagnostics.jsonl and metrics.jsonl. Returns the
  last step kept (-1: none)."""
  path = os.path.join(workdir, DIAGNOSTICS_FILE)
  seen: dict[int, set[int]] = {}
  for r in wd.read_jsonl(path):
    if r.get("step", 0) <= step:
      seen.setdefault(r["step"], set()).add(r.get("seed"))
  complete = {s for s, seeds in seen.items() if len(seeds) >= num_seeds}
  wd.truncate_jsonl(path, lambda r: r.get("step") in complete)
  wd.truncate_jsonl(os.path.join(workdir, "metrics.jsonl"),
                    lambda r: r.get("split") != "diagnostics" or r.get("step") in complete)
  return max(complete, default=-1)


def _compiled_call(program: Any, compiled: Any) -> Callable[..., Any]:
  return lambda tree, keys: compiled(*program.place(tree, keys))


def _compile(config: ml_collections.ConfigDict, task: Task, chunk: Any, evaluate: Any,
             state: training.TrainState, keys: _Keys, force: bool) -> _Programs:
  """Compile both programs ahead of time; unless ``force``, refuse (raise
  :class:`TooBigError`) a run that does not fit: first by the size of its
  batches alone (no compile), then by XLA's estimate of each program."""
  if not force:
    _refuse_if_short(config, task, False,
                     *_batch_shortfalls(config, task, chunk.place(state, keys.data)))
  train = chunk.lower(state, keys.data).compile()
  ev = evaluate.lower(state.params, keys.eval).compile()
  if not force:
    _refuse_if_short(config, task, True, _compiled_shortfall(train), _compiled_shortfall(ev))
  return _Programs(_compiled_call(chunk, train), _compiled_call(evaluate, ev))


def _batch_shortfalls(config: ml_collections.ConfigDict, task: Task, placed: Any
                      ) -> tuple[tuple[int, int] | None, tuple[int, int] | None]:
  """Shortfalls (:func:`lstm_jax.memory.shortfall`) of a training and an
  evaluation batch's inputs and outputs, spread over every device of the
  platform the run's arrays are ``placed`` on: a bound no program beats."""
  platform = memory.devices_of(placed)[0].platform
  everywhere = jax.local_devices(backend=platform)
  per_device = lambda size, steps: memory.batch_bytes(size, steps, task.input_size,
                                                      task.output_size) // len(everywhere)
  return (memory.shortfall(per_device(config.batch_size, task.max_length), everywhere),
          memory.shortfall(per_device(_eval_size(config, task), task.held_out.max_length),
                           everywhere))


def _compiled_shortfall(compiled: Any) -> tuple[int, int] | None:
  """The shortfall of a compiled program by XLA's estimate (``None``: it fits
  or there is no estimate)."""
  need = memory.compiled_need(compiled)
  mine = [d for d in memory.devices_of(compiled.input_shardings)
          if d.process_index == jax.process_index()]
  return None if need is None else memory.shortfall(need, mine)


def _refuse_if_short(config: ml_collections.ConfigDict, task: Task, compiled: bool,
                     train: tuple[int, int] | None, ev: tuple[int, int] | None) -> None:
  """Raise :class:`TooBigError` naming the program(s) whose ``(needed,
  available)`` bytes (:func:`lstm_jax.memory.shortfall`) is given: by XLA's
  estimate if ``compiled``, else by the size of the batches alone."""
  if train is None and ev is None:
    return
  bound = "about" if compiled else "at least"
  parts, fixes = [], []
  if train is not None:
    parts.append(f"the training step (batch {config.batch_size:,} x {task.max_length:,} "
                 f"steps) needs {bound} {memory.format_bytes(train[0])}")
    remat = compiled and config.remat == "none"
    fixes.append(("--config.remat=sqrt or " if remat else "") + "a smaller --config.batch_size")
  least = task.criterion.eval_size
  if ev is not None:
    parts.append(f"the evaluation ({_eval_size(config, task):,} sequences) needs {bound} "
                 f"{memory.format_bytes(ev[0])}")
    if config.eval_size > least:
      fixes.append("a smaller --config.eval_size" +
                   (f" (the criterion needs at least {least:,})" if least else ""))
  fixes.append("a smaller --config.lag")
  many = len(parts) > 1
  source = (f"XLA's estimate of the compiled program{'s' if many else ''}" if compiled
            else f"{'their' if many else 'its'} batch's inputs and outputs alone")
  free = min(s[1] for s in (train, ev) if s is not None)
  raise TooBigError(
      f"{' and '.join(parts)} of memory ({source}) but {memory.format_bytes(free)} is "
      f"available; use {', or '.join(fixes)}; --force runs it anyway")


# ----------------------------------------------------------------------------
# The loop.


def _eval_due(config: ml_collections.ConfigDict, step: int, n_steps: int) -> bool:
  """Whether ``step`` (a multiple of ``log_every``) ends an evaluation interval."""
  return step % config.eval_every < config.log_every or step >= n_steps


def _nonfinite_reason(config: ml_collections.ConfigDict, step: int, metrics: dict[str, Any],
                      finite: np.ndarray, last_checkpoint: int | None) -> str:
  """The message for the first non-finite update of a chunk that began at ``step``."""
  bad_t, bad_s = np.argwhere(~finite)[0]
  return (f"non-finite loss, gradient or parameters at step {step + int(bad_t) + 1} "
          f"(seed {config.seed + int(bad_s)}, loss "
          f"{float(metrics['loss'][bad_t, bad_s])!r}); stopped, "
          + ("no checkpoint was saved before it" if last_checkpoint is None else
             f"the last good checkpoint is step {last_checkpoint}"))


class _Run:
  """A run in progress: its fixed parts, the train state and the loop state."""

  def __init__(self, config: ml_collections.ConfigDict, task: Task, workdir: str,
               programs: _Programs, keys: _Keys, store: wd.CheckpointStore,
               state: training.TrainState, step: int, loop: LoopState, start: float,
               diagnosed: int = -1):
    self.config, self.task, self.criterion = config, task, task.criterion
    self.workdir, self.programs, self.keys, self.store = workdir, programs, keys, store
    self.state, self.step, self.loop = state, step, loop
    self.n_steps = config_lib.total_steps(config)
    self.primary = devices_lib.is_primary()
    self.writers = _Writers(workdir, config.num_seeds) if self.primary else _NoWriters()
    self._base_time, self._start = loop.wall_time_s, start
    self._last_eval: tuple[int, list[dict[str, float]]] | None = None
    self.diag = DiagnosticsSettings.of(config)
    self._last_diagnostics = diagnosed  # the last step whose diagnostics are logged
    self.diagnostics_jsonl = None
    if self.diag.on and self.primary:
      self.diagnostics_jsonl = open(os.path.join(workdir, DIAGNOSTICS_FILE), "a")

  def wall_time(self) -> float:
    return self._base_time + time.time() - self._start

  def train_chunk(self) -> dict[str, Any]:
    """Run ``log_every`` updates of every seed, log them and advance the
    criteria's streams; return the chunk's metrics."""
    t0 = time.time()
    new_state, metrics, per_seq = self.programs.chunk(self.state, self.keys.data)
    metrics, per_seq = devices_lib.to_host((metrics, per_seq))
    finite = np.asarray(metrics["finite"], bool)  # [chunk, S]
    if self.config.nonfinite == "stop" and not finite.all():
      last = self.store.last_step()
      reason = _nonfinite_reason(self.config, self.step, metrics, finite, last)
      self.write_summary(None, "nonfinite", reason)
      raise NonFiniteError(reason)
    self.state = new_state
    self.step += self.config.log_every
    rate = self.config.log_every / max(time.time() - t0, 1e-9)
    for s, seed in enumerate(self.loop.seeds):
      seed.skipped += int((~finite[:, s]).sum())
      seq = {k: v[:, s].reshape(-1) for k, v in per_seq.items()}
      seed.crit = self.criterion.update(seed.crit, seq)
      summary = self.task.summarize(seq)
      self.writers.write({
          "step": self.step, "seed": self.config.seed + s, "split": "train",
          "sequences_seen": self.step * self.config.batch_size,
          "loss": float(np.mean(metrics["loss"][:, s])),
          "grad_norm": float(np.mean(metrics["grad_norm"][:, s])),
          "accuracy": summary["accuracy"], "mean_error": summary["mean_error"],
          "skipped_updates": seed.skipped, "steps_per_s": rate}, "train")
    return metrics

  def evaluate(self) -> list[dict[str, float]]:
    """Per seed, the summary of a held-out evaluation at the current step with
    ``criterion_met`` added; logged once per step."""
    if self._last_eval is not None and self._last_eval[0] == self.step:
      return self._last_eval[1]
    keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(self.keys.eval, self.step)
    _, per_seq = devices_lib.to_host(self.programs.evaluate(self.state.params, keys))
    out = []
    for s, seed in enumerate(self.loop.seeds):
      summary = self.task.summarize({k: v[s] for k, v in per_seq.items()})
      summary["criterion_met"] = float(self.criterion.holds(seed.crit, summary))
      out.append(summary)
      self.writers.write({"step": self.step, "seed": self.config.seed + s, "split": "eval",
                          "sequences_seen": self.step * self.config.batch_size, **summary},
                         "eval")
    self._last_eval = (self.step, out)
    return out

  def diagnose(self) -> None:
    """Measure and log every seed's diagnostics at the current step, once
    per step (module docstring)."""
    if not self.diag.on or self._last_diagnostics >= self.step:
      return
    measured = devices_lib.to_host(self.programs.diagnose(self.state.params))
    lines = []
    for s in range(self.config.num_seeds):
      scalars, curves = diag_lib.summarize({k: v[s] for k, v in measured.items()},
                                           self.diag.distances)
      head = {"step": self.step, "seed": self.config.seed + s,
              "sequences_seen": self.step * self.config.batch_size}
      lines.append({**head, "cell": self.config.model.cell, "gradient": self.diag.gradient,
                    **scalars, **curves})
      self.writers.write({**head, "split": "diagnostics", **scalars}, "diagnostics")
    if self.diagnostics_jsonl is not None:
      self.diagnostics_jsonl.write("".join(json.dumps(wd.to_jsonable(r)) + "\n" for r in lines))
      self.diagnostics_jsonl.flush()
    self._last_diagnostics = self.step

  def mark_solved(self) -> None:
    """Record the step for the seeds whose criterion holds now; evaluate
    first at the end of an evaluation interval if one of them needs it."""
    pending = [seed for seed in self.loop.seeds if not seed.solved]
    evals = None
    if (_eval_due(self.config, self.step, self.n_steps)
        and any(self.criterion.needs_eval(seed.crit) for seed in pending)):
      evals = self.evaluate()
    for s, seed in enumerate(self.loop.seeds):
      if not seed.solved and self.criterion.holds(seed.crit,
                                                  None if evals is None else evals[s]):
        seed.solved_step = self.step

  def save(self) -> None:
    loop = dataclasses.replace(self.loop, wall_time_s=self.wall_time())
    self.store.save(self.step, self.state, loop.to_json())

  def write_summary(self, final: list[dict[str, float]] | None, status: str,
                    reason: str | None = None) -> dict[str, Any]:
    summary = _summary(self.config, self.task, self.step, self.loop, final, self.wall_time(),
                       status, reason)
    if self.primary:
      wd.write_json_atomic(os.path.join(self.workdir, "summary.json"), summary)
    return summary

  def run(self, caught: list[int], progress: bool) -> dict[str, Any]:
    """Train until every seed is solved or the budget is spent; return the summary."""
    bar = None
    if progress and self.primary:
      bar = _progress_bar(self.config, self.task, self.step, self.n_steps)
    try:
      if self.diag.on and (self.step == 0 or _diagnostics_due(self.config, self.diag.every,
                                                                self.step)):
        self.diagnose()  # at the start, or a resumed step whose measurement was dropped
      while self.step < self.n_steps and not self.loop.all_solved:
        metrics = self.train_chunk()
        if self.diag.on and _diagnostics_due(self.config, self.diag.every, self.step):
          self.diagnose()
        self.mark_solved()
        if bar is not None:
          bar.update(self.config.log_every * self.config.batch_size)
          bar.set_postfix(loss=f"{np.mean(metrics['loss'][-1]):.4g}",
                          solved=f"{sum(s.solved for s in self.loop.seeds)}/"
                                 f"{len(self.loop.seeds)}")
        # Processes stop together: a signal that reached one stops all at this step.
        if devices_lib.any_process(bool(caught)):
          self.save()
          raise Interrupted(caught[0] if caught else signal.SIGTERM, self.step)
        if self.step % self.config.checkpoint_every < self.config.log_every:
          self.save()
      final = self.evaluate()
      self.diagnose()
      self.save()
    finally:
      if bar is not None:
        bar.close()
      self.writers.close()
      if self.diagnostics_jsonl is not None:
        self.diagnostics_jsonl.close()
    return self.write_summary(final, "finished")


def _progress_bar(config: ml_collections.ConfigDict, task: Task, step: int, n_steps: int):
  from tqdm import tqdm
  return tqdm(total=n_steps * config.batch_size, initial=step * config.batch_size, unit="seq",
              unit_scale=True, desc=f"{task.name} lag={task.lag} {_model_name(config)}")


def _restore(store: _Checkpoints, state: training.TrainState, loop: LoopState
             ) -> tuple[int, training.TrainState, LoopState]:
  """``(step, state, loop)`` of the newest intact checkpoint, or the given ones at step 0."""
  restored = store.restore_latest(state)
  for note in store.notes:
    logging.warning("%s", note)
  if restored is None:
    return 0, state, loop
  step, state, saved = restored
  return step, state, LoopState.from_json(saved)


def _train(config: ml_collections.ConfigDict, workdir: str, task: Task, model: Any,
           placement: Placement, progress: bool, caught: list[int], force: bool) -> dict[str, Any]:
  start = time.time()
  optimizer = training.make_optimizer(**config_lib.optimizer_kwargs(config))
  keys = _Keys(*training.seed_keys(config.seed, config.num_seeds))
  state = training.init_state(model, optimizer, keys.init, task.input_size)
  if jax.process_count() > 1:  # the same values on every process, put where the run needs
    state = devices_lib.to_host(state)
  programs = _compile(config, task, *_programs(config, task, model, placement, optimizer),
                      state, keys, force)
  settings = DiagnosticsSettings.of(config)
  if settings.on:
    programs = dataclasses.replace(programs, diagnose=make_diagnose(
        model, task, settings.num_sequences, placement, settings.gradient))
  primary = devices_lib.is_primary()
  if primary:
    wd.write_json_atomic(os.path.join(workdir, "config.json"), config.to_dict())
  store = _Checkpoints(workdir)
  try:
    step, state, loop = _restore(store, state, LoopState.new(task.criterion, config.num_seeds))
    diagnosed = -1
    if primary:
      # Lines written after the checkpoint belong to work that is redone now.
      wd.truncate_jsonl(os.path.join(workdir, "metrics.jsonl"),
                        lambda r: r.get("step", 0) <= step)
      diagnosed = _resume_diagnostics(workdir, step, config.num_seeds) if settings.on else -1
    if settings.on:
      diagnosed = int(devices_lib.broadcast(np.int64(diagnosed)))
    run = _Run(config, task, workdir, programs, keys, store, state, step, loop, start,
               diagnosed)
    return run.run(caught, progress)
  finally:
    store.close()


def _summary(config: ml_collections.ConfigDict, task: Task, step: int, loop: LoopState,
             final: list[dict[str, float]] | None, wall: float, status: str,
             reason: str | None) -> dict[str, Any]:
  """The contents of ``summary.json`` (see the module docstring)."""
  num_seeds, batch_size = config.num_seeds, config.batch_size
  per_seed = [{
      "seed": config.seed + s, "solved": seed.solved,
      "sequences_to_criterion": seed.solved_step * batch_size if seed.solved else None,
      "skipped_updates": seed.skipped,
      "metrics": final[s] if final else {}} for s, seed in enumerate(loop.seeds)]
  to_crit = [p["sequences_to_criterion"] for p in per_seed if p["solved"]]
  if not final:
    metrics = {}
  elif num_seeds == 1:
    metrics = final[0]
  else:
    metrics = {k: float(np.median([f[k] for f in final])) for k in final[0]}
  if not to_crit:
    sequences_to_criterion = None
  elif num_seeds == 1:
    sequences_to_criterion = to_crit[0]
  else:
    sequences_to_criterion = float(np.median(to_crit))
  return {
      "status": status, "reason": reason, "step": step,
      "task": task.name, "task_params": task.params, "model": _model_name(config),
      "cell": config.model.cell, "lag": task.lag, "num_seeds": num_seeds,
      "solved": all(p["solved"] for p in per_seed),
      "solved_fraction": float(np.mean([p["solved"] for p in per_seed])),
      "sequences_seen": step * batch_size,
      "sequences_to_criterion": sequences_to_criterion,
      "criterion": task.criterion.description,
      "metrics": metrics,
      "per_seed": per_seed,
      "wall_time_s": wall,
  }
