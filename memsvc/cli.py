"""`memsvc` command line. This is the composition root: it wires settings, database, service,
queue and HTTP together (importing `api` and `workers` lazily, only for the commands that serve)."""

from __future__ import annotations

import argparse
import atexit
import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from memsvc import __version__, logs, migrate
from memsvc.config import Settings, get_settings
from memsvc.database import Database, libpq_url, resolve_database_url, watch_embedded_postgres
from memsvc.errors import InvalidInput, MemsvcError

if TYPE_CHECKING:
    from memsvc.workers.queue import WorkerMode

log = logging.getLogger("memsvc")


def dev_key_path(settings: Settings) -> Path:
    return settings.dev_key_file or settings.data_dir / "dev-api-key"


def open_database(settings: Settings, *, run_migrations: bool = True) -> Database:
    url = resolve_database_url(settings)
    if run_migrations:
        migrate.upgrade(url)
    return Database(url, pool_size=settings.db_pool_size)


def ensure_dev_key(settings: Settings, database: Database) -> str | None:
    """On the embedded database's first start, make a key so the quick start needs no extra step."""
    from memsvc.tenants import create_api_key, has_any_key

    if settings.database_url:
        return None
    path = dev_key_path(settings)
    with database.session() as session:
        if has_any_key(session) and path.exists():
            return path.read_text().strip()
        if has_any_key(session):
            return None
        key = create_api_key(session, "default", "development key", scopes=["admin"])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(key + "\n")
    path.chmod(0o600)
    return key


def _share_metrics_with_children() -> None:
    """The API and its worker process write metrics to one directory, so /metrics covers both.
    Must run before anything imports prometheus_client."""
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        return
    path = tempfile.mkdtemp(prefix="memsvc-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    atexit.register(shutil.rmtree, path, ignore_errors=True)


def _exit_on_sigterm(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def cmd_serve(args: argparse.Namespace, settings: Settings) -> None:
    worker: WorkerMode = "none" if args.no_worker else "process" if settings.worker_process else "inline"
    if worker == "process":
        _share_metrics_with_children()
    import uvicorn

    from memsvc.api import create_app
    from memsvc.service import MemoryService
    from memsvc.workers.queue import ProcrastinateQueue

    logs.configure(settings.log_format, "DEBUG" if args.verbose else settings.log_level)
    database = open_database(settings)
    if not settings.database_url:
        watch_embedded_postgres(settings.data_dir)
    key = ensure_dev_key(settings, database)
    if key:
        print(
            f"development API key (tenant 'default'): {key}\n  (saved in {dev_key_path(settings)})",
            flush=True,
        )
    service = MemoryService(settings, database)
    queue = ProcrastinateQueue(
        service, libpq_url(database.url), worker=worker, concurrency=settings.worker_concurrency
    )
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(service, queue),
            host=args.host or settings.host,
            port=args.port or settings.port,
            timeout_graceful_shutdown=int(settings.shutdown_grace_s),
            log_config=None,
        )
    )
    # On SIGTERM uvicorn finishes in-flight requests, stops the worker (its jobs finish), then
    # raises the signal again. Its default action would kill this process before the exit
    # handlers run, among them the one that stops the embedded PostgreSQL: exit normally instead.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        server.run()
    finally:
        service.close()


def cmd_worker(args: argparse.Namespace, settings: Settings) -> None:
    from memsvc.service import MemoryService
    from memsvc.shared_encoder import RemoteEmbedder
    from memsvc.workers.queue import ProcrastinateQueue

    logs.configure(settings.log_format, "DEBUG" if args.verbose else settings.log_level)
    database = open_database(settings)
    if not settings.database_url:
        watch_embedded_postgres(settings.data_dir)
    # A worker never searches: without the device-resident read index (on CUDA by default) it holds
    # no copy of every vector and runs no follower thread that replays each commit beside ingest.
    embedder = RemoteEmbedder(settings.encoder_address) if settings.encoder_address else None
    service = MemoryService(
        settings.model_copy(update={"search_backend": "exact"}), database, embedder=embedder
    )
    concurrency = args.concurrency or settings.worker_concurrency
    ProcrastinateQueue(service, libpq_url(database.url), worker="none", concurrency=concurrency).run_forever()
    service.close()


def cmd_encoder(args: argparse.Namespace, settings: Settings) -> None:
    from memsvc.embedding import configured_embedder
    from memsvc.shared_encoder import EncoderServer

    logs.configure(settings.log_format, "DEBUG" if args.verbose else settings.log_level)
    address = args.address or settings.encoder_address
    if not address:
        raise SystemExit("memsvc encoder: give --address or MEMSVC_ENCODER_ADDRESS (a socket path)")
    embedder = configured_embedder(settings)
    if warm_up := getattr(embedder, "warm_up", None):
        warm_up()
    server = EncoderServer(embedder, address)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    log.info(
        "encoder serving %s (%s, %d-d) on %s",
        embedder.model_name,
        settings.embedding_device,
        embedder.dim,
        address,
    )
    stop.wait()
    server.close()


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> None:
    url = resolve_database_url(settings)
    if args.downgrade:
        migrate.downgrade(url, args.downgrade)
        print(f"downgraded to {args.downgrade}")
    else:
        migrate.upgrade(url)
        print("database is at the newest schema")


def cmd_keys_create(args: argparse.Namespace, settings: Settings) -> None:
    from memsvc.tenants import DEFAULT_SCOPES, create_api_key

    database = open_database(settings)
    with database.session() as session:
        key = create_api_key(session, args.tenant, args.name or "", args.scope or DEFAULT_SCOPES)
    print(key)


def cmd_keys_list(args: argparse.Namespace, settings: Settings) -> None:
    from memsvc.tenants import list_api_keys, tenant_id_of

    database = open_database(settings)
    with database.session() as session:
        keys = list_api_keys(session, tenant_id_of(session, args.tenant))

    def when(at: datetime | None) -> str:
        return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if at else "-"

    rows = [("ID", "NAME", "PREFIX", "SCOPES", "CREATED", "LAST USED", "REVOKED")]
    rows += [
        (
            str(k.id),
            k.name or "-",
            k.prefix,
            ",".join(k.scopes),
            when(k.created_at),
            when(k.last_used_at),
            when(k.revoked_at),
        )
        for k in keys
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def cmd_keys_revoke(args: argparse.Namespace, settings: Settings) -> None:
    from memsvc.tenants import find_api_key, revoke_api_key, tenant_id_of

    database = open_database(settings)
    with database.session() as session:
        within = tenant_id_of(session, args.tenant) if args.tenant else None
        tenant_id, key_id = find_api_key(session, args.key, within)
        key = revoke_api_key(session, tenant_id, key_id)
    print(f"revoked {key.prefix} ({key.id})")


def cmd_keys_rotate(args: argparse.Namespace, settings: Settings) -> None:
    from memsvc.tenants import find_api_key, rotate_api_key, tenant_id_of

    database = open_database(settings)
    with database.session() as session:
        within = tenant_id_of(session, args.tenant) if args.tenant else None
        tenant_id, key_id = find_api_key(session, args.key, within)
        new = rotate_api_key(session, tenant_id, key_id, args.grace)
    print(new.key)


def cmd_import(args: argparse.Namespace, settings: Settings) -> None:
    from tqdm import tqdm

    from memsvc.importers import read_batches
    from memsvc.service import MemoryService
    from memsvc.tenants import TenantContext, get_or_create_tenant

    user_id = args.user_id or Path(args.file).stem
    try:
        # The whole file is read and checked first: a mistake in it stores nothing.
        batches = read_batches(Path(args.file), user_id, max_content_chars=settings.max_content_chars)
    except OSError as exc:  # a missing or unreadable file: said in a line, before any database work
        raise InvalidInput(f"cannot read {args.file}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"{args.file} is not UTF-8 text (byte {exc.start})") from exc
    if not batches:
        # An empty file is more likely a failed export than a wish to import nothing.
        raise InvalidInput(f"{args.file} holds no messages: nothing imported")
    database = open_database(settings)
    with database.session() as session:
        tenant_id = get_or_create_tenant(session, args.tenant)
    ctx = TenantContext(tenant_id=tenant_id)
    service = MemoryService(settings, database)
    made: Counter[str] = Counter()
    duplicates = done = 0
    total = sum(len(b.messages) for b in batches)
    with tqdm(total=total, unit="msg", desc=f"import {Path(args.file).name}", file=sys.stderr) as bar:
        for batch in batches:
            # The same job path the queue runs, in this process: a file import needs no worker.
            # Each batch is stored whole or not at all, so a failure leaves the batches before it.
            try:
                outcome = service.run_ingest_job(service.submit_ingest(ctx, batch))
                error = outcome.error
            except MemsvcError as exc:
                outcome, error = None, exc.detail
            if outcome is None or outcome.result is None:
                raise MemsvcError(
                    f"{args.file}: stopped at message {done + 1} of {total}: {error}; the {done} before it "
                    "were imported, the rest not (importing the file again skips those already stored)"
                )
            made.update(outcome.result.created)
            duplicates += outcome.result.duplicates
            done += len(batch.messages)
            bar.update(len(batch.messages))
    # By kind: "17 memories" for 3 messages read as a bug (entities, relations and the session
    # episode are memories of the graph and of the session, not more messages).
    kinds = ", ".join(f"{kind} {n}" for kind, n in sorted(made.items())) or "nothing"
    print(
        f"user {user_id!r} (tenant {args.tenant!r}): {total - duplicates} messages stored, "
        f"{duplicates} already stored; made: {kinds}"
    )


def _tenant_scope(database: Database, args: argparse.Namespace) -> uuid.UUID | None:
    """The tenant `--tenant` names (None: every tenant); `--user` needs one, and memories in it."""
    from sqlalchemy import select

    from memsvc.models import Tenant

    tenant_id = None
    if args.tenant:
        with database.session() as session:
            tenant_id = session.execute(select(Tenant.id).where(Tenant.name == args.tenant)).scalar()
        if tenant_id is None:
            raise MemsvcError(f"no tenant named {args.tenant!r}")
    if args.user and tenant_id is None:
        raise MemsvcError("--user needs --tenant (user ids are unique within a tenant)")
    if args.user and tenant_id is not None:
        from memsvc.store import has_memories

        # A mistyped user id was "done" (1 user, 0 memories) and exited 0.
        with database.session() as session:
            if not has_memories(session, tenant_id, args.user):
                raise MemsvcError(f"no memories of user {args.user!r} in tenant {args.tenant!r}")
    return tenant_id


def cmd_consolidate(args: argparse.Namespace, settings: Settings) -> None:
    """Consolidate now, in this process: every user, a tenant's users, or one user."""
    from tqdm import tqdm

    from memsvc.service import MemoryService

    database = open_database(settings)
    tenant_id = _tenant_scope(database, args)
    service = MemoryService(settings, database)
    bar = tqdm(unit="user", desc="consolidate" + (" (dry run)" if args.dry_run else ""), file=sys.stderr)

    def on_users(n: int) -> None:
        bar.total = n
        bar.refresh()

    try:
        report = service.consolidate(
            tenant_id,
            args.user,
            dry_run=args.dry_run,
            actor="cli",
            on_users=on_users,
            on_user_done=lambda _: bar.update(1),
        )
    finally:
        bar.close()
        service.close()
    totals = report.totals()
    rows = [
        ("users", totals["users"]),
        ("users skipped (a run holds them)", totals["users_skipped"]),
        ("memories before", totals["memories_before"]),
        ("facts given an attribute", totals["attributes"]),
        ("superseded", totals["superseded"]),
        ("merged into another", totals["merged"]),
        ("summaries made", totals["summarised"]),
        ("archived", totals["archived"]),
        ("deleted for good", totals["purged"]),
        ("memories after", totals["memories_after"]),
    ]
    width = max(len(name) for name, _ in rows)
    verb = "would change (dry run, nothing changed)" if args.dry_run else "changed"
    print(f"consolidation run {report.run_id} {verb} in {report.seconds:.1f} s")
    for name, value in rows:
        print(f"  {name:<{width}}  {value:>9}")


def cmd_backfill_passages(args: argparse.Namespace, settings: Settings) -> None:
    """Store passages for long messages stored before passages existed (or with them turned off)."""
    from tqdm import tqdm

    from memsvc.embedding import configured_embedder
    from memsvc.extraction.passages import PassageConfig
    from memsvc.passages_store import backfill_passages

    database = open_database(settings)
    tenant_id = _tenant_scope(database, args)
    embedder = configured_embedder(settings)
    bar = tqdm(unit="message", desc="backfill passages", file=sys.stderr)

    def on_total(n: int) -> None:
        bar.total = n
        bar.refresh()

    try:
        report = backfill_passages(
            database,
            embedder,
            PassageConfig(settings.passage_max_words, settings.passage_overlap_words),
            tenant_id=tenant_id,
            user_id=args.user,
            batch_size=args.batch_size,
            actor="cli",
            on_total=on_total,
            on_batch=bar.update,
        )
    finally:
        bar.close()
        database.dispose()
    print(
        f"long messages without passages: {report.messages_seen}; given passages: {report.messages_cut}; "
        f"passages stored: {report.passages}"
    )


def cmd_mcp(args: argparse.Namespace, settings: Settings) -> None:
    """Memory as MCP tools for an agent: a client of a running memsvc's REST API."""
    from memsvc.integrations import mcp_server

    mcp_server.run(
        "stdio" if args.transport == "stdio" else "streamable-http",
        base_url=args.url,  # the key: MEMSVC_API_KEY or the development key, as for the SDK
        user_id=args.user_id or os.environ.get("MEMSVC_USER_ID"),
        host=args.host,
        port=args.port,
    )


def _name(text: str) -> str:
    """An argparse type for a tenant's or user's name: a blank one made a tenant named "" (and a
    blank `--user-id` quietly became the file's name)."""
    if not text.strip() or not text.isprintable():
        raise argparse.ArgumentTypeError(f"a name with something printable in it, not {text!r}")
    if len(text) > 255:
        raise argparse.ArgumentTypeError("at most 255 characters")
    return text


def _port(text: str) -> int:
    """An argparse type: 99999 got as far as the socket's bind, after PostgreSQL had started."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 < value < 65536:
        raise argparse.ArgumentTypeError(f"a port is 1 to 65535, not {value}")
    return value


def _positive_int(text: str) -> int:
    """An argparse type: 0 made `--batch-size` store nothing and `--concurrency` fall back unsaid."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="memsvc", description="Long-term memory service for LLM agents")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more (DEBUG for serve and worker)")
    parser.add_argument("--version", action="version", version=f"memsvc {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="migrate, then serve the API with an in-process worker")
    serve.add_argument("--host", help="address to listen on (default MEMSVC_HOST, else 127.0.0.1)")
    serve.add_argument("--port", type=_port, help="port to listen on (default MEMSVC_PORT, else 8000)")
    serve.add_argument("--no-worker", action="store_true", help="serve only; run `memsvc worker` elsewhere")
    serve.set_defaults(func=cmd_serve)

    worker = sub.add_parser("worker", help="run a standalone ingest worker")
    worker.add_argument(
        "--concurrency",
        type=_positive_int,
        help="jobs run at once (default MEMSVC_WORKER_CONCURRENCY, else 2)",
    )
    worker.set_defaults(func=cmd_worker)

    encoder = sub.add_parser("encoder", help="one shared, batched embedding model for the workers of a GPU")
    encoder.add_argument("--address", help="Unix socket to serve on (default MEMSVC_ENCODER_ADDRESS)")
    encoder.set_defaults(func=cmd_encoder)

    mig = sub.add_parser("migrate", help="bring the database schema up to date")
    mig.add_argument("--downgrade", metavar="REVISION", help="go back to REVISION ('base' = empty)")
    mig.set_defaults(func=cmd_migrate)

    keys = sub.add_parser("keys", help="API keys").add_subparsers(dest="keys_command", required=True)
    create = keys.add_parser("create", help="create a key (and the tenant if new); prints it once")
    create.add_argument("--tenant", type=_name, required=True, help="the tenant's name (made if new)")
    create.add_argument("--name", help="a label to tell keys apart (never secret)")
    create.add_argument(
        "--scope",
        action="append",
        choices=["read", "write", "admin"],
        help="repeat for several (default: read and write; admin implies both)",
    )
    create.set_defaults(func=cmd_keys_create)
    klist = keys.add_parser("list", help="a tenant's keys: id, name, prefix, scopes, times (never a secret)")
    klist.add_argument("--tenant", type=_name, required=True, help="the tenant's name")
    klist.set_defaults(func=cmd_keys_list)
    revoke = keys.add_parser("revoke", help="stop a key now")
    revoke.add_argument("key", metavar="KEY_ID_OR_PREFIX", help="its id, its prefix (msk_…) or the key")
    revoke.add_argument("--tenant", type=_name, help="look for the key in this tenant only")
    revoke.set_defaults(func=cmd_keys_revoke)
    rotate = keys.add_parser("rotate", help="a new key with the same name and scopes; prints it once")
    rotate.add_argument("key", metavar="KEY_ID_OR_PREFIX", help="its id, its prefix (msk_…) or the key")
    rotate.add_argument("--tenant", type=_name, help="look for the key in this tenant only")
    rotate.add_argument(
        "--grace", type=int, default=0, metavar="SECONDS", help="the old key keeps working this long"
    )
    rotate.set_defaults(func=cmd_keys_rotate)

    imp = sub.add_parser("import", help="ingest a LoCoMo conversation file or a JSONL of messages")
    imp.add_argument("file", help="a LoCoMo JSON file, or JSONL with one message per line")
    imp.add_argument("--user-id", type=_name, help="default: the file name without extension")
    imp.add_argument("--tenant", type=_name, default="default", help="made if new (default: default)")
    imp.set_defaults(func=cmd_import)

    cons = sub.add_parser("consolidate", help="supersede, merge, summarise and forget memories now")
    cons.add_argument("--tenant", type=_name, help="only this tenant's users (default: every tenant)")
    cons.add_argument("--user", type=_name, help="only this user (needs --tenant)")
    cons.add_argument("--dry-run", action="store_true", help="report what would change; change nothing")
    cons.set_defaults(func=cmd_consolidate)

    back = sub.add_parser(
        "backfill-passages", help="cut long messages stored before passages existed into passages"
    )
    back.add_argument("--tenant", type=_name, help="only this tenant's users (default: every tenant)")
    back.add_argument("--user", type=_name, help="only this user (needs --tenant)")
    back.add_argument(
        "--batch-size", type=_positive_int, default=64, help="messages per transaction (default 64)"
    )
    back.set_defaults(func=cmd_backfill_passages)

    mcp = sub.add_parser("mcp", help="memory as Model Context Protocol tools (a client of the REST API)")
    mcp.add_argument("--transport", choices=["stdio", "http"], default="stdio", help="default: stdio")
    mcp.add_argument("--url", help="the memsvc API (default: MEMSVC_URL, else http://127.0.0.1:8000)")
    mcp.add_argument("--user-id", help="the default user of every tool (default: MEMSVC_USER_ID)")
    mcp.add_argument("--host", default="127.0.0.1", help="http: the address to listen on")
    mcp.add_argument("--port", type=_port, default=8765, help="http: the port (the endpoint is /mcp)")
    mcp.set_defaults(func=cmd_mcp)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        args.func(args, get_settings())
    except MemsvcError as exc:
        print(f"memsvc: {exc.detail}", file=sys.stderr)
        raise SystemExit(2) from exc


if __name__ == "__main__":
    main()
