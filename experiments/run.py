"""Train one model on one task: ``python -m experiments.run --config=configs/adding.py --workdir=DIR``.

Any config field can be overridden, e.g. ``--config.lag=1000``; rerunning with
the same ``--workdir`` resumes. ``--config.diagnostics.every=100`` logs memory
diagnostics every 100 updates (metrics.jsonl, TensorBoard, diagnostics.jsonl;
lstm_jax.runner). This file only parses flags; the loop is
:func:`lstm_jax.runner.train_and_evaluate`.

Rerunning a run that finished prints its summary and changes nothing. Before
training, the memory the training step and the evaluation need is estimated;
a run that does not fit is refused unless ``--force``.

Several processes (JAX's distributed runtime): start the same command on
each with ``--coordinator=HOST:PORT --num_processes=N --process_id=I`` (or
under ``srun``, Open MPI or on a TPU pod slice, without them: detected);
process 0 writes the workdir (lstm_jax.runner). ``--distributed_timeout``
bounds the waits: the start, and a process that stops answering.

Exit status: 0 finished (solved or budget spent, now or before); 2 a missing
config file, a bad config value, a run too big for the memory, an unusable
workdir, or a distributed runtime that did not start (a coordinator not
reached, processes that did not all join within the timeout, two with one
``--process_id``: one line on stderr); 3
stopped on a non-finite value (summary.json says where); 5 another process
of a multi-process run died (rerun the same commands to resume); 128 + signal
number after SIGTERM/SIGINT (a checkpoint was saved).
"""

from __future__ import annotations

from absl import app, flags, logging

from experiments.cli import FORCE, config_and_workdir_flags, exit_codes, parse_flags
from lstm_jax.runner import ON_CONFIG_CHANGE, train_and_evaluate

_CONFIG, _WORKDIR = config_and_workdir_flags("Experiment")
_ON_CHANGE = flags.DEFINE_enum(
    "on_config_change", "refuse", ON_CONFIG_CHANGE,
    "When --workdir holds a run with a different config: refuse, overwrite (continue "
    "from its checkpoints with the new config) or fresh (discard it and start over).")


def main(argv: list[str]) -> None:
  del argv
  logging.set_verbosity(logging.WARNING)
  with exit_codes():
    summary = train_and_evaluate(_CONFIG.value, _WORKDIR.value,
                                 on_config_change=_ON_CHANGE.value, force=FORCE.value)
  print(summary_line(summary))


def summary_line(summary: dict) -> str:
  """One line of a run's summary: task, model, whether solved, sequence counts."""
  solved = f"solved={summary['solved']}"
  if summary.get("num_seeds", 1) > 1:
    solved += f" solved_fraction={summary['solved_fraction']:.2f}"
  return (f"{summary['task']} lag={summary['lag']} model={summary['model']}: "
          f"{solved} sequences_seen={summary['sequences_seen']} "
          f"sequences_to_criterion={summary['sequences_to_criterion']} "
          f"wall_time_s={summary['wall_time_s']:.1f}")


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
