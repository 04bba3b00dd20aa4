"""Train one model on one task: ``python -m experiments.run --config=configs/adding.py --workdir=DIR``.

Any config field can be overridden, e.g. ``--config.lag=1000``; rerunning with
the same ``--workdir`` resumes. This file only parses flags; the loop is
:func:`lstm_jax.runner.train_and_evaluate`.
"""

from __future__ import annotations

import sys

from absl import app, flags, logging
from ml_collections import config_flags

from lstm_jax.config import ConfigError
from lstm_jax.runner import train_and_evaluate

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory (resumed if it exists).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv: list[str]) -> None:
  del argv
  logging.set_verbosity(logging.WARNING)
  try:
    summary = train_and_evaluate(_CONFIG.value, _WORKDIR.value)
  except ConfigError as err:
    sys.exit(f"error: {err}")
  print(f"{summary['task']} lag={summary['lag']} model={summary['model']}: "
        f"solved={summary['solved']} sequences_seen={summary['sequences_seen']} "
        f"sequences_to_criterion={summary['sequences_to_criterion']} "
        f"wall_time_s={summary['wall_time_s']:.1f}")


if __name__ == "__main__":
  app.run(main)
