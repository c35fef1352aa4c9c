"""`memsvc` command line. This is the composition root: it wires settings, database, service,
queue and HTTP together (importing `api` and `workers` lazily, only for the commands that serve)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from memsvc import migrate
from memsvc.config import Settings, get_settings
from memsvc.database import Database, libpq_url, resolve_database_url
from memsvc.errors import MemsvcError

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
        key = create_api_key(session, "default", "development key")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(key + "\n")
    path.chmod(0o600)
    return key


def cmd_serve(args: argparse.Namespace, settings: Settings) -> None:
    import uvicorn

    from api import create_app
    from memsvc.service import MemoryService
    from workers.queue import ProcrastinateQueue

    database = open_database(settings)
    key = ensure_dev_key(settings, database)
    if key:
        print(
            f"development API key (tenant 'default'): {key}\n  (saved in {dev_key_path(settings)})",
            flush=True,
        )
    service = MemoryService(settings, database)
    queue = ProcrastinateQueue(
        service,
        libpq_url(database.url),
        run_worker=not args.no_worker,
        concurrency=settings.worker_concurrency,
    )
    uvicorn.run(create_app(service, queue), host=args.host or settings.host, port=args.port or settings.port)


def cmd_worker(args: argparse.Namespace, settings: Settings) -> None:
    from memsvc.service import MemoryService
    from workers.queue import ProcrastinateQueue

    database = open_database(settings)
    service = MemoryService(settings, database)
    ProcrastinateQueue(
        service,
        libpq_url(database.url),
        run_worker=True,
        concurrency=args.concurrency or settings.worker_concurrency,
    ).run_forever()


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> None:
    url = resolve_database_url(settings)
    if args.downgrade:
        migrate.downgrade(url, args.downgrade)
        print(f"downgraded to {args.downgrade}")
    else:
        migrate.upgrade(url)
        print("database is at the newest schema")


def cmd_keys_create(args: argparse.Namespace, settings: Settings) -> None:
    from memsvc.tenants import create_api_key

    database = open_database(settings)
    with database.session() as session:
        key = create_api_key(session, args.tenant, args.name or "")
    print(key)


def cmd_import(args: argparse.Namespace, settings: Settings) -> None:
    from tqdm import tqdm

    from memsvc.importers import read_batches
    from memsvc.service import MemoryService
    from memsvc.tenants import TenantContext, get_or_create_tenant

    database = open_database(settings)
    with database.session() as session:
        tenant_id = get_or_create_tenant(session, args.tenant)
    ctx = TenantContext(tenant_id=tenant_id)
    user_id = args.user_id or Path(args.file).stem
    batches = read_batches(Path(args.file), user_id)
    service = MemoryService(settings, database)
    created = duplicates = 0
    total = sum(len(b.messages) for b in batches)
    with tqdm(total=total, unit="msg", desc=f"import {Path(args.file).name}", file=sys.stderr) as bar:
        for batch in batches:
            # The same job path the queue runs, in this process: a file import needs no worker.
            outcome = service.run_ingest_job(service.submit_ingest(ctx, batch))
            assert outcome.result is not None
            created += sum(outcome.result.created.values())
            duplicates += outcome.result.duplicates
            bar.update(len(batch.messages))
    print(
        f"user {user_id!r} (tenant {args.tenant!r}): {created} memories made, "
        f"{duplicates} messages already stored"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="memsvc", description="Long-term memory service for LLM agents")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="migrate, then serve the API with an in-process worker")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--no-worker", action="store_true", help="serve only; run `memsvc worker` elsewhere")
    serve.set_defaults(func=cmd_serve)

    worker = sub.add_parser("worker", help="run a standalone ingest worker")
    worker.add_argument("--concurrency", type=int)
    worker.set_defaults(func=cmd_worker)

    mig = sub.add_parser("migrate", help="bring the database schema up to date")
    mig.add_argument("--downgrade", metavar="REVISION", help="go back to REVISION ('base' = empty)")
    mig.set_defaults(func=cmd_migrate)

    keys = sub.add_parser("keys", help="API keys").add_subparsers(dest="keys_command", required=True)
    create = keys.add_parser("create", help="create a key (and the tenant if new); prints it once")
    create.add_argument("--tenant", required=True)
    create.add_argument("--name")
    create.set_defaults(func=cmd_keys_create)

    imp = sub.add_parser("import", help="ingest a LoCoMo conversation file or a JSONL of messages")
    imp.add_argument("file")
    imp.add_argument("--user-id", help="default: the file name without extension")
    imp.add_argument("--tenant", default="default")
    imp.set_defaults(func=cmd_import)
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
