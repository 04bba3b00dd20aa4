"""LSTM throughput: ``lstm_jax`` against Flax (linen, NNX) and ``torch.nn.LSTM``.

Run it (about 5 minutes on a 2-core CPU; ``--quick`` takes seconds)::

    python -m experiments.benchmark --json=/tmp/bench.json
    python -m experiments.benchmark --shapes=32x100x8x128,1x1000x8x64 --rounds=3
    python -m experiments.benchmark --quick
    python -m experiments.benchmark --grid --json=/tmp/grid.json   # shapes over B, T, I, H
    python -m experiments.benchmark --cells --json=/tmp/cells.json # every cell, every form
    python -m experiments.benchmark --cells --cell_names=mingru,mlstm --shapes=8x10000x32x32
    python -m experiments.benchmark --cells --quick

Per shape ``(B, T, I, H)`` it times one float32 LSTM layer's training step
(the parameter gradient of ``mean(ys ** 2)``) and its forward pass, for every
implementation on the same parameters and inputs, round-robin in one process
(torch in a subprocess), and reports sequences/s, ratios to torch and Flax
linen, GFLOP/s, compile time and peak memory. How it measures (the
implementations, the method, the FLOP formulas, what peak memory means, and a
caveat for shared CPUs): README.md, "How the benchmark measures".

``--cells`` times every cell instead (LSTM, GRU, minGRU, minLSTM, sLSTM,
mLSTM; ``--cell_names``) in each form it has (``impl``: the LSTM fused and
scan; minGRU, minLSTM and mLSTM scan and parallel; the others scan), with the
same rounds and medians, and reports microseconds per time step, the ratio
scan/parallel and each cell's best form against our LSTM's ``impl="auto"``
form; sLSTM and mLSTM with ``max(1, H // 32)`` heads. Its default shapes are
B = 8, I = H = 32 at T = 10^3, 10^4, 10^5 and a few configs' shapes; a form
whose compiled call would need more than ``--max_memory_gib`` (default 4) is
skipped with a note (:mod:`experiments.benchmark.cells`).

Modules: ``shapes`` (shapes, FLOPs), ``grid`` (the ``--grid`` shapes and summary), ``implementations`` (the JAX rows),
``torch_worker`` (the torch subprocess), ``memory`` (peak memory),
``harness`` (the rounds), ``report`` (table, JSON), ``cells`` (the ``--cells`` mode),
``cli`` (flags).
"""

from experiments.benchmark.grid import (GRID_AXES, GRIDS, benchmark_shapes, config_shapes,
                                        grid_shapes, grid_table)
from experiments.benchmark.grid import summarise as grid_summarise
from experiments.benchmark.grid import summary_text as grid_summary_text
from experiments.benchmark.harness import (PEERS, environment, run_benchmark, run_shape,
                                           time_jax)
from experiments.benchmark.cells import (CELL_FORMS, DEFAULT_CELLS, QUICK_CELL_SHAPES,
                                         cell_impl, cells_table, parse_cell_names, run_cells,
                                         run_cells_shape, xlstm_heads)
from experiments.benchmark.cells import LONG_SHAPES as LONG_CELL_SHAPES
from experiments.benchmark.cells import default_shapes as cells_default_shapes
from experiments.benchmark.cells import summary_table as cells_summary_table
from experiments.benchmark.implementations import (BENCH_IMPLS, CEILING, CUDNN, JAX_IMPLS,
                                                   TORCH, JaxImpl, bench_cell, build_jax_impl,
                                                   cudnn_weights, flops, make_problem)
from experiments.benchmark.report import header, markdown_table, notes, write_json
from experiments.benchmark.shapes import (DEFAULT_SHAPES, MODES, QUICK_SHAPES, Shape,
                                          ceiling_flops, model_flops, parse_shapes)
from experiments.benchmark.torch_worker import TORCH_MISSING, TorchWorker
from experiments.benchmark.cli import main

__all__ = [
    "BENCH_IMPLS", "CELL_FORMS", "CEILING", "CUDNN", "DEFAULT_CELLS", "LONG_CELL_SHAPES",
    "QUICK_CELL_SHAPES", "cell_impl", "cells_default_shapes", "cells_summary_table",
    "cells_table", "parse_cell_names", "run_cells", "run_cells_shape", "time_jax",
    "xlstm_heads", "DEFAULT_SHAPES", "GRIDS", "GRID_AXES", "JAX_IMPLS", "JaxImpl", "MODES",
    "PEERS", "QUICK_SHAPES", "Shape", "TORCH", "TORCH_MISSING", "TorchWorker", "bench_cell",
    "benchmark_shapes", "build_jax_impl", "ceiling_flops", "config_shapes", "cudnn_weights", "environment", "flops", "grid_shapes", "grid_summarise", "grid_summary_text",
    "grid_table", "header",
    "main", "make_problem", "markdown_table", "model_flops", "notes", "parse_shapes",
    "run_benchmark", "run_shape", "write_json",
]
