"""A run directory that survives crashes: an owner lock, the saved config and
its comparison with a requested one, atomic file writes, and orbax
checkpoints whose integrity is verified before they are trusted.

Integrity: after orbax commits checkpoint ``N`` (it writes to a temporary
directory and renames), a manifest ``checkpoint_hashes/N.json`` with the
SHA-256 of every file of the checkpoint is written atomically. A checkpoint
without a manifest (the process died between the two) or whose files no
longer match it, or that orbax fails to read, is reported, moved to
``corrupt_checkpoints/`` and the previous one is used.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import socket
import time
from typing import Any, Callable, Iterator

import numpy as np
import orbax.checkpoint as ocp

LOCK_NAME = ".lock"


class WorkdirError(RuntimeError):
  """The run directory cannot be used as asked (not a writable directory, held
  lock, config mismatch)."""


def ensure_dir(path: str) -> None:
  """Create directory ``path`` if needed and check that files can be written in it.

  Raises:
    WorkdirError: ``path`` is an existing file, cannot be created, or is not
      writable (one line naming the path and the reason).
  """
  if os.path.exists(path) and not os.path.isdir(path):
    raise WorkdirError(f"workdir {path} is an existing file, not a directory; "
                       "choose another --workdir")
  try:
    os.makedirs(path, exist_ok=True)
  except OSError as err:
    raise WorkdirError(f"workdir {path} cannot be created ({err.strerror or err}); choose "
                       "a --workdir in a directory you can write") from None
  probe = os.path.join(path, f".write_test.{os.getpid()}")
  try:
    with open(probe, "w"):
      pass
    os.remove(probe)
  except OSError as err:
    raise WorkdirError(f"workdir {path} is not writable ({err.strerror or err}); choose "
                       "another --workdir") from None


# ----------------------------------------------------------------------------
# Atomic files.


def write_text_atomic(path: str, text: str) -> None:
  """Write ``text`` to ``path`` via a temporary file, fsync and rename."""
  tmp = f"{path}.tmp.{os.getpid()}"
  with open(tmp, "w") as f:
    f.write(text)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


def to_jsonable(tree: Any) -> Any:
  """NumPy/JAX arrays and scalars in ``tree`` as JSON-friendly Python values."""
  if isinstance(tree, dict):
    return {str(k): to_jsonable(v) for k, v in tree.items()}
  if isinstance(tree, (list, tuple)):
    return [to_jsonable(v) for v in tree]
  if hasattr(tree, "__array__") and hasattr(tree, "shape"):  # np.ndarray, jax.Array
    return np.asarray(tree).tolist()
  if isinstance(tree, (np.floating, np.integer, np.bool_)):
    return tree.item()
  return tree


def write_json_atomic(path: str, data: Any) -> None:
  """Write ``data`` (through :func:`to_jsonable`) as indented JSON to ``path``,
  atomically (:func:`write_text_atomic`)."""
  write_text_atomic(path, json.dumps(to_jsonable(data), indent=2, sort_keys=True))


def read_jsonl(path: str) -> list[dict[str, Any]]:
  """Records of a JSON-lines file; a torn last line (a kill mid-write) is dropped."""
  if not os.path.exists(path):
    return []
  records = []
  with open(path) as f:
    for line in f:
      try:
        records.append(json.loads(line))
      except json.JSONDecodeError:
        continue
  return records


def truncate_jsonl(path: str, keep: Callable[[dict[str, Any]], bool]) -> None:
  """Atomically rewrite ``path`` keeping the well-formed records ``keep`` accepts."""
  if os.path.exists(path):
    write_text_atomic(path, "".join(json.dumps(r) + "\n" for r in read_jsonl(path) if keep(r)))


# ----------------------------------------------------------------------------
# Owner lock.


def _pid_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


@contextlib.contextmanager
def locked(workdir: str) -> Iterator[list[str]]:
  """Hold ``workdir/.lock`` (pid and host of the owner) while the block runs.

  A lock whose process no longer runs on this host is stale: it is taken over
  and a note is yielded (a list of messages).

  Raises:
    WorkdirError: ``workdir`` is not a writable directory (:func:`ensure_dir`),
      or another live process holds the lock.
  """
  ensure_dir(workdir)
  path = os.path.join(workdir, LOCK_NAME)
  notes: list[str] = []
  me = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
  for _ in range(2):
    try:
      fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
      try:
        with open(path) as f:
          owner = json.load(f)
      except (OSError, json.JSONDecodeError):
        owner = {}
      pid, host = owner.get("pid"), owner.get("host")
      if isinstance(pid, int) and host == me["host"] and _pid_alive(pid) and pid != me["pid"]:
        raise WorkdirError(f"workdir {workdir} is in use by pid {pid} on {host} "
                           f"(lock file {path}); wait for it or stop it")
      if host not in (None, me["host"]) and isinstance(pid, int):
        raise WorkdirError(f"workdir {workdir} is locked by pid {pid} on another host "
                           f"{host!r}; remove {path} if that run is gone")
      notes.append(f"removed a stale lock of pid {pid} (no longer running)")
      with contextlib.suppress(FileNotFoundError):
        os.remove(path)
      continue
    with os.fdopen(fd, "w") as f:
      json.dump(me, f)
    break
  else:
    raise WorkdirError(f"could not take the lock {path}")
  try:
    yield notes
  finally:
    with contextlib.suppress(FileNotFoundError):
      with open(path) as f:
        if json.load(f).get("pid") == me["pid"]:
          os.remove(path)


# ----------------------------------------------------------------------------
# Saved config.


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
  """``{"model.hidden_size": 32, ...}`` from nested dicts."""
  if isinstance(tree, dict):
    out: dict[str, Any] = {}
    for k, v in tree.items():
      out.update(flatten(v, f"{prefix}{k}."))
    return out
  return {prefix[:-1]: tree}


def config_differences(saved: dict[str, Any], requested: dict[str, Any],
                       defaults: dict[str, Any] | None = None) -> list[str]:
  """Lines ``field: saved -> requested`` for every field that differs.

  A field missing from ``saved`` (a run written before the field existed)
  whose requested value equals its value in ``defaults`` is not a difference:
  new fields default to what runs did before them.
  """
  a, b = flatten(saved), flatten(json.loads(json.dumps(requested)))
  d = flatten(json.loads(json.dumps(defaults or {})))
  absent = "<absent>"
  return [f"{k}: {a.get(k, absent)!r} -> {b.get(k, absent)!r}"
          for k in sorted(set(a) | set(b))
          if a.get(k, absent) != b.get(k, absent)
          and not (k not in a and k in d and b.get(k, absent) == d[k])]


# ----------------------------------------------------------------------------
# Checkpoints with verified integrity.


def _hash_tree(root: str) -> dict[str, str]:
  digests = {}
  for folder, _, files in os.walk(root):
    for name in sorted(files):
      path = os.path.join(folder, name)
      h = hashlib.sha256()
      with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
          h.update(block)
      digests[os.path.relpath(path, root)] = h.hexdigest()
  return digests


class CheckpointStore:
  """Orbax checkpoints of ``(state, loop)`` with integrity manifests.

  Args:
    workdir: the run directory (``checkpoints/``, ``checkpoint_hashes/`` and
      ``corrupt_checkpoints/`` live in it).
    max_to_keep: checkpoints kept (at least 2, so a corrupt latest one has a
      predecessor).
    only_this_process: in a run of several processes (``jax.distributed``),
      this process alone reads and writes the checkpoints, holding the whole
      state (orbax's ``active_processes`` is this one); the others neither
      open nor wait on it. ``False``: orbax's default, every process takes
      part (or the only one).
  """

  def __init__(self, workdir: str, max_to_keep: int = 3, only_this_process: bool = False):
    self.workdir = os.path.abspath(workdir)
    self.ckpt_dir = os.path.join(self.workdir, "checkpoints")
    self.hash_dir = os.path.join(self.workdir, "checkpoint_hashes")
    os.makedirs(self.hash_dir, exist_ok=True)
    self.max_to_keep = max(2, max_to_keep)
    self.only_this_process = only_this_process
    if only_this_process:  # orbax cannot create the directory for a subset of processes
      os.makedirs(self.ckpt_dir, exist_ok=True)
    self.notes: list[str] = []
    self._open()

  def _open(self) -> None:
    multi = ocp.options.MultiprocessingOptions()
    if self.only_this_process:
      import jax  # local: keeps this module's import light
      me = jax.process_index()
      multi = ocp.options.MultiprocessingOptions(primary_host=me, active_processes={me})
    self.manager = ocp.CheckpointManager(
        self.ckpt_dir,
        options=ocp.CheckpointManagerOptions(max_to_keep=self.max_to_keep,
                                             enable_async_checkpointing=False,
                                             create=not self.only_this_process,
                                             multiprocessing_options=multi),
        item_handlers={"state": ocp.StandardCheckpointHandler(),
                       "loop": ocp.JsonCheckpointHandler()})

  def close(self) -> None:
    self.manager.close()

  def _manifest(self, step: int) -> str:
    return os.path.join(self.hash_dir, f"{step}.json")

  def _verify(self, step: int) -> str | None:
    """``None`` if checkpoint ``step`` matches its manifest, else the reason."""
    manifest = self._manifest(step)
    if not os.path.exists(manifest):
      return "no integrity manifest (the save did not finish)"
    with open(manifest) as f:
      want = json.load(f)
    got = _hash_tree(os.path.join(self.ckpt_dir, str(step)))
    if got != want:
      bad = sorted(k for k in set(want) | set(got) if want.get(k) != got.get(k))
      return f"{len(bad)} file(s) differ from the manifest, e.g. {bad[0]}"
    return None

  def _check_structure(self, step: int, state_like: Any) -> None:
    """Raise WorkdirError if intact checkpoint ``step`` holds a differently
    shaped state (another model or optimizer): that is no corruption."""
    try:
      saved = self.manager.item_metadata(step).state
    except Exception:  # unreadable metadata: let the restore report it
      return
    if saved is None:
      return
    import jax  # local: keeps this module's import light

    def leaves(tree):
      # Named tuples are saved as dicts: compare paths by names and indices only.
      name = lambda k: str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k))))
      return {"/".join(map(name, path)): tuple(getattr(x, "shape", ()))
              for path, x in jax.tree_util.tree_leaves_with_path(tree)}

    want, got = leaves(state_like), leaves(saved)
    if set(want) != set(got) or any(want[k] != got[k] for k in want):
      diff = sorted(k for k in set(want) | set(got) if want.get(k) != got.get(k))[:3]
      raise WorkdirError(
          f"checkpoint {step} in {self.ckpt_dir} is intact but holds a training state of "
          f"another shape (the model or optimizer changed; first differences: "
          f"{', '.join(diff)}); use a new workdir or --on_config_change=fresh")

  def _quarantine(self, step: int, reason: str) -> None:
    dest_root = os.path.join(self.workdir, "corrupt_checkpoints")
    os.makedirs(dest_root, exist_ok=True)
    dest = os.path.join(dest_root, f"{step}-{int(time.time())}")
    self.manager.close()
    shutil.move(os.path.join(self.ckpt_dir, str(step)), dest)
    with contextlib.suppress(FileNotFoundError):
      os.remove(self._manifest(step))
    self.notes.append(f"checkpoint {step} is corrupt ({reason}); moved to {dest}, "
                      "using the previous one")
    self._open()

  def restore_latest(self, state_like: Any) -> tuple[int, Any, Any] | None:
    """``(step, state, loop)`` of the newest intact checkpoint, or ``None``."""
    for step in sorted(self.manager.all_steps(), reverse=True):
      reason = self._verify(step)
      if reason is None:
        self._check_structure(step, state_like)
        try:
          restored = self.manager.restore(step, args=ocp.args.Composite(
              state=ocp.args.StandardRestore(state_like), loop=ocp.args.JsonRestore()))
          return step, restored.state, restored.loop
        except Exception as err:  # orbax raises many types for unreadable data
          reason = f"orbax could not read it: {type(err).__name__}: {str(err)[:200]}"
      self._quarantine(step, reason)
    return None

  def save(self, step: int, state: Any, loop: Any) -> None:
    """Save checkpoint ``step`` (a no-op if it exists) and its manifest."""
    if step in self.manager.all_steps():
      return
    self.manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), loop=ocp.args.JsonSave(loop)), force=True)
    self.manager.wait_until_finished()
    write_text_atomic(self._manifest(step),
                      json.dumps(_hash_tree(os.path.join(self.ckpt_dir, str(step)))))
    kept = {str(s) for s in self.manager.all_steps()}
    for name in os.listdir(self.hash_dir):
      if name.endswith(".json") and name[:-5] not in kept:
        with contextlib.suppress(FileNotFoundError):
          os.remove(os.path.join(self.hash_dir, name))
