"""The command line: ``python -m experiments.benchmark [flags]`` (``--help`` lists them).

Three modes: the LSTM rows (default: ``--shapes`` or the default shapes),
``--grid`` (the LSTM rows over a grid of shapes) and ``--cells`` (every cell
in each of its forms: :mod:`experiments.benchmark.cells`; ``--cell_names``,
``--max_memory_gib``, ``--shapes`` and ``--quick`` apply)."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from lstm_jax.devices import keep_freed_host_memory, set_cpu_devices

from experiments.benchmark import cells as cells_lib
from experiments.benchmark import grid as grid_lib
from experiments.benchmark import torch_worker
from experiments.benchmark.harness import run_benchmark
from experiments.benchmark.implementations import BENCH_IMPLS
from experiments.benchmark.report import header, markdown_table, notes
from experiments.benchmark.shapes import DEFAULT_SHAPES, QUICK_SHAPES, Shape, parse_shapes


GRID_IMPLS = ("ours_auto", "ours", "flax_linen", "torch")
"""What ``--grid`` runs unless ``--impls`` says otherwise: ours as a run places it
(``ours_auto``), ours on one device, and the two peers."""


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(
      prog="python -m experiments.benchmark",
      description="LSTM training and forward throughput: lstm_jax vs Flax linen/NNX vs "
                  "torch.nn.LSTM (round-robin in one process; torch in a subprocess). "
                  "With --cells: every lstm_jax cell in each of its forms (scan, parallel, "
                  "fused) against our LSTM.")
  parser.add_argument("--shapes", default=None,
                      help="comma-separated BxTxIxH shapes (default: "
                           + ",".join("x".join(map(str, s)) for s in DEFAULT_SHAPES)
                           + "; with --cells: see --cells)")
  parser.add_argument("--grid", nargs="?", const="cover", default=None,
                      help="run a grid of shapes instead: " + ", ".join(grid_lib.GRIDS)
                           + " (bare --grid: cover; cover and full add the configs' own "
                           "shapes as named rows; see experiments/benchmark/grid.py); "
                           "prints per-shape us/step and ratios, then the minimum and "
                           "geometric mean of the ratios")
  parser.add_argument("--cells", action="store_true",
                      help="time every cell (--cell_names) in each of its forms instead "
                           "(LSTM: fused, scan; minGRU, minLSTM, mLSTM: scan, parallel; "
                           "others: scan), with scan/parallel ratios and each cell's best "
                           "form against our LSTM's (impl='auto'); default shapes: B=8 "
                           "I=H=32 at T=1e3, 1e4, 1e5 and configs' shapes (see "
                           "experiments/benchmark/cells.py)")
  parser.add_argument("--cell_names", default=None,
                      help="with --cells: comma-separated cells of "
                           f"{','.join(cells_lib.CELL_FORMS)} (default: "
                           f"{','.join(cells_lib.DEFAULT_CELLS)}; the LSTM, vanilla, always runs)")
  parser.add_argument("--max_memory_gib", type=float, default=cells_lib.MAX_MEMORY_GIB,
                      help="with --cells: skip a form whose compiled call needs more (XLA "
                           "temporaries, arguments, outputs; default "
                           f"{cells_lib.MAX_MEMORY_GIB:g})")
  parser.add_argument("--impls", default=None,
                      help="comma-separated implementations (default: all of "
                           f"{','.join(BENCH_IMPLS)}; with --grid: "
                           f"{','.join(GRID_IMPLS)})")
  parser.add_argument("--rounds", type=int, default=None, help="rounds (default 5; quick 2)")
  parser.add_argument("--target_s", type=float, default=None,
                      help="seconds per implementation and mode in one round "
                           "(default 0.25; quick 0.02)")
  parser.add_argument("--max_iters", type=int, default=None,
                      help="cap on iterations per implementation and mode in a round "
                           "(default 1000; quick 5)")
  parser.add_argument("--seed", type=int, default=0, help="seed of params and inputs")
  parser.add_argument("--torch_threads", type=int, default=0,
                      help="torch.set_num_threads in the torch subprocess (default 0: the "
                           "number of cores)")
  parser.add_argument("--settle_s", type=float, default=None,
                      help="pause before each implementation's turn so the previous one's "
                           "threads are idle (default 0.2; quick 0)")
  parser.add_argument("--cpu_devices", type=int, default=0,
                      help="JAX CPU devices to make (ours_split splits the batch over "
                           "them; default 0: one per usable core)")
  parser.add_argument("--quick", action="store_true",
                      help="tiny shapes and rounds (seconds; for tests and smoke runs)")
  parser.add_argument("--json", default=None, metavar="PATH", help="write all numbers here")
  parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
  parser.add_argument("--torch-worker", action="store_true", help=argparse.SUPPRESS)
  return parser.parse_args(argv)


def _settings(args: argparse.Namespace) -> dict[str, float | int]:
  """Rounds, target_s, max_iters and settle_s: the flags, or the (quick) defaults."""
  quick = args.quick
  settle_s = args.settle_s if args.settle_s is not None else (0.0 if quick else 0.2)
  if settle_s < 0:
    raise ValueError(f"--settle_s={settle_s}: expected >= 0")
  return {"rounds": args.rounds if args.rounds is not None else (2 if quick else 5),
          "target_s": args.target_s if args.target_s is not None else (0.02 if quick else 0.25),
          "max_iters": args.max_iters if args.max_iters is not None else (5 if quick else 1000),
          "settle_s": settle_s}


def _main_cells(args: argparse.Namespace) -> int:
  """``--cells``: run :func:`experiments.benchmark.cells.run_cells` and print its tables."""
  if args.grid or args.impls is not None:
    raise ValueError("--cells runs the cells in their own forms: drop --grid and --impls")
  cells = cells_lib.parse_cell_names(args.cell_names)
  if args.shapes:
    shapes = parse_shapes(args.shapes)
  elif args.quick:
    shapes = [Shape(*s) for s in cells_lib.QUICK_CELL_SHAPES]
  else:
    shapes = cells_lib.default_shapes()
  report = cells_lib.run_cells(shapes, cells, seed=args.seed,
                               max_memory_gib=args.max_memory_gib, json_path=args.json,
                               verbose=not args.quiet, **_settings(args))
  print(cells_lib.cells_header(report))
  print()
  print(cells_lib.summary_table(report))
  print()
  print(cells_lib.cells_table(report))
  print()
  print(cells_lib.cells_notes(report))
  if args.json:
    print(f"\nwrote {args.json}")
  return 0


def main(argv: Sequence[str] | None = None) -> int:
  """Run the benchmark and print the header, table and loss check; return the exit status.

  A bad flag prints one ``error:`` line on stderr and returns 2. With the
  hidden ``--torch-worker`` flag the process is the torch subprocess instead
  (:func:`experiments.benchmark.torch_worker.serve` on stdin/stdout).
  """
  args = _parse_args(argv)
  keep_freed_host_memory()  # in the torch subprocess too: both sides run with it
  if args.torch_worker:
    torch_worker.serve(sys.stdin, sys.stdout)
    return 0
  try:
    set_cpu_devices(args.cpu_devices)
    if args.shapes and args.grid:
      raise ValueError(f"--shapes and --grid={args.grid}: give one of them")
    if args.cells:
      return _main_cells(args)
    if args.cell_names is not None:
      raise ValueError("--cell_names: only with --cells")
    if args.grid:
      shapes = grid_lib.benchmark_shapes(args.grid)
    elif args.shapes:
      shapes = parse_shapes(args.shapes)
    else:
      shapes = [Shape(*s) for s in (QUICK_SHAPES if args.quick else DEFAULT_SHAPES)]
    impls_text = args.impls if args.impls is not None else ",".join(
        GRID_IMPLS if args.grid else BENCH_IMPLS)
    impls = [n.strip() for n in impls_text.split(",") if n.strip()]
    unknown = [n for n in impls if n not in BENCH_IMPLS]
    if unknown or not impls:
      raise ValueError(f"--impls: unknown {unknown}; allowed: {', '.join(BENCH_IMPLS)}")
    if args.torch_threads < 0:
      raise ValueError(f"--torch_threads={args.torch_threads}: expected >= 0 (0: all cores)")
    report = run_benchmark(shapes, impls, seed=args.seed, torch_threads=args.torch_threads,
                           json_path=args.json, verbose=not args.quiet, **_settings(args))
  except ValueError as err:
    print(f"error: {err}", file=sys.stderr)
    return 2
  print(header(report))
  print()
  if args.grid:
    ours = [n for n in ("ours_auto", "ours") if n in impls] or impls[:1]
    print(grid_lib.grid_table(report, ours[0]))
    for name in ours:
      print()
      print(grid_lib.summary_text(grid_lib.summarise(report, name)))
    if set(impls) - set(GRID_IMPLS):  # rows the grid table leaves out (e.g. jax_cudnn)
      print()
      print(markdown_table(report))
  else:
    print(markdown_table(report))
  print()
  print(notes(report))
  if args.json:
    print(f"\nwrote {args.json}")
  return 0
