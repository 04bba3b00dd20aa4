"""experiments/scaling.py runs and reports what it claims (tiny sizes; no timing asserts)."""

from __future__ import annotations

from experiments import scaling


def test_memory_row_reports_xla_temporaries_and_finite_gradients():
  row = scaling.memory_row(64, "sqrt", batch=2, hidden=4, run=True)
  assert row["T"] == 64 and row["remat"] == "sqrt"
  assert row["temp_mib"] > 0 and row["finite"] is True


def test_seeds_row_counts_every_seed():
  one = scaling.seeds_row(1, batch=2, time_steps=3, inputs=2, hidden=4, steps=2, rounds=1)
  two = scaling.seeds_row(2, batch=2, time_steps=3, inputs=2, hidden=4, steps=2, rounds=1)
  assert one["seeds"] == 1 and two["seeds"] == 2
  assert one["sequences_per_s"] > 0 and two["sequences_per_s"] > 0
  # "auto" is the fused layer for one seed and the plain scan for a batch of seeds.
  assert one["impl"] == "auto" and two["impl"] == "scan"


def test_cli_prints_tables(capsys):
  assert scaling.main(["memory", "--T=32", "--policies=none,sqrt"]) == 0
  out = capsys.readouterr().out
  assert "| 32 | none |" in out and "| 32 | sqrt |" in out
