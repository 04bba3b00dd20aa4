"""Runs over several processes (lstm_jax.devices.initialize_distributed: JAX's
distributed runtime, CPU collectives over gloo): bad flags, an unreachable
coordinator, a process missing at the start and two processes with one id
give one line within the timeout; four devices of one process
and two processes on localhost train like one device; killing one of them stops the other within the
timeout, and rerunning the same commands resumes and ends like the
uninterrupted run; one process resumes what two started.

Each test starts real ``python -m experiments.run`` processes with one CPU
device each (``--cpu_devices=1``), so the run's two seeds are split one per
process.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from lstm_jax import devices

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = ["--config=configs/delayed_recall.py:quick", "--config.num_seeds=2",
          "--config.budget_sequences=1200", "--config.checkpoint_every=10"]
TIMEOUT_S = 20
"""``--distributed_timeout`` of the test runs."""
RTOL, ATOL = 1e-5, 1e-6
"""Split runs against one-device runs. Seeds split over devices or processes
run each seed's arithmetic as the same program on one device: the numbers
agree exactly. One seed's batch split over N devices sums N partial
gradients: float32 reassociation, measured at 1.2e-7 in the loss and 2.5e-7
in the parameters after 40 updates on four devices (README, "Several
processes")."""


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _cmd(workdir: str, *extra: str) -> list[str]:
  return [sys.executable, "-m", "experiments.run", *CONFIG, "--cpu_devices=1",
          f"--workdir={workdir}", *extra]


def _env() -> dict[str, str]:
  return {**os.environ, "PYTHONUNBUFFERED": "1"}


def _start(workdir: str, port: int, logs: str) -> list[subprocess.Popen]:
  """The two processes of a run on localhost, stdout+stderr in ``logs``/p{i}.log."""
  procs = []
  for i in range(2):
    log = open(os.path.join(logs, f"p{i}.log"), "w")
    procs.append(subprocess.Popen(
        _cmd(workdir, f"--coordinator=localhost:{port}", "--num_processes=2",
             f"--process_id={i}", f"--distributed_timeout={TIMEOUT_S}"),
        cwd=ROOT, env=_env(), stdout=log, stderr=subprocess.STDOUT, text=True))
  return procs


def _metrics(workdir: str) -> dict[tuple, dict[str, float]]:
  """metrics.jsonl by (step, seed, split), without the rates; duplicates refused."""
  out = {}
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    for line in f:
      r = json.loads(line)
      key = (r["step"], r["seed"], r["split"])
      assert key not in out, f"{key} logged twice"
      out[key] = {k: v for k, v in r.items() if k != "steps_per_s"}
  return out


def _assert_same_run(workdir: str, reference: str) -> None:
  got, want = _metrics(workdir), _metrics(reference)
  assert got.keys() == want.keys()
  for key in want:
    for name, value in want[key].items():
      if isinstance(value, float):
        np.testing.assert_allclose(got[key][name], value, rtol=RTOL, atol=ATOL,
                                   err_msg=f"{key} {name}")
      else:
        assert got[key][name] == value, (key, name)
  with open(os.path.join(workdir, "summary.json")) as f:
    summary = json.load(f)
  with open(os.path.join(reference, "summary.json")) as f:
    ref = json.load(f)
  assert summary["status"] == ref["status"] == "finished"
  assert summary["sequences_seen"] == ref["sequences_seen"]
  for mine, theirs in zip(summary["per_seed"], ref["per_seed"]):
    for name, value in theirs["metrics"].items():
      np.testing.assert_allclose(mine["metrics"][name], value, rtol=RTOL, atol=ATOL)


_FOUR_DEVICES = """
import json
import jax, numpy as np
from lstm_jax import config as config_lib, devices, training
from configs import delayed_recall
assert len(jax.devices()) == 4, jax.devices()
task, model, _ = config_lib.build(delayed_recall.get_config("quick"))
optimizer = training.make_optimizer(learning_rate=1e-2)
out = {}
for name, seeds, split, devs in (("seeds_one", 4, "off", jax.devices()[:1]),
                                 ("seeds_four", 4, "off", jax.devices()),
                                 ("batch_one", 1, "off", jax.devices()[:1]),
                                 ("batch_four", 1, "on", jax.devices())):
  init_keys, data_keys, _ = training.seed_keys(0, seeds)
  state = training.init_state(model, optimizer, init_keys, task.input_size)
  placement = devices.Placement.build(seeds, "map", split, devices=devs)
  chunk = training.make_train_chunk(model, task, optimizer, 8, 10, placement)
  losses = []
  for _ in range(4):
    state, metrics, _ = chunk(state, data_keys)
    losses.append(np.asarray(metrics["loss"]).tolist())
  params = [np.asarray(x).ravel().tolist() for x in jax.tree_util.tree_leaves(state.params)]
  out[name] = {"loss": losses, "params": params}
print(json.dumps(out))
"""


def test_four_devices_train_like_one():
  """With --xla_force_host_platform_device_count=4: four seeds split over four
  devices train exactly as on one; one seed's batch split over four devices
  (split_batch="on": its gradient is a sum of four partial sums) within
  float32 rounding of the unsplit batch, after 40 updates."""
  env = _env()
  env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4")
  done = subprocess.run([sys.executable, "-c", _FOUR_DEVICES], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-2000:]
  out = json.loads(done.stdout.strip().splitlines()[-1])
  for key in ("loss", "params"):
    for got, want in zip(out["seeds_four"][key], out["seeds_one"][key]):
      np.testing.assert_array_equal(got, want)
    for got, want in zip(out["batch_four"][key], out["batch_one"][key]):
      np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> str:
  """The workdir of the one-process run of :data:`CONFIG`."""
  workdir = str(tmp_path_factory.mktemp("one_process"))
  done = subprocess.run(_cmd(workdir), cwd=ROOT, env=_env(), capture_output=True, text=True,
                        timeout=300)
  assert done.returncode == 0, done.stderr[-2000:]
  return workdir


def test_bad_distributed_flags_and_an_unreachable_coordinator_are_one_line():
  cases = [(("localhost:1234", 2, -1), "go together"),
           (("", 2, 0), "go together"),
           (("localhost", 2, 0), "expected host:port"),
           (("localhost:99999", 2, 0), "expected host:port"),
           (("localhost:1234", 2, 2), r"--process_id=2: expected an integer from 0 to 1")]
  for args, message in cases:
    with pytest.raises(devices.DistributedError, match=message):
      devices.initialize_distributed(*args, timeout_s=1)
  with pytest.raises(devices.DistributedError, match="whole seconds"):
    devices.initialize_distributed("localhost:1234", 2, 0, timeout_s=0)
  start = time.monotonic()
  with pytest.raises(devices.DistributedError, match="could not be reached within 1 s"):
    devices.initialize_distributed(f"localhost:{_free_port()}", 2, 1, timeout_s=1)
  assert time.monotonic() - start < 5


def test_cluster_detection_reads_the_launchers_variables():
  assert devices.cluster_detected({}) is None
  assert devices.cluster_detected({"SLURM_STEP_NUM_TASKS": "4"}) == "SLURM"
  assert devices.cluster_detected({"SLURM_STEP_NUM_TASKS": "1", "SLURM_NTASKS": "4"}) is None
  assert devices.cluster_detected({"OMPI_COMM_WORLD_SIZE": "2"}) == "Open MPI"
  assert devices.cluster_detected({"TPU_WORKER_HOSTNAMES": "a,b"}) == "TPU pod"
  assert devices.cluster_detected({"TPU_WORKER_HOSTNAMES": "a"}) is None
  assert devices.cluster_detected({"JAX_COORDINATOR_ADDRESS": "h:1"}) == "JAX"
  assert devices.initialize_distributed(environ={}) is False  # alone: nothing started


def test_the_cli_reports_an_unreachable_coordinator_in_one_line(tmp_path):
  start = time.monotonic()
  done = subprocess.run(
      _cmd(str(tmp_path / "w"), f"--coordinator=localhost:{_free_port()}", "--num_processes=2",
           "--process_id=1", "--distributed_timeout=2"),
      cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=120)
  assert done.returncode == 2
  lines = done.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: --coordinator=localhost:"), done.stderr
  assert "could not be reached within 2 s" in lines[0]
  assert time.monotonic() - start < 60


_FATAL = (b"E1204 04:04:20.381342   25354 coordination_service.cc:518] [4329] 1 unexpectedly "
          b"tried to connect with a different incarnation. It has likely restarted.\n"
          b"F1204 04:04:20.381660   25364 client.h:80] Terminating process because the JAX "
          b"distributed service detected fatal errors. absl::Status: ABORTED: 1 unexpectedly "
          b"tried to connect with a different incarnation. It has likely restarted.\n\n"
          b"RPC: /xla.coordination.CoordinationService/PollForError\n"
          b"*** Check failure stack trace: ***\n"
          b"    @     0x7fdb6fa40634  absl::log_internal::LogMessage::SendToLog()\n"
          b"Fatal Python error: Aborted\n\nThread 0x00007f (most recent call first):\n")
"""The runtime's stop of a process whose run got a second process 1 (jaxlib 0.10)."""


def test_the_runtime_log_passes_stderr_on_and_sums_up_a_fatal_stop():
  out = []
  log = devices.RuntimeLog(out.append, hold_s=1.0)
  log.feed(b"\rbar:  7%|7| 80/1200\rbar: 13%|", 0.0)  # a progress bar: written at once
  log.feed(b"W1204 04:04:20.1 1 coordination_service_agent.cc:9] slow\n", 0.0)
  log.feed(b"plain line\n", 0.0)
  assert b"".join(out) == b"\rbar:  7%|7| 80/1200\rbar: 13%|plain line\n"
  log.tick(1.5)  # the runtime's warning, no fatal stop after it: written late
  assert out[-1].endswith(b"slow\n") and log.fatal is None
  log.feed(b"E1204 04:04:20.2 1 other.cc:3] not the runtime\n", 2.0)
  assert out[-1].endswith(b"not the runtime\n")
  log.feed(b"E1204 04:04:20.3 1 coordination_service.cc:7] two\n\nlines\n", 2.0)
  log.feed(b"\rbar: 20%|", 2.0)
  out.clear()
  for i in range(0, len(_FATAL), 37):  # in pieces, as a pipe may deliver it
    log.feed(_FATAL[i:i + 37], 2.5)
  log.feed(b"more of the dump\n", 3.0)
  log.tick(10.0)
  log.close()
  assert out == [] and "PollForError" in log.fatal and "stack trace" not in log.fatal
  run = devices.DistributedRun("localhost:1234", 2, 0, 20)
  line, at_start = devices.runtime_fault(log.fatal, run)
  assert at_start and line.startswith("distributed: two processes were started with "
                                      "--process_id=1 (coordinator localhost:1234, process 0 "
                                      "of 2)"), line
  line, at_start = devices.runtime_fault(
      "Terminating process ... absl::Status: DEADLINE_EXCEEDED: Deadline Exceeded RPC: "
      "/xla.coordination.CoordinationService/RegisterTask", run)
  assert at_start and "not all 2 processes joined coordinator localhost:1234 within 20 s" in line
  line, at_start = devices.runtime_fault(
      "absl::Status: UNAVAILABLE: The following tasks are unhealthy (stopped sending "
      "heartbeats): 1 The tasks have crashed. RPC: /xla.coordination.CoordinationService/"
      "PollForError [type.googleapis.com/tensorflow.C", run)
  assert not at_start and line.startswith("distributed: process 1 stopped sending heartbeats "
                                          "for 20 s"), line
  line, at_start = devices.runtime_fault("absl::Status: INTERNAL: something else RPC: /x", run)
  assert not at_start and "(INTERNAL: something else); another process probably died" in line


def _ends_in_one_line(proc: subprocess.Popen, started: float) -> tuple[int, str, float]:
  """Exit status, the one line of stderr (asserted to be one) and seconds taken."""
  _, err = proc.communicate(timeout=TIMEOUT_S + 60)
  lines = [line for line in err.splitlines() if line.strip()]
  assert len(lines) == 1, err[-3000:]
  return proc.returncode, lines[0], time.monotonic() - started


def test_missing_and_duplicate_processes_end_in_one_line_each(tmp_path):
  """(a) Process 0 of 2 started alone: one line naming the missing processes
  within the timeout (+5 s: the runtime's grace for its registration call).
  (b) Process 0 and process 1 twice: every process ends with one line, the
  runtime's finding of a second process 1 named. Exit status 2, no dump."""
  timeout = 1
  flags = ["--num_processes=2", f"--distributed_timeout={timeout}"]
  alone, pair = _free_port(), _free_port()
  started = time.monotonic()
  procs = [subprocess.Popen(_cmd(str(tmp_path / name), f"--coordinator=localhost:{port}",
                                 *flags, f"--process_id={i}"),
                            cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
           for name, port, i in (("a", alone, 0), ("b", pair, 0), ("b", pair, 1))]
  time.sleep(1.0)  # a late second process 1
  procs.append(subprocess.Popen(_cmd(str(tmp_path / "b"), f"--coordinator=localhost:{pair}",
                                     *flags, "--process_id=1"),
                                cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True))
  ends = [_ends_in_one_line(p, started) for p in procs]
  for code, line, seconds in ends:
    assert code == 2 and line.startswith("error: distributed: "), line
    assert seconds < timeout + 5 + 30, (seconds, line)  # + the start of a loaded machine
  assert (f"not all 2 processes joined coordinator localhost:{alone} within {timeout} s "
          "(process 0 of 2)") in ends[0][1]
  assert any("two processes were started with --process_id=1" in line
             for _, line, _ in ends[1:]), ends


def test_two_processes_train_like_one_and_resume_after_one_dies(tmp_path, reference):
  """Kill process 1 after checkpoint 20: process 0 leaves with one line
  (exit 5) well within the timeout; the same two commands again resume and
  end with the one-process run's metrics; one process also resumes the two
  processes' checkpoint to the same end."""
  workdir, logs = str(tmp_path / "run"), str(tmp_path)
  procs = _start(workdir, _free_port(), logs)
  manifest = os.path.join(workdir, "checkpoint_hashes", "20.json")
  deadline = time.monotonic() + 240
  while not os.path.exists(manifest):
    assert time.monotonic() < deadline and procs[0].poll() is None, open(
        os.path.join(logs, "p0.log")).read()[-2000:]
    time.sleep(0.02)
  procs[1].send_signal(signal.SIGKILL)
  killed = time.monotonic()
  assert procs[0].wait(timeout=TIMEOUT_S + 30) == 5
  assert time.monotonic() - killed < TIMEOUT_S + 10
  procs[1].wait()
  with open(os.path.join(logs, "p0.log")) as f:
    errors = [line for line in f.read().splitlines() if line.startswith("error:")]
  assert len(errors) == 1 and "another process probably died" in errors[0], errors
  assert not os.path.exists(os.path.join(workdir, "summary.json"))

  alone = str(tmp_path / "alone")
  shutil.copytree(workdir, alone, ignore=shutil.ignore_patterns(".lock"))

  procs = _start(workdir, _free_port(), logs)
  for i, p in enumerate(procs):
    assert p.wait(timeout=300) == 0, open(os.path.join(logs, f"p{i}.log")).read()[-2000:]
    with open(os.path.join(logs, f"p{i}.log")) as f:
      assert "delayed_recall lag=3" in f.read().splitlines()[-1]  # the summary line
  _assert_same_run(workdir, reference)  # also: no line logged twice (process 1 logs none)

  done = subprocess.run(_cmd(alone), cwd=ROOT, env=_env(), capture_output=True, text=True,
                        timeout=300)
  assert done.returncode == 0, done.stderr[-2000:]
  _assert_same_run(alone, reference)
