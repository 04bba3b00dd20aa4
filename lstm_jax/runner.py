"""The experiment loop: train a model on a task until the task's criterion
holds or the budget ends; log, checkpoint, resume and summarise.

``train_and_evaluate(config, workdir)`` writes into ``workdir``::

    config.json      the full config
    metrics.jsonl    one line per seed per log interval: step, sequences_seen,
                     loss, grad_norm, task metrics, steps_per_s; and eval lines
    tensorboard/     TensorBoard event files (tensorboardX)
    checkpoints/     orbax checkpoints: train state + loop state (criterion
                     streams, solved steps, skipped updates, wall time), with
                     integrity manifests in checkpoint_hashes/
    summary.json     status, task, model, lag, solved, sequences_seen,
                     sequences_to_criterion, metrics, wall_time_s (+ per seed)
    .lock            pid and host of the process using the directory

Rerunning with the same ``workdir`` resumes from the latest checkpoint; the
per-step data keys (``fold_in(key, step)``) make the resumed run see the same
batches as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import time
from typing import Any, Iterator

import jax
import ml_collections
import numpy as np
from absl import logging

from lstm_jax import config as config_lib
from lstm_jax import training
from lstm_jax import workdir as wd
from lstm_jax.tasks import state_from_json, state_to_json


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


class NonFiniteError(RuntimeError):
  """Training produced a NaN/Inf loss, gradient or parameter (``nonfinite="stop"``)."""


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


ON_CONFIG_CHANGE = ("refuse", "overwrite", "fresh")


def _prepare_workdir(config: ml_collections.ConfigDict, workdir: str,
                     on_config_change: str) -> None:
  """Compare the saved config with ``config`` (before anything is written)."""
  if on_config_change not in ON_CONFIG_CHANGE:
    raise ValueError(f"on_config_change={on_config_change!r}; allowed: "
                     f"{', '.join(ON_CONFIG_CHANGE)}")
  saved_path = os.path.join(workdir, "config.json")
  if not os.path.exists(saved_path):
    return
  with open(saved_path) as f:
    saved = json.load(f)
  diff = wd.config_differences(saved, config.to_dict(), config_lib.default_config().to_dict())
  if not diff:
    return
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


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       progress: bool = True, on_config_change: str = "refuse"
                       ) -> dict[str, Any]:
  """Train ``config.num_seeds`` models on ``config.task``; return the summary.

  Args:
    config: an experiment config (:func:`lstm_jax.config.default_config`).
    workdir: output directory; an existing one with checkpoints is resumed.
    progress: show a progress bar with rate and ETA on stderr.
    on_config_change: what to do when ``workdir`` holds a run with another
      config: ``"refuse"`` (default), ``"overwrite"`` (continue from its
      checkpoints with the new config), ``"fresh"`` (discard it).

  Returns:
    The contents of ``summary.json``.

  Raises:
    lstm_jax.config.ConfigError: a bad config value (before anything compiles).
    lstm_jax.workdir.WorkdirError: the workdir is locked or holds another config.
    NonFiniteError: NaN/Inf with ``nonfinite="stop"`` (summary.json says where).
    Interrupted: SIGTERM/SIGINT (after saving a checkpoint).
  """
  task, model = config_lib.validate(config)
  with wd.locked(workdir) as notes:
    for note in notes:
      logging.warning("%s: %s", workdir, note)
    _prepare_workdir(config, workdir, on_config_change)
    with _catch_signals() as caught:
      return _train(config, workdir, task, model, progress, caught)


def _train(config, workdir, task, model, progress, caught) -> dict[str, Any]:
  wd.write_json_atomic(os.path.join(workdir, "config.json"), config.to_dict())
  start = time.time()
  optimizer = training.make_optimizer(**config_lib.optimizer_kwargs(config))
  num_seeds, batch_size = config.num_seeds, config.batch_size
  n_steps = config_lib.total_steps(config)
  criterion = task.criterion
  eval_size = max(config.eval_size, criterion.eval_size)
  init_keys, data_keys, eval_keys = training.seed_keys(config.seed, num_seeds)

  state = training.init_state(model, optimizer, init_keys, task.input_size)
  loop = {"crit": [state_to_json(criterion.new_state()) for _ in range(num_seeds)],
          "solved_step": [-1] * num_seeds, "wall_time_s": 0.0,
          "skipped": [0] * num_seeds}
  store = wd.CheckpointStore(workdir)
  metrics_path = os.path.join(workdir, "metrics.jsonl")
  step = 0
  restored = store.restore_latest(state)
  for note in store.notes:
    logging.warning("%s", note)
  if restored is not None:
    step, state, loop = restored
  # Lines written after the checkpoint belong to work that is redone now.
  wd.truncate_jsonl(metrics_path, lambda r: r.get("step", 0) <= step)
  crit_states = [state_from_json(s) for s in loop["crit"]]
  solved_step = list(loop["solved_step"])
  skipped = list(loop.get("skipped", [0] * num_seeds))

  placement = config_lib.build(config).placement
  chunk = training.make_train_chunk(model, task, optimizer, batch_size, config.log_every,
                                    placement, skip_nonfinite=config.nonfinite == "skip")
  evaluate = training.make_eval(model, task, eval_size, placement)
  writers = _Writers(workdir, num_seeds)
  cached: dict[int, list[dict[str, float]]] = {}

  def run_eval(at_step: int) -> list[dict[str, float]]:
    if at_step in cached:
      return cached[at_step]
    keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(eval_keys, at_step)
    _, per_seq = jax.device_get(evaluate(state.params, keys))
    out = []
    for s in range(num_seeds):
      summary = task.summarize({k: v[s] for k, v in per_seq.items()})
      ok = criterion.solved(crit_states[s], {k: v[s] for k, v in per_seq.items()})
      summary["criterion_met"] = float(ok)
      out.append(summary)
      writers.write({"step": at_step, "seed": config.seed + s, "split": "eval",
                     "sequences_seen": at_step * batch_size, **summary}, "eval")
    cached[at_step] = out
    return out

  base_time = float(loop["wall_time_s"])
  loop_time = lambda: base_time + time.time() - start

  def save(at_step: int) -> None:
    loop.update(crit=[state_to_json(c) for c in crit_states], solved_step=solved_step,
                wall_time_s=loop_time(), skipped=skipped)
    store.save(at_step, state, wd.to_jsonable(loop))

  def write_summary(final: list[dict[str, float]] | None, status: str,
                    reason: str | None = None) -> dict[str, Any]:
    summary = _summary(config, task, criterion, step, solved_step, final, loop_time(),
                       status, reason, skipped)
    wd.write_json_atomic(os.path.join(workdir, "summary.json"), summary)
    return summary

  bar = None
  if progress:
    from tqdm import tqdm
    bar = tqdm(total=n_steps * batch_size, initial=step * batch_size, unit="seq",
               unit_scale=True, desc=f"{task.name} lag={task.lag} {_model_name(config)}")
  try:
    while step < n_steps and min(solved_step) < 0:
      t0 = time.time()
      new_state, metrics, per_seq = chunk(state, data_keys)
      metrics, per_seq = jax.device_get((metrics, per_seq))
      finite = np.asarray(metrics["finite"], bool)  # [chunk, S]
      if config.nonfinite == "stop" and not finite.all():
        bad_t, bad_s = np.argwhere(~finite)[0]
        bad_step = step + int(bad_t) + 1
        last = max(store.manager.all_steps(), default=None)
        reason = (f"non-finite loss, gradient or parameters at step {bad_step} "
                  f"(seed {config.seed + int(bad_s)}, loss "
                  f"{float(metrics['loss'][bad_t, bad_s])!r}); stopped, "
                  + ("no checkpoint was saved before it" if last is None else
                     f"the last good checkpoint is step {last}"))
        write_summary(None, "nonfinite", reason)
        raise NonFiniteError(reason)
      state = new_state
      step += config.log_every
      rate = config.log_every / max(time.time() - t0, 1e-9)
      for s in range(num_seeds):
        skipped[s] += int((~finite[:, s]).sum())
        seq_s = {k: v[:, s].reshape(-1) for k, v in per_seq.items()}
        crit_states[s] = criterion.update(crit_states[s], seq_s)
        summary = task.summarize(seq_s)
        writers.write({"step": step, "seed": config.seed + s, "split": "train",
                       "sequences_seen": step * batch_size,
                       "loss": float(np.mean(metrics["loss"][:, s])),
                       "grad_norm": float(np.mean(metrics["grad_norm"][:, s])),
                       "accuracy": summary["accuracy"], "mean_error": summary["mean_error"],
                       "skipped_updates": skipped[s], "steps_per_s": rate}, "train")
      need_eval = step % config.eval_every < config.log_every or step >= n_steps
      if criterion.eval_rules:
        if need_eval and any(criterion.train_ok(c) for c in crit_states):
          for s, e in enumerate(run_eval(step)):
            if solved_step[s] < 0 and e["criterion_met"]:
              solved_step[s] = step
      else:
        for s, c in enumerate(crit_states):
          if solved_step[s] < 0 and criterion.solved(c):
            solved_step[s] = step
      if bar is not None:
        bar.update(config.log_every * batch_size)
        bar.set_postfix(loss=f"{np.mean(metrics['loss'][-1]):.4g}",
                        solved=f"{sum(x >= 0 for x in solved_step)}/{num_seeds}")
      if caught:
        save(step)
        raise Interrupted(caught[0], step)
      if step % config.checkpoint_every < config.log_every:
        save(step)
    final = run_eval(step)
    save(step)
  finally:
    if bar is not None:
      bar.close()
    writers.close()
    store.close()
  return write_summary(final, "finished")


def _summary(config, task, criterion, step, solved_step, final, wall, status, reason,
             skipped) -> dict[str, Any]:
  num_seeds, batch_size = config.num_seeds, config.batch_size
  per_seed = []
  for s in range(num_seeds):
    per_seed.append({
        "seed": config.seed + s, "solved": solved_step[s] >= 0,
        "sequences_to_criterion": solved_step[s] * batch_size if solved_step[s] >= 0 else None,
        "skipped_updates": skipped[s],
        "metrics": final[s] if final else {}})
  solved = [p["solved"] for p in per_seed]
  to_crit = [p["sequences_to_criterion"] for p in per_seed if p["solved"]]
  if not final:
    metrics = {}
  elif num_seeds == 1:
    metrics = final[0]
  else:
    metrics = {k: float(np.median([f[k] for f in final])) for k in final[0]}
  return {
      "status": status, "reason": reason, "step": step,
      "task": task.name, "task_params": task.params, "model": _model_name(config),
      "cell": config.model.cell, "lag": task.lag, "num_seeds": num_seeds,
      "solved": all(solved) if num_seeds == 1 else float(np.mean(solved)),
      "solved_fraction": float(np.mean(solved)),
      "sequences_seen": step * batch_size,
      "sequences_to_criterion": (to_crit[0] if to_crit else None) if num_seeds == 1
                                else (float(np.median(to_crit)) if to_crit else None),
      "criterion": criterion.description,
      "metrics": metrics,
      "per_seed": per_seed,
      "wall_time_s": wall,
  }
