"""The run folder: one rule for what an existing ``--out`` means, for every training command.

A run is identified by its *config*: the options that decide its result (its ``identity``),
hashed into a ``fingerprint``. Given an existing folder, `pipeline train`, `finetune` and
`teacher-finetune` all do the same:

- the same config, finished: say it is done and return its result; nothing is retrained;
- the same config, unfinished: resume from the last checkpoint (``--resume`` is no longer
  needed; it is accepted for old scripts);
- a different config: refuse, naming what differs, unless ``--overwrite``;
- a non-empty folder that holds no run of this command: refuse, even with ``--overwrite``
  (it deletes only runs, never someone's other files).

``--overwrite`` starts over whatever the folder holds. The run file (``run.json``,
``finetune.json``, ``teacher_finetune.json``) records the identity, every option as given,
and the status; checkpoints live in ``checkpoint/`` (``student.runs.checkpoint``) and the
metrics in ``metrics.jsonl`` (``student.runs.progress``).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cache.errors import SraError
from cache.files import write_atomic
from student.runs.checkpoint import Checkpoints, json_bytes, read_state
from student.runs.progress import MetricsLog

FORMAT_VERSION = 1
TRAINING, COMPLETE = "training", "complete"


def fingerprint(identity: dict[str, Any]) -> str:
    """A run's fingerprint: sha256 of its identity as explicit, sorted, compact JSON."""
    text = json.dumps(identity, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class RunKind:
    """What one command's run folders look like."""

    name: str  # in messages: "a different {name} run"
    run_file: str
    format: str  # the run file's "format" field
    outputs: tuple[str, ...]  # glob patterns --overwrite deletes besides the run's own files
    # A run file from before this format (no "format" field): (identity, finished).
    legacy: Callable[[dict[str, Any], Path], tuple[dict[str, Any], bool]] | None = None


@dataclass(frozen=True)
class Start:
    """What ``RunFolder.prepare`` found: a finished run, or where to start training."""

    done: bool = False
    checkpoint: Path | None = None  # resume from here; None: from step 0


class RunFolder:
    """One run's output folder. Every rank of a distributed job checks; rank 0 alone writes."""

    def __init__(
        self,
        path: Path,
        kind: RunKind,
        *,
        rank: int = 0,
        barrier: Callable[[], object] | None = None,
    ) -> None:
        self.path = Path(path)
        self.kind = kind
        self.rank = rank
        self.barrier = barrier or _alone  # waits for every rank of a distributed job
        self.checkpoints = Checkpoints(self.path)
        self.metrics = MetricsLog(self.path, writer=rank == 0)
        self.fingerprint = ""

    @property
    def run_file(self) -> Path:
        return self.path / self.kind.run_file

    def prepare(
        self,
        identity: dict[str, Any],
        *,
        options: dict[str, Any],
        overwrite: bool,
        extra: dict[str, Any] | None = None,
    ) -> Start:
        """Apply the rule to the folder (see the module's docstring); returns what to do.

        ``identity`` decides the result; ``options`` (every option as given) and ``extra``
        are kept in the run file for the record. Call it before writing anything there."""
        self.fingerprint = fingerprint(identity)
        if self.path.exists() and not self.path.is_dir():
            raise SraError(f"--out {self.path} is a file; choose a folder")
        found = self._read(overwrite)
        foreign = found is None and self.path.exists() and any(self.path.iterdir())
        self.barrier()  # every rank has looked before rank 0 changes anything
        if foreign:
            raise SraError(
                f"--out {self.path} is not empty and holds no {self.kind.run_file}, so it is "
                f"not a {self.kind.name} run; choose a new or empty folder"
            )
        record: dict[str, Any] | None = None
        if found is not None and not overwrite:
            old_identity, finished, record = found
            if _canonical(old_identity) != _canonical(identity):
                what = ", ".join(changed_keys(old_identity, _canonical(identity))[:6])
                raise SraError(
                    f"{self.path} holds a different {self.kind.name} run (differs in: "
                    f"{what or 'its config'}); pass --overwrite to replace it or choose "
                    "another --out"
                )
            if finished:
                self._say(
                    f"{self.path} already holds this finished {self.kind.name} run; nothing "
                    "to do (--overwrite trains it again)"
                )
                return Start(done=True)
        if found is not None and overwrite:
            self._clear()
            record = None
        checkpoint = self._checkpoint() if record is not None else None
        if record is not None and checkpoint is None:
            self._say(f"{self.path}: an unfinished run without a checkpoint; starting over")
        if self.rank == 0:
            self.path.mkdir(parents=True, exist_ok=True)
            if record is None or record.get("format") != self.kind.format:
                record = {
                    "format": self.kind.format,
                    "format_version": FORMAT_VERSION,
                    "fingerprint": self.fingerprint,
                    "status": TRAINING,
                    "config": identity,
                    "options": options,
                    "created_at": _now(),
                    **(extra or {}),
                }
                write_atomic(self.run_file, json_bytes(record))
        self.barrier()
        return Start(checkpoint=checkpoint)

    def finish(self, **fields: Any) -> None:
        """Mark the run complete (with ``fields``, e.g. a summary); drop its checkpoints."""
        if self.rank != 0:
            return
        record = json.loads(self.run_file.read_text())
        record.update(status=COMPLETE, finished_at=_now(), **fields)
        write_atomic(self.run_file, json_bytes(record))
        self.checkpoints.remove()

    # -- the pieces ------------------------------------------------------------------------

    def _read(self, overwrite: bool) -> tuple[dict[str, Any], bool, dict[str, Any]] | None:
        """(identity, finished, the record) of the run file, or None when there is none."""
        p = self.run_file
        if not p.is_file():
            return None
        try:
            record = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as e:
            if overwrite:
                return {}, False, {}
            raise SraError(
                f"{p} is unreadable ({type(e).__name__}); pass --overwrite to start the run over"
            ) from None
        if not isinstance(record, dict):
            if overwrite:
                return {}, False, {}
            raise SraError(f"{p} is not a {self.kind.name} run file; choose another --out")
        if record.get("format") == self.kind.format:
            return record.get("config", {}), record.get("status") == COMPLETE, record
        if "format" not in record and self.kind.legacy is not None:
            identity, finished = self.kind.legacy(record, self.path)
            return identity, finished, record
        raise SraError(f"{p} is not a {self.kind.name} run file; choose another --out")

    def _checkpoint(self) -> Path | None:
        """The checkpoint to resume from, checked against this config."""
        latest = self.checkpoints.latest()
        if latest is not None:
            saved = read_state(latest).get("fingerprint")
            if saved is not None and saved != self.fingerprint:
                raise SraError(
                    f"checkpoint {latest} belongs to a different config; pass --overwrite to "
                    "start over"
                )
        return latest

    def _clear(self) -> None:
        """Delete the run: its run file, metrics, checkpoints and outputs; nothing else."""
        if self.rank != 0:
            return
        names = [self.kind.run_file, self.metrics.path.name, self.checkpoints.folder.name]
        doomed = {self.path / n for n in names}
        for pattern in self.kind.outputs:
            doomed.update(self.path.glob(pattern))
        for p in sorted(doomed):
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink(missing_ok=True)

    def _say(self, message: str) -> None:
        if self.rank == 0:
            print(message, file=sys.stderr, flush=True)


def _alone() -> None:
    """A job of one process has no one to wait for."""


def changed_keys(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted paths where two identities differ: ``optim.lr``."""
    if isinstance(old, dict) and isinstance(new, dict):
        keys: list[str] = []
        for k in sorted(set(old) | set(new)):
            keys += changed_keys(old.get(k), new.get(k), f"{prefix}{k}.")
        return keys
    return [] if old == new else [prefix.rstrip(".")]


def _canonical(obj: Any) -> Any:
    """As it reads back from JSON (tuples become lists), so stored and new compare equal."""
    return json.loads(json.dumps(obj))


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
