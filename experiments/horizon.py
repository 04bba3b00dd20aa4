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
the same way when its turn comes (``--force`` runs it anyway). This file only
parses flags; the work is :func:`lstm_jax.horizon.run_horizon`.
"""

from __future__ import annotations

import os

from absl import app, logging

from experiments.cli import FORCE, config_and_workdir_flags, exit_codes, parse_flags
from lstm_jax.horizon import Search, horizons_markdown, run_horizon

_CONFIG, _WORKDIR = config_and_workdir_flags("Horizon")


def main(argv: list[str]) -> None:
  del argv
  logging.set_verbosity(logging.WARNING)
  with exit_codes():
    results = run_horizon(_CONFIG.value, _WORKDIR.value, force=FORCE.value)
    search = Search.of(_CONFIG.value)
  print(horizons_markdown(results, _CONFIG.value, search))
  for label, result in results.items():
    print(f"memory horizon {label}: {result['horizon']}")
  plots = "horizon.png"
  if os.path.exists(os.path.join(_WORKDIR.value, "diagnostics.png")):
    plots += " and diagnostics.png"
  print(f"wrote {os.path.join(_WORKDIR.value, 'horizons.md')}, horizons.csv, horizons.json, "
        + plots)


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
