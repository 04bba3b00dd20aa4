"""``torch.nn.LSTM(I, H, batch_first=True)`` in a subprocess, driven round by round.

torch runs in its own process so that its thread pool does not compete with
XLA's. The parent (:class:`TorchWorker`) starts
``python -m experiments.benchmark --torch-worker``, which runs :func:`serve`;
they exchange one JSON line each way per request:

* ``{"cmd": "setup", "npz": PATH, "shape": {"B", "T", "I", "H"}, "threads": n}``:
  load ``xs`` and the ``torch.nn.LSTM`` state dict from the ``.npz``, set
  ``torch.set_num_threads(n or <usable cores>)``, make the first and one
  steady call of each mode and measure its peak memory
  (:class:`~experiments.benchmark.memory.PeakMemory`). Reply: ``{"loss",
  "first_s", "steady_s", "peak_bytes", "device", "threads", "version",
  "memory"}``.
* ``{"cmd": "round", "iters": {"train": n, "forward": m}}``: reply
  ``{"train_s", "forward_s"}``, the seconds of ``n`` and ``m`` calls.
* ``{"cmd": "quit"}``: exit.

An error is replied as ``{"error": message}``. Each call has finished before
the next starts (torch on a CPU returns when done; on CUDA each call ends with
``torch.cuda.synchronize``), so a call takes one full step's latency.
"""

from __future__ import annotations

import importlib.util
import json
import os
import pathlib
import subprocess
import sys
import time
from typing import Any, Callable, TextIO

import numpy as np

from lstm_jax.devices import usable_cores

from experiments.benchmark.memory import PeakMemory
from experiments.benchmark.shapes import MODES

ROOT = pathlib.Path(__file__).resolve().parents[2]
"""The repository root: the worker runs there, with it on ``PYTHONPATH``."""

TORCH_MISSING = "torch not installed: skipping torch.nn.LSTM (pip install torch==2.13.0)"


def torch_available() -> bool:
  """Whether ``torch`` can be found by this interpreter (the worker imports it)."""
  return importlib.util.find_spec("torch") is not None


def _timed(fn: Callable[[], Any], iters: int) -> float:
  start = time.perf_counter()
  for _ in range(iters):
    fn()
  return time.perf_counter() - start


def _setup(torch: Any, msg: dict[str, Any], memory: PeakMemory
           ) -> tuple[dict[str, Callable[[], Any]], dict[str, Any]]:
  """Build the two steps of a ``setup`` request; return them and the reply."""
  cuda = memory.cuda
  device = torch.device("cuda" if cuda else "cpu")
  sync = torch.cuda.synchronize if cuda else (lambda: None)
  threads = int(msg.get("threads") or usable_cores())
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
  for mode in ("forward", "train"):  # forward first: its loss is reported
    memory.start()
    start = time.perf_counter()
    value = steps[mode]()
    first[mode] = time.perf_counter() - start
    if mode == "forward":
      loss = float(value)
    steady[mode] = _timed(steps[mode], 1)
    peak[mode] = memory.peak()
  return steps, {"loss": loss, "first_s": first, "steady_s": steady, "peak_bytes": peak,
                 "device": str(device), "threads": threads, "version": torch.__version__,
                 "memory": memory.kind}


def serve(stdin: TextIO, stdout: TextIO) -> None:
  """The torch side: answer one JSON request per line of ``stdin`` (module docstring)."""
  def reply(obj: dict[str, Any]) -> None:
    stdout.write(json.dumps(obj) + "\n")
    stdout.flush()

  try:
    import torch  # pylint: disable=import-outside-toplevel
  except Exception as err:  # pylint: disable=broad-except
    reply({"error": f"cannot import torch: {type(err).__name__}: {err}"})
    return
  memory = PeakMemory(torch, torch.cuda.is_available())
  steps: dict[str, Callable[[], Any]] = {}
  for line in stdin:
    if not line.strip():
      continue
    try:
      msg = json.loads(line)
      cmd = msg.get("cmd")
      if cmd == "quit":
        return
      if cmd == "setup":
        steps, info = _setup(torch, msg, memory)
        reply(info)
      elif cmd == "round":
        if not steps:
          raise RuntimeError("'round' before 'setup'")
        reply({f"{mode}_s": _timed(steps[mode], int(n)) for mode, n in msg["iters"].items()})
      else:
        raise ValueError(f"unknown command {cmd!r}")
    except Exception as err:  # pylint: disable=broad-except
      reply({"error": f"{type(err).__name__}: {err}"})


class TorchWorker:
  """The parent's handle on a :func:`serve` subprocess (one per shape)."""

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

  def round(self, iters: dict[str, int]) -> dict[str, float]:
    """Run one round: ``iters[mode]`` calls per mode; return the seconds per mode."""
    reply = self.request({"cmd": "round", "iters": iters})
    return {m: float(reply[f"{m}_s"]) for m in MODES}

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
