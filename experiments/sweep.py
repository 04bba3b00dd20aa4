"""Run a lag sweep: ``python -m experiments.sweep --config=configs/sweeps/quickstart.py --workdir=DIR``.

Writes DIR/results.csv, DIR/results.md and DIR/memory_vs_lag.png and prints
each model's memory horizon. A config with a ``grid`` (other fields swept,
:mod:`lstm_jax.sweep`) also writes DIR/best.md, the best setting per model
and lag with the tuning spend, and prints that table. Points run with
memory diagnostics (``--config.base.diagnostics.every=N``; lstm_jax.runner)
also give DIR/diagnostics.png (gradient norm by distance, state norm over
time, forget-gate time scale against lag). Rerunning with the
same DIR skips finished points. A point whose run would not fit in memory
stops the sweep with one line on stderr and exit status 2 when its turn
comes (``--force`` runs it anyway). This file only parses flags; the work is
:func:`lstm_jax.sweep.run_sweep`.
"""

from __future__ import annotations

import os

from absl import app, logging

from experiments.cli import FORCE, config_and_workdir_flags, exit_codes, parse_flags
from lstm_jax.sweep import (best_markdown, best_settings, grid_fields, memory_horizons,
                            results_markdown, run_sweep)

_CONFIG, _WORKDIR = config_and_workdir_flags("Sweep")


def main(argv: list[str]) -> None:
  del argv
  logging.set_verbosity(logging.WARNING)
  with exit_codes():
    rows = run_sweep(_CONFIG.value, _WORKDIR.value, force=FORCE.value)
  print(results_markdown(rows, _CONFIG.value))
  for model, lag in memory_horizons(rows).items():
    print(f"memory horizon {model}: {lag}")
  fields = list(grid_fields(_CONFIG.value))
  if fields:
    print(best_markdown(best_settings(rows, fields), fields, _CONFIG.value))
  names = [os.path.join(_WORKDIR.value, "results.md"), *(["best.md"] if fields else []),
           "memory_vs_lag.png"]
  if os.path.exists(os.path.join(_WORKDIR.value, "diagnostics.png")):
    names.append("diagnostics.png")
  print(f"wrote {', '.join(names[:-1])} and {names[-1]}")


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
