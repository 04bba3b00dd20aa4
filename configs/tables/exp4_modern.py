"""H&S 1997 Exp 4 (the adding problem, 1997 form) in the modern setup at
T = 100, 500 and 1000: our sequences to criterion beside the published ones.

Command:
  python -m experiments.table --config=configs/tables/exp4_modern.py --workdir=/tmp/exp4_modern
Measures: configs/hs4_adding.py without an argument (the 1997 cell, 8 cells,
minibatches of 16, Adam lr 1e-3 with clipping; see that file) at lag T, 5
seeds, a budget of 3x the published figure; the median sequences to
criterion over the seeds (lstm_jax.tables: an unsolved seed counts as more
than the budget), spread, seeds solved, published / ours, wrong test
sequences of 2,560, wall time. Writes DIR/table.md and DIR/table.csv.
Expected (published, H&S 1997, Table 7): 74,000 sequences at T = 100,
209,000 at T = 500, 853,000 at T = 1000 (1, 0 and 1 of 2,560 test sequences
wrong).
Tiny variant for tests: ``--config=configs/tables/exp4_modern.py:quick`` (the
``:quick`` config at T = 10 and 20, 2 seeds, 160 sequences).
"""

from configs.tables import BUDGET_FACTOR, table

PUBLISHED = {100: 74_000, 500: 209_000, 1000: 853_000}
"""H&S 1997 Table 7: sequences to criterion by T."""


def get_config(arg: str | None = None):
  title = "H&S 1997 Exp 4 (adding) in the modern setup: sequences to criterion"
  if arg == "quick":
    return table(arg, title + " (quick test variant)", seeds=2, rows=[
        {"name": f"T{lag}", "label": f"Exp 4 (adding): T = {lag} (quick)",
         "config": "hs4_adding:quick", "overrides": {"lag": lag, "budget_sequences": 160},
         "published": PUBLISHED[100], "published_note": "H&S 1997 Table 7"} for lag in (10, 20)])
  return table(arg, title, [
      {"name": f"T{lag}", "label": f"Exp 4 (adding): T = {lag}", "config": "hs4_adding",
       "overrides": {"lag": lag, "budget_sequences": BUDGET_FACTOR * published},
       "published": published, "published_note": "H&S 1997 Table 7"}
      for lag, published in PUBLISHED.items()])
