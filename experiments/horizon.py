"""Search each model's memory horizon: ``python -m experiments.horizon --config=configs/sweeps/horizon_quickstart.py --workdir=DIR``.

Per model, the lag grows geometrically from ``start_lag`` until fewer than
``threshold`` of the seeds solve within the budget, then is bisected until the
first failed lag is within ``1 + resolution`` of the last solved one (the rule:
:mod:`lstm_jax.horizon`). Writes DIR/horizons.md, DIR/horizons.csv,
DIR/horizons.json and DIR/horizon.png and prints each model's horizon; points
run with memory diagnostics (``--config.base.diagnostics.every=N``;
lstm_jax.runner) also give DIR/diagnostics.png.
Rerunning with the same DIR reuses finished points, so an interrupted search
continues. A bad config value is one line on stderr and exit status 2 before
anything trains; a point whose run would not fit in memory stops the search
the same way when its turn comes (``--force`` runs it anyway).

Many jobs: a model's lags depend on its earlier results, so the shards split
the *models*: ``--shard=i/n`` (0-based; or a SLURM job array's
``SLURM_ARRAY_TASK_ID`` / ``SLURM_ARRAY_TASK_COUNT``, as in
:mod:`experiments.sweep`) searches every n-th model from the i-th and writes
no outputs. ``--merge`` (same config, no ``--shard``) trains nothing: it
replays each model's search over the finished points in DIR and
``--merge_from=DIR2,...`` and writes the outputs an unsharded search writes;
a model whose search needs a lag no shard finished is one ``missing:`` line
on stderr, and the exit status is 4 with nothing written unless
``--partial`` (its horizon "open"). This file only parses flags; the work is
:func:`lstm_jax.horizon.run_horizon` and :func:`lstm_jax.horizon.merge_horizon`.
"""

from __future__ import annotations

import os

from absl import app, logging

from experiments.cli import (FORCE, chosen_shard, config_and_workdir_flags, exit_codes,
                             parse_flags, report_missing, shard_and_merge_flags)
from lstm_jax.horizon import Search, horizons_markdown, merge_horizon, run_horizon
from lstm_jax.sweep import point_name

_CONFIG, _WORKDIR = config_and_workdir_flags("Horizon")
_SHARD, _MERGE, _MERGE_FROM, _PARTIAL = shard_and_merge_flags("models")


def main(argv: list[str]) -> None:
  del argv
  logging.set_verbosity(logging.WARNING)
  config, workdir = _CONFIG.value, _WORKDIR.value
  with exit_codes():
    index, count = chosen_shard(_SHARD.value, _MERGE.value, _MERGE_FROM.value, _PARTIAL.value)
    if _MERGE.value:
      merged = merge_horizon(config, workdir, _MERGE_FROM.value, partial=_PARTIAL.value)
      results = merged.results
      dirs = list(dict.fromkeys([workdir, *_MERGE_FROM.value]))
      print(f"merged {len(merged.sources)} finished points of {len(results)} models from "
            f"{', '.join(dirs)}")
    else:
      results = run_horizon(config, workdir, force=FORCE.value, shard=(index, count))
    search = Search.of(config)
  if _MERGE.value:
    report_missing([f"{label}: the search needs lag {lag} (run directory "
                    f"{point_name(label, lag)})" for label, lag in merged.missing.items()],
                   len(results), "models", dirs, _PARTIAL.value)
    if not merged.written:
      return
  elif count > 1:
    for label, result in results.items():
      print(f"shard {index}/{count}: memory horizon {label}: {result['horizon']}")
    print(f"shard {index}/{count}: {len(results)} models searched in {workdir}; no tables "
          "written. Once every shard has finished, run the same command with --merge instead "
          "of --shard (and --merge_from=DIR,... for shards that used other workdirs).")
    return
  print(horizons_markdown(results, config, search))
  for label, result in results.items():
    print(f"memory horizon {label}: {result['horizon']}")
  plots = "horizon.png"
  if os.path.exists(os.path.join(workdir, "diagnostics.png")):
    plots += " and diagnostics.png"
  print(f"wrote {os.path.join(workdir, 'horizons.md')}, horizons.csv, horizons.json, "
        + plots)


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
