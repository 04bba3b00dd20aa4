"""The command line: ``python -m experiments.benchmark [flags]`` (``--help`` lists them)."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from lstm_jax.devices import keep_freed_host_memory, set_cpu_devices

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
                  "torch.nn.LSTM (round-robin in one process; torch in a subprocess).")
  parser.add_argument("--shapes", default=None,
                      help="comma-separated BxTxIxH shapes (default: "
                           + ",".join("x".join(map(str, s)) for s in DEFAULT_SHAPES) + ")")
  parser.add_argument("--grid", nargs="?", const="cover", default=None,
                      help="run a grid of shapes instead: " + ", ".join(grid_lib.GRIDS)
                           + " (bare --grid: cover; cover and full add the configs' own "
                           "shapes as named rows; see experiments/benchmark/grid.py); "
                           "prints per-shape us/step and ratios, then the minimum and "
                           "geometric mean of the ratios")
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
    quick = args.quick
    rounds = args.rounds if args.rounds is not None else (2 if quick else 5)
    target_s = args.target_s if args.target_s is not None else (0.02 if quick else 0.25)
    max_iters = args.max_iters if args.max_iters is not None else (5 if quick else 1000)
    settle_s = args.settle_s if args.settle_s is not None else (0.0 if quick else 0.2)
    if settle_s < 0:
      raise ValueError(f"--settle_s={settle_s}: expected >= 0")
    report = run_benchmark(shapes, impls, rounds=rounds, target_s=target_s,
                           max_iters=max_iters, seed=args.seed,
                           torch_threads=args.torch_threads, settle_s=settle_s,
                           json_path=args.json, verbose=not args.quiet)
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
