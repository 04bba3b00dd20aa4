"""LSTM throughput: ``lstm_jax`` against Flax (linen, NNX) and ``torch.nn.LSTM``.

Run it (about 5 minutes on a 2-core CPU; ``--quick`` takes seconds)::

    python -m experiments.benchmark --json=/tmp/bench.json
    python -m experiments.benchmark --shapes=32x100x8x128,1x1000x8x64 --rounds=3
    python -m experiments.benchmark --quick

What is measured, per shape ``(B, T, I, H)`` (float32, one LSTM layer,
batch-major inputs ``[B, T, I]``, zero initial state, every implementation
given the *same* parameters and the *same* inputs):

* ``forward``: ``loss = mean(ys ** 2)`` over all ``B * T * H`` outputs.
* ``train``: the gradient of that loss with respect to the parameters (not the
  inputs), as a training step computes it, without the optimiser update.

Implementations:

* ``ours``: ``lstm_jax.rnn`` with the ``vanilla`` cell inside ``jax.jit``,
  default options: the fused layer of ``lstm_jax.fused`` (custom backward
  pass); ``ours_scan``: the same with ``impl="scan"`` (plain autodiff of the
  ``lax.scan``); ``ours_remat``: ``remat=True`` (each step recomputed in the
  backward pass; plain scan); ``ours_split``: ``ours`` with the batch split
  over the process's devices (``lstm_jax.parallel.split_batch``; on a CPU the
  command makes one JAX CPU device per core, ``--cpu_devices``), the way a
  one-seed run trains on a multi-core CPU.
* ``flax_linen``: ``flax.linen.RNN(flax.linen.OptimizedLSTMCell(H))`` in
  ``jax.jit``.
* ``flax_nnx``: ``flax.nnx.RNN(flax.nnx.OptimizedLSTMCell(I, H))``, run through
  ``nnx.split``/``nnx.merge`` inside ``jax.jit`` (the low-overhead functional
  pattern; a zero initial carry is passed, as the other implementations use).
* ``torch``: ``torch.nn.LSTM(I, H, batch_first=True)`` in a subprocess (so its
  thread pool, ``torch.set_num_threads(<cores>)`` unless ``--torch_threads``
  says otherwise, does not compete with XLA's), on CUDA when available; skipped
  with a message when torch is absent.
* ``jax_cudnn``: ``jax.experimental.rnn.lstm`` (cuDNN's LSTM through JAX),
  GPU only; skipped with a message elsewhere. Same parameters, packed into
  cuDNN's flat weight vector (:func:`cudnn_weights`).
* ``ceiling``: not an LSTM: a bare ``lax.scan`` of only the recurrent matmul
  ``z = h @ W`` (``[B, H] x [H, 4H]``), folded back to ``[B, H]`` with
  ``h = tanh(z_i + z_f + z_g + z_o)`` (the sum of its four ``H``-column
  blocks, so values stay bounded and no column of ``W`` is dead). Its GFLOP/s
  is what the sequential per-step matmuls alone reach at this shape: a bound
  for an LSTM whose steps wait on them, except at tiny ``B * H`` where the
  per-step loop overhead, not the matmul, sets the pace.

Method: all implementations are compiled (first call timed), then run in the
same process round-robin: each round runs every implementation (the order
rotates from round to round; each turn starts after a ``--settle_s`` pause, so
the previous implementation's spinning worker threads are idle) for a fixed
number of iterations per mode, calibrated once so that one turn takes about
``--target_s``; the torch
subprocess is driven round by round over stdin/stdout (one JSON line each way),
so it alternates with the JAX implementations. Every call is waited for
(``block_until_ready`` / ``.item()`` / CUDA sync) before the next, so each
iteration is one full step's latency. Reported numbers are medians over rounds
of ``B * iters / seconds`` (sequences/s); ``(+-x%)`` is half the min-max spread
of the rounds relative to the median.

Formulas (matmul FLOPs only; elementwise gate work, a few percent, is not
counted; recomputation by ``remat`` is not counted, so all implementations are
credited the same useful work)::

    forward = 2 * B * T * (I + H) * 4H         x @ W_x and h @ W_h, every step
    train   = forward + 2*B*T*(I + H)*4H       dW_x, dW_h
                      + 2*B*T*H*4H             dh_prev (no input gradient)
            = 2 * B * T * 4H * (2I + 3H)       (~3x forward when H >> I)
    ceiling forward = 2 * B * T * H * 4H,  ceiling train = 3x that
    GFLOP/s = FLOPs * (sequences/s) / B / 1e9

Ratios ``x torch`` and ``x linen`` are this implementation's sequences/s
divided by the peer's (above 1: faster than the peer). Compile time is the
first call's time minus the median steady per-iteration time (tracing and XLA
compilation; for torch, first-call set-up such as oneDNN primitives). Peak
memory: for XLA, ``temp_size_in_bytes`` of
``jax.jit(f).lower(...).compile().memory_analysis()`` (the scratch buffers of
the program, without its arguments and outputs; ``-`` where the backend does
not report it); for torch on CPU, the growth of the subprocess's peak resident
set size during the first two calls of a mode over its resident set size
before them (Linux: ``VmHWM`` from ``/proc/self/status``, reset per mode by
writing 5 to ``/proc/self/clear_refs``; elsewhere ``ru_maxrss`` growth --
not used on Linux because ``ru_maxrss`` survives ``exec`` and so starts at
the parent's peak). It includes allocator caching and lazily loaded code, so
it is only roughly comparable to XLA's figure. For torch on CUDA,
``torch.cuda.max_memory_allocated`` over the allocation before the calls.

Caveat for shared CPUs: with other busy processes on the machine, OpenMP's
spinning barriers can make torch with ``threads = cores`` many times slower
than with one thread (a parallel region per op waits for a descheduled
thread; on a 2-core machine at load 6, ``B=1, T=1000, H=64`` took 106 ms per
training step with 2 threads and 4.5 ms with 1). Check the load and compare
with ``--torch_threads=1`` before reading much into the torch column.

XLA flags are left at their defaults (``XLA_FLAGS`` is reported in the header,
not set). The header names the JAX platform (``jax.devices()[0].platform``):
numbers measured here are for the CPU; the same script runs unchanged on a GPU
(torch then uses CUDA).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import importlib.util
import json
import math
import os
import pathlib
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, Iterable, Sequence, TextIO

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import lstm_jax
from lstm_jax import interop, parallel

ROOT = pathlib.Path(__file__).resolve().parents[1]

DEFAULT_SHAPES = ((32, 100, 8, 128), (128, 200, 8, 256), (16, 1000, 8, 128),
                  (1, 1000, 8, 64), (256, 50, 64, 512))
QUICK_SHAPES = ((2, 5, 3, 4), (4, 20, 8, 16))
JAX_IMPLS = ("ours", "ours_split", "ours_scan", "ours_remat", "flax_linen", "flax_nnx")
CUDNN = "jax_cudnn"
TORCH = "torch"
CEILING = "ceiling"
IMPLS = JAX_IMPLS + (CUDNN, TORCH, CEILING)
MODES = ("train", "forward")
PEERS = (TORCH, "flax_linen")
CUDNN_NEEDS_GPU = ("jax.experimental.rnn.lstm runs on cuDNN only; skipped on {platform} "
                   "(it runs when the benchmark runs on a GPU)")
TORCH_MISSING = "torch not installed: skipping torch.nn.LSTM (pip install torch==2.13.0)"


# ----------------------------------------------------------------------------
# Shapes and FLOPs.


@dataclasses.dataclass(frozen=True)
class Shape:
  """One benchmark shape: batch ``B``, time ``T``, input size ``I``, hidden size ``H``."""
  B: int
  T: int
  I: int
  H: int

  def __post_init__(self):
    for field in ("B", "T", "I", "H"):
      value = getattr(self, field)
      if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"shape {field}={value!r}: expected an integer >= 1")

  @property
  def label(self) -> str:
    """``"B=32 T=100 I=8 H=128"``."""
    return f"B={self.B} T={self.T} I={self.I} H={self.H}"

  def as_dict(self) -> dict[str, int]:
    """``{"B": ..., "T": ..., "I": ..., "H": ...}``."""
    return dataclasses.asdict(self)


def parse_shapes(text: str) -> list[Shape]:
  """Parse ``"32x100x8x128,1x1000x8x64"`` (``BxTxIxH``, comma separated)."""
  shapes = []
  for part in text.split(","):
    part = part.strip()
    if not part:
      continue
    fields = part.lower().split("x")
    try:
      values = [int(f) for f in fields]
    except ValueError:
      values = []
    if len(values) != 4:
      raise ValueError(f"--shapes: {part!r} is not BxTxIxH (four integers, e.g. 32x100x8x128)")
    shapes.append(Shape(*values))
  if not shapes:
    raise ValueError("--shapes: no shape given")
  return shapes


def model_flops(shape: Shape, mode: str) -> int:
  """Matmul FLOPs of one LSTM forward or training step (formulas: module docstring)."""
  b, t, i, h = shape.B, shape.T, shape.I, shape.H
  if mode == "forward":
    return 2 * b * t * (i + h) * 4 * h
  if mode == "train":
    return 2 * b * t * 4 * h * (2 * i + 3 * h)
  raise ValueError(f"mode={mode!r}; allowed: {', '.join(MODES)}")


def ceiling_flops(shape: Shape, mode: str) -> int:
  """FLOPs of the recurrent-matmul-only scan: ``2*B*T*H*4H`` forward, 3x for train."""
  forward = 2 * shape.B * shape.T * shape.H * 4 * shape.H
  if mode == "forward":
    return forward
  if mode == "train":
    return 3 * forward
  raise ValueError(f"mode={mode!r}; allowed: {', '.join(MODES)}")


def flops(name: str, shape: Shape, mode: str) -> int:
  """FLOPs credited to implementation ``name`` for one step of ``mode``."""
  return ceiling_flops(shape, mode) if name == CEILING else model_flops(shape, mode)


# ----------------------------------------------------------------------------
# Shared parameters and inputs.


def make_cell(shape: Shape) -> lstm_jax.Cell:
  """The ``vanilla`` cell of size ``H`` with forget bias 0 (Flax's and torch's init)."""
  return lstm_jax.make_cell("vanilla", shape.H, forget_bias=0.0)


def make_problem(shape: Shape, seed: int = 0) -> tuple[dict[str, np.ndarray], np.ndarray]:
  """Our LSTM params and inputs ``xs [B, T, I]``, as float32 NumPy arrays.

  Every implementation is given these (converted to its own layout), so all of
  them compute the same loss.
  """
  params = make_cell(shape).init(jax.random.key(seed), shape.I)
  params = {k: np.asarray(v, np.float32) for k, v in params.items()}
  xs = np.random.default_rng(seed).standard_normal((shape.B, shape.T, shape.I))
  return params, xs.astype(np.float32)


@dataclasses.dataclass
class JaxImpl:
  """A JAX implementation: ``loss(*args)`` and its jitted forward and gradient.

  Attributes:
    name: implementation name.
    loss: ``loss(*args) -> scalar`` (the forward computation).
    args: the arguments; the gradient is taken with respect to ``args[0]``.
    fns: ``{"train": jit(grad(loss)), "forward": jit(loss)}``.
  """
  name: str
  loss: Callable[..., jax.Array]
  args: tuple[Any, ...]
  fns: dict[str, Callable[..., Any]] = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    if not self.fns:
      self.fns = {"train": jax.jit(jax.grad(self.loss)), "forward": jax.jit(self.loss)}


def _ours(shape: Shape, params: dict[str, np.ndarray], xs: jax.Array, remat: bool,
          name: str, impl: str = "auto", split: bool = False) -> JaxImpl:
  cell = make_cell(shape)
  layer = lambda p, x: lstm_jax.rnn(cell, p, x, remat=remat, impl=impl)[0]
  p = {k: jnp.asarray(v) for k, v in params.items()}
  if split:  # parameters on every device, the batch's rows already split, as in a run
    layer = parallel.split_batch(layer)
    p = jax.device_put(p, parallel.replicated(parallel.batch_devices_used(shape.B)))
    xs = jax.device_put(xs, parallel.batch_sharding(shape.B))

  def loss(p: dict[str, jax.Array], x: jax.Array) -> jax.Array:
    return jnp.mean(layer(p, x) ** 2)

  return JaxImpl(name, loss, (p, xs))


def _flax_linen(shape: Shape, params: dict[str, np.ndarray], xs: jax.Array) -> JaxImpl:
  module = nn.RNN(nn.OptimizedLSTMCell(shape.H))
  variables = {"params": {"cell": interop.to_flax_lstm(params)}}

  def loss(v: Any, x: jax.Array) -> jax.Array:
    return jnp.mean(module.apply(v, x) ** 2)

  return JaxImpl("flax_linen", loss, (variables, xs))


def _flax_nnx(shape: Shape, params: dict[str, np.ndarray], xs: jax.Array) -> JaxImpl:
  cell = nnx.OptimizedLSTMCell(shape.I, shape.H, rngs=nnx.Rngs(0))
  # nnx's fused kernels use our layout: [I, 4H], [H, 4H], bias [4H], gates i, f, g, o.
  cell.dense_i.kernel.value = jnp.asarray(params["w_x"])
  cell.dense_h.kernel.value = jnp.asarray(params["w_h"])
  cell.dense_h.bias.value = jnp.asarray(params["b"])
  graphdef, state, rest = nnx.split(nnx.RNN(cell, rngs=False), nnx.Param, ...)
  h = shape.H

  def loss(s: Any, x: jax.Array) -> jax.Array:
    model = nnx.merge(graphdef, s, rest)
    zeros = jnp.zeros((x.shape[0], h), x.dtype)
    return jnp.mean(model(x, initial_carry=(zeros, zeros)) ** 2)

  return JaxImpl("flax_nnx", loss, (state, xs))


def cudnn_weights(params: dict[str, np.ndarray]) -> np.ndarray:
  """Our one-layer LSTM parameters as cuDNN's flat weight vector.

  ``jax.experimental.rnn`` packs ``W_ih [4H, I]``, ``W_hh [4H, H]``, ``b_ih``,
  ``b_hh`` (gate order i, f, g, o, as ours) in that order; ours are
  ``w_x = W_ih^T``, ``w_h = W_hh^T`` and one bias, so ``b_hh = 0``.
  """
  w_x, w_h, b = (np.asarray(params[k], np.float32) for k in ("w_x", "w_h", "b"))
  return np.concatenate([w_x.T.ravel(), w_h.T.ravel(), b, np.zeros_like(b)])


def _jax_cudnn(shape: Shape, params: dict[str, np.ndarray], xs: jax.Array) -> JaxImpl:
  from jax.experimental import rnn as jrnn  # pylint: disable=import-outside-toplevel
  weights = jnp.asarray(cudnn_weights(params))
  lengths = jnp.full((shape.B,), shape.T, jnp.int32)
  zeros = jnp.zeros((1, shape.B, shape.H), jnp.float32)

  def loss(w: jax.Array, x: jax.Array) -> jax.Array:
    ys, _, _ = jrnn.lstm(x, zeros, zeros, w, lengths, shape.I, shape.H, 1, 0.0, False)
    return jnp.mean(ys ** 2)

  return JaxImpl(CUDNN, loss, (weights, xs))


def _ceiling(shape: Shape, seed: int) -> JaxImpl:
  k_w, k_h = jax.random.split(jax.random.key(seed + 1))
  w = jax.random.normal(k_w, (shape.H, 4 * shape.H), jnp.float32) / math.sqrt(4 * shape.H)
  h0 = jax.random.normal(k_h, (shape.B, shape.H), jnp.float32)
  steps, hidden = shape.T, shape.H

  def loss(w: jax.Array, h0: jax.Array) -> jax.Array:
    def step(h: jax.Array, _: Any) -> tuple[jax.Array, jax.Array]:
      z = h @ w
      # Sum of the four column blocks (slices: a reshape-sum makes XLA CPU's
      # backward pass several times slower at B = 1).
      h = jnp.tanh(z[:, :hidden] + z[:, hidden:2 * hidden] + z[:, 2 * hidden:3 * hidden]
                   + z[:, 3 * hidden:])
      return h, h

    _, hs = jax.lax.scan(step, h0, None, length=steps)
    return jnp.mean(hs ** 2)

  return JaxImpl(CEILING, loss, (w, h0))


def build_jax_impl(name: str, shape: Shape, params: dict[str, np.ndarray], xs: np.ndarray,
                   seed: int = 0) -> JaxImpl:
  """Build JAX implementation ``name`` (:data:`JAX_IMPLS`, ``"jax_cudnn"`` or ``"ceiling"``)."""
  x = jnp.asarray(xs)
  if name == "ours":
    return _ours(shape, params, x, remat=False, name=name)
  if name == "ours_split":
    return _ours(shape, params, x, remat=False, name=name, split=True)
  if name == "ours_scan":
    return _ours(shape, params, x, remat=False, name=name, impl="scan")
  if name == "ours_remat":
    return _ours(shape, params, x, remat=True, name=name)
  if name == "flax_linen":
    return _flax_linen(shape, params, x)
  if name == "flax_nnx":
    return _flax_nnx(shape, params, x)
  if name == CEILING:
    return _ceiling(shape, seed)
  if name == CUDNN:
    return _jax_cudnn(shape, params, x)
  raise ValueError(f"unknown JAX implementation {name!r}; allowed: "
                   f"{', '.join(JAX_IMPLS + (CUDNN, CEILING))}")


def _call_blocking(fn: Callable[..., Any], args: Sequence[Any]) -> Any:
  return jax.block_until_ready(fn(*args))


def _time_jax(fn: Callable[..., Any], args: Sequence[Any], iters: int) -> float:
  """Seconds for ``iters`` calls, each waited for before the next."""
  start = time.perf_counter()
  for _ in range(iters):
    jax.block_until_ready(fn(*args))
  return time.perf_counter() - start


def _xla_temp_bytes(fn: Any, args: Sequence[Any]) -> dict[str, int] | None:
  """``memory_analysis()`` sizes of the compiled program (cached after the first call)."""
  try:
    stats = fn.lower(*args).compile().memory_analysis()
  except Exception:  # pylint: disable=broad-except
    return None
  if stats is None:
    return None
  out = {}
  for key in ("temp_size_in_bytes", "argument_size_in_bytes", "output_size_in_bytes"):
    value = getattr(stats, key, None)
    if value is not None:
      out[key] = int(value)
  return out or None


# ----------------------------------------------------------------------------
# torch.nn.LSTM in a subprocess.


def _num_cores() -> int:
  if hasattr(os, "sched_getaffinity"):
    return len(os.sched_getaffinity(0))
  return os.cpu_count() or 1


def _maxrss_bytes() -> int:
  rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  return int(rss) if sys.platform == "darwin" else int(rss) * 1024


def _proc_status_bytes(field: str) -> int | None:
  """``VmRSS``/``VmHWM`` of this process from ``/proc/self/status`` (Linux), else ``None``."""
  try:
    with open("/proc/self/status") as f:
      for line in f:
        if line.startswith(field + ":"):
          return int(line.split()[1]) * 1024
  except (OSError, ValueError, IndexError):
    return None
  return None


def _reset_peak_rss() -> bool:
  """Reset this process's ``VmHWM`` to its current RSS (Linux >= 4.0); ``False`` if unable."""
  try:
    with open("/proc/self/clear_refs", "w") as f:
      f.write("5")
    return True
  except OSError:
    return False


class _PeakMemory:
  """Peak memory growth of one measured block, by the best means available.

  CUDA: ``torch.cuda.max_memory_allocated`` over the allocation at the start.
  Linux CPU: ``VmHWM`` (reset through ``/proc/self/clear_refs``) over
  ``VmRSS`` at the start. Elsewhere: ``ru_maxrss`` growth (a high-water mark
  since the process started, so it can miss growth below an earlier peak).
  """

  def __init__(self, torch: Any, cuda: bool) -> None:
    self.torch, self.cuda = torch, cuda
    self.kind = "cuda max_memory_allocated growth"
    if not cuda:
      have_proc = _proc_status_bytes("VmHWM") is not None and _reset_peak_rss()
      self.kind = "VmHWM growth (peak RSS, reset per mode)" if have_proc \
          else "ru_maxrss growth"
    self.base = 0

  def start(self) -> None:
    """Mark the start of a measured block."""
    if self.cuda:
      self.torch.cuda.reset_peak_memory_stats()
      self.base = int(self.torch.cuda.memory_allocated())
    elif self.kind.startswith("VmHWM"):
      _reset_peak_rss()
      self.base = _proc_status_bytes("VmRSS") or 0
    else:
      self.base = _maxrss_bytes()

  def peak(self) -> int:
    """Peak growth (bytes) since :meth:`start`."""
    if self.cuda:
      now = int(self.torch.cuda.max_memory_allocated())
    elif self.kind.startswith("VmHWM"):
      now = _proc_status_bytes("VmHWM") or 0
    else:
      now = _maxrss_bytes()
    return max(0, now - self.base)


def torch_worker(stdin: TextIO, stdout: TextIO) -> None:
  """The torch side: one JSON request per line on ``stdin``, one JSON reply per line.

  Requests: ``{"cmd": "setup", "npz": PATH, "shape": {...}}`` (loads
  ``xs`` and the ``torch.nn.LSTM`` state dict from the ``.npz``, makes the
  first and one steady call of each mode, measures peak memory; replies with
  the loss and timings), ``{"cmd": "round", "iters": {"train": n,
  "forward": m}}`` (replies ``{"train_s", "forward_s"}``), ``{"cmd": "quit"}``.
  Errors are replied as ``{"error": message}``.
  """
  def reply(obj: dict[str, Any]) -> None:
    stdout.write(json.dumps(obj) + "\n")
    stdout.flush()

  try:
    import torch  # pylint: disable=import-outside-toplevel
  except Exception as err:  # pylint: disable=broad-except
    reply({"error": f"cannot import torch: {type(err).__name__}: {err}"})
    return
  cuda = torch.cuda.is_available()
  device = torch.device("cuda" if cuda else "cpu")
  sync = torch.cuda.synchronize if cuda else (lambda: None)
  memory = _PeakMemory(torch, cuda)
  steps: dict[str, Callable[[], Any]] = {}

  def timed(fn: Callable[[], Any], iters: int) -> float:
    start = time.perf_counter()
    for _ in range(iters):
      fn()
    return time.perf_counter() - start

  for line in stdin:
    if not line.strip():
      continue
    try:
      msg = json.loads(line)
      cmd = msg.get("cmd")
      if cmd == "quit":
        return
      if cmd == "setup":
        threads = int(msg.get("threads") or _num_cores())
        torch.set_num_threads(threads)
        data = np.load(msg["npz"])
        s = msg["shape"]
        lstm = torch.nn.LSTM(s["I"], s["H"], batch_first=True).to(device, torch.float32)
        lstm.load_state_dict({k: torch.from_numpy(data[k]) for k in lstm.state_dict()})
        x = torch.from_numpy(data["xs"]).to(device)

        def forward() -> Any:
          with torch.no_grad():
            ys, _ = lstm(x)
            loss = (ys ** 2).mean()
          sync()
          return loss

        def train() -> Any:
          for p in lstm.parameters():
            p.grad = None
          ys, _ = lstm(x)
          loss = (ys ** 2).mean()
          loss.backward()
          sync()
          return loss

        steps = {"forward": forward, "train": train}
        sync()
        first, steady, peak, loss = {}, {}, {}, None
        for mode in ("forward", "train"):
          memory.start()
          start = time.perf_counter()
          value = steps[mode]()
          first[mode] = time.perf_counter() - start
          if mode == "forward":
            loss = float(value)
          steady[mode] = timed(steps[mode], 1)
          peak[mode] = memory.peak()
        reply({"loss": loss, "first_s": first, "steady_s": steady, "peak_bytes": peak,
               "device": str(device), "threads": threads, "version": torch.__version__,
               "memory": memory.kind})
      elif cmd == "round":
        if not steps:
          raise RuntimeError("'round' before 'setup'")
        reply({f"{mode}_s": timed(steps[mode], int(n)) for mode, n in msg["iters"].items()})
      else:
        raise ValueError(f"unknown command {cmd!r}")
    except Exception as err:  # pylint: disable=broad-except
      reply({"error": f"{type(err).__name__}: {err}"})


class TorchWorker:
  """The parent's handle on a :func:`torch_worker` subprocess (one per shape)."""

  def __init__(self) -> None:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    self.proc = subprocess.Popen(
        [sys.executable, "-m", "experiments.benchmark", "--torch-worker"], cwd=str(ROOT),
        env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)

  def request(self, msg: dict[str, Any]) -> dict[str, Any]:
    """Send one request and return the reply; raise ``RuntimeError`` on an error reply."""
    assert self.proc.stdin is not None and self.proc.stdout is not None
    try:
      self.proc.stdin.write(json.dumps(msg) + "\n")
      self.proc.stdin.flush()
    except BrokenPipeError:
      pass  # the worker exited (e.g. torch failed to import); its reply is still readable
    for line in self.proc.stdout:
      line = line.strip()
      if line.startswith("{"):
        try:
          out = json.loads(line)
        except json.JSONDecodeError:
          continue
        if "error" in out:
          raise RuntimeError(out["error"])
        return out
    raise RuntimeError(f"torch worker exited (code {self.proc.poll()}) without replying")

  def close(self) -> None:
    """Ask the worker to quit; kill it if it does not."""
    try:
      if self.proc.poll() is None and self.proc.stdin is not None:
        self.proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
        self.proc.stdin.flush()
      self.proc.wait(timeout=30)
    except (BrokenPipeError, OSError, subprocess.TimeoutExpired):
      self.proc.kill()
      self.proc.wait()


def torch_available() -> bool:
  """Whether ``torch`` can be found by this interpreter (the worker imports it)."""
  return importlib.util.find_spec("torch") is not None


# ----------------------------------------------------------------------------
# One shape, all implementations, round-robin.


def _iters_for(steady_s: float, target_s: float, max_iters: int) -> int:
  if steady_s <= 0:
    return max_iters
  return int(min(max_iters, max(1, round(target_s / steady_s))))


def _log(verbose: bool, text: str) -> None:
  if verbose:
    print(text, file=sys.stderr, flush=True)


def run_shape(shape: Shape, impls: Sequence[str] = IMPLS, *, rounds: int = 5,
              target_s: float = 0.25, max_iters: int = 1000, seed: int = 0,
              torch_threads: int = 0, verbose: bool = False,
              settle_s: float = 0.2) -> dict[str, Any]:
  """Benchmark every implementation in ``impls`` at ``shape``, round-robin.

  Args:
    shape: the shape.
    impls: names from :data:`IMPLS`; ``"torch"`` is skipped with a message
      when torch is not installed.
    rounds: number of rounds (medians are over rounds).
    target_s: calibrated seconds per implementation and mode in one round.
    max_iters: cap on the iterations per implementation and mode in a round.
    seed: seed of the parameters and inputs.
    torch_threads: ``torch.set_num_threads`` of the torch subprocess; 0 for
      the number of cores.
    verbose: progress lines on stderr.
    settle_s: pause before each implementation's turn, so the worker threads
      of the previous one (XLA's pool, torch's OpenMP team, which spin for a
      while after their work) are idle when the clock starts.

  Returns:
    ``{"shape", "flops", "implementations": {name: {"loss", "train",
    "forward"}}, "skipped": {name: reason}, "loss_max_rel_diff"}``; each mode
    entry holds ``seq_per_s`` (median), ``per_round_seq_per_s``, ``spread``,
    ``iters``, ``gflop_per_s``, ``first_call_s``, ``compile_s``, ``peak_bytes``,
    ``memory`` (what ``peak_bytes`` measures) and ``ratio_<peer>`` for peers
    ``torch`` and ``flax_linen`` (``None`` when the peer did not run; not set
    for ``ceiling``).
  """
  unknown = [n for n in impls if n not in IMPLS]
  if unknown:
    raise ValueError(f"unknown implementation(s) {unknown}; allowed: {', '.join(IMPLS)}")
  params, xs = make_problem(shape, seed)
  skipped: dict[str, str] = {}
  results: dict[str, dict[str, Any]] = {}
  first_s: dict[str, dict[str, float]] = {}
  iters: dict[str, dict[str, int]] = {}
  runners: dict[str, Callable[[dict[str, int]], dict[str, float]]] = {}

  # Compile every JAX implementation (before torch starts, so nothing competes).
  jax_impls = {}
  platform = jax.devices()[0].platform
  for name in impls:
    if name == TORCH:
      continue
    if name == CUDNN and platform != "gpu":
      skipped[name] = CUDNN_NEEDS_GPU.format(platform=platform)
      _log(verbose, f"  {shape.label} {name}: {skipped[name]}")
      continue
    entry: dict[str, Any] = {}
    first_s[name], steady = {}, {}
    try:
      impl = build_jax_impl(name, shape, params, xs, seed)
      for mode in MODES:
        fn = impl.fns[mode]
        start = time.perf_counter()
        out = _call_blocking(fn, impl.args)
        first_s[name][mode] = time.perf_counter() - start
        if mode == "forward":
          entry["loss"] = float(out)
        steady[mode] = _time_jax(fn, impl.args, 1)
        mem = _xla_temp_bytes(fn, impl.args)
        entry[mode] = {"peak_bytes": None if mem is None else mem.get("temp_size_in_bytes"),
                       "xla_memory": mem, "memory": "XLA temp_size_in_bytes"}
    except Exception as err:  # pylint: disable=broad-except  (report it, run the others)
      message = f"{type(err).__name__}: {err}"
      print(f"{name} failed at {shape.label}: {message}; skipping it", flush=True)
      skipped[name] = message
      continue
    iters[name] = {m: _iters_for(steady[m], target_s, max_iters) for m in MODES}
    results[name] = entry
    jax_impls[name] = impl
    _log(verbose, f"  {shape.label} {name}: compiled (first calls "
         f"{first_s[name]['train']:.2f} s train, {first_s[name]['forward']:.2f} s forward)")

  def jax_runner(impl: JaxImpl) -> Callable[[dict[str, int]], dict[str, float]]:
    return lambda n: {m: _time_jax(impl.fns[m], impl.args, n[m]) for m in MODES}

  for name, impl in jax_impls.items():
    runners[name] = jax_runner(impl)

  worker = None
  tmpdir = None
  if TORCH in impls:
    if not torch_available():
      print(TORCH_MISSING, flush=True)
      skipped[TORCH] = TORCH_MISSING
    else:
      tmpdir = tempfile.TemporaryDirectory(prefix="lstm_bench_")
      npz = os.path.join(tmpdir.name, "problem.npz")
      state_dict = interop.to_torch_lstm([params], make_cell(shape))
      np.savez(npz, xs=xs, **state_dict)
      worker = TorchWorker()
      try:
        info = worker.request({"cmd": "setup", "npz": npz, "shape": shape.as_dict(),
                               "threads": torch_threads})
      except RuntimeError as err:
        message = f"torch.nn.LSTM unavailable: {err}; skipping torch"
        if "cannot import torch" in str(err):
          message = f"{TORCH_MISSING} ({err})"
        print(message, flush=True)
        skipped[TORCH] = message
        worker.close()
        worker = None
      else:
        first_s[TORCH] = info["first_s"]
        iters[TORCH] = {m: _iters_for(info["steady_s"][m], target_s, max_iters) for m in MODES}
        results[TORCH] = {"loss": info["loss"], "device": info["device"],
                          "threads": info["threads"], "version": info["version"]}
        for mode in MODES:
          results[TORCH][mode] = {"peak_bytes": info["peak_bytes"][mode],
                                  "memory": info["memory"]}
        runners[TORCH] = functools.partial(_torch_round, worker)
        _log(verbose, f"  {shape.label} torch: ready on {info['device']} "
             f"({info['threads']} threads)")

  # Round-robin: every round runs every implementation; the order rotates.
  names = [n for n in impls if n in runners]
  per_round: dict[str, dict[str, list[float]]] = {n: {m: [] for m in MODES} for n in names}
  try:
    for r in range(rounds):
      order = names[r % len(names):] + names[:r % len(names)] if names else []
      for name in order:
        time.sleep(settle_s)
        try:
          seconds = runners[name](iters[name])
        except RuntimeError as err:  # the torch worker failed mid-run
          print(f"{name} failed at {shape.label}: {err}; skipping it", flush=True)
          skipped[name] = str(err)
          names.remove(name)
          results.pop(name, None)
          continue
        for mode in MODES:
          per_round[name][mode].append(shape.B * iters[name][mode] / max(seconds[mode], 1e-12))
      _log(verbose, f"  {shape.label} round {r + 1}/{rounds} done")
  finally:
    if worker is not None:
      worker.close()
    if tmpdir is not None:
      tmpdir.cleanup()

  for name in names:
    for mode in MODES:
      seqs = per_round[name][mode]
      med = statistics.median(seqs) if seqs else float("nan")
      steady = shape.B / med if seqs and med > 0 else float("nan")
      entry = results[name][mode]
      entry.update({
          "seq_per_s": med,
          "per_round_seq_per_s": seqs,
          "spread": (max(seqs) - min(seqs)) / 2 / med if seqs and med > 0 else float("nan"),
          "iters": iters[name][mode],
          "step_s": steady,
          "gflop_per_s": flops(name, shape, mode) * med / shape.B / 1e9,
          "first_call_s": first_s[name][mode],
          "compile_s": max(0.0, first_s[name][mode] - steady) if seqs else float("nan"),
      })
  for name in names:
    if name == CEILING:
      continue
    for mode in MODES:
      entry = results[name][mode]
      for peer in PEERS:
        peer_value = results.get(peer, {}).get(mode, {}).get("seq_per_s")
        entry[f"ratio_{peer}"] = (entry["seq_per_s"] / peer_value
                                  if peer_value and peer_value > 0 else None)
  ref = results.get("ours", {}).get("loss")
  diffs = [abs(v["loss"] - ref) / max(abs(ref), 1e-30) for n, v in results.items()
           if n != CEILING and ref is not None and "loss" in v]
  return {
      "shape": shape.as_dict(),
      "label": shape.label,
      "flops": {"train": model_flops(shape, "train"), "forward": model_flops(shape, "forward"),
                "ceiling_train": ceiling_flops(shape, "train"),
                "ceiling_forward": ceiling_flops(shape, "forward")},
      "implementations": {n: results[n] for n in impls if n in results},
      "skipped": skipped,
      "loss_max_rel_diff": max(diffs) if diffs else None,
  }


def _torch_round(worker: TorchWorker, iters: dict[str, int]) -> dict[str, float]:
  reply = worker.request({"cmd": "round", "iters": iters})
  return {m: float(reply[f"{m}_s"]) for m in MODES}


# ----------------------------------------------------------------------------
# The whole benchmark, the table, the command line.


def environment() -> dict[str, Any]:
  """Platform, device, versions and settings for the report header."""
  dev = jax.devices()[0]
  return {
      "platform": dev.platform,
      "device_kind": getattr(dev, "device_kind", str(dev)),
      "device_count": jax.device_count(),
      "cores": _num_cores(),
      "jax": jax.__version__,
      "flax": flax.__version__,
      "lstm_jax": lstm_jax.__version__,
      "python": sys.version.split()[0],
      "xla_flags": os.environ.get("XLA_FLAGS", ""),
      "dtype": "float32",
      "load_avg_start": _load_avg(),
  }


def _load_avg() -> float | None:
  """The 1-minute load average (other processes compete with the measurement)."""
  try:
    return round(os.getloadavg()[0], 2)
  except (AttributeError, OSError):
    return None


def run_benchmark(shapes: Iterable[Shape] = tuple(Shape(*s) for s in DEFAULT_SHAPES),
                  impls: Sequence[str] = IMPLS, *, rounds: int = 5, target_s: float = 0.25,
                  max_iters: int = 1000, seed: int = 0, torch_threads: int = 0,
                  settle_s: float = 0.2,
                  json_path: str | None = None, verbose: bool = False) -> dict[str, Any]:
  """Run :func:`run_shape` for every shape; optionally write everything as JSON.

  Arguments as for :func:`run_shape`; ``json_path``: where to write the report.

  Returns:
    ``{"environment", "settings", "results": [run_shape(...), ...]}``.
  """
  if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
    raise ValueError(f"rounds={rounds!r}: expected an integer >= 1")
  if isinstance(max_iters, bool) or not isinstance(max_iters, int) or max_iters < 1:
    raise ValueError(f"max_iters={max_iters!r}: expected an integer >= 1")
  shapes = list(shapes)
  env = environment()
  report: dict[str, Any] = {
      "environment": env,
      "settings": {"impls": list(impls), "rounds": rounds, "target_s": target_s,
                   "max_iters": max_iters, "seed": seed, "torch_threads": torch_threads,
                   "settle_s": settle_s,
                   "shapes": [s.as_dict() for s in shapes]},
      "results": [],
  }
  for shape in shapes:
    _log(verbose, f"{shape.label}:")
    report["results"].append(run_shape(shape, impls, rounds=rounds, target_s=target_s,
                                       max_iters=max_iters, seed=seed,
                                       torch_threads=torch_threads, verbose=verbose,
                                       settle_s=settle_s))
    torch_info = report["results"][-1]["implementations"].get(TORCH)
    if torch_info and "torch" not in env:
      env["torch"] = torch_info["version"]
      env["torch_device"] = torch_info["device"]
      env["torch_threads"] = torch_info["threads"]
  env["load_avg_end"] = _load_avg()
  if json_path:
    write_json(report, json_path)
  return report


def _jsonable(value: Any) -> Any:
  if isinstance(value, float) and not math.isfinite(value):
    return None
  if isinstance(value, dict):
    return {k: _jsonable(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_jsonable(v) for v in value]
  return value


def write_json(report: dict[str, Any], path: str) -> None:
  """Write ``report`` to ``path`` (NaN as ``null``), creating parent directories."""
  parent = os.path.dirname(os.path.abspath(path))
  os.makedirs(parent, exist_ok=True)
  with open(path, "w") as f:
    json.dump(_jsonable(report), f, indent=2)
    f.write("\n")


def _num(value: float | None, digits: int = 3) -> str:
  if value is None or (isinstance(value, float) and not math.isfinite(value)):
    return "-"
  if abs(value) >= 100:
    return f"{value:,.0f}"
  return f"{value:.{digits}g}"


def _ratio(value: float | None) -> str:
  return "-" if value is None else f"{value:.2f}"


def _mib(value: int | None) -> str:
  return "-" if value is None else f"{value / 2**20:.1f}"


def header(report: dict[str, Any]) -> str:
  """The lines above the table: where and how it was measured."""
  env, st = report["environment"], report["settings"]
  torch_part = (f"torch {env['torch']} on {env['torch_device']} ({env['torch_threads']} threads,"
                " subprocess)" if "torch" in env else "torch: not run")
  return "\n".join([
      f"LSTM throughput on {env['platform']} ({env['device_kind']}, {env['cores']} cores "
      f"visible), {env['dtype']}; jax {env['jax']}, flax {env['flax']}, {torch_part}; "
      f"XLA_FLAGS={env['xla_flags'] or '(default)'}; 1-min load average "
      f"{_num(env.get('load_avg_start'))} at start, {_num(env.get('load_avg_end'))} at end.",
      f"Medians of {st['rounds']} round-robin rounds; sequences/s (+- half the min-max spread "
      "over rounds). train = forward + gradient w.r.t. params of mean(ys**2); ratios = "
      "seq/s / peer's seq/s.",
      "GFLOP/s: forward 2BT(I+H)4H, train 2BT4H(2I+3H) (matmuls only); ceiling = lax.scan of "
      "only h@W [B,H]x[H,4H] (forward 2BTH4H, train 3x).",
      "compile = first call - steady step (torch: first-call overhead); peak MiB: XLA temp "
      "buffers (memory_analysis), torch peak RSS growth (CUDA: max_memory_allocated).",
      "Measured on this platform; the same script runs unchanged on GPU (torch then on CUDA).",
  ])


def markdown_table(report: dict[str, Any]) -> str:
  """One row per shape and implementation (``ceiling`` last per shape)."""
  cols = ["shape", "impl", "train seq/s", "train x torch", "train x linen", "train GFLOP/s",
          "fwd seq/s", "fwd x torch", "fwd x linen", "fwd GFLOP/s",
          "compile s (train/fwd)", "peak MiB (train/fwd)", "loss"]
  lines = ["| " + " | ".join(cols) + " |",
           "|" + "|".join(["---"] * 2 + ["---:"] * (len(cols) - 2)) + "|"]
  for res in report["results"]:
    s = res["shape"]
    shape_text = f"({s['B']}, {s['T']}, {s['I']}, {s['H']})"
    for name, entry in res["implementations"].items():
      tr, fw = entry["train"], entry["forward"]
      seq = lambda m: f"{_num(m['seq_per_s'])} (+-{m['spread'] * 100:.0f}%)" \
          if math.isfinite(m.get("spread", float("nan"))) else _num(m.get("seq_per_s"))
      label = "ceiling (h@W only)" if name == CEILING else name
      loss = "-" if name == CEILING else f"{entry['loss']:.6g}"
      lines.append("| " + " | ".join([
          shape_text, label,
          seq(tr), _ratio(tr.get("ratio_torch")), _ratio(tr.get("ratio_flax_linen")),
          _num(tr["gflop_per_s"]),
          seq(fw), _ratio(fw.get("ratio_torch")), _ratio(fw.get("ratio_flax_linen")),
          _num(fw["gflop_per_s"]),
          f"{_num(tr['compile_s'], 2)} / {_num(fw['compile_s'], 2)}",
          f"{_mib(tr['peak_bytes'])} / {_mib(fw['peak_bytes'])}",
          loss,
      ]) + " |")
    for name, reason in res.get("skipped", {}).items():
      lines.append(f"| {shape_text} | {name} | skipped: {reason} |" + " |" * (len(cols) - 3))
  return "\n".join(lines)


def notes(report: dict[str, Any]) -> str:
  """Per-shape check that every implementation computed the same loss."""
  out = []
  for res in report["results"]:
    diff = res.get("loss_max_rel_diff")
    if diff is not None:
      flag = "" if diff < 1e-4 else "  <-- implementations DISAGREE"
      out.append(f"- {res['label']}: largest relative loss difference to ours: {diff:.1e}{flag}")
  return "\n".join(out)


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(
      prog="python -m experiments.benchmark",
      description="LSTM training and forward throughput: lstm_jax vs Flax linen/NNX vs "
                  "torch.nn.LSTM (round-robin in one process; torch in a subprocess).")
  parser.add_argument("--shapes", default=None,
                      help="comma-separated BxTxIxH shapes (default: "
                           + ",".join("x".join(map(str, s)) for s in DEFAULT_SHAPES) + ")")
  parser.add_argument("--impls", default=",".join(IMPLS),
                      help=f"comma-separated implementations (default: all of {','.join(IMPLS)})")
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
  """Command-line entry point; returns the exit status."""
  args = _parse_args(argv)
  if args.torch_worker:
    torch_worker(sys.stdin, sys.stdout)
    return 0
  try:
    parallel.set_cpu_devices(args.cpu_devices)
    if args.shapes:
      shapes = parse_shapes(args.shapes)
    else:
      shapes = [Shape(*s) for s in (QUICK_SHAPES if args.quick else DEFAULT_SHAPES)]
    impls = [n.strip() for n in args.impls.split(",") if n.strip()]
    unknown = [n for n in impls if n not in IMPLS]
    if unknown or not impls:
      raise ValueError(f"--impls: unknown {unknown}; allowed: {', '.join(IMPLS)}")
    if args.torch_threads < 0:
      raise ValueError(f"--torch_threads={args.torch_threads}: expected >= 0 (0: all cores)")
    rounds = args.rounds if args.rounds is not None else (2 if args.quick else 5)
    target_s = args.target_s if args.target_s is not None else (0.02 if args.quick else 0.25)
    max_iters = args.max_iters if args.max_iters is not None else (5 if args.quick else 1000)
    settle_s = args.settle_s if args.settle_s is not None else (0.0 if args.quick else 0.2)
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
  print(markdown_table(report))
  print()
  print(notes(report))
  if args.json:
    print(f"\nwrote {args.json}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
