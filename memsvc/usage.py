"""Use statistics: which memories search returns, counted off the request path.

Forgetting keeps what is used (`memsvc.consolidation.retention`: stability grows with
`access_count`, and time counts from `last_accessed_at`). A search only adds its result ids to an
in-process counter; a background thread writes the counts every `flush_s` seconds in one
statement per flush, so a search pays a dictionary update, never a database write.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime

from memsvc import consolidation_store
from memsvc.database import Database

log = logging.getLogger(__name__)


class UseRecorder:
    """Counts uses in memory and writes them in the background. Counts a flush could not write
    (rows locked by a consolidation run, the database away) are kept for the next flush; at
    most `max_pending` distinct memories are held, beyond which new uses are dropped (a count,
    not a record of truth)."""

    def __init__(self, database: Database, *, flush_s: float = 2.0, max_pending: int = 200_000) -> None:
        self.db = database
        self.flush_s = flush_s
        self.max_pending = max_pending
        self._pending: Counter[uuid.UUID] = Counter()
        self._last: datetime | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.written = 0  # uses written so far (for tests and metrics)

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="memsvc-uses", daemon=True)
            self._thread.start()

    def record(self, memory_ids: Iterable[uuid.UUID]) -> None:
        """Count one use of each memory (called by search with the ids it returns)."""
        now = datetime.now(UTC)
        with self._lock:
            for memory_id in memory_ids:
                if memory_id in self._pending or len(self._pending) < self.max_pending:
                    self._pending[memory_id] += 1
            self._last = now

    def flush(self) -> int:
        """Write the pending counts now; returns how many uses were written."""
        with self._lock:
            pending, self._pending = self._pending, Counter()
            at = self._last
        if not pending or at is None:
            return 0
        try:
            with self.db.session() as session:
                done = consolidation_store.record_uses(session, pending, at)
        except Exception as exc:  # the database away: keep the counts for the next flush
            # One line, not a traceback every flush while the database is down.
            log.warning("could not write use counts (%s); kept for the next flush", exc)
            done = set()
        left = Counter({k: n for k, n in pending.items() if k not in done})
        if left:
            with self._lock:
                self._pending.update(left)
        written = sum(n for k, n in pending.items() if k in done)
        self.written += written
        return written

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        self.flush()

    def _run(self) -> None:
        while not self._stop.wait(self.flush_s):
            self.flush()
