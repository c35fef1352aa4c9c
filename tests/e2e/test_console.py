"""The web console at /ui: the endpoints it reads (users, jobs, history, memory filters, search
explanations) through HTTP, and the console itself end to end in a real headless Chromium."""

from __future__ import annotations

import os
import re
import shutil
import uuid
from pathlib import Path

import httpx
import pytest

CONVERSATION = [
    ("Caroline", "I moved to Boston in 2019 and I work at Acme Robotics as an engineer."),
    ("Melanie", "Caroline, my sister Anna lives in Denver with her dog Biscuit."),
    ("Caroline", "I went to a LGBTQ support group yesterday and it was so powerful."),
    ("Melanie", "I painted a lake sunrise last year, it's special to me."),
    ("Caroline", "Last month I moved to Seattle for a new job at Blue Harbor."),
    ("Melanie", "My favourite food is ramen, and Anna loves sushi."),
]
SIGNALS = {
    "dense",
    "keyword",
    "graph",
    "time",
    "speaker",
    "role",
    "message",
    "neighbours",
    "superseded",
    "place",
    "instruction",
    "importance",
    "merged",
}
REPO = Path(__file__).resolve().parents[2]


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser"):
        if found := shutil.which(name):
            return found
    return None


@pytest.fixture
def seeded(live_server: str, tenant) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    """A fresh tenant with one user and a stored conversation: (key, user id)."""
    key = tenant[1]
    user = f"console-{uuid.uuid4().hex[:8]}"
    messages = [
        {"role": "user", "name": who, "id": f"m{i}", "content": text, "created_at": f"2024-03-0{i}T10:00:00Z"}
        for i, (who, text) in enumerate(CONVERSATION, 1)
    ]
    added = httpx.post(
        f"{live_server}/v1/memories",
        json={"user_id": user, "session_id": "s1", "messages": messages, "wait": True},
        headers={"Authorization": f"Bearer {key}"},
        timeout=300,
    )
    assert added.status_code == 201, added.text
    return key, user


def test_console_page_and_assets_are_served_offline(live_server: str) -> None:
    page = httpx.get(f"{live_server}/ui")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert "http://" not in page.text and "https://" not in page.text  # no CDN
    for asset in ("console.js", "api.js", "graph.js", "console.css"):
        served = httpx.get(f"{live_server}/ui/{asset}")
        assert served.status_code == 200, asset
        assert "https://" not in served.text, asset
    assert httpx.get(f"{live_server}/ui/../pyproject.toml").status_code == 404
    assert httpx.get(f"{live_server}/ui/missing.js").status_code == 404


def test_users_jobs_and_history_pages(live_server: str, seeded: tuple[str, str], tenant) -> None:  # type: ignore[no-untyped-def]
    key, user = seeded
    auth = {"Authorization": f"Bearer {key}"}
    other = f"{user}-b"
    add = {"user_id": other, "messages": [{"role": "user", "content": "I like tea."}], "wait": True}
    assert httpx.post(f"{live_server}/v1/memories", json=add, headers=auth, timeout=300).status_code == 201

    first = httpx.get(f"{live_server}/v1/users", params={"limit": 1}, headers=auth).json()
    second = httpx.get(
        f"{live_server}/v1/users", params={"limit": 1, "cursor": first["next_cursor"]}, headers=auth
    ).json()
    assert [u["user_id"] for u in first["users"] + second["users"]] == [user, other]
    assert second["next_cursor"] is None
    listed = httpx.get(f"{live_server}/v1/memories", params={"user_id": user, "limit": 500}, headers=auth)
    assert first["users"][0]["memories"] == len(listed.json()["items"])

    jobs = httpx.get(f"{live_server}/v1/jobs", params={"user_id": user}, headers=auth).json()["jobs"]
    assert [(j["kind"], j["status"], j["user_id"]) for j in jobs] == [("ingest", "succeeded", user)]
    assert httpx.get(f"{live_server}/v1/jobs", params={"status": "failed"}, headers=auth).json()["jobs"] == []
    both = httpx.get(f"{live_server}/v1/jobs", params={"limit": 1}, headers=auth).json()
    assert both["jobs"][0]["user_id"] == other and both["next_cursor"]

    newest = {"user_id": user, "limit": 3}
    history = httpx.get(f"{live_server}/v1/history", params=newest, headers=auth).json()
    assert len(history["events"]) == 3 and history["next_cursor"]
    assert {e["op"] for e in history["events"]} == {"create"}
    memory_ids = {m["id"] for m in listed.json()["items"]}
    assert {e["memory_id"] for e in history["events"]} <= memory_ids
    older = httpx.get(
        f"{live_server}/v1/history",
        params={"user_id": user, "limit": 500, "cursor": history["next_cursor"]},
        headers=auth,
    ).json()["events"]
    assert older[0]["at"] <= history["events"][-1]["at"]
    assert not {str(e) for e in older} & {str(e) for e in history["events"]}
    whole = httpx.get(f"{live_server}/v1/history", params={"user_id": user, "limit": 500}, headers=auth)
    assert whole.json()["events"] == history["events"] + older
    no_run = {"user_id": user, "run_id": str(uuid.uuid4())}
    assert httpx.get(f"{live_server}/v1/history", params=no_run, headers=auth).json()["events"] == []


def test_memory_filters_by_type_status_and_time(live_server: str, seeded: tuple[str, str]) -> None:
    key, user = seeded
    auth = {"Authorization": f"Bearer {key}"}

    def listed(**params: str) -> list[dict]:  # type: ignore[type-arg]
        answer = httpx.get(
            f"{live_server}/v1/memories", params={"user_id": user, "limit": 500, **params}, headers=auth
        )
        assert answer.status_code == 200, answer.text
        return answer.json()["items"]  # type: ignore[no-any-return]

    everything = listed()
    assert {m["status"] for m in listed(status="active")} == {"active"}
    assert len(listed(status="active")) == sum(m["status"] == "active" for m in everything)
    assert all(m["type"] == "semantic" for m in listed(type="semantic", status="active"))
    window = listed(since="2024-03-02T00:00:00Z", until="2024-03-04T00:00:00Z")
    assert window and all("2024-03-02" <= m["event_at"][:10] <= "2024-03-03" for m in window)
    assert len(window) < len(everything)
    bad = httpx.get(f"{live_server}/v1/memories", params={"user_id": user, "status": "gone"}, headers=auth)
    assert bad.status_code == 422


def test_search_explains_each_score(live_server: str, seeded: tuple[str, str]) -> None:
    key, user = seeded
    auth = {"Authorization": f"Bearer {key}"}
    body = {"query": "Where does Caroline work?", "user_id": user, "limit": 5}
    plain = httpx.post(f"{live_server}/v1/search", json=body, headers=auth).json()["results"]
    explained = httpx.post(f"{live_server}/v1/search", json={**body, "explain": True}, headers=auth).json()
    results = explained["results"]
    assert results and all("explain" not in r["metadata"] for r in plain)
    # Opt-in only: the same results in the same order, with the breakdown added.
    assert [(r["id"], r["score"]) for r in results] == [(r["id"], r["score"]) for r in plain]
    for result in results:
        parts = result["metadata"]["explain"]
        assert SIGNALS | {"cosine", "bm25"} == set(parts)
        assert sum(parts[s] for s in SIGNALS) == pytest.approx(result["score"], abs=2e-3)
    assert any(r["metadata"]["explain"]["keyword"] > 0 for r in results)
    # The console draws and explains every part the server sends, each with its colour.
    script = (REPO / "api" / "static" / "ui" / "console.js").read_text()
    listed = script[script.index("const SIGNALS = [") : script.index("];", script.index("const SIGNALS = ["))]
    assert set(re.findall(r'\["(\w+)", "', listed)) == SIGNALS
    styles = (REPO / "api" / "static" / "ui" / "console.css").read_text()
    assert all(f".seg-{name} " in styles for name in SIGNALS)


@pytest.mark.slow
def test_console_in_headless_chromium(live_server: str, seeded: tuple[str, str], tmp_path: Path) -> None:
    """Log in, pick the user, browse and open a memory's history, search and read the signals,
    open the graph, and save a screenshot of each step."""
    binary = _chromium()
    if binary is None:
        pytest.skip("no chromium binary on PATH (Debian: apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (dev extra)")
    key, user = seeded
    shots = tmp_path / "screenshots"
    shots.mkdir()

    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=binary, headless=True, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1360, "height": 860})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
        expect = sync_api.expect

        page.goto(f"{live_server}/ui")
        page.get_by_label("API key").fill("msk_not-a-real-key")
        page.get_by_role("button", name="Log in").click()
        expect(page.locator("#login-error")).to_contain_text("not valid")
        errors.clear()  # the 401 above is logged by the browser, as it should be
        page.get_by_label("API key").fill(key)
        page.get_by_role("button", name="Log in").click()
        page.screenshot(path=shots / "1-users.png")

        page.locator("#user-list").get_by_role("button", name=user).click()
        rows = page.locator("#memory-table tbody tr")
        expect(page.locator("#memory-table tbody")).to_contain_text("Boston")
        count = rows.count()
        assert count >= len(CONVERSATION)
        page.get_by_label("Type").select_option("semantic")
        page.get_by_role("button", name="Apply").click()
        expect(page.locator("#memory-table tbody tr").first.get_by_text("semantic")).to_be_visible()
        assert page.locator("#memory-table tbody tr").count() < count
        page.locator("#memory-table tbody tr button.link").first.click()
        detail = page.locator("#memory-detail")
        expect(detail.get_by_role("heading", name="Provenance")).to_be_visible()
        expect(detail.locator(".chip").first).to_be_visible()
        message_ids = {f"m{i}" for i in range(1, len(CONVERSATION) + 1)}
        assert detail.locator(".chip").first.inner_text() in message_ids
        expect(detail.get_by_role("heading", name="History (1)")).to_be_visible()
        expect(detail.locator(".events .badge-op")).to_have_text("create")
        page.screenshot(path=shots / "2-memories.png")

        page.get_by_role("tab", name="Search").click()
        page.get_by_label("Query").fill("Where does Caroline work?")
        page.get_by_role("button", name="Search", exact=True).click()
        results = page.locator(".results .result")
        expect(results.first).to_be_visible()
        expect(results.first.locator(".score")).to_contain_text("score ")
        expect(page.locator(".signals").first).to_contain_text("dense")
        signals = " ".join(page.locator(".signals").all_inner_texts())
        assert "keyword" in signals and "cosine" in signals and "BM25" in signals
        assert page.locator(".bar .seg").count() > 0
        page.screenshot(path=shots / "3-search.png")
        if os.environ.get("MEMSVC_UPDATE_SCREENSHOT"):
            page.screenshot(path=REPO / "docs" / "console.png", type="png", scale="css")
        page.get_by_role("button", name="Build context").click()
        expect(page.locator("pre.context")).to_contain_text("src:")

        page.get_by_role("tab", name="Graph").click()
        nodes = page.locator("#graph .node")
        expect(nodes.first).to_be_visible()
        assert nodes.count() >= 3
        page.locator("#graph").get_by_role("button", name="Caroline").first.click()
        expect(page.locator("#graph-detail h3")).to_contain_text("Caroline")
        expect(page.locator("#graph-detail")).to_contain_text("Relations")
        page.locator("#graph .node").nth(1).focus()
        page.keyboard.press("Enter")
        expect(page.locator("#graph-detail h3")).not_to_contain_text("Caroline")
        page.screenshot(path=shots / "4-graph.png")

        page.get_by_role("tab", name="Changes").click()
        expect(page.locator("#changes-list .event").first).to_contain_text("create")
        page.get_by_role("tab", name="Jobs").click()
        expect(page.locator("#jobs-table tbody tr").first).to_contain_text("succeeded")
        page.locator("#jobs-table tbody tr button.link").first.click()
        expect(page.locator("#job-detail")).to_contain_text("memory_ids")
        page.screenshot(path=shots / "5-jobs.png")

        # Keyboard: the tabs move with the arrow keys; the key lives in this tab's session only.
        page.get_by_role("tab", name="Jobs").focus()
        page.keyboard.press("Home")
        expect(page.get_by_role("tab", name="Memories")).to_have_attribute("aria-selected", "true")
        page.reload()
        expect(page.locator("#user-title")).to_contain_text(user)
        page.get_by_role("button", name="Log out").click()
        expect(page.get_by_label("API key")).to_be_visible()
        browser.close()
    assert errors == []
    assert sorted(p.name for p in shots.iterdir()) == [
        "1-users.png",
        "2-memories.png",
        "3-search.png",
        "4-graph.png",
        "5-jobs.png",
    ]
