"""Run a lag sweep: ``python -m experiments.sweep --config=configs/sweeps/quickstart.py --workdir=DIR``.

Writes DIR/results.csv, DIR/results.md and DIR/memory_vs_lag.png and prints
each model's memory horizon. A config with a ``grid`` (other fields swept,
:mod:`lstm_jax.sweep`) also writes DIR/best.md, the best setting per model
and lag with the tuning spend, and prints that table. Points run with
memory diagnostics (``--config.base.diagnostics.every=N``; lstm_jax.runner)
also give DIR/diagnostics.png (gradient norm by distance, state norm over
time, forget-gate time scale against lag). Points whose evaluations log
``loss_over_baseline`` (or the sweep's ``curve_metric``) also give
DIR/learning_curves.png (that metric against sequences seen, one panel per
lag). Rerunning with the
same DIR skips finished points. Over several processes (``--coordinator``,
``--num_processes``, ``--process_id``, as for ``experiments.run``) every
process runs the whole sweep, each point's seeds split over all of them,
and only process 0 writes DIR. A point whose run would not fit in memory
stops the sweep with one line on stderr and exit status 2 when its turn
comes (``--force`` runs it anyway).

Many jobs: ``--shard=i/n`` (0-based) runs only every n-th point from the
i-th (:func:`lstm_jax.sweep.shard_points`) and writes no tables; inside a
SLURM job array the shard comes from ``SLURM_ARRAY_TASK_ID`` and
``SLURM_ARRAY_TASK_COUNT`` (or ``_MIN``/``_MAX``/``_STEP``) when ``--shard``
is not given (:func:`lstm_jax.sweep.shard_from_env`). The shards may share
DIR or use their own. Then ``--merge`` (same config, no ``--shard``) trains
nothing and writes the tables into DIR from the finished points in DIR and
in ``--merge_from=DIR2,...``, the same tables as an unsharded sweep; points
no shard finished are listed on stderr, one ``missing:`` line each, and the
exit status is 4 with nothing written, unless ``--partial`` (tables of the
finished points, exit 0). This file only parses flags; the work is
:func:`lstm_jax.sweep.run_sweep` and :func:`lstm_jax.sweep.merge_sweep`.
"""

from __future__ import annotations

import os

from absl import app, logging

from experiments.cli import (FORCE, chosen_shard, config_and_workdir_flags, exit_codes,
                             parse_flags, report_missing, shard_and_merge_flags)
from lstm_jax.devices import is_primary
from lstm_jax.sweep import (best_markdown, best_settings, grid_fields, memory_horizons,
                            merge_sweep, results_markdown, run_sweep)

_CONFIG, _WORKDIR = config_and_workdir_flags("Sweep")
_SHARD, _MERGE, _MERGE_FROM, _PARTIAL = shard_and_merge_flags("points")


def main(argv: list[str]) -> None:
  del argv
  logging.set_verbosity(logging.WARNING)
  config, workdir = _CONFIG.value, _WORKDIR.value
  with exit_codes():
    index, count = chosen_shard(_SHARD.value, _MERGE.value, _MERGE_FROM.value, _PARTIAL.value)
    if _MERGE.value:
      merged = merge_sweep(config, workdir, _MERGE_FROM.value, partial=_PARTIAL.value)
      rows = merged.rows
      dirs = list(dict.fromkeys([workdir, *_MERGE_FROM.value]))
      print(f"merged {len(rows)} finished points from {', '.join(dirs)}")
    else:
      rows = run_sweep(config, workdir, force=FORCE.value, shard=(index, count))
  if _MERGE.value:
    report_missing([" ".join([f"{p.model['label']} lag={p.lag}",
                              *(f"{f}={v!r}" for f, v in p.setting.items()),
                              f"(run directory {p.name})"])
                    for p in merged.missing], len(rows) + len(merged.missing), "points", dirs,
                   _PARTIAL.value)
    if not merged.written:
      return
  elif count > 1:
    for r in rows:
      values = "".join(f" {f}={r[f]!r}" for f in grid_fields(config))
      print(f"shard {index}/{count}: {r['model']} lag={r['lag']}{values}: solved by "
            f"{r['solved_fraction']:.2f} of the seeds")
    print(f"shard {index}/{count}: {len(rows)} points finished in {workdir}; no tables "
          "written. Once every shard has finished, run the same command with --merge instead "
          "of --shard (and --merge_from=DIR,... for shards that used other workdirs).")
    return
  print(results_markdown(rows, config))
  for model, lag in memory_horizons(rows).items():
    print(f"memory horizon {model}: {lag}")
  fields = list(grid_fields(config))
  if fields:
    print(best_markdown(best_settings(rows, fields), fields, config))
  if not is_primary():  # several processes: process 0 wrote the files
    return
  names = [os.path.join(workdir, "results.md"), *(["best.md"] if fields else []),
           "memory_vs_lag.png"]
  for extra in ("diagnostics.png", "learning_curves.png"):
    if os.path.exists(os.path.join(workdir, extra)):
      names.append(extra)
  print(f"wrote {', '.join(names[:-1])} and {names[-1]}")


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
