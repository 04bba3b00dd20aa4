"""experiments/scaling.py runs and reports what it claims (tiny sizes; no timing asserts)."""

from __future__ import annotations

from experiments import scaling


def test_memory_row_reports_xla_temporaries_and_finite_gradients():
  row = scaling.memory_row(64, "sqrt", batch=2, hidden=4, run=2)
  assert row["T"] == 64 and row["remat"] == "sqrt" and row["impl"] == "fused"
  assert row["temp_mib"] > 0 and row["finite"] is True
  assert row["us_per_step"] == 1e6 * row["step_s"] / 64
  assert scaling.memory_row(64, "sqrt", batch=2, hidden=4, impl="scan")["impl"] == "scan"


def test_seeds_row_counts_every_seed():
  tiny = dict(batch=2, time_steps=3, inputs=2, hidden=4, steps=1, rounds=1)
  two = scaling.seeds_row(2, ensemble="vmap", **tiny)
  three = scaling.seeds_row(3, ensemble="map", devices=2, **tiny)
  assert (two["seeds"], three["seeds"]) == (2, 3)
  assert two["sequences_per_s"] > 0 and three["sequences_per_s"] > 0
  # "auto" is the plain scan only for seeds vmapped on one device.
  assert two["impl"] == "scan" and three["impl"] == "auto"
  assert (two["ensemble"], two["devices"]) == ("vmap", 1)
  assert (three["ensemble"], three["devices"]) == ("map", 2)


def test_cli_prints_tables(capsys):
  assert scaling.main(["memory", "--T=32", "--policies=none,sqrt", "--impls=auto,scan",
                       "--B=2", "--H=4", "--run"]) == 0
  out = capsys.readouterr().out
  assert "| 32 | none | fused |" in out and "| 32 | sqrt | scan |" in out
