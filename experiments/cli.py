"""Flag parsing shared by the entry points: user errors in flags become one
line on stderr and exit status 2, never a traceback. Also the flags of the
entry points that run many points in shards (``--shard``, ``--merge``,
``--merge_from``, ``--partial``: :func:`shard_and_merge_flags`), the shard a
job runs (:func:`chosen_shard`: the flag, else a SLURM job array's) and a
merge's report of missing points (:func:`report_missing`, exit status 4).
A process of a multi-process run is watched by a supervisor
(:func:`supervise`) that turns the distributed runtime's fatal stops into
one line."""

from __future__ import annotations

import contextlib
import os
import select
import signal
import sys
import time
from typing import Any, Iterator, Mapping, Sequence

from absl import flags
from ml_collections import config_flags

from lstm_jax.config import ConfigError
from lstm_jax.devices import (DISTRIBUTED_TIMEOUT_S, DistributedError, DistributedRun,
                              RuntimeLog, initialize_distributed, keep_freed_host_memory,
                              runtime_fault, set_cpu_devices)
from lstm_jax.runner import Interrupted, NonFiniteError
from lstm_jax.sweep import WHOLE, parse_shard, shard_from_env
from lstm_jax.workdir import WorkdirError


CPU_DEVICES = flags.DEFINE_integer(
    "cpu_devices", 0, "CPU devices JAX makes (a run spreads its seeds, or one seed's "
    "batch, over them: lstm_jax.devices); 0: one per usable core. "
    "Ignored when XLA_FLAGS sets --xla_force_host_platform_device_count.", lower_bound=0)
COORDINATOR = flags.DEFINE_string(
    "coordinator", "", "host:port of process 0 of a run over several processes (JAX's "
    "distributed runtime; process 0 listens there). Give it, --num_processes and "
    "--process_id together; without them a SLURM, Open MPI or TPU-pod launch of several "
    "processes is detected, and otherwise the run is one process.")
NUM_PROCESSES = flags.DEFINE_integer(
    "num_processes", 0, "Processes of the run, with --coordinator (0: not given).",
    lower_bound=0)
PROCESS_ID = flags.DEFINE_integer(
    "process_id", -1, "This process's id, 0 to --num_processes - 1, with --coordinator "
    "(-1: not given). Process 0 writes the logs, summaries and checkpoints.", lower_bound=-1)
DISTRIBUTED_TIMEOUT = flags.DEFINE_integer(
    "distributed_timeout", DISTRIBUTED_TIMEOUT_S, "Seconds a process of a multi-process run "
    "waits for the coordinator and the other processes to start, and after a process stops "
    "answering before the others are stopped. Processes that did not all join in time, or "
    "two with one --process_id, end with one line on stderr and exit status 2 (within the "
    "timeout and the runtime's 5 s grace).", lower_bound=1)
FORCE = flags.DEFINE_bool(
    "force", False, "Run even when the memory estimate of the training step or the "
    "evaluation says it does not fit in the free memory (lstm_jax.memory).")


def config_and_workdir_flags(what: str) -> tuple[Any, Any]:
  """Define the required ``--config`` (a config file, ``what`` it holds) and
  ``--workdir`` flags of an entry point; return their holders."""
  config = config_flags.DEFINE_config_file("config", None, f"{what} config file.",
                                           lock_config=True)
  workdir = flags.DEFINE_string("workdir", None, "Output directory (resumed if it exists).")
  flags.mark_flags_as_required(["config", "workdir"])
  return config, workdir


class _ShardParser(flags.ArgumentParser):
  """``--shard=i/n`` -> ``(i, n)`` (:func:`lstm_jax.sweep.parse_shard`)."""

  def parse(self, argument: Any) -> tuple[int, int]:
    if isinstance(argument, tuple):
      return argument
    try:
      return parse_shard(argument)
    except ConfigError as err:
      raise ValueError(str(err).split("; ", 1)[-1]) from None

  def flag_type(self) -> str:
    return "i/n"


MISSING_EXIT = 4
"""Exit status of a merge that found points no shard has finished (no ``--partial``)."""

PEER_EXIT = 5
"""Exit status of a process of a multi-process run whose collective with the
others failed (another process died or was stopped)."""

PEER_FAILURES = ("Gloo", "Connection reset", "Connection refused", "UNAVAILABLE",
                 "heartbeat", "DEADLINE_EXCEEDED", "Barrier failed")
"""Text of the errors (``JaxRuntimeError``, or ``ValueError`` from a transfer)
that a failed cross-process collective raises."""


def shard_and_merge_flags(what: str) -> tuple[Any, Any, Any, Any]:
  """Define ``--shard``, ``--merge``, ``--merge_from`` and ``--partial`` of an
  entry point that runs many points (``what``: "points", "models"); return
  their holders. :func:`chosen_shard` checks how they combine."""
  shard = flags.DEFINE(
      _ShardParser(), "shard", None,
      f"Run only shard i of n (0-based, i/n: 0/2 and 1/2 for two jobs): every n-th of the "
      f"{what} from the i-th, and write no tables (--merge does, once all shards have "
      "finished). Default: from a SLURM job array's SLURM_ARRAY_TASK_ID and "
      "SLURM_ARRAY_TASK_COUNT (or _MIN/_MAX/_STEP) when set, else the whole run.")
  merge = flags.DEFINE_bool(
      "merge", False, "Train nothing: build the tables and plots in --workdir from the "
      "finished points in --workdir and the --merge_from workdirs; list the points not "
      f"finished and exit {MISSING_EXIT} if any (--partial: write the tables anyway).")
  merge_from = flags.DEFINE_list(
      "merge_from", [], "With --merge: more workdirs (comma-separated) the shards wrote "
      "points to, looked in after --workdir.")
  partial = flags.DEFINE_bool(
      "partial", False, "With --merge: write the tables from the finished points even when "
      "some are missing (they are still listed), and exit 0.")
  return shard, merge, merge_from, partial


def chosen_shard(flag: tuple[int, int] | None, merge: bool = False,
                 merge_from: Sequence[str] = (), partial: bool = False,
                 environ: Mapping[str, str] = os.environ) -> tuple[int, int]:
  """The shard to run: ``--shard`` when given, else the SLURM job array's
  (:func:`lstm_jax.sweep.shard_from_env`), else the whole run ``(0, 1)``;
  ``(0, 1)`` for a merge (``merge``: it reads every shard's points, and
  ignores the SLURM variables). Raises :class:`lstm_jax.config.ConfigError`
  for a bad SLURM variable, ``--shard`` with ``--merge``, or
  ``--merge_from`` / ``--partial`` without it."""
  if merge and flag is not None:
    raise ConfigError("--shard is not allowed with --merge (a merge reads every shard's "
                      "points)")
  for name, value in (("merge_from", merge_from), ("partial", partial)):
    if value and not merge:
      raise ConfigError(f"--{name} is not allowed without --merge")
  if merge:
    return WHOLE
  if flag is not None:
    return flag
  return shard_from_env(environ) or WHOLE


def report_missing(lines: Sequence[str], total: int, what: str, dirs: Sequence[str],
                   partial: bool) -> None:
  """A merge's missing points: one ``missing: ...`` line each on stderr, then
  a summary line; without ``partial`` it is an ``error:`` line and the exit
  status :data:`MISSING_EXIT`. ``total``: how many ``what`` the merge
  expected; ``dirs``: the workdirs it looked in."""
  if not lines:
    return
  for line in lines:
    print(f"missing: {line}", file=sys.stderr)
  where = ", ".join(dirs)
  if partial:
    print(f"note: {len(lines)} of {total} {what} not finished in {where}; the tables hold "
          "the finished ones only (--partial)", file=sys.stderr)
    return
  print(f"error: {len(lines)} of {total} {what} not finished in {where}; nothing written. "
        "Run their shards again (finished points are reused), or merge with --partial",
        file=sys.stderr)
  sys.exit(MISSING_EXIT)


FORWARDED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
"""Signals the supervisor of a multi-process run passes on to the process it watches."""


def supervise(run: DistributedRun) -> None:
  """Split this process in two before JAX's distributed runtime starts: the
  child returns and does the work; the parent stays behind, passes the
  child's stderr on (:class:`lstm_jax.devices.RuntimeLog`), and leaves with
  its exit status.

  Why: the runtime stops a process from C++ when it finds a fault itself
  (fewer processes than ``--num_processes`` joined within the timeout, two
  processes with one ``--process_id``, a process that stopped sending
  heartbeats): a fatal log, a stack trace and ``abort()``. No Python code
  of that process runs again, and ``jax.distributed.initialize`` has no
  option to raise instead (its client's ``missed_heartbeat_callback`` is not
  passed through; given one directly, jaxlib 0.10 cannot convert the status
  and the C++ thread that calls it terminates the process all the same). So
  the message is turned into one line (:func:`lstm_jax.devices.runtime_fault`)
  by the parent, which outlives the abort, with exit status 2 for a fault at
  the start and :data:`PEER_EXIT` for one later. Everything else the child
  writes to stderr is passed on unchanged (the runtime's own warning lines
  after a short wait), its stdout is its own, and its exit status is the
  parent's (128 + signal number when a signal ended it), so a run that
  works writes and returns what it did without the split.

  ``os.fork`` (not a fresh interpreter) keeps the split cheap: the modules
  are loaded and the flags parsed, and no JAX backend or runtime has
  started yet. The parent passes :data:`FORWARDED_SIGNALS` on; on Linux the
  child is killed when the parent dies (``PR_SET_PDEATHSIG``), so killing
  the process a launcher started still stops the work, and the other
  processes notice as from any process that died.
  """
  sys.stdout.flush()
  sys.stderr.flush()
  read_end, write_end = os.pipe()
  parent = os.getpid()
  child = os.fork()
  if child == 0:
    os.close(read_end)
    os.dup2(write_end, 2)
    os.close(write_end)
    _die_with_parent(parent)
    return
  os.close(write_end)
  for signum in FORWARDED_SIGNALS:
    signal.signal(signum, lambda sig, frame: _send(child, sig))
  last = [b"\n"]  # the last byte written: the one line starts a line of its own

  def write(data: bytes) -> None:
    _write(2, data)
    last[0] = data[-1:] or last[0]

  log = RuntimeLog(write)
  while True:
    ready, _, _ = select.select([read_end], [], [], 0.1)
    if ready:
      data = os.read(read_end, 1 << 16)
      if not data:
        break
      log.feed(data, time.monotonic())
    else:
      log.tick(time.monotonic())
  log.close()
  _, status = os.waitpid(child, 0)
  code = os.waitstatus_to_exitcode(status)
  if log.fatal is not None:
    line, at_start = runtime_fault(log.fatal, run)
    _write(2, (b"" if last[0] == b"\n" else b"\n") + f"error: {line}\n".encode())
    code = 2 if at_start else PEER_EXIT
  elif code < 0:
    code = 128 - code
  os._exit(code)  # pylint: disable=protected-access


def _die_with_parent(parent: int) -> None:
  """Ask Linux to kill this process when ``parent`` ends (nothing elsewhere)."""
  try:
    import ctypes  # pylint: disable=import-outside-toplevel
    ctypes.CDLL(None).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
  except (OSError, AttributeError):
    return
  if os.getppid() != parent:  # the parent ended before prctl
    os._exit(1)  # pylint: disable=protected-access


def _send(pid: int, signum: int) -> None:
  try:
    os.kill(pid, signum)
  except ProcessLookupError:
    pass


def _write(fd: int, data: bytes) -> None:
  """All of ``data`` to ``fd`` (dropped if it is closed)."""
  view = memoryview(data)
  try:
    while view:
      view = view[os.write(fd, view):]
  except OSError:
    pass


def _config_file_args(argv: list[str]) -> list[tuple[str, str]]:
  """``(flag name, path)`` of every config-file flag given in ``argv``
  (``--config=configs/adding.py:quick`` -> ``("config", "configs/adding.py")``)."""
  file_parser = config_flags.config_flags.ConfigFileFlagParser
  names = [name for name in flags.FLAGS if isinstance(flags.FLAGS[name].parser, file_parser)]
  found = []
  for i, arg in enumerate(argv):
    for name in names:
      for prefix in (f"--{name}", f"-{name}"):
        if arg.startswith(prefix + "="):
          found.append((name, arg[len(prefix) + 1:].split(":", 1)[0]))
        elif arg == prefix and i + 1 < len(argv):
          found.append((name, argv[i + 1].split(":", 1)[0]))
  return found


def _missing_config_file(argv: list[str]) -> str | None:
  """The problem, if a config-file flag in ``argv`` names no file (checked
  before parsing: ml_collections would load the file while parsing)."""
  for name, path in _config_file_args(argv):
    if not os.path.isfile(path):
      what = "is a directory" if os.path.isdir(path) else "does not exist"
      return (f"--{name}={path}: the config file {what}; give the path of an existing "
              "config file (configs/ holds them)")
  return None


def _unloadable_config_file(argv: list[str]) -> str | None:
  """The problem, if a parsed config file failed to load (ml_collections
  defers that error to the config's first use)."""
  for name, path in _config_file_args(argv):
    try:
      getattr(flags.FLAGS[name].value, "to_dict", None)
    except OSError as err:
      return f"--{name}={path}: the config file could not be loaded ({_first_line(err)})"
  return None


def _first_line(err: Exception) -> str:
  text = str(err).strip()
  return text.splitlines()[0] if text else type(err).__name__


def parse_flags(argv: list[str]) -> list[str]:
  """``absl.app.run``'s ``flags_parser``: parse, or print one line and exit 2.

  Catches a ``--config`` file that does not exist or does not load, unknown
  config fields (``--config.lagg=3``: ml_collections suggests the closest
  field), values of the wrong type and missing required flags. Then applies
  ``--cpu_devices`` (flags are parsed before any JAX computation), starts
  the distributed runtime when the run has several processes
  (:func:`lstm_jax.devices.initialize_distributed`: ``--coordinator``,
  ``--num_processes``, ``--process_id``, ``--distributed_timeout``; watched
  by :func:`supervise`) and
  applies :func:`lstm_jax.devices.keep_freed_host_memory`.
  """
  try:
    problem = _missing_config_file(argv)
    if problem is None:
      rest = flags.FLAGS(argv)
      problem = _unloadable_config_file(argv)
    if problem is None:
      set_cpu_devices(CPU_DEVICES.value)
      initialize_distributed(COORDINATOR.value, NUM_PROCESSES.value, PROCESS_ID.value,
                             DISTRIBUTED_TIMEOUT.value, before_start=supervise)
      keep_freed_host_memory()
      return rest
  except DistributedError as err:
    # At once: a runtime that did start would wait for the others at its shutdown.
    print(f"error: {err}", file=sys.stderr, flush=True)
    os._exit(2)  # pylint: disable=protected-access
  except OSError as err:  # an override applied to a config that failed to load
    problem = f"a config file could not be loaded ({_first_line(err)})"
  except (flags.Error, AttributeError, KeyError, TypeError, ValueError) as err:
    problem = str(err).replace("\\n", " ").replace("\\'", "'")
    problem = " ".join(problem.split())
    if problem[:1] == problem[-1:] and problem[:1] in "'\"":
      problem = problem[1:-1]
    if isinstance(err, (AttributeError, KeyError)):
      problem = f"unknown config field {problem}; a locked config accepts only its own fields"
  print(f"error: {problem}", file=sys.stderr)
  sys.exit(2)


@contextlib.contextmanager
def exit_codes() -> Iterator[None]:
  """Map the library's user-facing errors to one stderr line and an exit status:
  2 bad config, a run too big for the memory (``runner.TooBigError``, a
  ``ConfigError``), an unusable workdir or a distributed runtime that did not
  start, 3 non-finite values, :data:`PEER_EXIT` a collective with the other
  processes of a multi-process run that failed (the process leaves at once,
  without waiting for the runtime's shutdown barrier), 128 + signal number
  after SIGTERM/SIGINT (a checkpoint was saved)."""
  try:
    yield
  except (ConfigError, WorkdirError) as err:
    print(f"error: {err}", file=sys.stderr)
    sys.exit(2)
  except NonFiniteError as err:
    print(f"error: {err}", file=sys.stderr)
    sys.exit(3)
  except Interrupted as err:
    print(f"interrupted: {err}", file=sys.stderr)
    sys.exit(128 + err.signum)
  except Exception as err:  # pylint: disable=broad-except
    import jax  # pylint: disable=import-outside-toplevel
    if jax.process_count() == 1 or not any(m in str(err) for m in PEER_FAILURES):
      raise
    text = " ".join(str(err).split())[:200]
    print(f"error: process {jax.process_index()} of {jax.process_count()}: a collective with "
          f"the other processes failed ({text}); another process probably died. Rerun the "
          "same command on every process to resume from the last checkpoint",
          file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(PEER_EXIT)  # pylint: disable=protected-access
