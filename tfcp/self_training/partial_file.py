"""The resumable sidecar of `tfcp.pseudo_label`: `P.json.partial`, one JSON line per image.

Line 1 is a header with the run's settings; every further line is one image's record
(`{"file_name", "height", "width", "annotations", "dropped"}` or `{"file_name", "error"}`).
Records are appended a batch at a time and flushed to disk (fsync) before the next batch
starts, so a killed run loses at most the batch in flight. The file is locked (`flock`)
while a run holds it.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Callable
from typing import Any

PARTIAL_SUFFIX = ".partial"
PARTIAL_FORMAT = "tfcp.pseudo_label.partial/1"


class PartialFile:
    """The resumable JSON-lines sidecar (see the module docstring), locked while open."""

    def __init__(self, path: str, settings: dict[str, Any], warn: Callable[[str], None]):
        """Opens (creating) `path`, checks its settings and reads the finished images.

        Raises:
          RuntimeError: another run holds the file.
          ValueError: the file was written with other settings, or is corrupt.
        """
        self.path = path
        self._file = open(path, "a+b")  # noqa: SIM115 - held open (and locked) until close()
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            self._file.close()
            raise RuntimeError(f"{path}: another pseudo_label run is writing it") from error
        self._file.seek(0)
        data = self._file.read()
        end = data.rfind(b"\n") + 1
        if end < len(data):  # a line torn by the kill: redo that image
            warn(f"{path}: dropping an incomplete last line ({len(data) - end} bytes)")
            self._file.truncate(end)
        self.records: dict[str, dict[str, Any]] = {}
        lines = data[:end].splitlines()
        header = {"format": PARTIAL_FORMAT, "settings": settings}
        if not lines:
            self._append([header])
            return
        try:
            found = json.loads(lines[0])
            records = [json.loads(line) for line in lines[1:]]
        except json.JSONDecodeError as error:
            self.close()
            raise ValueError(f"{path}: corrupt ({error}); delete it to start over") from error
        if found != header:
            self.close()
            theirs = found.get("settings", {}) if isinstance(found, dict) else {}
            diff = {k: theirs.get(k) for k in settings if theirs.get(k) != settings[k]}
            raise ValueError(
                f"{path} was written with other settings {diff or found}: rerun with those "
                "to continue it, or delete it to start over"
            )
        for record in records:
            self.records.setdefault(record["file_name"], record)

    def _append(self, records: list[dict[str, Any]]) -> None:
        self._file.write(b"".join(json.dumps(r).encode() + b"\n" for r in records))
        self._file.flush()
        os.fsync(self._file.fileno())

    def add(self, records: list[dict[str, Any]]) -> None:
        """Appends the records of one batch and flushes them to disk."""
        self._append(records)
        for record in records:
            self.records[record["file_name"]] = record

    def close(self) -> None:
        self._file.close()
