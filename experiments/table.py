"""Regenerate a result table: ``python -m experiments.table --config=configs/tables/paper1997.py --workdir=DIR``.

Trains the table's rows in order, each a normal run directory DIR/<row
name> (a finished row is read, not trained; an interrupted one resumes), then
prints the table and writes DIR/table.md and DIR/table.csv: per experiment
the published sequences to criterion, our median over the seeds (an unsolved
seed counts as more than the budget), the spread, seeds solved, published /
ours, wrong test sequences and wall time; the footnote gives this command,
the seeds, the median rule, the budgets and the machine (lstm_jax.tables).

``--rows=a,b`` trains only those rows (by name); the tables still hold every
finished row. ``--report`` trains nothing and writes the tables from the
finished rows. ``--seeds=N`` replaces the table's seeds. A bad row, field or
row name is one line on stderr and exit status 2 before anything trains; a
row whose run would not fit in memory stops the command the same way when its
turn comes (``--force`` runs it anyway). This file only parses flags; the
work is :func:`lstm_jax.tables.run_table`.
"""

from __future__ import annotations

import os
import shlex
import sys
from typing import Sequence

from absl import app, flags, logging

from experiments.cli import FORCE, config_and_workdir_flags, exit_codes, parse_flags
from lstm_jax.tables import run_table

_CONFIG, _WORKDIR = config_and_workdir_flags("Table")
_ROWS = flags.DEFINE_list("rows", [], "Train only these rows (names, comma-separated); the "
                          "tables still hold every finished row. Default: all rows.")
_SEEDS = flags.DEFINE_integer("seeds", 0, "Seeds per row; 0: the table's own (its seeds "
                              "field).", lower_bound=0)
_REPORT = flags.DEFINE_bool("report", False, "Train nothing: write DIR/table.md and "
                            "DIR/table.csv from the rows finished in DIR.")

_NOT_IN_COMMAND = ("rows", "report", "noreport", "force", "noforce")
"""Flags left out of the footnote's command: it regenerates the whole table."""


def footnote_command(argv: Sequence[str]) -> str:
  """The command line that regenerates the table: ``argv`` (``sys.argv``)
  as ``python -m experiments.table ...`` without :data:`_NOT_IN_COMMAND`."""
  kept, skip = [], False
  for arg in argv[1:]:
    if skip:
      skip = False
      continue
    name = arg.lstrip("-").split("=", 1)[0]
    if arg.startswith("-") and name in _NOT_IN_COMMAND:
      skip = "=" not in arg and name == "rows"
      continue
    kept.append(shlex.quote(arg))
  return " ".join(["python -m experiments.table", *kept])


def main(argv: list[str]) -> None:
  del argv
  logging.set_verbosity(logging.WARNING)
  with exit_codes():
    text, entries, unfinished = run_table(
        _CONFIG.value, _WORKDIR.value, command=footnote_command(sys.argv), names=_ROWS.value,
        seeds=_SEEDS.value or None, report=_REPORT.value, force=FORCE.value)
  print(text)
  print(f"wrote {os.path.join(_WORKDIR.value, 'table.md')} and table.csv ({len(entries)} rows "
        f"finished, {len(unfinished)} not)")


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
