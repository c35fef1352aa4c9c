"""The memory service: the one object `api/`, `workers/` and the CLI call into.

It owns the database, the embedder and the extractor, and exposes the operations of the
public contract. It knows nothing of HTTP or of the job queue: ingest requests are stored as
`jobs` rows, and whoever drives the queue calls `run_ingest_job()`.
"""

from __future__ import annotations

import builtins
import contextlib
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, text, update
from sqlalchemy.orm import Session

from memsvc import consolidation_store, passages_store, store, tenants
from memsvc.config import Settings
from memsvc.consolidation import ConsolidationConfig, RetentionConfig
from memsvc.consolidation_store import RunReport, UserReport
from memsvc.database import Database, libpq_url
from memsvc.dense import DenseRetriever
from memsvc.embedding import Embedder, configured_embedder, resolve_device
from memsvc.errors import InvalidInput, NotFound, NotReady, Overloaded
from memsvc.extraction import make_extractor
from memsvc.extraction.base import Extractor
from memsvc.extraction.llm import LLMExtractor
from memsvc.extraction.passages import PassageConfig
from memsvc.ingest import Ingestor, content_hash, vector_text
from memsvc.models import Job, Memory
from memsvc.schemas import (
    AddRequest,
    AddResult,
    ApiKeyCreated,
    ApiKeyOut,
    ConsolidateRequest,
    ContextRequest,
    ContextResponse,
    CreateKeyRequest,
    GraphResponse,
    HistoryEventOut,
    HistoryPage,
    JobList,
    JobOut,
    MemoryList,
    MemoryOut,
    SearchRequest,
    UpdateRequest,
    UserList,
)
from memsvc.search import SearchEngine
from memsvc.tenants import TenantContext, authenticate
from memsvc.usage import UseRecorder
from memsvc.vector_index import VectorIndex

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class IngestOutcome:
    job_id: uuid.UUID
    status: str
    result: AddResult | None = None
    error: str | None = None


def _use_index(settings: Settings) -> bool:
    if settings.search_backend == "auto":
        return resolve_device(settings.embedding_device).startswith("cuda")
    return settings.search_backend == "index"


def _user_lock(session: Session, tenant_id: uuid.UUID, user_id: str) -> None:
    """Serialise ingest and erasure of one user: an erased user is never half re-created."""
    session.execute(
        text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"), {"key": f"{tenant_id}/{user_id}"}
    )


class MemoryService:
    def __init__(
        self,
        settings: Settings,
        database: Database,
        *,
        embedder: Embedder | None = None,
        extractor: Extractor | None = None,
    ) -> None:
        self.settings = settings
        self.db = database
        self.embedder = embedder or configured_embedder(settings)
        if self.embedder.dim != settings.embedding_dim:
            raise InvalidInput(
                f"model {self.embedder.model_name} makes {self.embedder.dim}-d vectors but "
                f"MEMSVC_EMBEDDING_DIM is {settings.embedding_dim}"
            )
        self.extractor = extractor or make_extractor(
            settings.extractor,
            llm_base_url=settings.llm_base_url,
            llm_model=settings.llm_model,
            llm_api_key=settings.llm_api_key,
            llm_timeout_s=settings.llm_timeout_s,
            llm_max_retries=settings.llm_max_retries,
        )
        if warm_up := getattr(self.embedder, "warm_up", None):
            warm_up()
        self.ingestor = Ingestor(
            self.embedder,
            self.extractor,
            PassageConfig(settings.passage_max_words, settings.passage_overlap_words),
        )
        self.index: VectorIndex | None = None
        self.dense: DenseRetriever | None = None
        if _use_index(settings):
            # The GPU read path: every active vector on the device, synced from the change feed.
            self.index = VectorIndex(
                libpq_url(database.url),
                settings.embedding_dim,
                device=resolve_device(settings.embedding_device),
                int8_prescreen=settings.index_int8_prescreen,
            )
            self.index.load()
            self.index.warm_up(settings.dense_top_k)
            self.index.start()
            self.dense = DenseRetriever(
                self.embedder,
                self.index,
                k=settings.dense_top_k,
                max_wait_s=settings.batch_max_wait_ms / 1000,
                max_size=settings.batch_max_size,
            )
        self.search_engine = SearchEngine(
            self.embedder,
            dense=self.dense,
            cache_bytes=settings.corpus_cache_mb * 2**20,
        )
        # What search returns counts as a use (forgetting keeps used memories), written off the read path.
        self.uses: UseRecorder | None = None
        if settings.consolidation_uses_flush_s > 0:
            self.uses = UseRecorder(database, flush_s=settings.consolidation_uses_flush_s)
            self.uses.start()

    def close(self) -> None:
        """Stop background work (index sync, batcher, use counts) and release the database pool."""
        if self.uses is not None:
            self.uses.close()
        if self.dense is not None:
            self.dense.close()
        if self.index is not None:
            self.index.stop()
        self.db.dispose()

    # -- auth -------------------------------------------------------------------------------

    def authenticate(self, key: str) -> TenantContext:
        with self.db.session() as session:
            return authenticate(session, key)

    def list_keys(self, ctx: TenantContext) -> builtins.list[ApiKeyOut]:
        with self.db.session() as session:
            return tenants.list_api_keys(session, ctx.tenant_id)

    def create_key(self, ctx: TenantContext, request: CreateKeyRequest) -> ApiKeyCreated:
        with self.db.session() as session:
            return tenants.issue_api_key(session, ctx.tenant_id, request.name, request.scopes)

    def rotate_key(self, ctx: TenantContext, key_id: uuid.UUID, *, grace_seconds: int = 0) -> ApiKeyCreated:
        with self.db.session() as session:
            return tenants.rotate_api_key(session, ctx.tenant_id, key_id, grace_seconds)

    def revoke_key(self, ctx: TenantContext, key_id: uuid.UUID) -> ApiKeyOut:
        with self.db.session() as session:
            return tenants.revoke_api_key(session, ctx.tenant_id, key_id)

    # -- ingest -----------------------------------------------------------------------------

    def _check_add(self, request: AddRequest) -> None:
        if len(request.messages) > self.settings.max_messages_per_request:
            detail = f"at most {self.settings.max_messages_per_request} messages per request"
            raise InvalidInput.at(("messages",), detail, "too_long")
        for i, message in enumerate(request.messages):
            if len(message.content) > self.settings.max_content_chars:
                raise InvalidInput.at(
                    ("messages", i, "content"),
                    f"messages[{i}].content has {len(message.content)} characters (counted after "
                    f"Unicode NFC normalisation); the limit is {self.settings.max_content_chars}",
                    "string_too_long",
                )
            if not message.content.strip():
                raise InvalidInput.at(("messages", i, "content"), f"messages[{i}].content is blank")

    def submit_ingest(self, ctx: TenantContext, request: AddRequest) -> uuid.UUID:
        """Validate and durably record an ingest request; the queue runs it. Returns the job id."""
        self._check_add(request)
        payload = request.model_dump(mode="json", exclude={"wait"})
        payload["received_at"] = datetime.now(UTC).isoformat()
        limit = self.settings.max_queued_jobs_per_tenant
        with self.db.session() as session:
            # Backpressure: a backlog that only grows helps nobody; refuse (nothing stored) instead.
            if limit and store.queued_jobs_of(session, ctx.tenant_id, limit) >= limit:
                raise Overloaded(f"{limit} ingest jobs of this tenant are still queued; retry shortly")
            job = Job(tenant_id=ctx.tenant_id, user_id=request.user_id, kind="ingest", payload=payload)
            job.id = uuid.uuid4()
            session.add(job)
            if request.wait:
                # Its answer follows the job's own commit (or failure), which waits for the disk and
                # so makes this row durable too: only an add answered at once must wait here.
                store.commit_without_waiting(session)
        return job.id

    def run_ingest_job(self, job_id: uuid.UUID) -> IngestOutcome:
        """Do the work of one ingest job, exactly once in effect: the memories and the job's
        success commit together, so a crash before commit leaves nothing and a retry redoes it."""
        with self.db.session() as session:
            job = session.get(Job, job_id)
            if job is None:
                return IngestOutcome(job_id, "failed", error="job no longer exists (user erased?)")
            if job.kind == "consolidate":
                # Recovery re-defers accepted jobs by id alone, through the ingest task.
                return self.run_consolidate_job(job_id)
            # Under the user's lock, so a second run of the same job (a retry racing a slow first
            # attempt) sees the first one's success instead of overwriting its result.
            _user_lock(session, job.tenant_id, job.user_id or "")
            session.refresh(job)
            if job.status == "succeeded":
                return IngestOutcome(job_id, job.status, AddResult.model_validate(job.result))
            request = AddRequest.model_validate({k: v for k, v in job.payload.items() if k != "received_at"})
            received_at = datetime.fromisoformat(job.payload["received_at"])
            actor = f"job:{job.id}"
            result = self.ingestor.ingest(session, job.tenant_id, request, received_at, actor)
            if isinstance(self.extractor, LLMExtractor) and result.extractor == self.extractor.name:
                self._llm_operations(session, job.tenant_id, request.user_id, result)
            job.status, job.result, job.error = "succeeded", result.model_dump(mode="json"), None
            job.attempts += 1
            job.updated_at = func.now()
        self._notify_job_done(job_id)
        return IngestOutcome(job_id, "succeeded", result)

    def _llm_operations(
        self, session: Session, tenant_id: uuid.UUID, user_id: str, result: AddResult
    ) -> None:
        """With an LLM extractor: the model proposes ADD / UPDATE / DELETE / NOOP for the batch's
        new facts against the stored memories nearest them, applied in the ingest's transaction,
        each change a history event by `llm`. Without an answer every fact stays added."""
        assert isinstance(self.extractor, LLMExtractor)
        new, known = consolidation_store.new_and_near(session, tenant_id, user_id, result.memory_ids)
        if not new or not known:
            return
        operations = self.extractor.propose_operations([c for _, c in new], [c for _, c in known])
        if operations is None:
            result.notes.append("llm memory operations failed: every new fact was added")
            return
        updates = [(i, o.content) for i, o in enumerate(operations) if o.op == "UPDATE" and o.content]
        vectors: builtins.list[Any] = list(self.embedder.embed([t for _, t in updates])) if updates else []
        rewrites = {i: (content_hash(text), v) for (i, text), v in zip(updates, vectors, strict=True)}
        counts = consolidation_store.apply_memory_operations(
            session,
            tenant_id,
            user_id,
            [i for i, _ in new],
            [i for i, _ in known],
            operations,
            rewrites,
            "llm",
        )
        for op, n in counts.items():
            if n:
                result.created[f"llm_{op.lower()}"] = n

    def mark_job_failed(self, job_id: uuid.UUID, error: str, *, final: bool) -> None:
        """Record a failed attempt; `final` when no retry will follow."""
        with self.db.session() as session:
            session.execute(
                update(Job)
                .where(Job.id == job_id, Job.status != "succeeded")
                .values(
                    status="failed" if final else "queued",
                    error=error[:4000],
                    attempts=Job.attempts + 1,
                    updated_at=func.now(),
                )
            )
        if final:
            self._notify_job_done(job_id)

    def _notify_job_done(self, job_id: uuid.UUID) -> None:
        """Wake whoever waits on the job, after its commit. A notification that cannot be sent (the
        database just went away) is only late: waiters look at their job every second anyway."""
        with contextlib.suppress(NotReady), self.db.session() as session:
            store.notify_job_done(session, job_id)

    def mark_job_running(
        self, job_id: uuid.UUID, runner: str | None = None, attempt: int | None = None
    ) -> None:
        with self.db.session() as session:
            store.mark_job_running(session, job_id, runner, attempt)

    def running_jobs_on(self, machine: str) -> list[store.RunningJob]:
        with self.db.session() as session:
            return store.running_jobs_on(session, machine)

    def trim_change_feed(self, older_than_s: float = 3600.0) -> int:
        """Drop change-feed entries every index has long replayed (indexes poll every fraction of a
        second; one that was away longer reloads at start)."""
        with self.db.session() as session:
            result = session.execute(
                text("DELETE FROM memory_changes WHERE at < now() - make_interval(secs => :s)"),
                {"s": older_than_s},
            )
            return int(getattr(result, "rowcount", 0) or 0)

    def job(self, ctx: TenantContext, job_id: uuid.UUID) -> JobOut:
        with self.db.session() as session:
            return store.job_out(store.get_job(session, ctx, job_id))

    def jobs(
        self,
        ctx: TenantContext,
        *,
        user_id: str | None = None,
        status: str | None = None,
        kind: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> JobList:
        with self.db.session() as session:
            return store.list_jobs(
                session, ctx, user_id=user_id, status=status, kind=kind, limit=limit, cursor=cursor
            )

    def orphaned_jobs(self, older_than_s: float) -> builtins.list[store.OrphanedJob]:
        """Jobs accepted but not held by the queue (deferring failed while the database was away):
        to defer again."""
        with self.db.session() as session:
            return store.orphaned_jobs(session, older_than_s)

    def queue_health(self) -> store.QueueHealth:
        with self.db.session() as session:
            return store.queue_health(session, self.settings.worker_stalled_after_s)

    # -- consolidation ----------------------------------------------------------------------

    def consolidation_config(self) -> ConsolidationConfig:
        s = self.settings
        return ConsolidationConfig(
            merge_cosine=s.consolidation_merge_cosine,
            entity_merge_cosine=s.consolidation_entity_merge_cosine,
            retention=RetentionConfig(
                stability_days=s.consolidation_stability_days,
                archive_below=s.consolidation_archive_below,
                purge_after_days=s.consolidation_purge_after_days,
            ),
            summaries=s.consolidation_summaries,
            summary_min_age_days=s.consolidation_summary_min_age_days,
            batch_size=s.consolidation_batch_size,
        )

    def consolidate(
        self,
        tenant_id: uuid.UUID | None = None,
        user_id: str | None = None,
        *,
        dry_run: bool = False,
        actor: str = "consolidation",
        run_id: uuid.UUID | None = None,
        now: datetime | None = None,
        config: ConsolidationConfig | None = None,
        on_users: Callable[[int], None] | None = None,
        on_user_done: Callable[[UserReport], None] | None = None,
    ) -> RunReport:
        """Supersede, merge, summarise and forget: one user, a tenant's users, or every user.

        Each user is worked on in bounded transactions under its ingest lock, by one run at a time
        (a user another run holds is skipped and reported); killed and run again, a run ends where
        an uninterrupted one ends. `dry_run` plans and reports, and changes nothing."""
        started = time.perf_counter()
        run = run_id or uuid.uuid4()
        config = config or self.consolidation_config()
        with self.db.session() as session:
            if tenant_id is not None and user_id is not None:
                users = [(tenant_id, user_id)]
            else:
                users = consolidation_store.users_to_consolidate(session, tenant_id)
        if on_users:
            on_users(len(users))
        report = RunReport(str(run), dry_run)
        for tenant, user in users:
            with consolidation_store.run_lock(self.db, tenant, user) as mine:
                if not mine:
                    done = UserReport(str(tenant), user, skipped="another consolidation run holds this user")
                else:
                    done = consolidation_store.consolidate_user(
                        self.db,
                        tenant,
                        user,
                        config,
                        embedder=self.embedder,
                        actor=actor,
                        run_id=run,
                        now=now,
                        dry_run=dry_run,
                    )
            report.users.append(done)
            if on_user_done:
                on_user_done(done)
        report.seconds = time.perf_counter() - started
        log.info("consolidation %s", "planned" if dry_run else "done", extra=report.totals())
        return report

    def submit_consolidate(self, ctx: TenantContext, request: ConsolidateRequest) -> uuid.UUID:
        """Record a consolidation request (one user, or every user of the tenant); the queue runs it.
        A user with no memories is `NotFound` (a mistyped id "succeeded" with nothing done)."""
        with self.db.session() as session:
            user_id = request.user_id
            if user_id is not None and not store.has_memories(session, ctx.tenant_id, user_id):
                raise NotFound(f"no memories of user {user_id!r}")
            job = Job(
                tenant_id=ctx.tenant_id,
                user_id=request.user_id,
                kind="consolidate",
                payload=request.model_dump(mode="json"),
            )
            job.id = uuid.uuid4()
            session.add(job)
        return job.id

    def run_consolidate_job(self, job_id: uuid.UUID) -> IngestOutcome:
        """Run a consolidation job; the job id is the run id, so a retry of a killed run files its
        history under the same run and ends in the same state."""
        with self.db.session() as session:
            job = session.get(Job, job_id)
            if job is None:
                return IngestOutcome(job_id, "failed", error="job no longer exists")
            if job.status == "succeeded":
                return IngestOutcome(job_id, job.status)
            tenant_id, user_id = job.tenant_id, job.payload.get("user_id")
        report = self.consolidate(tenant_id, user_id, actor=f"job:{job_id}", run_id=job_id)
        with self.db.session() as session:
            session.execute(
                update(Job)
                .where(Job.id == job_id)
                .values(
                    status="succeeded",
                    result=report.as_dict(),
                    error=None,
                    attempts=Job.attempts + 1,
                    updated_at=func.now(),
                )
            )
        self._notify_job_done(job_id)
        return IngestOutcome(job_id, "succeeded")

    def restore(self, ctx: TenantContext, memory_id: uuid.UUID) -> MemoryOut:
        """Bring an archived memory back into search (recorded in its history)."""
        with self.db.session() as session:
            # A message and its passages come back together: a run's batch of the user waits.
            _user_lock(session, ctx.tenant_id, store.get_memory(session, ctx, memory_id).user_id or "")
            if not consolidation_store.restore(session, ctx.tenant_id, memory_id, ctx.actor):
                raise InvalidInput(f"memory {memory_id} is not archived")
        return self.get(ctx, memory_id)

    # -- read -------------------------------------------------------------------------------

    def search(self, ctx: TenantContext, request: SearchRequest) -> builtins.list[MemoryOut]:
        with self.db.session() as session:
            results = self.search_engine.search(session, ctx, request)
        self._count_uses(results)
        return results

    def catch_up(self, ctx: TenantContext, user_id: str) -> None:
        """Bring this process's cached view of the user up to date (after a write it acknowledged):
        an agent searches right after its add, and would otherwise pay for applying the write.
        Best effort: if it fails, the next search applies the write."""
        with contextlib.suppress(NotReady), self.db.session() as session:
            self.search_engine.corpora.refresh(session, ctx.tenant_id, user_id)

    def context(self, ctx: TenantContext, request: ContextRequest) -> ContextResponse:
        with self.db.session() as session:
            response = self.search_engine.context(session, ctx, request)
        self._count_uses(response.items)
        return response

    def _count_uses(self, results: builtins.list[MemoryOut]) -> None:
        """Each memory returned (an excerpt's turns each) is one use; counted in the background."""
        if self.uses is None:
            return
        ids: builtins.list[uuid.UUID] = []
        for result in results:
            members = (result.metadata or {}).get("memory_ids") if result.kind == "excerpt" else None
            if isinstance(members, builtins.list):
                ids.extend(uuid.UUID(m) for m in members)
            else:
                ids.append(result.id)
        self.uses.record(ids)

    def get(self, ctx: TenantContext, memory_id: uuid.UUID) -> MemoryOut:
        with self.db.session() as session:
            return store.get_memory(session, ctx, memory_id)

    def list(
        self,
        ctx: TenantContext,
        user_id: str,
        *,
        memory_type: str | None,
        limit: int,
        cursor: str | None,
        status: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        session_id: str | None = None,
    ) -> MemoryList:
        with self.db.session() as session:
            return store.list_memories(
                session,
                ctx,
                user_id,
                memory_type=memory_type,
                limit=limit,
                cursor=cursor,
                status=status,
                since=since,
                until=until,
                session_id=session_id,
            )

    def users(self, ctx: TenantContext, *, limit: int = 100, cursor: str | None = None) -> UserList:
        with self.db.session() as session:
            return store.list_users(session, ctx, limit=limit, cursor=cursor)

    def user_history(
        self,
        ctx: TenantContext,
        user_id: str,
        *,
        run_id: uuid.UUID | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> HistoryPage:
        with self.db.session() as session:
            return store.user_history(session, ctx, user_id, run_id=run_id, limit=limit, cursor=cursor)

    def update(self, ctx: TenantContext, memory_id: uuid.UUID, patch: UpdateRequest) -> MemoryOut:
        """Edit a memory. A message whose text changes is read again, in the same transaction: its
        passages are cut from the new text (`passages_store.recut_passages`), what it stated before
        is forgotten and what it states now stored as ingest stores it, and its session's digest
        is rebuilt."""
        if patch.content is not None and len(patch.content) > self.settings.max_content_chars:
            # The limit an add has: an edit is not a way around it.
            raise InvalidInput.at(
                ("content",),
                f"content has {len(patch.content)} characters; "
                f"the limit is {self.settings.max_content_chars}",
                "string_too_long",
            )
        with self.db.session() as session:
            said = None
            if patch.content is not None:
                # Re-cutting passages: an ingest or a backfill of the same user waits (same lock).
                current = store.get_memory(session, ctx, memory_id)
                _user_lock(session, ctx.tenant_id, current.user_id or "")
                said = current.content
            memory = store.update_memory(session, ctx, memory_id, patch)
            if patch.content is not None and patch.content != said:
                memory.content_hash = content_hash(patch.content)
                memory.embedding = self.embedder.embed(
                    [vector_text(memory.kind, patch.content, memory.metadata_)]
                )[0]
                passages_store.recut_passages(
                    session, memory, self.embedder, self.ingestor.passages, ctx.actor
                )
                if memory.kind == "turn":
                    self._reread(session, ctx, memory)
            else:
                # The feed's trigger watches the columns a vector index reads; cached corpora of
                # every process also read metadata and pinned, so such an edit is put in the feed.
                store.touch_feed(session, ctx.tenant_id, [memory.id])
            session.flush()
            return store.memory_out(memory, store.sources_of(session, [memory.id]).get(memory.id, []))

    def _reread(self, session: Session, ctx: TenantContext, turn: Memory) -> None:
        """An edited message: what it said before goes ("I live in Zagreb" no longer states that
        the user lives there, and the city it had replaced holds again), then what it says now."""
        user_id = turn.user_id or ""
        reading = self.ingestor.read_again(session, turn)
        still = self.ingestor.statements(reading)
        forgotten = store.forget_statements(session, ctx, turn, still=still)
        store.forget_mentions(session, ctx.tenant_id, turn.id)
        session.flush()
        consolidation_store.reopen_predecessors(
            session, ctx.tenant_id, user_id, ctx.actor, forgotten, corrected=True
        )
        self.ingestor.reread(session, turn, reading, ctx.actor)
        if turn.session_id:
            self.ingestor.rebuild_session(session, ctx.tenant_id, user_id, turn.session_id, ctx.actor)

    def delete(self, ctx: TenantContext, memory_id: uuid.UUID) -> None:
        """Delete a memory; what it superseded holds again unless another successor closes it."""
        with self.db.session() as session:
            memory = store.get_memory(session, ctx, memory_id)
            user_id = memory.user_id or ""
            _user_lock(session, ctx.tenant_id, user_id)
            gone = store.delete_memory(session, ctx, memory_id)
            session.flush()
            if memory.kind == "turn" and memory.session_id:
                # Its session's digest quoted it: rebuilt from the turns left, or gone with the last.
                emptied = self.ingestor.rebuild_session(
                    session, ctx.tenant_id, user_id, memory.session_id, ctx.actor
                )
                if emptied is not None:
                    with contextlib.suppress(NotFound):  # deleted by itself before
                        gone += store.delete_memory(session, ctx, emptied)
            consolidation_store.reopen_predecessors(
                session, ctx.tenant_id, user_id, ctx.actor, gone, corrected=memory.kind == "turn"
            )
            store.drop_graph_of_no_memories(session, ctx.tenant_id, user_id)

    def history(self, ctx: TenantContext, memory_id: uuid.UUID) -> builtins.list[HistoryEventOut]:
        with self.db.session() as session:
            return store.history(session, ctx, memory_id)

    def graph(self, ctx: TenantContext, user_id: str, *, entity: str | None, depth: int) -> GraphResponse:
        with self.db.session() as session:
            return store.graph(session, ctx, user_id, entity=entity, depth=depth)

    def delete_user(self, ctx: TenantContext, user_id: str) -> None:
        with self.db.session() as session:
            _user_lock(session, ctx.tenant_id, user_id)
            store.delete_user(session, ctx, user_id)

    def ready(self) -> dict[str, str]:
        """Readiness of each dependency: the database answers, the model embeds, and a worker is
        alive and not stuck (a job running longer than `job_timeout_s`)."""
        status = {}
        try:
            health = self.queue_health()
            status["database"] = "ok"
            if health.live_workers == 0:
                status["worker"] = "error: no live worker (none has sent a heartbeat lately)"
            elif health.longest_running_s > self.settings.job_timeout_s:
                status["worker"] = f"error: a job has been running for {health.longest_running_s:.0f} s"
            else:
                status["worker"] = "ok"
        except Exception as exc:  # readiness reports any failure, whatever it is
            status["database"] = f"error: {type(exc).__name__}"
            status["worker"] = "unknown"
        try:
            self.embedder.embed(["ready"])
            status["model"] = "ok"
        except Exception as exc:
            status["model"] = f"error: {type(exc).__name__}"
        return status


__all__ = ["IngestOutcome", "MemoryService"]
