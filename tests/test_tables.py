"""Result tables (lstm_jax.tables, experiments/table.py): row specs and
overrides, the median rule on hand-made summaries, the markdown and CSV, every
table config, and the CLI on the tiny ``:quick`` table (resumable row by row)."""

from __future__ import annotations

import csv
import importlib
import io
import json
import pathlib
import subprocess
import sys

import pytest

from lstm_jax import sweep as sweep_lib
from lstm_jax import tables
from lstm_jax.config import ConfigError

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _row(**fields):
  row = {"name": "r", "label": "R", "config": "hs4_adding:paper_quick", "overrides": {},
         "published": 1000, "published_note": "H&S 1997 Table 7"}
  row.update(fields)
  return row


def _table(*rows, seeds=2):
  return {"title": "T", "seeds": seeds, "rows": list(rows)}


def _summary(to_crit, wall=12.5, seen=3000, wrong=None, count=256.0):
  """A summary.json as the runner writes it: one seed per value of
  ``to_crit`` (``None``: unsolved)."""
  wrong = wrong or [0.0] * len(to_crit)
  return {"status": "finished", "wall_time_s": wall, "sequences_seen": seen,
          "per_seed": [{"seed": i, "solved": v is not None, "sequences_to_criterion": v,
                        "metrics": {"num_wrong": w, "count": count, "mse": 0.01 * (i + 1)}}
                       for i, (v, w) in enumerate(zip(to_crit, wrong))]}


# ----------------------------------------------------------------------------
# Specs and row configs.


def test_a_spec_names_a_config_module_and_its_argument():
  assert tables.parse_spec("hs2a:paper") == ("hs2a", "paper")
  assert tables.parse_spec("hs4_adding") == ("hs4_adding", None)
  for bad in ("", "hs2a:paper:x", "../hs2a", "2a", None, 3):
    with pytest.raises(ConfigError, match="expected '<module>"):
      tables.parse_spec(bad)


def test_a_row_config_is_the_config_then_the_overrides_then_the_seeds():
  c = tables.row_config(_row(config="hs4_adding:paper", overrides={
      "lag": 1000, "budget_sequences": 2_000_000, "optimizer.learning_rate": 0.25}), seeds=3)
  assert (c.lag, c.budget_sequences, c.num_seeds) == (1000, 2_000_000, 3)
  assert c.optimizer.learning_rate == 0.25 and c.batch_size == 1  # the paper setup: online
  modern = tables.row_config(_row(config="hs4_adding"), seeds=5)
  assert modern.batch_size == 16 and modern.num_seeds == 5
  c = tables.row_config(_row(config="hs3b:paper", overrides={"task_params.n": 1}), seeds=1)
  assert (c.lag, c.task_params.n) == (1000, 1)


@pytest.mark.parametrize("row,seeds,parts", [
    (_row(config="nope:paper"), 2, ["table row 'r'", "configs/nope.py does not exist"]),
    (_row(config="hs2a:papr"), 2, ["table row 'r'", "'papr' is not allowed"]),
    (_row(config="hs2a:"), 2, None),  # an empty argument is the modern setup
    (_row(overrides={"lagg": 3}), 2, ["table row 'r'", "overrides['lagg']", "no field 'lagg'"]),
    (_row(overrides={"model.cel": "gru"}), 2, ["overrides['model.cel']"]),
    (_row(overrides={"lag": "long"}), 2, ["table row 'r'", "overrides['lag']='long'"]),
    (_row(overrides={"lag": 0}), 2, ["table row 'r'", "config.lag=0"]),
    (_row(overrides=[("lag", 3)]), 2, ["table row 'r'", "expected a dict"]),
    (_row(), 0, ["table seeds=0"]),
])
def test_a_bad_row_is_one_line_naming_the_row_and_field(row, seeds, parts):
  if parts is None:  # hs2a's modern setup: minibatches of 4, not the paper's 1
    assert tables.row_config(row, seeds).batch_size == 4
    return
  with pytest.raises(ConfigError) as err:
    tables.row_config(row, seeds)
  message = str(err.value)
  assert "\n" not in message
  for part in parts:
    assert part in message, message


@pytest.mark.parametrize("table,parts", [
    (_table(_row(), _row()), ["names must be unique", "['r', 'r']"]),
    (_table(_row(nme="x")), ["table row 'r'", "unknown keys ['nme']"]),
    (_table({"name": "r", "label": "R"}), ["table row 'r'", "missing keys ['config']"]),
    (_table(_row(name="a/b")), ["table row 'a/b'", "directory name"]),
    (_table(_row(published=0)), ["table row 'r'", "published=0"]),
    (_table(), ["non-empty list of rows"]),
])
def test_a_bad_table_is_one_line(table, parts):
  with pytest.raises(ConfigError) as err:
    tables.table_rows(table)
  assert "\n" not in str(err.value)
  for part in parts:
    assert part in str(err.value), str(err.value)


def test_rows_are_chosen_by_name_in_table_order():
  rows = tables.table_rows(_table(_row(name="a"), _row(name="b"), _row(name="c")))
  assert [r.name for r in tables.select_rows(rows, ["c", "a"])] == ["a", "c"]
  assert tables.select_rows(rows, []) == rows
  with pytest.raises(ConfigError, match=r"^--rows: 'x' not in the table; its rows: a, b, c$"):
    tables.select_rows(rows, ["a", "x"])


def test_every_table_config_builds_its_rows():
  files = sorted((ROOT / "configs" / "tables").glob("*.py"))
  names = [f.stem for f in files if f.stem != "__init__"]
  assert {"paper1997", "exp4_modern", "modern1997"} <= set(names)
  for name in names:
    module = importlib.import_module(f"configs.tables.{name}")
    assert "Command:" in module.__doc__ and "Expected" in module.__doc__, name
    full = module.get_config()
    rows = tables.table_rows(full)
    assert full.seeds == 5 and all(r.config.num_seeds == 5 for r in rows), name
    window = getattr(module, "WINDOW", {})
    factor = getattr(module, "BUDGET_FACTOR", 3)
    for r in rows:  # a budget of 3x (or the module's factor) the published figure
      assert r.published and (r.config.budget_sequences  # (plus a criterion window we count)
                              == factor * r.published + window.get(r.name, 0)), (name, r.name)
    with pytest.raises(ValueError, match="'paper' is not allowed"):
      module.get_config("paper")
    quick = tables.table_rows(module.get_config("quick"))
    assert len(quick) == 2 and all(r.config.num_seeds == 2 for r in quick), name
    assert all(r.config.budget_sequences <= 200 for r in quick), name
  paper = {r.name: r for r in tables.table_rows(importlib.import_module(
      "configs.tables.paper1997").get_config())}
  assert all(r.spec.endswith(":paper") and r.config.batch_size == 1 for r in paper.values())
  assert (paper["exp3b"].config.lag, paper["exp3b"].config.task_params.n) == (1000, 1)
  assert paper["exp4_T1000"].config.lag == 1000 and paper["exp4_T1000"].published == 853_000
  assert paper["exp5"].config.task_params.n_seq == 140
  assert paper["exp2c"].config.task_params.p == 100
  assert sum(r.published for r in paper.values()) == (
      8_440 + 5_040 + 5_680 + 31_000 + 39_850 + 485_080 + 269_650 + 74_000 + 853_000
      + 482_000 + 31_390 + 571_100)


def test_modern1997_rows_take_the_tuned_settings_from_their_experiments_sweep():
  module = importlib.import_module("configs.tables.modern1997")
  tune = importlib.import_module("configs.sweeps.tune_1997")
  rows = {r.name: r for r in tables.table_rows(module.get_config())}
  paper = {r[0] for r in importlib.import_module("configs.tables.paper1997").ROWS}
  assert paper <= set(rows) and len(rows) == len(paper) + 11
  assert all(not r.spec.endswith(":paper") for r in rows.values())
  # Each tuned setting is a point of the tuning grid, tuned at a main row.
  grid = {"optimizer.learning_rate": tune.GRID["optimizer"]["learning_rate"],
          "batch_size": tune.GRID["batch_size"]}
  assert set(module.TUNED) <= set(tune.TUNED_ROWS)
  for name, chosen in module.TUNED.items():
    assert set(chosen) == set(grid) and all(chosen[f] in grid[f] for f in grid), name
  assert set(module.TUNED_FROM.values()) <= set(tune.TUNED_ROWS)
  assert not set(module.TUNED_FROM) & set(tune.TUNED_ROWS)
  for name, row in rows.items():
    chosen = module.setting(name)
    assert all(row.overrides[f] == v for f, v in chosen.items()), name
  assert rows["exp2c_q1000_p50"].config.task_params.p == 50
  assert rows["exp2c_q1000_p50"].config.lag == 1000
  assert rows["exp2c_q1000_p50"].config.budget_sequences == 203_000 + 10_000
  assert rows["exp5_nseq13"].config.task_params.n_seq == 13
  assert rows["exp3a_T1000"].published == 452_460 and rows["exp4_T500"].config.lag == 500


def test_tune_1997_sweeps_build_every_point_on_seeds_the_tables_do_not_use():
  tune = importlib.import_module("configs.sweeps.tune_1997")
  table_seeds = set(range(5))
  for name in tune.TUNED_ROWS:
    s = tune.get_config(name)
    points = sweep_lib.points(s)  # builds every point's config
    assert len(points) == 8, name
    seeds = set(range(s.base.seed, s.base.seed + s.num_seeds))
    assert not seeds & table_seeds, name
  s = tune.get_config("exp2c")
  assert s.base.task_params.p == 100 and s.base.budget_sequences == 31_000 + 10_000
  assert len(sweep_lib.points(tune.get_config("exp6a,quick"))) == 2
  with pytest.raises(ValueError, match="'exp3b' is not allowed"):
    tune.get_config("exp3b")


# ----------------------------------------------------------------------------
# The median rule.


@pytest.mark.parametrize("to_crit,median", [
    ([300, 100, 200], 200.0),                      # all solved: the plain median
    ([100, 300, 200, None, None], 300.0),          # 3 of 5: the 3rd of 100, 200, 300, inf, inf
    ([100, 200, 400, None], 300.0),                # 3 of 4: (200 + 400) / 2
    ([100, 200, None, None], None),                # 2 of 4 is not more than half
    ([100, None, None], None),
    ([None, None], None),
    ([5000], 5000.0),
])
def test_the_median_counts_unsolved_seeds_as_more_than_the_budget(to_crit, median):
  summary = _summary(to_crit)
  assert tables.median_to_criterion(summary["per_seed"]) == median


def test_a_summary_entry_has_the_spread_ratio_spend_and_test_errors():
  e = tables.summarize(_summary([400, 100, 200], wall=7.0, seen=450, wrong=[0, 3, 1]),
                       budget=600, published=1000)
  assert (e["seeds"], e["solved"], e["median"], e["fewest"], e["most"]) == (3, 3, 200, 100, 400)
  assert e["ratio"] == 5.0 and e["budget"] == 600 and e["wall_time_s"] == 7.0
  assert e["sequences_trained"] == 3 * 450
  assert (e["wrong_median"], e["wrong_min"], e["wrong_max"], e["count"]) == (1, 0, 3, 256)
  assert e["metrics"]["mse"] == pytest.approx(0.02) and e["seed_values"] == [0, 1, 2]
  mixed = tables.summarize(_summary([400, None, 200]), budget=600, published=1000)
  assert (mixed["solved"], mixed["median"], mixed["fewest"], mixed["most"]) == (2, 400, 200, None)
  assert mixed["ratio"] == 2.5
  none = tables.summarize(_summary([None, None]), budget=600, published=None)
  assert none["median"] is none["fewest"] is none["most"] is none["ratio"] is None


# ----------------------------------------------------------------------------
# Rendering.


def _entries():
  rows = tables.table_rows(_table(_row(name="a", label="Exp A", published=1000),
                                  _row(name="b", label="Exp B", published=None,
                                       published_note=""), seeds=3))
  a = tables.entry(rows[0], _summary([400, 100, 200], wall=7.0, seen=450, wrong=[0, 3, 1]),
                   "machine X")
  b = tables.entry(rows[1], _summary([None, 150, None], wall=300.0, seen=200), None)
  return rows, [a, b]


def test_the_markdown_has_one_line_per_row_and_the_footnote():
  rows, entries = _entries()
  text = tables.table_markdown("My table", entries[:1] + entries[1:], command="python -m x",
                               unfinished=[rows[1]])
  lines = text.splitlines()
  assert lines[0] == "# My table"
  assert lines[2] == "| " + " | ".join(tables.MARKDOWN_HEAD) + " |"
  # the paper_quick budget of hs4_adding: 800 sequences per seed
  assert lines[4] == ("| Exp A | 1,000 (H&S 1997 Table 7) | 200 | [100, 400] | 3/3 | 5.00 | "
                      "1 [0, 3] of 256 | 7.0 s | 1,350 |")
  assert lines[5] == ("| Exp B | - | > 800 | [150, > 800] | 1/3 | - | 0 [0, 0] of 256 | "
                      "5.0 min | 600 |")
  assert "Not finished yet (run the command again to train them): Exp B (b)." in text
  assert "Command: `python -m x`" in text and tables.MEDIAN_RULE in text
  assert "Seeds: 3 per row (a: 0-2, b: 0-2)" in text
  assert "Budgets (sequences per seed): a: 800; b: 800." in text
  assert "Machine: machine X; not recorded." in text


def test_the_csv_has_the_numbers_and_empty_cells_for_not_solved():
  _, entries = _entries()
  table = list(csv.DictReader(io.StringIO(tables.table_csv(entries))))
  assert list(table[0])[:len(tables.CSV_COLUMNS)] == list(tables.CSV_COLUMNS)
  assert [r["name"] for r in table] == ["a", "b"]
  a, b = table
  assert (a["median_sequences_to_criterion"], a["fewest"], a["most"], a["paper_over_ours"]) == (
      "200.0", "100.0", "400.0", "5.0")
  assert (a["solved"], a["seeds"], a["sequences_trained"], a["test_wrong_max"]) == (
      "3", "3", "1350", "3.0")
  assert a["config"] == "hs4_adding:paper_quick" and a["machine"] == "machine X"
  assert float(a["test_mse"]) == pytest.approx(0.02)
  assert "test_num_wrong" not in a and list(a).count("test_count") == 1
  assert (b["median_sequences_to_criterion"], b["most"], b["published"], b["machine"]) == (
      "", "", "", "")
  assert tables.table_csv([]).strip() == ",".join(tables.CSV_COLUMNS)


# ----------------------------------------------------------------------------
# The command.


def _table_cli(tmp_path, *flags):
  return subprocess.run([sys.executable, "-m", "experiments.table",
                         "--config=configs/tables/paper1997.py:quick", f"--workdir={tmp_path}",
                         *flags], cwd=ROOT, capture_output=True, text=True, timeout=600)


def _run_files(tmp_path):
  return {p.relative_to(tmp_path): p.read_bytes() for p in tmp_path.rglob("*")
          if p.is_file() and p.parent != tmp_path}


def test_the_command_writes_the_tables_and_is_resumable_row_by_row(tmp_path):
  first = _table_cli(tmp_path, "--rows=exp1_reber")
  assert first.returncode == 0, first.stderr[-3000:]
  md = (tmp_path / "table.md").read_text()
  assert "| Exp 1: embedded Reber grammar (quick) | 8,440 (H&S 1997 Table 1) |" in md
  assert ("Not finished yet (run the command again to train them): Exp 2a: p = 100 (quick) "
          "(exp2a).") in md
  assert not (tmp_path / "exp2a").exists()
  reber = (tmp_path / "exp1_reber" / "summary.json").read_bytes()

  second = _table_cli(tmp_path)  # trains exp2a only
  assert second.returncode == 0, second.stderr[-3000:]
  assert (tmp_path / "exp1_reber" / "summary.json").read_bytes() == reber
  md = (tmp_path / "table.md").read_text()
  assert md in second.stdout and "Not finished" not in md
  assert ("Command: `python -m experiments.table --config=configs/tables/paper1997.py:quick "
          f"--workdir={tmp_path}`") in md
  with open(tmp_path / "table.csv") as f:
    table = list(csv.DictReader(f))
  assert [r["name"] for r in table] == ["exp1_reber", "exp2a"]
  for r in table:
    summary = json.loads((tmp_path / r["name"] / "summary.json").read_text())
    assert int(r["seeds"]) == 2 and int(r["budget_sequences"]) == 200
    assert int(r["solved"]) == sum(p["solved"] for p in summary["per_seed"])
    assert float(r["wall_time_s"]) == pytest.approx(summary["wall_time_s"])
    assert r["machine"]
  machines = json.loads((tmp_path / "machines.json").read_text())
  assert set(machines) == {"exp1_reber", "exp2a"} and "usable cores" in machines["exp2a"]

  before = _run_files(tmp_path)
  (tmp_path / "table.md").unlink()
  again = _table_cli(tmp_path, "--rows=exp2a")  # finished: read, not trained
  assert again.returncode == 0, again.stderr[-3000:]
  assert "finished already" in again.stderr
  assert _run_files(tmp_path) == before and (tmp_path / "table.md").read_text() == md
  report = _table_cli(tmp_path, "--report")
  assert report.returncode == 0 and (tmp_path / "table.md").read_text() == md


def test_the_command_refuses_bad_rows_and_seeds_in_one_line(tmp_path):
  for flags, parts in ((["--rows=exp2a,nope"], ["--rows: 'nope' not in the table",
                                                "its rows: exp1_reber, exp2a"]),
                       (["--seeds=-1"], ["--seeds"])):
    res = _table_cli(tmp_path, *flags)
    assert res.returncode == 2, res.stderr[-3000:]
    lines = res.stderr.strip().splitlines()
    assert "Traceback" not in res.stderr and len(lines) == 1 and lines[0].startswith("error: ")
    for part in parts:
      assert part in lines[0], lines[0]
  assert not list(tmp_path.iterdir())
