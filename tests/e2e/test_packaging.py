"""Packaging: the SDK installs alone (`memsvc-client`: httpx and pydantic, nothing of the server)
in a fresh virtual environment and talks to a running memsvc; the wheels hold what they should:
the client's the SDK and its integrations, the server's the rest with its assets."""

from __future__ import annotations

import email.parser
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
SKIP = shutil.ignore_patterns("__pycache__", "*.egg-info", "build")
SERVER_ONLY = {"torch", "fastapi", "sqlalchemy", "sentence-transformers", "psycopg", "numpy", "memsvc"}

# Run by the fresh environment's Python, outside the repository: the installed SDK only.
CLIENT_SCRIPT = """
import asyncio, importlib.util, json, os
import memsvc.client
from memsvc.client import AsyncMemoryClient, MemoryClient, NotFoundError

assert importlib.util.find_spec("memsvc.service") is None, "the server is importable"
url, key = os.environ["MEMSVC_URL"], os.environ["MEMSVC_API_KEY"]
with MemoryClient() as client:  # MEMSVC_URL and MEMSVC_API_KEY
    added = client.add(
        [{"role": "user", "name": "Ann", "id": "m1", "content": "I moved to Lisbon last month."}],
        user_id="ann", wait=True,
    )
    hits = client.search("Where does Ann live?", "ann")
    try:
        client.get("00000000-0000-0000-0000-000000000000")
        missing = False
    except NotFoundError:
        missing = True

async def main():
    async with AsyncMemoryClient(url, key) as client:
        return (await client.context("Where does Ann live?", "ann")).context

print(json.dumps({
    "file": memsvc.client.__file__,
    "status": added.status,
    "top": hits[0].content,
    "sources": hits[0].source_message_ids,
    "missing": missing,
    "context": asyncio.run(main()),
}))
"""


def run(*command: str | Path, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(c) for c in command], check=True, capture_output=True, text=True, **kwargs)


def test_client_installs_alone_and_talks_to_a_server(live_server: str, tenant: Any, tmp_path: Path) -> None:
    _, key = tenant
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", venv)
    python = venv / "bin" / "python"
    # From a copy: pip builds in the source tree, and the checkout stays as it is.
    src = tmp_path / "src"
    for name in ("memsvc", "clients"):
        shutil.copytree(ROOT / name, src / name, ignore=SKIP)
    run(python, "-m", "pip", "install", "-q", src / "clients" / "python", timeout=540)

    installed = {
        p["name"].lower() for p in json.loads(run(python, "-m", "pip", "list", "--format=json").stdout)
    }
    assert "memsvc-client" in installed
    assert not installed & SERVER_ONLY, installed & SERVER_ONLY

    env = {k: v for k, v in os.environ.items() if not k.startswith(("MEMSVC_", "PYTHON"))}
    env |= {"MEMSVC_URL": live_server, "MEMSVC_API_KEY": key}
    out = json.loads(run(python, "-c", CLIENT_SCRIPT, env=env, cwd=tmp_path, timeout=300).stdout)
    assert Path(out["file"]).is_relative_to(venv), out["file"]
    assert out["status"] == "succeeded" and out["missing"]
    assert "Lisbon" in out["top"] and out["sources"] == ["m1"]
    assert "Lisbon" in out["context"]


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Both wheels, built from a copy of the sources (nothing written into the checkout)."""
    src = tmp_path_factory.mktemp("src")
    for name in ("memsvc", "api", "workers", "kernels", "migrations", "clients"):
        shutil.copytree(ROOT / name, src / name, ignore=SKIP)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    out = tmp_path_factory.mktemp("wheels")
    # The build backend of this environment: no download, and the same setuptools CI installs.
    run(
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "-q",
        "--no-deps",
        "--no-build-isolation",
        "-w",
        out,
        src,
        src / "clients" / "python",
        timeout=300,
    )
    return {w.name.split("-")[0]: w for w in out.glob("*.whl")}


def contents(wheel: Path) -> tuple[set[str], dict[str, list[str]]]:
    """The wheel's files (less its .dist-info) and its metadata."""
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        meta_name = next(n for n in names if n.endswith(".dist-info/METADATA"))
        meta = email.parser.Parser().parsestr(archive.read(meta_name).decode())
    files = {n for n in names if ".dist-info/" not in n}
    return files, {key: meta.get_all(key) or [] for key in ("Name", "Version", "Requires-Dist")}


def test_client_wheel_is_the_sdk_alone(wheels: dict[str, Path]) -> None:
    import memsvc

    files, meta = contents(wheels["memsvc_client"])
    assert meta["Name"] == ["memsvc-client"] and meta["Version"] == [memsvc.__version__]
    required = [r for r in meta["Requires-Dist"] if "extra ==" not in r]
    assert sorted(r.split(">")[0] for r in required) == ["httpx", "pydantic"]
    assert files and all(f.startswith(("memsvc/client/", "memsvc/integrations/")) for f in files), files
    assert {"memsvc/client/__init__.py", "memsvc/client/models.py", "memsvc/client/py.typed"} <= files
    assert {"memsvc/integrations/mcp_server.py", "memsvc/integrations/langchain.py"} <= files
    extras = {r.split("extra == ")[-1].strip("'\"") for r in meta["Requires-Dist"] if "extra ==" in r}
    assert extras == {"mcp", "langchain", "llamaindex"}


def test_server_wheel_depends_on_the_client_and_ships_its_assets(wheels: dict[str, Path]) -> None:
    import memsvc

    files, meta = contents(wheels["memsvc"])
    assert meta["Version"] == [memsvc.__version__]
    assert any(r.startswith("memsvc-client") for r in meta["Requires-Dist"])
    assert not any(f.startswith(("memsvc/client/", "memsvc/integrations/")) for f in files), "memsvc-client's"
    for shipped in (
        "memsvc/__init__.py",
        "memsvc/cli.py",
        "api/static/ui/index.html",
        "api/static/swagger-ui/swagger-ui-bundle.js",
        "api/static/swagger-ui/LICENSE",
        "migrations/versions/0001_initial_schema.py",
        "migrations/script.py.mako",
    ):
        assert any(f.endswith(shipped) for f in files), shipped


def test_server_wheel_installs_nothing_at_top_level_but_memsvc(wheels: dict[str, Path]) -> None:
    files, _ = contents(wheels["memsvc"])
    assert {f.split("/")[0] for f in files} == {"memsvc"}
