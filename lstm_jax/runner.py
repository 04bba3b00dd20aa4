"""The experiment loop: train a model on a task until the task's criterion
holds or the budget ends; log, checkpoint, resume and summarise.

``train_and_evaluate(config, workdir)`` writes into ``workdir``::

    config.json      the full config
    metrics.jsonl    one line per seed per log interval: step, sequences_seen,
                     loss, grad_norm, task metrics, steps_per_s; and eval lines
    tensorboard/     TensorBoard event files (tensorboardX)
    checkpoints/     orbax checkpoints: train state + loop state (criterion
                     streams, solved steps, wall time)
    summary.json     task, model, lag, solved, sequences_seen,
                     sequences_to_criterion, metrics, wall_time_s (+ per seed)

Rerunning with the same ``workdir`` resumes from the latest checkpoint; the
per-step data keys (``fold_in(key, step)``) make the resumed run see the same
batches as an uninterrupted one.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from lstm_jax import config as config_lib
from lstm_jax import training
from lstm_jax.tasks import state_from_json, state_to_json


def _model_name(config: ml_collections.ConfigDict) -> str:
  m = config.model
  name = m.cell if m.bias_init == "forget" else f"{m.cell}-{m.bias_init}"
  return name if m.num_layers == 1 else f"{name}x{m.num_layers}"


def _truncate_metrics(path: str, step: int) -> None:
  """Drop metric lines written after ``step`` (work lost with the process)."""
  if not os.path.exists(path):
    return
  with open(path) as f:
    lines = [l for l in f if l.strip() and json.loads(l).get("step", 0) <= step]
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    f.writelines(lines)
  os.replace(tmp, path)


class _Writers:
  """metrics.jsonl plus TensorBoard scalars."""

  def __init__(self, workdir: str, num_seeds: int):
    from tensorboardX import SummaryWriter  # imported lazily: heavy
    self.jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a")
    self.tb = SummaryWriter(os.path.join(workdir, "tensorboard"))
    self.num_seeds = num_seeds

  def write(self, record: dict[str, Any], prefix: str) -> None:
    self.jsonl.write(json.dumps(training.to_jsonable(record)) + "\n")
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


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       progress: bool = True) -> dict[str, Any]:
  """Train ``config.num_seeds`` models on ``config.task``; return the summary.

  Args:
    config: an experiment config (:func:`lstm_jax.config.default_config`).
    workdir: output directory; an existing one with checkpoints is resumed.
    progress: show a progress bar with rate and ETA on stderr.

  Returns:
    The contents of ``summary.json``.

  Raises:
    lstm_jax.config.ConfigError: a bad config value (before anything compiles).
  """
  task, model = config_lib.validate(config)
  os.makedirs(workdir, exist_ok=True)
  training.write_json_atomic(os.path.join(workdir, "config.json"), config.to_dict())
  start = time.time()
  optimizer = training.make_optimizer(**config_lib.optimizer_kwargs(config))
  num_seeds, batch_size = config.num_seeds, config.batch_size
  n_steps = config_lib.total_steps(config)
  criterion = task.criterion
  eval_size = max(config.eval_size, criterion.eval_size)
  init_keys, data_keys, eval_keys = training.seed_keys(config.seed, num_seeds)

  state = training.init_state(model, optimizer, init_keys, task.input_size)
  loop = {"crit": [state_to_json(criterion.new_state()) for _ in range(num_seeds)],
          "solved_step": [-1] * num_seeds, "wall_time_s": 0.0, "last_eval": {}}
  manager = ocp.CheckpointManager(
      os.path.abspath(os.path.join(workdir, "checkpoints")),
      options=ocp.CheckpointManagerOptions(max_to_keep=2, enable_async_checkpointing=False))
  step = 0
  if manager.latest_step() is not None:
    step = manager.latest_step()
    restored = manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(state), loop=ocp.args.JsonRestore()))
    state, loop = restored.state, restored.loop
    _truncate_metrics(os.path.join(workdir, "metrics.jsonl"), step)
  crit_states = [state_from_json(s) for s in loop["crit"]]
  solved_step = list(loop["solved_step"])

  chunk = training.make_train_chunk(model, task, optimizer, batch_size, config.log_every,
                                    remat=config.remat)
  evaluate = training.make_eval(model, task, eval_size)
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

  def save(at_step: int) -> None:
    if manager.latest_step() == at_step:
      return
    loop.update(crit=[state_to_json(c) for c in crit_states], solved_step=solved_step,
                wall_time_s=loop_time())
    manager.save(at_step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), loop=ocp.args.JsonSave(training.to_jsonable(loop))),
                 force=True)

  base_time = float(loop["wall_time_s"])
  loop_time = lambda: base_time + time.time() - start
  bar = None
  if progress:
    from tqdm import tqdm
    bar = tqdm(total=n_steps * batch_size, initial=step * batch_size, unit="seq",
               unit_scale=True, desc=f"{task.name} lag={task.lag} {_model_name(config)}")
  try:
    while step < n_steps and min(solved_step) < 0:
      t0 = time.time()
      state, metrics, per_seq = chunk(state, data_keys)
      metrics, per_seq = jax.device_get((metrics, per_seq))
      step += config.log_every
      rate = config.log_every / max(time.time() - t0, 1e-9)
      for s in range(num_seeds):
        seq_s = {k: v[:, s].reshape(-1) for k, v in per_seq.items()}
        crit_states[s] = criterion.update(crit_states[s], seq_s)
        summary = task.summarize(seq_s)
        writers.write({"step": step, "seed": config.seed + s, "split": "train",
                       "sequences_seen": step * batch_size,
                       "loss": float(np.mean(metrics["loss"][:, s])),
                       "grad_norm": float(np.mean(metrics["grad_norm"][:, s])),
                       "accuracy": summary["accuracy"], "mean_error": summary["mean_error"],
                       "steps_per_s": rate}, "train")
      need_eval = step % config.eval_every < config.log_every or step >= n_steps
      if criterion.eval_rules:
        if need_eval and any(criterion.train_ok(c) for c in crit_states):
          evals = run_eval(step)
          for s, e in enumerate(evals):
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
      if step % config.checkpoint_every < config.log_every:
        save(step)
    final = run_eval(step)
    save(step)
  finally:
    if bar is not None:
      bar.close()
    writers.close()
    manager.close()

  per_seed = []
  for s in range(num_seeds):
    per_seed.append({
        "seed": config.seed + s, "solved": solved_step[s] >= 0,
        "sequences_to_criterion": solved_step[s] * batch_size if solved_step[s] >= 0 else None,
        "metrics": final[s]})
  solved = [p["solved"] for p in per_seed]
  to_crit = [p["sequences_to_criterion"] for p in per_seed if p["solved"]]
  summary = {
      "task": task.name, "task_params": task.params, "model": _model_name(config),
      "cell": config.model.cell, "lag": task.lag, "num_seeds": num_seeds,
      "solved": all(solved) if num_seeds == 1 else float(np.mean(solved)),
      "solved_fraction": float(np.mean(solved)),
      "sequences_seen": step * batch_size,
      "sequences_to_criterion": (to_crit[0] if to_crit else None) if num_seeds == 1
                                else (float(np.median(to_crit)) if to_crit else None),
      "criterion": criterion.description,
      "metrics": final[0] if num_seeds == 1 else {
          k: float(np.median([f[k] for f in final])) for k in final[0]},
      "per_seed": per_seed,
      "wall_time_s": loop_time(),
  }
  training.write_json_atomic(os.path.join(workdir, "summary.json"), summary)
  return summary
