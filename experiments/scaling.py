"""How training scales with sequence length and with the number of seeds.

  python -m experiments.scaling memory --T=1000,100000,1000000 --policies=none,sqrt --run=3
  python -m experiments.scaling seeds --seeds=1,8 --ensembles=vmap,map --devices=1,2

``memory``: XLA's own accounting (``compiled.memory_analysis()``) of one
training step of the experiment model (an LSTM, readout inside the scan) at
B=8, H=64, I=1, O=1 by default (``--B``, ``--H``), for each ``remat`` policy
and layer implementation (``--impls``; ``auto`` is the fused layer, also
segmented under ``remat=sqrt``); ``--run=N`` also executes the step N times
and reports the median time, per step of the sequence, and whether every
gradient is finite. ``seeds``: training throughput (sequences/s of all seeds together,
median of rounds) of S independently initialised models trained as one
program (lstm_jax.devices: vmapped or one by one on each device, spread over
1..n devices), against the first row, at (B, T, I, H) = (32, 100, 8, 128) by
default. On a CPU the command makes as many JAX CPU devices as the largest
``--devices`` entry asks for.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Sequence

import jax
import jax.numpy as jnp

from lstm_jax import devices as devices_lib
from lstm_jax import training
from lstm_jax.models import make_model
from lstm_jax.sequence import resolve_impl


def memory_row(time_steps: int, remat: str, *, batch: int = 8, hidden: int = 64,
               inputs: int = 1, outputs: int = 1, impl: str = "auto", run: int = 0) -> dict:
  """XLA temporaries (and with ``run = n`` the median time of ``n`` calls) of
  one training step.

  The model is the experiment model (an LSTM, its readout inside the scan);
  ``impl`` as for :func:`lstm_jax.models.make_model` (``"auto"``: the fused
  layer, also under ``remat="sqrt"``). Row keys: ``T, remat, impl`` (the one
  used), ``B, H, compile_s, temp_mib`` and with ``run``: ``step_s``,
  ``us_per_step`` (``step_s / T`` in microseconds), ``finite``.
  """
  model = make_model("vanilla", hidden, outputs, remat=remat, impl=impl)
  params = model.init(jax.random.key(0), inputs)
  loss = lambda p, x: jnp.mean(model.apply(p, x) ** 2)
  spec = jax.ShapeDtypeStruct((batch, time_steps, inputs), jnp.float32)
  t0 = time.perf_counter()
  compiled = jax.jit(jax.grad(loss)).lower(params, spec).compile()
  used = resolve_impl(model.cell, impl, model.remat, model.truncate, [jnp.float32])
  row = {"T": time_steps, "remat": remat, "impl": used, "B": batch, "H": hidden,
         "compile_s": time.perf_counter() - t0,
         "temp_mib": compiled.memory_analysis().temp_size_in_bytes / 2**20}
  if run:
    xs = jax.random.normal(jax.random.key(1), (batch, time_steps, inputs))
    times = []
    for _ in range(int(run)):
      t0 = time.perf_counter()
      grads = jax.block_until_ready(compiled(params, xs))
      times.append(time.perf_counter() - t0)
    row["step_s"] = statistics.median(times)
    row["us_per_step"] = 1e6 * row["step_s"] / time_steps
    row["finite"] = all(bool(jnp.isfinite(g).all()) for g in jax.tree_util.tree_leaves(grads))
  return row


def seeds_row(num_seeds: int, *, batch: int = 32, time_steps: int = 100, inputs: int = 8,
              hidden: int = 128, steps: int = 10, rounds: int = 5, impl: str = "auto",
              ensemble: str = "auto", devices: int = 1) -> dict:
  """Sequences/s of ``num_seeds`` models trained together, median of rounds.

  The seeds run as in a run (:func:`lstm_jax.training.make_train_chunk`):
  ``ensemble`` on each of the first ``devices`` local devices, ``impl``
  through :meth:`lstm_jax.devices.Placement.layer_impl`.
  """
  available = jax.local_devices()
  if not 1 <= devices <= len(available):
    raise ValueError(f"devices={devices!r} is not allowed; this process has "
                     f"{len(available)} local device(s)")
  used_devices = available[:devices]
  model = make_model("vanilla", hidden, inputs, impl=impl)
  optimizer = training.make_optimizer()
  init_keys, data_keys, _ = training.seed_keys(0, num_seeds)
  state = training.init_state(model, optimizer, init_keys, inputs)

  class _Task:  # random regression data of the benchmark shape
    def sample(self, key, size):
      x = jax.random.normal(key, (size, time_steps, inputs))
      from lstm_jax.tasks import Batch
      return Batch(x, x, jnp.ones((size, time_steps)), jnp.full((size,), time_steps))

    def loss(self, out, batch):
      return jnp.mean((out - batch.targets) ** 2)

    def per_sequence(self, out, batch):
      return {"error": jnp.mean((out - batch.targets) ** 2, axis=(1, 2))}

  placement = devices_lib.Placement.build(num_seeds, ensemble, devices=used_devices)
  chunk = training.make_train_chunk(model, _Task(), optimizer, batch, steps, placement)
  state, *_ = jax.block_until_ready(chunk(state, data_keys))  # compile
  rates = []
  for _ in range(rounds):
    t0 = time.perf_counter()
    state, *_ = jax.block_until_ready(chunk(state, data_keys))
    rates.append(num_seeds * batch * steps / (time.perf_counter() - t0))
  return {"seeds": num_seeds, "impl": placement.layer_impl(impl),
          "ensemble": placement.ensemble, "devices": placement.seed_devices,
          "sequences_per_s": statistics.median(rates)}


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  sub = parser.add_subparsers(dest="what", required=True)
  mem = sub.add_parser("memory")
  mem.add_argument("--T", default="10000,100000")
  mem.add_argument("--policies", default="none,step,sqrt")
  mem.add_argument("--run", type=int, nargs="?", const=1, default=0, metavar="N",
                   help="also execute each step N times (default 1) and report the median")
  mem.add_argument("--impls", default="auto", help="layer implementations: auto, fused, scan")
  mem.add_argument("--B", type=int, default=8)
  mem.add_argument("--H", type=int, default=64)
  sds = sub.add_parser("seeds")
  sds.add_argument("--seeds", default="1,8")
  sds.add_argument("--shape", default="32,100,8,128", help="B,T,I,H")
  sds.add_argument("--rounds", type=int, default=5)
  sds.add_argument("--impls", default="auto",
                   help="layer implementations to measure (devices.Placement.layer_impl)")
  sds.add_argument("--ensembles", default="vmap,map", help="lstm_jax.devices.ENSEMBLES")
  sds.add_argument("--devices", default="1,2", help="devices to spread the seeds over")
  args = parser.parse_args(argv)
  devices_lib.keep_freed_host_memory()
  if args.what == "seeds":
    devices_lib.set_cpu_devices(max(map(int, args.devices.split(","))))
  print(f"# {jax.devices()[0].platform}, jax {jax.__version__}")
  if args.what == "memory":
    print(f"# B={args.B}, H={args.H}, I=1, O=1")
    print("| T | remat | layer | XLA temporaries (MiB) | compile s | step s | us per step "
          "| grads finite |")
    print("|---:|---|---|---:|---:|---:|---:|---|")
    for t in map(int, args.T.split(",")):
      for policy in args.policies.split(","):
        for impl in args.impls.split(","):
          r = memory_row(t, policy, batch=args.B, hidden=args.H, impl=impl, run=args.run)
          print(f"| {t:,} | {policy} | {r['impl']} | {r['temp_mib']:.1f} | "
                f"{r['compile_s']:.1f} | {r.get('step_s', float('nan')):.2f} | "
                f"{r.get('us_per_step', float('nan')):.1f} | {r.get('finite', '-')} |",
                flush=True)
  else:
    b, t, i, h = map(int, args.shape.split(","))
    rows, seen = [], set()
    print("| seeds | ensemble | devices used | impl used | sequences/s | x first row |")
    print("|---:|---|---:|---|---:|---:|")
    for impl in args.impls.split(","):
      for ens in args.ensembles.split(","):
        for d in map(int, args.devices.split(",")):
          for s in map(int, args.seeds.split(",")):
            layout = (impl, devices_lib.resolve(ens), min(s, d), s)
            if s == 1:  # one seed: neither the ensemble mode nor the device count matter
              layout = (impl, "-", 1, 1)
            if layout in seen:
              continue
            seen.add(layout)
            r = seeds_row(s, batch=b, time_steps=t, inputs=i, hidden=h, rounds=args.rounds,
                          impl=impl, ensemble=ens, devices=d)
            rows.append(r)
            print(f"| {r['seeds']} | {r['ensemble'] if s > 1 else '-'} | {r['devices']} | "
                  f"{r['impl']} | {r['sequences_per_s']:,.0f} | "
                  f"{r['sequences_per_s'] / rows[0]['sequences_per_s']:.2f} |", flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
