"""Result tables: one command trains a list of experiments and writes our
numbers beside the published ones (``python -m experiments.table``).

A table config (``configs/tables/<name>.py``) has::

    title   the table's heading
    seeds   seeds per row (default 5)
    rows    list of {name, label, config, overrides, published, published_note}

A row's ``config`` is a spec ``"<module>[:<arg>]"``: the experiment config
``configs.<module>.get_config(arg)`` (``"hs2a:paper"``: the 1997 setup;
no ``:arg``: the modern setup). Its run config is that config, then the
row's ``overrides`` (``{dotted field: value}``, e.g. ``{"lag": 1000,
"budget_sequences": 2_000_000}``), then ``num_seeds`` = the table's seeds
(:func:`row_config`). ``name`` is the row's run directory ``workdir/<name>``,
``label`` its text in the table, ``published`` the published sequences to
criterion (an int, or ``None``) and ``published_note`` where it was published.

Each row is a normal run directory (:func:`lstm_jax.runner.train_and_evaluate`):
a finished row is read, not trained, and an interrupted one resumes from its
checkpoints, so the table command is resumable row by row. A row directory
holding a run of another config (e.g. another budget or number of seeds) is
refused with one line (:class:`lstm_jax.workdir.WorkdirError`).

A row's entry (:func:`summarize`) comes from its ``summary.json``:

- seeds solved ``n/N``;
- the **median rule**: the median of the sequences to criterion over *all*
  ``N`` seeds, an unsolved seed counting as infinite (more than the budget).
  It is a number exactly when more than half of the seeds solved (for even
  ``N`` the mean of the two middle values, both finite then); otherwise the
  row is "not solved" and the table shows ``> budget``. Seeds that stopped
  early are not dropped, so a row where few seeds solve cannot look fast;
- the spread: the fewest sequences of a solved seed and the most, ``>
  budget`` when some seed did not solve;
- ``paper / ours``: published / our median, how many times fewer sequences
  than the paper we needed (below 1: more);
- the final test evaluation the runner reports: wrong test sequences
  (``num_wrong`` of ``count``) median, min and max over the seeds, and the
  median of every other final metric (CSV);
- wall time of the row's run (its seeds train together) and its spend:
  training sequences summed over the seeds
  (:func:`lstm_jax.sweep.sequences_trained`).

:func:`table_markdown` and :func:`table_csv` render the entries; the
markdown ends with a footnote giving the command, the seeds, the median
rule, the budgets and the machines the rows ran on (recorded in
``workdir/machines.json`` when a row trains).
"""

from __future__ import annotations

import csv
import importlib
import io
import json
import math
import os
import platform
import re
from typing import Any, Mapping, NamedTuple, Sequence

import ml_collections
import numpy as np

from lstm_jax import config as config_lib
from lstm_jax import devices
from lstm_jax import workdir as wd
from lstm_jax.runner import train_and_evaluate
from lstm_jax.sweep import sequences_trained

ROW_FIELDS = ("name", "label", "config", "overrides", "published", "published_note")
"""The keys of a table row (``overrides``, ``published`` and ``published_note`` may be left out)."""

MACHINES_FILE = "machines.json"
"""In a table's workdir: per row name, the machine that last trained it (:func:`machine`)."""

MEDIAN_RULE = ("median over all seeds, an unsolved seed counting as more than the budget: a "
               "number only when more than half of the seeds solved, else '> budget' (not "
               "solved); spread: the fewest and the most sequences of the seeds, '> budget' "
               "when some seed did not solve")
"""The rule of :func:`summarize`, as the table's footnote states it."""

_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
_MODULE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class Row(NamedTuple):
  """One row of a table: its fields (:data:`ROW_FIELDS`) and its run config."""
  name: str
  label: str
  spec: str
  overrides: dict[str, Any]
  published: int | None
  published_note: str
  config: ml_collections.ConfigDict


# ----------------------------------------------------------------------------
# Rows and their configs.


def parse_spec(spec: Any, where: str = "config") -> tuple[str, str | None]:
  """``"hs2a:paper"`` -> ``("hs2a", "paper")``; ``"hs4_adding"`` ->
  ``("hs4_adding", None)`` (the modern setup). Raises
  :class:`lstm_jax.config.ConfigError` naming ``where`` for anything else."""
  if not isinstance(spec, str) or not spec:
    raise config_lib.ConfigError(f"{where}={spec!r}: expected '<module>[:<arg>]', the name of "
                                 "a config in configs/ and optionally its argument")
  module, _, arg = spec.partition(":")
  if not _MODULE.match(module) or ":" in arg:
    raise config_lib.ConfigError(f"{where}={spec!r}: expected '<module>[:<arg>]' with one "
                                 "':' and a module name of configs/ (e.g. 'hs2a:paper')")
  return module, arg or None


def row_config(row: Mapping[str, Any], seeds: int) -> ml_collections.ConfigDict:
  """The run config of a table row: ``configs.<module>.get_config(arg)``
  (:func:`parse_spec` of ``row["config"]``), then ``row["overrides"]``
  (``{dotted field: value}``), then ``num_seeds = seeds``; checked by
  :func:`lstm_jax.config.build`. Every problem is one
  :class:`lstm_jax.config.ConfigError` line naming the row (and the field)."""
  where = f"table row {row.get('name')!r}"
  module, arg = parse_spec(row.get("config"), f"{where}: config")
  try:
    get_config = importlib.import_module(f"configs.{module}").get_config
  except (ImportError, AttributeError):
    raise config_lib.ConfigError(f"{where}: config={row['config']!r}: configs/{module}.py "
                                 "does not exist or has no get_config") from None
  try:
    c = get_config(arg)
  except ValueError as err:
    raise config_lib.ConfigError(f"{where}: config={row['config']!r}: {err}") from None
  overrides = row.get("overrides") or {}
  if not isinstance(overrides, Mapping):
    raise config_lib.ConfigError(f"{where}: overrides={overrides!r}: expected a dict of "
                                 "{dotted field: value}")
  for field, value in overrides.items():
    if not _has_field(c, str(field)):
      raise config_lib.ConfigError(f"{where}: overrides[{field!r}]: {row['config']!r} has no "
                                   f"field {field!r}")
    try:
      c.update_from_flattened_dict({field: value})
    except (TypeError, ValueError) as err:
      raise config_lib.ConfigError(f"{where}: overrides[{field!r}]={value!r} is not allowed: "
                                   f"{' '.join(str(err).split())}") from None
  if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
    raise config_lib.ConfigError(f"table seeds={seeds!r}: expected an integer >= 1")
  c.num_seeds = seeds
  try:
    config_lib.build(c)
  except config_lib.ConfigError as err:
    raise config_lib.ConfigError(f"{where}: {err}") from None
  return c


def _has_field(c: ml_collections.ConfigDict, field: str) -> bool:
  """Whether dotted ``field`` is a field of ``c``; any ``task_params.<name>``
  is (the task checks its parameters)."""
  parts = field.split(".")
  for i, part in enumerate(parts):
    if not isinstance(c, ml_collections.ConfigDict):
      return False
    if part not in c:
      return i == len(parts) - 1 and parts[:-1] == ["task_params"]
    c = c[part]
  return True


def table_rows(table: ml_collections.ConfigDict, seeds: int | None = None) -> list[Row]:
  """The rows of ``table`` in order, each with its run config
  (:func:`row_config`; ``seeds``: instead of ``table.seeds``). Checks every
  row before returning: the keys, unique names usable as directory names,
  ``published`` and the config. Errors are one
  :class:`lstm_jax.config.ConfigError` line."""
  seeds = table.get("seeds", 5) if seeds is None else seeds
  found = list(table.get("rows") or [])
  if not found:
    raise config_lib.ConfigError("table rows: expected a non-empty list of rows")
  all_names = []
  for i, row in enumerate(found):
    if not isinstance(row, Mapping):
      raise config_lib.ConfigError(f"table rows[{i}]={row!r}: expected a dict with the keys "
                                   f"{', '.join(ROW_FIELDS)}")
    where = f"table row {row.get('name', i)!r}"
    unknown = sorted(set(row) - set(ROW_FIELDS))
    missing = [k for k in ("name", "label", "config") if k not in row]
    if unknown or missing:
      problems = ([f"unknown keys {unknown}"] if unknown else []) + (
          [f"missing keys {missing}"] if missing else [])
      raise config_lib.ConfigError(f"{where}: {'; '.join(problems)}; allowed: "
                                   f"{', '.join(ROW_FIELDS)}")
    if not isinstance(row["name"], str) or not _NAME.match(row["name"]):
      raise config_lib.ConfigError(f"{where}: name: expected letters, digits and '-_.' (it is "
                                   "the row's directory name)")
    published = row.get("published")
    if published is not None and (isinstance(published, bool) or not isinstance(published, int)
                                  or published < 1):
      raise config_lib.ConfigError(f"{where}: published={published!r}: expected the published "
                                   "sequences to criterion, an integer >= 1, or None")
    all_names.append(row["name"])
  if len(set(all_names)) != len(all_names):
    raise config_lib.ConfigError(f"table rows: names must be unique, got {all_names}")
  return [Row(r["name"], r["label"], r["config"], dict(r.get("overrides") or {}),
              r.get("published"), r.get("published_note") or "", row_config(r, seeds))
          for r in found]


def select_rows(rows: Sequence[Row], names: Sequence[str] | None) -> list[Row]:
  """The rows named in ``names`` (in table order; all when ``names`` is
  empty). An unknown name is one :class:`lstm_jax.config.ConfigError` line
  listing the table's rows."""
  if not names:
    return list(rows)
  known = [r.name for r in rows]
  unknown = [n for n in names if n not in known]
  if unknown:
    raise config_lib.ConfigError(f"--rows: {', '.join(map(repr, unknown))} not in the table; "
                                 f"its rows: {', '.join(known)}")
  return [r for r in rows if r.name in names]


# ----------------------------------------------------------------------------
# Running and reading rows.


def machine() -> str:
  """This machine in one line: OS, CPU model, usable cores, JAX backend."""
  cpu = platform.processor() or platform.machine()
  try:
    with open("/proc/cpuinfo") as f:
      cpu = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), cpu)
  except OSError:
    pass
  cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
  import jax  # pylint: disable=import-outside-toplevel
  return (f"{platform.system()} {platform.machine()}, {cpu}, {cores} usable cores, "
          f"JAX {jax.__version__} ({jax.default_backend()})")


def finished_summary(row: Row, workdir: str) -> dict[str, Any] | None:
  """The ``summary.json`` of ``row``'s finished run in ``workdir/<name>``,
  or ``None`` when it has not finished. Raises
  :class:`lstm_jax.workdir.WorkdirError` when the finished run's saved config
  differs from the row's (its numbers belong to another config)."""
  path = os.path.join(workdir, row.name)
  try:
    with open(os.path.join(path, "summary.json")) as f:
      summary = json.load(f)
  except (OSError, json.JSONDecodeError):
    return None
  if summary.get("status") != "finished":
    return None
  try:
    with open(os.path.join(path, "config.json")) as f:
      saved = json.load(f)
  except (OSError, json.JSONDecodeError):
    saved = None
  if saved is not None:
    diff = wd.config_differences(saved, row.config.to_dict(),
                                 config_lib.default_config().to_dict())
    if diff:
      raise wd.WorkdirError(f"{path} holds a finished run of another config than table row "
                            f"{row.name!r} ({'; '.join(diff)}); use a new workdir, or delete "
                            "that directory to train the row again")
  return summary


def run_row(row: Row, workdir: str, *, progress: bool = True, force: bool = False
            ) -> dict[str, Any]:
  """Train ``row`` in ``workdir/<name>`` (resuming its checkpoints; a
  finished run is returned as it is, untrained) and return its summary.
  A row that trains records :func:`machine` in ``workdir/machines.json``."""
  trained = finished_summary(row, workdir) is None
  summary = train_and_evaluate(row.config, os.path.join(workdir, row.name), progress=progress,
                               force=force)
  if trained and devices.is_primary():
    machines = read_machines(workdir)
    machines[row.name] = machine()
    wd.write_json_atomic(os.path.join(workdir, MACHINES_FILE), machines)
  return summary


def read_machines(workdir: str) -> dict[str, str]:
  """``workdir/machines.json`` (per row name, the machine that trained it), or ``{}``."""
  try:
    with open(os.path.join(workdir, MACHINES_FILE)) as f:
      return dict(json.load(f))
  except (OSError, json.JSONDecodeError, TypeError, ValueError):
    return {}


# ----------------------------------------------------------------------------
# Summaries.


def median_to_criterion(per_seed: Sequence[Mapping[str, Any]]) -> float | None:
  """The median rule (module docstring): the median over all seeds of
  ``sequences_to_criterion``, an unsolved seed counting as infinite; ``None``
  unless more than half of the seeds solved."""
  values = [float(p["sequences_to_criterion"]) if p["solved"] else math.inf for p in per_seed]
  median = float(np.median(values)) if values else math.inf
  return None if math.isinf(median) else median


def summarize(summary: Mapping[str, Any], budget: int, published: int | None = None
              ) -> dict[str, Any]:
  """One row's entry from its ``summary.json`` (module docstring):
  ``seeds``, ``solved``, ``median`` (:func:`median_to_criterion`; ``None``:
  not solved), ``fewest`` (the fewest sequences of a solved seed, ``None`` if
  none solved), ``most`` (the most, ``None`` when some seed did not solve:
  more than the budget), ``budget``, ``published``, ``ratio`` (published /
  median, ``None`` without both), ``wall_time_s``, ``sequences_trained``
  (summed over seeds), ``seed_values`` (the seeds' numbers), and the final
  test metrics: ``wrong_median``, ``wrong_min``, ``wrong_max``, ``count``
  (``None`` when the task reports no ``num_wrong``) and ``metrics`` (the
  median over the seeds of each final metric)."""
  per_seed = list(summary["per_seed"])
  solved = [float(p["sequences_to_criterion"]) for p in per_seed if p["solved"]]
  median = median_to_criterion(per_seed)
  finals = [p.get("metrics") or {} for p in per_seed]
  keys = sorted(set().union(*finals)) if finals else []
  metrics = {k: float(np.median([f.get(k, math.nan) for f in finals])) for k in keys}
  wrong = [f["num_wrong"] for f in finals if "num_wrong" in f]
  spent, _ = sequences_trained(summary, budget)
  return {
      "seeds": len(per_seed), "solved": len(solved), "median": median,
      "fewest": min(solved) if solved else None,
      "most": max(solved) if solved and len(solved) == len(per_seed) else None,
      "budget": int(budget), "published": published,
      "ratio": published / median if published and median else None,
      "wall_time_s": float(summary.get("wall_time_s", math.nan)),
      "sequences_trained": spent,
      "seed_values": [p.get("seed") for p in per_seed],
      "wrong_median": float(np.median(wrong)) if wrong else None,
      "wrong_min": float(min(wrong)) if wrong else None,
      "wrong_max": float(max(wrong)) if wrong else None,
      "count": metrics.get("count") if wrong else None,
      "metrics": metrics,
  }


def entry(row: Row, summary: Mapping[str, Any], machine_name: str | None = None
          ) -> dict[str, Any]:
  """:func:`summarize` of ``row``'s summary, with the row's ``name``,
  ``label``, ``spec``, ``published_note`` and the ``machine`` it ran on."""
  return {"name": row.name, "label": row.label, "spec": row.spec,
          "published_note": row.published_note, "machine": machine_name,
          **summarize(summary, row.config.budget_sequences, row.published)}


def finished_entries(rows: Sequence[Row], workdir: str) -> tuple[list[dict[str, Any]],
                                                                 list[Row]]:
  """``(entries, unfinished)``: the :func:`entry` of every row finished in
  ``workdir`` (table order), and the rows not finished."""
  machines = read_machines(workdir)
  entries, unfinished = [], []
  for row in rows:
    summary = finished_summary(row, workdir)
    if summary is None:
      unfinished.append(row)
    else:
      entries.append(entry(row, summary, machines.get(row.name)))
  return entries, unfinished


# ----------------------------------------------------------------------------
# Rendering.


def _count(value: float | None) -> str:
  return "-" if value is None else f"{value:,.0f}"


def _seconds(value: float) -> str:
  if not math.isfinite(value):
    return "-"
  if value < 120:
    return f"{value:.1f} s"
  return f"{value / 60:.1f} min" if value < 7200 else f"{value / 3600:.1f} h"


def _over(budget: int) -> str:
  return f"> {budget:,}"


def _wrong(e: Mapping[str, Any]) -> str:
  if e["wrong_median"] is None:
    return "-"
  of = f" of {e['count']:,.0f}" if e["count"] is not None else ""
  return (f"{e['wrong_median']:g} [{e['wrong_min']:g}, {e['wrong_max']:g}]{of}")


MARKDOWN_HEAD = ("experiment", "published (sequences)", "ours: median sequences",
                 "spread [fewest, most]", "seeds solved", "paper / ours",
                 "test wrong: median [min, max]", "wall time", "spend (sequences, all seeds)")
"""The columns of :func:`table_markdown`."""


def table_markdown(title: str, entries: Sequence[Mapping[str, Any]], *, command: str,
                   unfinished: Sequence[Row] = ()) -> str:
  """The markdown table: a heading, one line per finished row (the columns
  :data:`MARKDOWN_HEAD`), the rows not finished, and the footnote: the
  command, the seeds, the median rule, the budgets and the machines."""
  lines = [f"# {title}", "", "| " + " | ".join(MARKDOWN_HEAD) + " |",
           "|---|" + "---:|" * (len(MARKDOWN_HEAD) - 1)]
  for e in entries:
    published = _count(e["published"])
    if e["published_note"]:
      published += f" ({e['published_note']})"
    median = _over(e["budget"]) if e["median"] is None else _count(e["median"])
    spread = ("-" if e["fewest"] is None else
              f"[{_count(e['fewest'])}, "
              f"{_over(e['budget']) if e['most'] is None else _count(e['most'])}]")
    ratio = "-" if e["ratio"] is None else f"{e['ratio']:.2f}"
    cells = [e["label"], published, median, spread, f"{e['solved']}/{e['seeds']}", ratio,
             _wrong(e), _seconds(e["wall_time_s"]), f"{e['sequences_trained']:,}"]
    lines.append("| " + " | ".join(cells) + " |")
  if unfinished:
    lines += ["", "Not finished yet (run the command again to train them): "
              + ", ".join(f"{r.label} ({r.name})" for r in unfinished) + "."]
  seeds = sorted({len(e["seed_values"]) for e in entries})
  seed_text = (", ".join(f"{e['name']}: {_seed_range(e['seed_values'])}" for e in entries)
               if entries else "none finished")
  budgets = "; ".join(f"{e['name']}: {e['budget']:,}" for e in entries)
  machines = sorted({e["machine"] or "not recorded" for e in entries})
  lines += ["", f"Command: `{command}` (resumable: finished rows are read, not trained; "
            "`--rows=a,b` trains only those rows, `--report` trains nothing).",
            f"Seeds: {' or '.join(map(str, seeds)) or '-'} per row ({seed_text}). "
            f"Sequences to criterion: {MEDIAN_RULE}. 'paper / ours': published / our median "
            "(above 1: we needed fewer sequences). Test wrong: wrong sequences of the final "
            "test set, over the seeds. Wall time: the row's run, its seeds trained together. "
            "Spend: training sequences summed over the seeds.",
            f"Budgets (sequences per seed): {budgets or '-'}.",
            f"Machine: {'; '.join(machines) if entries else '-'}."]
  return "\n".join(lines) + "\n"


def _seed_range(seeds: Sequence[Any]) -> str:
  if seeds and all(isinstance(s, int) for s in seeds) and list(seeds) == list(
      range(seeds[0], seeds[0] + len(seeds))):
    return f"{seeds[0]}-{seeds[-1]}" if len(seeds) > 1 else str(seeds[0])
  return ",".join(map(str, seeds))


CSV_COLUMNS = ("name", "label", "config", "published", "published_note", "seeds", "solved",
               "median_sequences_to_criterion", "fewest", "most", "budget_sequences",
               "paper_over_ours", "test_wrong_median", "test_wrong_min", "test_wrong_max",
               "test_count", "wall_time_s", "sequences_trained", "machine")
"""The columns of :func:`table_csv` (then ``test_<metric>``, each other final metric's
median over the seeds)."""


def table_csv(entries: Sequence[Mapping[str, Any]]) -> str:
  """The CSV table: :data:`CSV_COLUMNS`, empty where a value is ``None``
  (``median``, ``most``: more than the budget), then ``test_<metric>`` for
  every other final metric (median over the seeds)."""
  metric_keys = sorted(set().union(*(e["metrics"] for e in entries)) - {"count", "num_wrong"}
                       if entries else [])
  table = io.StringIO()
  writer = csv.DictWriter(table, fieldnames=[*CSV_COLUMNS, *(f"test_{k}" for k in metric_keys)])
  writer.writeheader()
  for e in entries:
    values = {"name": e["name"], "label": e["label"], "config": e["spec"],
              "published": e["published"], "published_note": e["published_note"],
              "seeds": e["seeds"], "solved": e["solved"],
              "median_sequences_to_criterion": e["median"], "fewest": e["fewest"],
              "most": e["most"], "budget_sequences": e["budget"], "paper_over_ours": e["ratio"],
              "test_wrong_median": e["wrong_median"], "test_wrong_min": e["wrong_min"],
              "test_wrong_max": e["wrong_max"], "test_count": e["count"],
              "wall_time_s": e["wall_time_s"], "sequences_trained": e["sequences_trained"],
              "machine": e["machine"],
              **{f"test_{k}": e["metrics"].get(k) for k in metric_keys}}
    writer.writerow({k: "" if v is None else v for k, v in values.items()})
  return table.getvalue()


def write_table(table: ml_collections.ConfigDict, rows: Sequence[Row], workdir: str, *,
                command: str) -> tuple[str, list[dict[str, Any]], list[Row]]:
  """Write ``workdir/table.md`` and ``workdir/table.csv`` (atomically) from
  the rows of ``rows`` finished in ``workdir``; return ``(markdown, entries,
  unfinished rows)``."""
  entries, unfinished = finished_entries(rows, workdir)
  text = table_markdown(table.title, entries, command=command, unfinished=unfinished)
  if not devices.is_primary():  # several processes: process 0 writes the tables
    return text, entries, unfinished
  wd.ensure_dir(workdir)
  wd.write_text_atomic(os.path.join(workdir, "table.md"), text)
  wd.write_text_atomic(os.path.join(workdir, "table.csv"), table_csv(entries))
  return text, entries, unfinished


def run_table(table: ml_collections.ConfigDict, workdir: str, *, command: str,
              names: Sequence[str] | None = None, seeds: int | None = None,
              report: bool = False, progress: bool = True, force: bool = False
              ) -> tuple[str, list[dict[str, Any]], list[Row]]:
  """Train the rows of ``table`` (``names``: only those; every row's config
  is checked first) in order, each in ``workdir/<name>``, then write the
  tables (:func:`write_table`) of *every* row of the table finished in
  ``workdir``, so a rerun with ``names`` still writes the whole table of what
  has finished. ``report``: train nothing, only write the tables. ``seeds``:
  instead of ``table.seeds``. ``command``: the command line shown in the
  footnote. Returns what :func:`write_table` returns."""
  every = table_rows(table, seeds)
  chosen = select_rows(every, names)
  if not report:
    wd.ensure_dir(workdir)
    for row in chosen:
      run_row(row, workdir, progress=progress, force=force)
  return write_table(table, every, workdir, command=command)
