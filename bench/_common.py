"""Shared set-up for the benchmarks: a throw-away embedded database and a ready service."""

from __future__ import annotations

import json
import platform
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
LOCOMO_DIR = ROOT.parent / "shared" / "data" / "locomo"
RESULTS_DIR = ROOT / "bench" / "results"


def fresh_service(data_dir: Path | None = None, **overrides: Any):  # type: ignore[no-untyped-def]
    """A MemoryService on a new embedded database (migrated), plus a tenant context."""
    from memsvc.cli import open_database
    from memsvc.config import Settings
    from memsvc.service import MemoryService
    from memsvc.tenants import TenantContext, get_or_create_tenant

    settings = Settings(data_dir=data_dir or Path(tempfile.mkdtemp(prefix="memsvc-bench-")), **overrides)
    database = open_database(settings)
    service = MemoryService(settings, database)
    with database.session() as session:
        tenant_id = get_or_create_tenant(session, "bench")
    return service, TenantContext(tenant_id=tenant_id)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def machine() -> dict[str, Any]:
    import os

    import torch

    return {
        "host": platform.node(),
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def write_json(name: str, payload: dict[str, Any], path: str | None) -> Path:
    target = Path(path) if path else RESULTS_DIR / f"{name}.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(payload, indent=2, default=str))
    return target


def print_table(headers: list[str], rows: list[list[Any]]) -> None:
    cells = [[f"{c:.3f}" if isinstance(c, float) else str(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for row in cells:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))


__all__ = ["LOCOMO_DIR", "fresh_service", "machine", "percentile", "print_table", "write_json"]
