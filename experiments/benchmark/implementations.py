"""The JAX implementations compared, all given the same parameters and inputs.

Each computes ``loss = mean(ys ** 2)`` of one float32 LSTM layer over
batch-major inputs ``xs [B, T, I]`` from a zero state (``ys [B, T, H]``), and
its gradient with respect to the parameters. The parameters are those of
:func:`bench_cell` (``w_x [I, 4H]``, ``w_h [H, 4H]``, ``b [4H]``, gates i, f,
g, o), converted to each implementation's own layout. ``ceiling`` is the
exception: a scan of the recurrent matmul alone (:func:`flops` credits it
with its own FLOPs).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import lstm_jax
from lstm_jax import devices, interop

from experiments.benchmark.shapes import Shape, ceiling_flops, model_flops

JAX_IMPLS = ("ours", "ours_split", "ours_auto", "ours_scan", "ours_remat", "flax_linen",
             "flax_nnx")
CUDNN = "jax_cudnn"
TORCH = "torch"
CEILING = "ceiling"
BENCH_IMPLS = JAX_IMPLS + (CUDNN, TORCH, CEILING)
"""Every implementation name the benchmark knows, in table order."""


def flops(name: str, shape: Shape, mode: str) -> int:
  """FLOPs credited to implementation ``name`` for one step of ``mode``."""
  return ceiling_flops(shape, mode) if name == CEILING else model_flops(shape, mode)


def bench_cell(shape: Shape) -> lstm_jax.Cell:
  """The ``vanilla`` cell of size ``H`` with forget bias 0 (Flax's and torch's init)."""
  return lstm_jax.make_cell("vanilla", shape.H, forget_bias=0.0)


def make_problem(shape: Shape, seed: int = 0) -> tuple[dict[str, np.ndarray], np.ndarray]:
  """Our LSTM params and inputs ``xs [B, T, I]``, as float32 NumPy arrays.

  Every implementation is given these (converted to its own layout), so all of
  them compute the same loss.
  """
  params = bench_cell(shape).init(jax.random.key(seed), shape.I)
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

  def __post_init__(self) -> None:
    if not self.fns:
      self.fns = {"train": jax.jit(jax.grad(self.loss)), "forward": jax.jit(self.loss)}


def _ours(shape: Shape, params: dict[str, np.ndarray], xs: jax.Array, name: str, *,
          remat: bool = False, impl: str = "auto", split: bool = False) -> JaxImpl:
  """``lstm_jax.rnn`` with the benchmark cell; ``split``: batch over the local devices."""
  cell = bench_cell(shape)
  layer = lambda p, x: lstm_jax.rnn(cell, p, x, remat=remat, impl=impl)[0]
  p = {k: jnp.asarray(v) for k, v in params.items()}
  if split:  # parameters on every device, the batch's rows already split, as in a run
    layer = devices.split_batch(layer)
    p = jax.device_put(p, devices.replicated(devices.devices_used(shape.B)))
    xs = jax.device_put(xs, devices.sharding(shape.B))

  def loss(p: dict[str, jax.Array], x: jax.Array) -> jax.Array:
    return jnp.mean(layer(p, x) ** 2)

  return JaxImpl(name, loss, (p, xs))


def _ours_auto(shape: Shape, params: dict[str, np.ndarray], xs: jax.Array) -> JaxImpl:
  """``ours`` placed as a one-seed training run places it (``split_batch="auto"``):
  the batch split over the local devices where :func:`lstm_jax.devices.split_pays`
  says the split pays for the training step's matmul FLOPs
  (:func:`lstm_jax.devices.matmul_flops` of ``B * T`` rows), else ``ours``.
  Both modes use the training step's placement."""
  work = devices.matmul_flops(params, shape.B * shape.T, train=True)
  return _ours(shape, params, xs, "ours_auto", split=devices.split_pays(shape.B, work))


def _flax_linen(shape: Shape, params: dict[str, np.ndarray], xs: jax.Array) -> JaxImpl:
  """``flax.linen.RNN(OptimizedLSTMCell(H))``, our parameters converted by ``interop``."""
  module = nn.RNN(nn.OptimizedLSTMCell(shape.H))
  variables = {"params": {"cell": interop.to_flax_lstm(params)}}

  def loss(v: Any, x: jax.Array) -> jax.Array:
    return jnp.mean(module.apply(v, x) ** 2)

  return JaxImpl("flax_linen", loss, (variables, xs))


def _flax_nnx(shape: Shape, params: dict[str, np.ndarray], xs: jax.Array) -> JaxImpl:
  """``flax.nnx.RNN(OptimizedLSTMCell(I, H))`` through ``nnx.split``/``nnx.merge``."""
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
  """``jax.experimental.rnn.lstm`` (cuDNN; GPU only) on :func:`cudnn_weights`."""
  from jax.experimental import rnn as jrnn  # pylint: disable=import-outside-toplevel
  weights = jnp.asarray(cudnn_weights(params))
  lengths = jnp.full((shape.B,), shape.T, jnp.int32)
  zeros = jnp.zeros((1, shape.B, shape.H), jnp.float32)

  def loss(w: jax.Array, x: jax.Array) -> jax.Array:
    ys, _, _ = jrnn.lstm(x, zeros, zeros, w, lengths, shape.I, shape.H, 1, 0.0, False)
    return jnp.mean(ys ** 2)

  return JaxImpl(CUDNN, loss, (weights, xs))


def _ceiling(shape: Shape, seed: int) -> JaxImpl:
  """A scan of ``h = tanh(sum of the four H-column blocks of h @ W)``, ``W [H, 4H]``.

  Not an LSTM: what the sequential per-step matmuls alone reach at this shape.
  """
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
    return _ours(shape, params, x, name)
  if name == "ours_split":
    return _ours(shape, params, x, name, split=True)
  if name == "ours_auto":
    return _ours_auto(shape, params, x)
  if name == "ours_scan":
    return _ours(shape, params, x, name, impl="scan")
  if name == "ours_remat":
    return _ours(shape, params, x, name, remat=True)
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
