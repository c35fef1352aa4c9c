"""Consolidation on the real Postgres: supersession at ingest and in a run, merging, forgetting
(archive, TTL, pin, purge), the history of each, dry run, a killed run run again, and ingest
while a run works."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from memsvc import consolidation_store
from memsvc.models import HistoryEvent, Memory, MemorySource
from memsvc.schemas import AddRequest, ContextRequest, Message, SearchRequest

T0 = datetime(2024, 1, 10, 12, tzinfo=UTC)


def _add(service, ctx, user: str, texts: list[str], at: datetime, session_id: str, **extra: Any) -> None:  # type: ignore[no-untyped-def]
    messages = [
        Message(
            role="user", name="Ann", content=t, id=f"{session_id}-{i}", created_at=at + timedelta(minutes=i)
        )
        for i, t in enumerate(texts)
    ]
    request = AddRequest(messages=messages, user_id=user, session_id=session_id, **extra)
    outcome = service.run_ingest_job(service.submit_ingest(ctx, request))
    assert outcome.status == "succeeded", outcome.error


def _rows(service, ctx, user: str) -> list[Memory]:  # type: ignore[no-untyped-def]
    with service.db.session() as session:
        return list(
            session.execute(
                select(Memory).where(Memory.tenant_id == ctx.tenant_id, Memory.user_id == user)
            ).scalars()
        )


def _fact(rows: list[Memory], content: str) -> Memory:
    found = [m for m in rows if m.type == "semantic" and m.content == content]
    assert len(found) == 1, (content, [m.content for m in rows if m.type == "semantic"])
    return found[0]


def _user() -> str:
    return f"ann-{uuid.uuid4().hex[:8]}"


def test_a_newer_value_supersedes_at_ingest_and_search_follows_time(service, tenant) -> None:  # type: ignore[no-untyped-def]
    ctx, _ = tenant
    user = _user()
    _add(service, ctx, user, ["I live in Denver."], T0, "s1")
    _add(service, ctx, user, ["I moved to Boston."], T0 + timedelta(days=150), "s2")
    rows = _rows(service, ctx, user)
    denver, boston = _fact(rows, "Ann lives in Denver"), _fact(rows, "Ann lives in Boston")
    moved = _fact(rows, "Ann moved to Boston")  # as said; "lives in Boston" is its plain statement
    assert denver.attribute == boston.attribute == moved.attribute == "residence"
    assert moved.status == "active"
    # The plain statement succeeds, not the words as said: the same successor for every user.
    assert denver.status == "superseded" and denver.superseded_by == boston.id
    assert denver.valid_to == boston.valid_from
    assert boston.status == "active" and boston.valid_to is None
    events = service.history(ctx, denver.id)
    assert [e.op for e in events] == ["create", "supersede"]
    assert events[1].before["status"] == "active" and events[1].after["superseded_by"] == str(
        denver.superseded_by
    )
    # The turn that said it is out of date too; the turn of the move is not.
    turns = {m.content: m for m in rows if m.kind == "turn"}
    assert (
        turns["I live in Denver."].status == "superseded" and turns["I moved to Boston."].status == "active"
    )

    now = service.search(ctx, SearchRequest(query="Where does Ann live?", user_id=user, limit=5))
    first_city = next(r.content for r in now if "Denver" in r.content or "Boston" in r.content)
    assert "Boston" in first_city
    then = service.search(
        ctx,
        SearchRequest(query="Where does Ann live?", user_id=user, limit=5, as_of=T0 + timedelta(days=30)),
    )
    assert any("Denver" in r.content for r in then) and not any("Boston" in r.content for r in then)


def test_an_older_statement_ingested_later_is_closed_by_the_newer_one(service, tenant) -> None:  # type: ignore[no-untyped-def]
    ctx, _ = tenant
    user = _user()
    _add(service, ctx, user, ["I work as a nurse."], T0 + timedelta(days=200), "s2")
    _add(service, ctx, user, ["I work as a teacher."], T0, "s1")
    rows = _rows(service, ctx, user)
    teacher = _fact(rows, "Ann's job: Ann works as a teacher")
    nurse = _fact(rows, "Ann's job: Ann works as a nurse")
    said = _fact(rows, "Ann works as a nurse")
    assert teacher.status == "superseded" and teacher.superseded_by == nurse.id
    assert nurse.status == said.status == "active"


def test_an_ended_value_is_closed_and_the_context_block_says_until_when(service, tenant) -> None:  # type: ignore[no-untyped-def]
    ctx, _ = tenant
    user = _user()
    _add(
        service,
        ctx,
        user,
        ["I work at Acme.", "My girlfriend Mia is a chef.", "I drive a Honda Civic."],
        T0,
        "s1",
    )
    quit_at = T0 + timedelta(days=60)
    _add(
        service, ctx, user, ["I quit my job at Acme.", "Mia and I broke up.", "I sold my car."], quit_at, "s2"
    )
    rows = _rows(service, ctx, user)
    for stale in (
        "Ann's employer: Ann works at Acme",
        "Ann's partner is Mia",
        "Ann's car: Ann drives a Honda Civic",
    ):
        fact = _fact(rows, stale)
        assert fact.status == "superseded" and fact.valid_to is not None and quit_at <= fact.valid_to, stale
    quit_fact = _fact(rows, "Ann quit Ann's job at Acme")
    assert quit_fact.attribute == "employer" and quit_fact.status == "active"
    block = service.context(
        ctx, ContextRequest(query="Where does Ann work?", user_id=user, max_tokens=300)
    ).context
    acme_line = next(line for line in block.splitlines() if "works at Acme" in line)
    assert f"(until {quit_at.date().isoformat()})" in acme_line

    # A new employer closes the end of the old one; an end naming another employer ends nothing.
    _add(service, ctx, user, ["I started a new job at Globex."], T0 + timedelta(days=90), "s3")
    _add(service, ctx, user, ["I no longer work at Initech."], T0 + timedelta(days=95), "s4")
    rows = _rows(service, ctx, user)
    globex = _fact(rows, "Ann's employer: Ann works at Globex")
    assert _fact(rows, "Ann quit Ann's job at Acme").superseded_by == globex.id
    assert globex.status == "active"


def test_a_couple_said_as_we_is_a_partner_closed_when_they_part(service, tenant) -> None:  # type: ignore[no-untyped-def]
    ctx, _ = tenant
    user = _user()
    _add(service, ctx, user, ["Mia and I have been together for two years."], T0, "s1")
    parted_at = T0 + timedelta(days=40)
    _add(service, ctx, user, ["Mia and I broke up."], parted_at, "s2")
    rows = _rows(service, ctx, user)
    together = _fact(rows, "Mia and Ann have been together for two years")
    assert together.attribute == "partner"
    assert together.status == "superseded" and together.valid_to == parted_at
    asked = ContextRequest(query="Who is Ann with?", user_id=user, max_tokens=300)
    block = service.context(ctx, asked).context
    line = next(line for line in block.splitlines() if "Ann's partner is Mia" in line)  # its plain statement
    assert f"(until {parted_at.date().isoformat()})" in line


def test_consolidation_supersedes_facts_stored_before_it_existed(service, tenant) -> None:  # type: ignore[no-untyped-def]
    ctx, _ = tenant
    user = _user()
    _add(service, ctx, user, ["My dog is called Rex."], T0, "s1")
    _add(service, ctx, user, ["Rex passed away. We adopted a dog named Max."], T0 + timedelta(days=60), "s2")
    # As if stored by a version without attributes.
    with service.db.session() as session:
        for m in session.execute(select(Memory).where(Memory.user_id == user)).scalars():
            m.attribute, m.status, m.superseded_by, m.valid_to = None, "active", None, None
    report = service.consolidate(ctx.tenant_id, user)
    # Each statement and its plain form ("Ann's pet is called Rex") get their attribute back.
    assert report.totals()["superseded"] == 2 and report.totals()["attributes"] == 5
    rows = _rows(service, ctx, user)
    died = _fact(rows, "Rex passed away").id
    assert _fact(rows, "Ann and others adopted a dog named Max").status == "active"
    assert _fact(rows, "Ann's pet is called Max").status == "active"
    assert _fact(rows, "Ann's dog is called Rex").superseded_by == died
    assert _fact(rows, "Ann's pet is called Rex").superseded_by == died
    again = service.consolidate(ctx.tenant_id, user)
    assert again.totals()["superseded"] == again.totals()["merged"] == 0


def test_a_cancelled_membership_is_closed(service, tenant) -> None:  # type: ignore[no-untyped-def]
    ctx, _ = tenant
    user = _user()
    _add(service, ctx, user, ["I have a gym membership at FitLife.", "I love sushi."], T0, "s1")
    _add(service, ctx, user, ["I cancelled my gym membership last week."], T0 + timedelta(days=20), "s2")
    rows = _rows(service, ctx, user)
    cancelled = next(m for m in rows if m.type == "semantic" and m.content.startswith("Ann cancelled"))
    assert _fact(rows, "Ann has a gym membership at FitLife").superseded_by == cancelled.id
    assert _fact(rows, "Ann loves sushi").status == "active"


def test_consolidation_closes_states_stopped_before_stops_were_read(service, tenant) -> None:  # type: ignore[no-untyped-def]
    ctx, _ = tenant
    user = _user()
    _add(service, ctx, user, ["I drink coffee every morning."], T0, "s1")
    _add(service, ctx, user, ["I don't drink coffee anymore."], T0 + timedelta(days=20), "s2")
    with service.db.session() as session:  # as if stored by a version that did not read stops
        for m in session.execute(select(Memory).where(Memory.user_id == user)).scalars():
            m.attribute, m.status, m.superseded_by, m.valid_to = None, "active", None, None
    report = service.consolidate(ctx.tenant_id, user)
    assert report.totals()["attributes"] == 2 and report.totals()["superseded"] == 1
    rows = _rows(service, ctx, user)
    stop = _fact(rows, "Ann doesn't drink coffee anymore")
    assert _fact(rows, "Ann drinks coffee every morning").superseded_by == stop.id
    assert service.consolidate(ctx.tenant_id, user).totals()["superseded"] == 0


def test_near_duplicates_merge_with_provenance_and_history(service, tenant) -> None:  # type: ignore[no-untyped-def]
    ctx, _ = tenant
    user = _user()
    # Said word for word again, a fact is one memory at ingest (test_restated.py); nearly, two.
    _add(service, ctx, user, ["I love hiking in the mountains with my sister."], T0, "s1")
    _add(
        service,
        ctx,
        user,
        ["I really love hiking in the mountains with my sister."],
        T0 + timedelta(days=3),
        "s2",
    )
    before = [m for m in _rows(service, ctx, user) if m.type == "semantic"]
    assert len(before) == 2
    report = service.consolidate(ctx.tenant_id, user, run_id=(run := uuid.uuid4()))
    assert report.totals()["merged"] == 1
    rows = {m.id: m for m in _rows(service, ctx, user) if m.type == "semantic"}
    survivor = next(m for m in rows.values() if m.status == "active")
    duplicate = next(m for m in rows.values() if m.status == "archived")
    assert survivor.event_at < duplicate.event_at  # the earliest survives
    assert duplicate.superseded_by == survivor.id and duplicate.metadata_["merged_into"] == str(survivor.id)
    assert survivor.valid_from == min(m.valid_from for m in before)
    assert sorted(service.get(ctx, survivor.id).source_message_ids) == ["s1-0", "s2-0"]
    for memory in (survivor, duplicate):
        merge = [e for e in service.history(ctx, memory.id) if e.op == "merge"]
        assert len(merge) == 1 and merge[0].run_id == run and merge[0].actor == "consolidation"
    found = service.search(
        ctx, SearchRequest(query="hiking mountains sister", user_id=user, types=["semantic"])
    )
    assert [r.id for r in found if r.type == "semantic"] == [survivor.id]

    # Restored, the duplicate is its own memory again, and the next run leaves the two apart.
    restored = service.restore(ctx, duplicate.id)
    assert restored.status == "active" and "merged_into" not in restored.metadata
    assert restored.metadata["kept_apart_from"] == [str(survivor.id)]
    assert service.consolidate(ctx.tenant_id, user).totals()["merged"] == 0
    statuses = {m.id: m.status for m in _rows(service, ctx, user)}
    assert statuses[survivor.id] == statuses[duplicate.id] == "active"


def test_forgetting_archives_small_talk_keeps_pins_honours_ttl_and_purges(service, tenant) -> None:  # type: ignore[no-untyped-def]
    ctx, _ = tenant
    user = _user()
    _add(service, ctx, user, ["Thanks, Jon! Appreciate the kind words.", "Wow, congrats!"], T0, "s1")
    _add(service, ctx, user, ["I adopted a kitten named Miso."], T0 + timedelta(days=90), "s2")
    _add(
        service,
        ctx,
        user,
        ["The code for the gate is 4411."],
        T0 + timedelta(days=91),
        "s3",
        metadata={"expires_at": (T0 + timedelta(days=95)).isoformat()},
    )
    # A question with its answer after it is half of an exchange, not small talk; one left
    # unanswered at the end of its session is.
    _add(
        service,
        ctx,
        user,
        ["Wow, nice! What game was it?", "Street Fighter, at the local tournament."],
        T0,
        "s4",
    )
    _add(service, ctx, user, ["Sounds great! What time?"], T0, "s5")
    rows = _rows(service, ctx, user)
    thanks = next(m for m in rows if m.kind == "turn" and m.content.startswith("Thanks"))
    congrats = next(m for m in rows if m.kind == "turn" and m.content.startswith("Wow, congrats"))
    question = next(m for m in rows if m.kind == "turn" and m.content.startswith("Wow, nice"))
    unanswered = next(m for m in rows if m.kind == "turn" and m.content.startswith("Sounds great"))
    gate = next(m for m in rows if m.kind == "turn" and "gate" in m.content)
    service.update(ctx, congrats.id, _patch(pinned=True))

    now = T0 + timedelta(days=100)
    service.consolidate(ctx.tenant_id, user, now=now)
    after = {m.id: m for m in _rows(service, ctx, user)}
    assert after[thanks.id].status == "archived" and after[thanks.id].archived_at == now
    assert after[congrats.id].status == "active"  # pinned
    assert after[question.id].status == "active" and after[unanswered.id].status == "archived"
    assert after[gate.id].status == "archived"  # its TTL passed
    assert _fact(list(after.values()), "Ann's pet is called Miso").status == "active"
    assert [e.op for e in service.history(ctx, thanks.id)][-1] == "archive"
    # Archived: out of search, still readable, restorable.
    hits = service.search(ctx, SearchRequest(query="thanks for the kind words", user_id=user))
    assert thanks.id not in {r.id for r in hits}
    assert service.get(ctx, thanks.id).status == "archived"
    assert service.restore(ctx, gate.id).status == "active"
    assert service.history(ctx, gate.id)[-1].op == "restore"

    # Past the retention period, archived memories go for good; their history stays.
    service.consolidate(ctx.tenant_id, user, now=now + timedelta(days=31))
    remaining = {m.id for m in _rows(service, ctx, user)}
    assert thanks.id not in remaining and congrats.id in remaining
    assert [e.op for e in service.history(ctx, thanks.id)][-1] == "purge"
    with service.db.session() as session:
        assert not session.execute(select(MemorySource).where(MemorySource.memory_id == thanks.id)).first()


def _patch(**fields: Any) -> Any:
    from memsvc.schemas import UpdateRequest

    return UpdateRequest(**fields)


def _state(service, ctx, user: str) -> tuple[Any, ...]:  # type: ignore[no-untyped-def]
    """Everything consolidation may change, keyed by content (ids differ between users)."""
    rows = _rows(service, ctx, user)
    content = {m.id: m.content for m in rows}
    with service.db.session() as session:
        sources = {
            (content[mid], msg)
            for mid, msg in session.execute(
                select(MemorySource.memory_id, MemorySource.message_id).where(
                    MemorySource.user_id == user, MemorySource.tenant_id == ctx.tenant_id
                )
            ).all()
        }
        ops = sorted(
            (e.op, content.get(e.memory_id, "?"))
            for e in session.execute(
                select(HistoryEvent).where(HistoryEvent.user_id == user, HistoryEvent.op != "create")
            ).scalars()
        )
    memories = sorted(
        (
            m.kind,
            m.content,
            m.status,
            m.valid_from,
            m.valid_to,
            content.get(m.superseded_by) if m.superseded_by else None,
            m.access_count,
        )
        for m in rows
    )
    return tuple(memories), frozenset(sources), tuple(ops)


def _story(service, ctx, user: str) -> None:  # type: ignore[no-untyped-def]
    _add(service, ctx, user, ["I live in Denver.", "Thanks, Jon! Appreciate the kind words."], T0, "s1")
    _add(
        service,
        ctx,
        user,
        ["I love hiking in the mountains with my sister.", "My favourite food is spicy ramen."],
        T0 + timedelta(days=1),
        "s2",
    )
    # Near duplicates (word for word, a fact said again is one memory at ingest).
    _add(
        service,
        ctx,
        user,
        ["I really love hiking in the mountains with my sister."],
        T0 + timedelta(days=5),
        "s3",
    )
    _add(
        service,
        ctx,
        user,
        ["I love hiking up in the mountains with my sister."],
        T0 + timedelta(days=9),
        "s4",
    )
    _add(
        service,
        ctx,
        user,
        ["Wow, congrats!", "I drive a Honda Civic.", "My favourite food is really spicy ramen."],
        T0 + timedelta(days=20),
        "s5",
    )
    with service.db.session() as session:  # facts as an older version stored them: no attributes
        for m in session.execute(select(Memory).where(Memory.user_id == user)).scalars():
            m.attribute, m.status, m.superseded_by, m.valid_to = None, "active", None, None
    _add(
        service, ctx, user, ["I moved to Boston.", "I drive a Tesla Model 3."], T0 + timedelta(days=200), "s6"
    )


def test_dry_run_changes_nothing(service, tenant) -> None:  # type: ignore[no-untyped-def]
    ctx, _ = tenant
    user = _user()
    _story(service, ctx, user)
    before = _state(service, ctx, user)
    report = service.consolidate(ctx.tenant_id, user, dry_run=True, now=T0 + timedelta(days=300))
    totals = report.totals()
    assert totals["superseded"] >= 2 and totals["merged"] == 3 and totals["archived"] >= 2
    assert _state(service, ctx, user) == before


def test_a_killed_run_run_again_ends_like_an_uninterrupted_run(service, tenant, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    ctx, _ = tenant
    whole, killed = _user(), _user()
    _story(service, ctx, whole)
    _story(service, ctx, killed)
    now = T0 + timedelta(days=300)
    service.consolidate(ctx.tenant_id, whole, now=now)

    config = service.consolidation_config()
    from dataclasses import replace

    small = replace(config, batch_size=1)
    real = consolidation_store._apply_merge
    calls = {"n": 0}

    def dies_on_second(*args: Any, **kwargs: Any) -> None:
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt("killed")
        real(*args, **kwargs)

    monkeypatch.setattr(consolidation_store, "_apply_merge", dies_on_second)
    with pytest.raises(KeyboardInterrupt):
        service.consolidate(ctx.tenant_id, killed, now=now, config=small)
    monkeypatch.setattr(consolidation_store, "_apply_merge", real)
    half = _state(service, ctx, killed)
    assert half != _state(service, ctx, whole)  # it really stopped half-way
    service.consolidate(ctx.tenant_id, killed, now=now, config=small)
    assert _state(service, ctx, killed) == _state(service, ctx, whole)
    # And a further run changes nothing.
    service.consolidate(ctx.tenant_id, killed, now=now)
    assert _state(service, ctx, killed) == _state(service, ctx, whole)


def test_ingest_during_a_run_loses_nothing(service, tenant, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    ctx, _ = tenant
    user = _user()
    _story(service, ctx, user)
    started, release = threading.Event(), threading.Event()
    real = consolidation_store._apply_archive

    def slow_archive(*args: Any, **kwargs: Any) -> None:
        started.set()
        release.wait(10)
        real(*args, **kwargs)

    monkeypatch.setattr(consolidation_store, "_apply_archive", slow_archive)
    now = T0 + timedelta(days=300)
    worker = threading.Thread(target=service.consolidate, args=(ctx.tenant_id, user), kwargs={"now": now})
    worker.start()
    assert started.wait(30)
    # Planned already; an ingest lands between its transactions.
    _add(service, ctx, user, ["I moved to Chicago.", "Thanks so much!"], T0 + timedelta(days=250), "s7")
    release.set()
    worker.join(60)
    assert not worker.is_alive()
    rows = _rows(service, ctx, user)
    by_message = {m.message_id: m for m in rows if m.kind == "turn"}
    assert by_message["s7-0"].status == "active" and by_message["s7-1"].status == "active"
    chicago = _fact(rows, "Ann lives in Chicago")
    assert chicago.status == _fact(rows, "Ann moved to Chicago").status == "active"
    assert _fact(rows, "Ann lives in Boston").superseded_by == chicago.id
    # A second run at once finds the same user busy; one after it consolidates the newcomers.
    with consolidation_store.run_lock(service.db, ctx.tenant_id, user) as mine:
        assert mine
        busy = service.consolidate(ctx.tenant_id, user, now=now)
        assert busy.users[0].skipped


def test_deleting_a_successor_reopens_what_it_superseded_unless_another_holds(service, tenant) -> None:  # type: ignore[no-untyped-def]
    ctx, _ = tenant
    user = _user()
    _add(service, ctx, user, ["I live in Denver."], T0, "s1")
    _add(service, ctx, user, ["I moved to Boston."], T0 + timedelta(days=150), "s2")
    rows = _rows(service, ctx, user)
    denver, moved = _fact(rows, "Ann lives in Denver"), _fact(rows, "Ann moved to Boston")
    said_denver = next(m for m in rows if m.kind == "turn" and m.content == "I live in Denver.")
    service.delete(ctx, _fact(rows, "Ann lives in Boston").id)
    # The words as said still state Boston: Denver stays closed, now by them.
    rows = {m.id: m for m in _rows(service, ctx, user)}
    assert rows[denver.id].status == "superseded" and rows[denver.id].superseded_by == moved.id
    assert rows[said_denver.id].superseded_by == moved.id
    assert [e.op for e in service.history(ctx, denver.id)] == ["create", "supersede", "supersede"]

    service.delete(ctx, moved.id)  # no successor left: Denver holds again, and its turn
    rows = {m.id: m for m in _rows(service, ctx, user)}
    for memory_id in (denver.id, said_denver.id):
        assert rows[memory_id].status == "active"
        assert rows[memory_id].valid_to is None and rows[memory_id].superseded_by is None
        last = service.history(ctx, memory_id)[-1]
        assert last.op == "reopen" and last.before["status"] == "superseded" and last.actor == ctx.actor
    now = service.search(ctx, SearchRequest(query="Where does Ann live?", user_id=user, limit=3))
    assert "Denver" in now[0].content
    # A later run finds nothing to change.
    again = service.consolidate(ctx.tenant_id, user).totals()
    assert again["superseded"] == again["reopened"] == 0


def test_a_forgotten_or_vanished_successor_reopens_its_predecessor(service, tenant) -> None:  # type: ignore[no-untyped-def]
    ctx, _ = tenant
    user = _user()
    _add(service, ctx, user, ["I work as a teacher."], T0, "s1")
    _add(
        service,
        ctx,
        user,
        ["I work as a nurse."],
        T0 + timedelta(days=10),
        "s2",
        metadata={"expires_at": (T0 + timedelta(days=20)).isoformat()},
    )
    teacher = _fact(_rows(service, ctx, user), "Ann's job: Ann works as a teacher")
    assert _rows_by_id(service, ctx, user)[teacher.id].status == "superseded"
    # The nurse facts' TTL passes: consolidation archives them, and the teacher holds again.
    run = uuid.uuid4()
    service.consolidate(ctx.tenant_id, user, now=T0 + timedelta(days=30), run_id=run)
    rows = _rows(service, ctx, user)
    assert _fact(rows, "Ann's job: Ann works as a nurse").status == "archived"
    assert _fact(rows, "Ann's job: Ann works as a teacher").status == "active"
    last = service.history(ctx, teacher.id)[-1]
    assert last.op == "reopen" and last.run_id == run and last.actor == "consolidation"

    # A successor removed behind the service's back (an older version's delete) is healed by a run.
    other = _user()
    _add(service, ctx, other, ["I live in Denver."], T0, "s1")
    _add(service, ctx, other, ["I moved to Boston."], T0 + timedelta(days=150), "s2")
    with service.db.session() as session:
        for m in session.execute(select(Memory).where(Memory.user_id == other)).scalars():
            if "Boston" in m.content:
                session.delete(m)
    report = service.consolidate(ctx.tenant_id, other).totals()
    assert report["reopened"] == 2  # the fact and the turn that said it
    assert _fact(_rows(service, ctx, other), "Ann lives in Denver").status == "active"
    assert service.consolidate(ctx.tenant_id, other).totals()["reopened"] == 0


def _rows_by_id(service, ctx, user: str) -> dict[uuid.UUID, Memory]:  # type: ignore[no-untyped-def]
    return {m.id: m for m in _rows(service, ctx, user)}


def test_search_counts_uses_in_the_background_and_forgetting_and_merging_use_them(service, tenant) -> None:  # type: ignore[no-untyped-def]
    ctx, _ = tenant
    user = _user()
    assert service.uses is not None
    _add(service, ctx, user, ["Wow, congrats!"], T0 - timedelta(days=1), "s0")
    _add(service, ctx, user, ["Thanks, Jon! Appreciate the kind words."], T0, "s1")
    service.uses.flush()
    rows = _rows(service, ctx, user)
    thanks = next(m for m in rows if m.kind == "turn" and m.content.startswith("Thanks"))
    congrats = next(m for m in rows if m.kind == "turn" and m.content.startswith("Wow"))
    assert all(m.access_count == 0 for m in rows)

    # Asked before anything worth more is stored: small talk ranks below every ordinary memory.
    hits = service.search(ctx, SearchRequest(query="appreciate the kind words, Jon", user_id=user, limit=1))
    returned = {r.id for r in hits} | {
        uuid.UUID(i) for r in hits if r.kind == "excerpt" for i in r.metadata["memory_ids"]
    }
    assert thanks.id in returned and congrats.id not in returned
    # Not written on the request path: only when the background flush runs.
    assert _rows_by_id(service, ctx, user)[thanks.id].access_count == 0
    _add(
        service, ctx, user, ["I love hiking in the mountains with my sister."], T0 + timedelta(days=90), "s2"
    )
    _add(
        service,
        ctx,
        user,
        ["I really love hiking in the mountains with my sister."],
        T0 + timedelta(days=93),
        "s3",
    )
    hiking = sorted((m for m in _rows(service, ctx, user) if m.type == "semantic"), key=lambda m: m.event_at)
    assert len(hiking) == 2
    service.uses.record([hiking[0].id, hiking[1].id, hiking[1].id])
    assert service.uses.flush() >= 3  # the search's use may have gone in a background flush already
    after = _rows_by_id(service, ctx, user)
    assert after[thanks.id].access_count == 1 and after[thanks.id].last_accessed_at is not None
    assert all(after[m].access_count == 0 for m in after if m not in returned | {h.id for h in hiking})
    uses = {m.id: after[m.id].access_count for m in hiking}
    assert uses[hiking[1].id] >= 2

    # Small talk unused is forgotten; small talk just used is kept. The merge sums the uses.
    service.consolidate(ctx.tenant_id, user, now=T0 + timedelta(days=100))
    final = _rows_by_id(service, ctx, user)
    assert final[congrats.id].status == "archived" and final[thanks.id].status == "active"
    assert final[hiking[1].id].status == "archived" and final[hiking[0].id].status == "active"
    assert final[hiking[0].id].access_count == sum(uses.values())


def test_use_counts_skip_rows_a_run_holds_and_write_them_later(service, tenant) -> None:  # type: ignore[no-untyped-def]
    ctx, _ = tenant
    user = _user()
    assert service.uses is not None
    _add(service, ctx, user, ["I keep bees on the roof."], T0, "s1")
    turn = next(m for m in _rows(service, ctx, user) if m.kind == "turn")
    service.uses.flush()
    with service.db.session() as holder:  # as a consolidation transaction would
        holder.execute(select(Memory).where(Memory.id == turn.id).with_for_update())
        service.uses.record([turn.id])
        assert service.uses.flush() == 0  # did not wait for the lock
    assert service.uses.flush() == 1
    assert _rows_by_id(service, ctx, user)[turn.id].access_count == 1


def _graph_story(service, ctx, user: str) -> None:  # type: ignore[no-untyped-def]
    """Turns, and a graph with the same people and places under several names (as an older
    extractor or an LLM might leave it)."""
    from memsvc.models import Entity, EntityMention, Relation

    _add(service, ctx, user, ["Jon Smith and I work together.", "Jon is moving to Boston!"], T0, "g1")
    _add(service, ctx, user, ["I met jon smith. for lunch in boston."], T0 + timedelta(days=2), "g2")
    turns = {m.message_id: m.id for m in _rows(service, ctx, user) if m.kind == "turn"}
    names = [
        ("Ann", "person"),
        ("Jon Smith", "person"),
        ("Jon", "person"),
        ("jon smith.", "person"),
        ("Boston", "place"),
        ("boston!", "place"),
    ]
    vectors = service.embedder.embed([n for n, _ in names])
    with service.db.session() as session:
        session.query(Entity).filter(Entity.user_id == user, Entity.tenant_id == ctx.tenant_id).delete()
        ids = {}
        for i, ((name, kind), vector) in enumerate(zip(names, vectors, strict=True)):
            ids[name] = uuid.uuid5(uuid.NAMESPACE_URL, f"{user}/{name}")
            session.add(
                Entity(
                    id=ids[name],
                    tenant_id=ctx.tenant_id,
                    user_id=user,
                    name=name,
                    normalized_name=name.lower(),
                    entity_type=kind,
                    mention_count=1,
                    embedding=vector,
                    created_at=T0 + timedelta(minutes=i),
                )
            )
        session.flush()
        for name, turn in (
            ("Jon Smith", "g1-0"),
            ("Jon", "g1-1"),
            ("jon smith.", "g2-0"),
            ("boston!", "g2-0"),
        ):
            session.add(
                EntityMention(
                    entity_id=ids[name], memory_id=turns[turn], tenant_id=ctx.tenant_id, user_id=user
                )
            )
        for subject, predicate, obj, fact, source in (
            ("Jon Smith", "works_with", "Ann", "Jon Smith works with Ann", "g1-0"),
            ("jon smith.", "works_with", "Ann", "Jon Smith works with Ann", "g2-0"),
            ("Jon", "moves_to", "Boston", "Jon is moving to Boston", "g1-1"),
            ("Jon", "same_as", "Jon Smith", "Jon is Jon Smith", "g1-1"),
            ("Ann", "had_lunch_in", "boston!", "Ann had lunch in Boston", "g2-0"),
        ):
            session.add(
                Relation(
                    id=uuid.uuid5(uuid.NAMESPACE_URL, f"{user}/{subject}/{predicate}/{obj}"),
                    tenant_id=ctx.tenant_id,
                    user_id=user,
                    subject_id=ids[subject],
                    predicate=predicate,
                    object_id=ids[obj],
                    fact=fact,
                    source_message_ids=[source],
                    created_at=T0 + timedelta(minutes=len(source)),
                )
            )


def _graph_state(service, ctx, user: str) -> tuple[Any, ...]:  # type: ignore[no-untyped-def]
    """The graph keyed by names (ids differ between users)."""
    from memsvc.models import Entity, EntityMention, Relation

    with service.db.session() as session:
        entities = {
            e.id: e
            for e in session.execute(
                select(Entity).where(Entity.user_id == user, Entity.tenant_id == ctx.tenant_id)
            ).scalars()
        }
        name = {i: e.name for i, e in entities.items()}
        relations = sorted(
            (name[r.subject_id], r.predicate, name[r.object_id], r.fact, tuple(sorted(r.source_message_ids)))
            for r in session.execute(select(Relation).where(Relation.user_id == user)).scalars()
        )
        content = {m.id: m.message_id for m in _rows(service, ctx, user)}
        mentions = sorted(
            (name[e], content[m])
            for e, m in session.execute(
                select(EntityMention.entity_id, EntityMention.memory_id).where(EntityMention.user_id == user)
            ).all()
        )
        ops = sorted(
            (h.op, name.get(h.memory_id, "gone"), (h.after or {}).get("entity"))
            for h in session.execute(
                select(HistoryEvent).where(HistoryEvent.user_id == user, HistoryEvent.op == "merge_entity")
            ).scalars()
        )
    nodes = sorted((e.name, e.entity_type, tuple(e.aliases), e.mention_count) for e in entities.values())
    return tuple(nodes), tuple(relations), tuple(mentions), tuple(ops)


def test_near_duplicate_entities_merge_with_relations_repointed_and_folded(service, tenant) -> None:  # type: ignore[no-untyped-def]
    ctx, _ = tenant
    user = _user()
    _graph_story(service, ctx, user)
    dry = service.consolidate(ctx.tenant_id, user, dry_run=True).totals()
    assert dry["entities_merged"] == 3
    report = service.consolidate(ctx.tenant_id, user, run_id=(run := uuid.uuid4())).totals()
    assert report["entities_merged"] == 3 and report["relations_folded"] == 2
    nodes, relations, mentions, _ = _graph_state(service, ctx, user)
    jon = next(n for n in nodes if n[0] == "Jon Smith")
    assert {n[0] for n in nodes} >= {"Ann", "Jon Smith", "Boston"}
    assert not {"Jon", "jon smith.", "boston!"} & {n[0] for n in nodes}
    assert set(jon[2]) == {"Jon", "jon smith."} and jon[3] == 3  # aliases, summed mentions
    # Re-pointed to the survivors; the two "works with" edges fold into one with both sources; the
    # edge between two names of Jon goes.
    assert ("Jon Smith", "works_with", "Ann", "Jon Smith works with Ann", ("g1-0", "g2-0")) in relations
    assert ("Jon Smith", "moves_to", "Boston", "Jon is moving to Boston", ("g1-1",)) in relations
    assert ("Ann", "had_lunch_in", "Boston", "Ann had lunch in Boston", ("g2-0",)) in relations
    assert (
        not any(r[1] == "same_as" for r in relations)
        and len([r for r in relations if r[1] == "works_with"]) == 1
    )
    assert {("Jon Smith", "g1-0"), ("Jon Smith", "g1-1"), ("Jon Smith", "g2-0"), ("Boston", "g2-0")} <= set(
        mentions
    )
    # History: the survivor's event and one per name merged away, under the run.
    events = [e for e in service.user_history(ctx, user, run_id=run).events if e.op == "merge_entity"]
    assert len(events) == 5 and {e.actor for e in events} == {"consolidation"}
    graph = service.graph(ctx, user, entity="Jon", depth=1)
    assert [e.name for e in graph.entities if e.name.lower().startswith("jon")] == ["Jon Smith"]
    # A new mention under a merged-away name lands on the survivor.
    _add(service, ctx, user, ["Jon called me from Boston."], T0 + timedelta(days=5), "g3")
    nodes_after = _graph_state(service, ctx, user)[0]
    assert not {"Jon", "jon smith.", "boston!"} & {n[0] for n in nodes_after}
    assert service.consolidate(ctx.tenant_id, user).totals()["entities_merged"] == 0


def test_a_killed_entity_merge_run_run_again_ends_like_an_uninterrupted_run(
    service, tenant, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    from dataclasses import replace

    ctx, _ = tenant
    whole, killed = _user(), _user()
    _graph_story(service, ctx, whole)
    _graph_story(service, ctx, killed)
    service.consolidate(ctx.tenant_id, whole)
    real = consolidation_store._apply_entity_merge
    calls = {"n": 0}

    def dies_on_second(*args: Any, **kwargs: Any) -> int:
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt("killed")
        return real(*args, **kwargs)

    monkeypatch.setattr(consolidation_store, "_apply_entity_merge", dies_on_second)
    small = replace(service.consolidation_config(), batch_size=1)
    with pytest.raises(KeyboardInterrupt):
        service.consolidate(ctx.tenant_id, killed, config=small)
    monkeypatch.setattr(consolidation_store, "_apply_entity_merge", real)
    assert _graph_state(service, ctx, killed) != _graph_state(service, ctx, whole)
    service.consolidate(ctx.tenant_id, killed, config=small)
    assert _graph_state(service, ctx, killed) == _graph_state(service, ctx, whole)
    assert _state(service, ctx, killed) == _state(service, ctx, whole)


def _llm_fact(content: str, message_id: str) -> dict[str, Any]:
    return {
        "content": content,
        "kind": "fact",
        "subject": "Ann",
        "source_message_ids": [message_id],
        "valid_from": None,
        "confidence": 0.9,
        "importance": 0.6,
    }


def test_an_llm_proposes_add_update_delete_noop_applied_with_history(
    settings, database, embedder, tenant
) -> None:  # type: ignore[no-untyped-def]
    from memsvc.service import MemoryService
    from tests.unit.fake_openai import FakeOpenAI, Reply

    ctx, _ = tenant
    user = _user()
    first = {
        "facts": [
            _llm_fact("Ann likes jazz music", "b1-0"),
            _llm_fact("Ann is allergic to peanuts", "b1-0"),
            _llm_fact("Ann plays tennis on Sundays", "b1-0"),
        ]
    }
    second = {
        "facts": [
            _llm_fact("Ann likes jazz and blues", "b2-0"),
            # worded so that no rule ends the allergy first: the delete must be the model's
            _llm_fact("Ann's peanut allergy test was a false positive", "b2-0"),
            _llm_fact("Ann enjoys jazz music", "b2-0"),
            _llm_fact("Ann is learning Spanish", "b2-0"),
        ]
    }
    # The stored memories are listed by content: m1 peanuts, m2 jazz, m3 tennis.
    operations = {
        "operations": [
            {
                "fact": "f1",
                "op": "UPDATE",
                "memory": "m2",
                "content": "Ann likes jazz and blues music",
                "reason": "more",
            },
            {"fact": "f2", "op": "DELETE", "memory": "m1", "content": None, "reason": "the test was wrong"},
            {"fact": "f3", "op": "NOOP", "memory": "m2", "content": None, "reason": "same"},
            {"fact": "f4", "op": "ADD", "memory": None, "content": None, "reason": "new"},
            {
                "fact": "f4",
                "op": "DELETE",
                "memory": "m3",
                "content": None,
                "reason": "a second answer for f4",
            },
            {"fact": "f9", "op": "DELETE", "memory": "m3", "content": None, "reason": "no such fact"},
        ]
    }
    with FakeOpenAI() as server:
        llm = settings.model_copy(
            update={
                "extractor": "llm",
                "llm_base_url": server.base_url,
                "llm_model": "m",
                "llm_max_retries": 0,
            }
        )
        service = MemoryService(llm, database, embedder=embedder)
        server.script(Reply(content=first))
        _add(
            service,
            ctx,
            user,
            ["I like jazz, I'm allergic to peanuts and I play tennis on Sundays."],
            T0,
            "b1",
        )
        assert len(server.requests) == 1  # nothing stored yet to compare with
        stored = {m.content: m for m in _rows(service, ctx, user) if m.type == "semantic"}

        server.script(Reply(content=second), Reply(content=operations))
        outcome = service.run_ingest_job(
            service.submit_ingest(
                ctx,
                AddRequest(
                    user_id=user,
                    session_id="b2",
                    messages=[
                        Message(
                            role="user",
                            name="Ann",
                            id="b2-0",
                            created_at=T0 + timedelta(days=1),
                            content="Jazz and blues! The peanut test was a false positive. Learning Spanish.",
                        )
                    ],
                ),
            )
        )
        assert outcome.status == "succeeded" and outcome.result is not None
        created = outcome.result.created
        assert (created["llm_update"], created["llm_delete"], created["llm_noop"], created["llm_add"]) == (
            1,
            1,
            1,
            1,
        )
        asked = server.requests[2].body["messages"][1]["content"]
        assert "m1: Ann is allergic to peanuts" in asked and "m2: Ann likes jazz music" in asked
        assert "f4: Ann is learning Spanish" in asked

        rows = {m.content: m for m in _rows(service, ctx, user) if m.type == "semantic"}
        jazz = stored["Ann likes jazz music"]
        updated = next(m for m in rows.values() if m.id == jazz.id)
        assert updated.content == "Ann likes jazz and blues music" and updated.status == "active"
        assert sorted(service.get(ctx, jazz.id).source_message_ids) == ["b1-0", "b2-0"]
        assert [(e.op, e.actor) for e in service.history(ctx, jazz.id)][1:] == [
            ("update", "llm"),
            ("merge", "llm"),
            ("merge", "llm"),
        ]
        for merged in ("Ann likes jazz and blues", "Ann enjoys jazz music"):
            assert rows[merged].status == "archived" and rows[merged].superseded_by == jazz.id
        peanuts = stored["Ann is allergic to peanuts"]
        assert "Ann is allergic to peanuts" not in rows
        last = service.history(ctx, peanuts.id)[-1]
        assert last.op == "delete" and last.actor == "llm" and last.after["reason"] == "the test was wrong"
        assert rows["Ann's peanut allergy test was a false positive"].status == "active"
        assert rows["Ann is learning Spanish"].status == "active"
        assert rows["Ann plays tennis on Sundays"].status == "active"  # f4's second answer was ignored

        # The model's answer unusable: every new fact is added, and the result says so.
        server.script(
            Reply(content={"facts": [_llm_fact("Ann likes jazz music", "b3-0")]}), Reply(status=400)
        )
        _add(service, ctx, user, ["I really like jazz."], T0 + timedelta(days=2), "b3")
        assert (
            sum(
                m.content == "Ann likes jazz music" and m.status == "active"
                for m in _rows(service, ctx, user)
            )
            == 1
        )
        if service.uses is not None:  # the database is shared with other tests: only stop the thread
            service.uses.close()


def test_a_state_that_stopped_closes_the_facts_that_state_it_and_a_return_closes_the_stop(
    service, tenant
) -> None:  # type: ignore[no-untyped-def]
    ctx, _ = tenant
    user = _user()
    _add(
        service,
        ctx,
        user,
        [
            "I'm vegetarian.",
            "I drink coffee every morning.",
            "I mostly code in Python.",
            "I play tennis on Sundays.",
        ],
        T0,
        "s1",
    )
    _add(
        service,
        ctx,
        user,
        ["I'm no longer vegetarian.", "I don't drink coffee anymore.", "I switched from Python to Rust."],
        T0 + timedelta(days=30),
        "s2",
    )
    rows = _rows(service, ctx, user)
    stopped = _fact(rows, "Ann is no longer vegetarian")
    for old, new in (
        ("Ann is vegetarian", stopped),
        ("Ann drinks coffee every morning", _fact(rows, "Ann doesn't drink coffee anymore")),
        ("Ann mostly codes in Python", _fact(rows, "Ann switched from Python to Rust")),
    ):
        closed = _fact(rows, old)
        assert closed.status == "superseded" and closed.superseded_by == new.id, old
        assert closed.valid_to == new.valid_from
    assert _fact(rows, "Ann plays tennis on Sundays").status == "active"

    _add(service, ctx, user, ["I'm vegetarian again."], T0 + timedelta(days=60), "s3")
    rows = _rows(service, ctx, user)
    again = _fact(rows, "Ann is vegetarian again")
    assert _fact(rows, "Ann is no longer vegetarian").superseded_by == again.id
    assert _fact(rows, "Ann is vegetarian").superseded_by == stopped.id  # the stop still ended it
    assert again.status == "active"

    def first(**kw: Any) -> str:  # type: ignore[no-untyped-def]
        query = SearchRequest(query="Is Ann vegetarian?", user_id=user, types=["semantic"], **kw)
        return next(r.content for r in service.search(ctx, query) if "vegetarian" in r.content)

    assert first() == "Ann is vegetarian again"
    assert first(as_of=T0 + timedelta(days=45)) == "Ann is no longer vegetarian"
    assert first(as_of=T0 + timedelta(days=10)) == "Ann is vegetarian"


def test_back_on_what_stopped_closes_the_stop(service, tenant) -> None:  # type: ignore[no-untyped-def]
    ctx, _ = tenant
    user = _user()
    _add(service, ctx, user, ["I stopped drinking coffee."], T0, "s1")
    _add(service, ctx, user, ["I'm back on coffee."], T0 + timedelta(days=30), "s2")
    rows = _rows(service, ctx, user)
    back = _fact(rows, "Ann is back on coffee")
    assert _fact(rows, "Ann stopped drinking coffee").superseded_by == back.id
    assert back.status == "active"


def test_a_new_employer_ends_the_job_said_with_the_old_one_and_an_ended_taste_its_liking(
    service, tenant
) -> None:  # type: ignore[no-untyped-def]
    ctx, _ = tenant
    user = _user()
    said = ["I work as a barista at Blue Bottle.", "I love spicy food.", "I enjoy jazz concerts."]
    _add(service, ctx, user, said, T0, "s1")
    _add(service, ctx, user, ["I'm a nurse."], T0 + timedelta(days=1), "s2")
    later = [
        "I started a new job at Microsoft.",
        "I can't handle spicy food anymore.",
        "I cannot stand jazz concerts anymore.",
    ]
    _add(service, ctx, user, later, T0 + timedelta(days=30), "s3")
    rows = _rows(service, ctx, user)
    microsoft = _fact(rows, "Ann started a new job at Microsoft")
    for old in (
        "Ann works as a barista at Blue Bottle",
        "Ann's job: Ann works as a barista at Blue Bottle",
        "Ann's employer: Ann works at Blue Bottle",
    ):
        closed = _fact(rows, old)
        assert closed.status == "superseded" and closed.valid_to == microsoft.valid_from, old
    assert _fact(rows, "Ann is a nurse").status == "active"  # names no employer
    for old, new in (
        ("Ann loves spicy food", "Ann can't handle spicy food anymore"),
        ("Ann enjoys jazz concerts", "Ann cannot stand jazz concerts anymore"),
    ):
        assert _fact(rows, old).superseded_by == _fact(rows, new).id, old
    # Leaving by name: the employer named ends; a place left ends nothing.
    _add(
        service,
        ctx,
        user,
        ["I left Paris on Monday.", "I left Microsoft last week."],
        T0 + timedelta(days=60),
        "s4",
    )
    rows = _rows(service, ctx, user)
    assert _fact(rows, "Ann's employer: Ann works at Microsoft").status == "superseded"
    assert _fact(rows, "Ann started a new job at Microsoft").status == "superseded"
    assert [m.status for m in rows if m.type == "semantic" and "Paris" in m.content] == ["active"]
    assert _fact(rows, "Ann is a nurse").status == "active"
    # Deleting the new employer's message opens the job again.
    turn = next(m for m in rows if m.kind == "turn" and m.content == "I started a new job at Microsoft.")
    service.delete(ctx, turn.id)
    rows = _rows(service, ctx, user)
    assert _fact(rows, "Ann works as a barista at Blue Bottle").status == "active"


def test_a_value_said_again_in_other_words_is_merged_by_a_run(service, tenant) -> None:  # type: ignore[no-untyped-def]
    ctx, _ = tenant
    user = _user()
    _add(service, ctx, user, ["I live in Boston."], T0, "s1")
    _add(
        service, ctx, user, ["I live in Boston now.", "I drive a Honda Civic."], T0 + timedelta(days=30), "s2"
    )
    report = service.consolidate(ctx.tenant_id, user, run_id=uuid.uuid4())
    assert report.totals()["merged"] == 1
    rows = _rows(service, ctx, user)
    survivor, again = _fact(rows, "Ann lives in Boston"), _fact(rows, "Ann lives in Boston now")
    assert survivor.status == "active" and again.status == "archived"
    assert again.metadata_["merged_into"] == str(survivor.id)
    assert sorted(service.get(ctx, survivor.id).source_message_ids) == ["s1-0", "s2-0"]
    # A value said and stated plainly in one message stays two memories.
    assert _fact(rows, "Ann drives a Honda Civic").status == "active"
    assert _fact(rows, "Ann's car: Ann drives a Honda Civic").status == "active"


def test_a_full_name_of_a_person_known_by_first_name_is_a_person_and_merges(service, tenant) -> None:  # type: ignore[no-untyped-def]
    ctx, _ = tenant
    user = _user()
    _add(service, ctx, user, ["My friend Jon is moving to Denver."], T0, "s1")
    # Read alone, "Jon Smith" here is no person (no word around it says so); Jon is one.
    _add(
        service,
        ctx,
        user,
        ["I had lunch with Jon Smith today.", "I watched Star Wars again."],
        T0 + timedelta(days=1),
        "s2",
    )
    types = {e.name: e.type for e in service.graph(ctx, user, entity=None, depth=1).entities}
    assert types["Jon Smith"] == "person" and types["Star Wars"] != "person"
    assert service.consolidate(ctx.tenant_id, user, run_id=uuid.uuid4()).totals()["entities_merged"] == 1
    jons = [e for e in service.graph(ctx, user, entity=None, depth=1).entities if "Jon" in e.name]
    assert len(jons) == 1 and sorted(jons[0].source_message_ids) == ["s1-0", "s2-0"]


def test_a_full_name_read_before_its_person_was_known_merges_in_a_run(service, tenant) -> None:  # type: ignore[no-untyped-def]
    ctx, _ = tenant
    user = _user()
    _add(service, ctx, user, ["I had lunch with Jon Smith today."], T0, "s1")
    _add(
        service,
        ctx,
        user,
        ["My friend Jon is moving to Denver.", "Jon and Jon Smith, same guy."],
        T0 + timedelta(days=1),
        "s2",
    )
    types = {e.name: e.type for e in service.graph(ctx, user, entity=None, depth=1).entities}
    assert types["Jon Smith"] == "other" and types["Jon"] == "person"  # stored before Jon was known
    assert service.consolidate(ctx.tenant_id, user, run_id=uuid.uuid4()).totals()["entities_merged"] == 1
    jons = [e for e in service.graph(ctx, user, entity=None, depth=1).entities if "Jon" in e.name]
    assert [(e.name, e.type) for e in jons] == [("Jon Smith", "person")]
    # Three messages name him; the one that names both names counts once.
    assert sorted(jons[0].source_message_ids) == ["s1-0", "s2-0", "s2-1"] and jons[0].mention_count == 3


def test_partners_end_as_said_in_one_add_and_an_appointment_is_no_partner(service, tenant) -> None:  # type: ignore[no-untyped-def]
    ctx, _ = tenant
    user = _user()
    # One add, so that "Mia" is a name the batch knows when "Mia and I broke up" is read.
    _add(service, ctx, user, ["My girlfriend is Mia.", "Mia and I broke up."], T0, "s1")
    _add(
        service,
        ctx,
        user,
        ["My boyfriend is Tom.", "I'm seeing the doctor on Friday."],
        T0 + timedelta(days=30),
        "s2",
    )
    _add(service, ctx, user, ["I live in St. Louis."], T0, "s3")
    _add(service, ctx, user, ["I moved to St. Paul last week."], T0 + timedelta(days=40), "s4")
    rows = _rows(service, ctx, user)
    assert _fact(rows, "Ann's girlfriend is Mia").status == "superseded"
    assert _fact(rows, "Ann's partner is Tom").status == "active"
    assert not [m for m in rows if m.type == "semantic" and "partner is doctor" in m.content]
    assert _fact(rows, "Ann lives in St. Louis").status == "superseded"
    assert _fact(rows, "Ann lives in St. Paul").status == "active"


def test_a_new_partner_ends_the_partner_not_what_was_said_beside_them(service, tenant) -> None:  # type: ignore[no-untyped-def]
    ctx, _ = tenant
    user = _user()
    _add(service, ctx, user, ["My boyfriend Tom and I have a dog named Biscuit."], T0, "s1")
    _add(service, ctx, user, ["My husband Leo took the kids to the zoo."], T0 + timedelta(days=1), "s2")
    _add(service, ctx, user, ["I'm dating Priya now."], T0 + timedelta(days=60), "s3")
    rows = _rows(service, ctx, user)
    priya = _fact(rows, "Ann's partner is Priya")
    for old in ("Ann's partner is Tom", "Ann's partner is Leo"):
        assert _fact(rows, old).status == "superseded", old
    assert priya.status == "active"
    # The dog, and a day at the zoo, are not closed with the partner (the dog fact was).
    assert _fact(rows, "Ann's boyfriend Tom and Ann have a dog named Biscuit").status == "active"
    assert [m.status for m in rows if m.type == "semantic" and "zoo" in m.content] == ["active"]


def test_a_promotion_is_the_job_now(service, tenant) -> None:  # type: ignore[no-untyped-def]
    ctx, _ = tenant
    user = _user()
    _add(service, ctx, user, ["I'm a teacher at Lincoln High."], T0, "s1")
    _add(service, ctx, user, ["I got promoted to vice principal!"], T0 + timedelta(days=90), "s2")
    rows = _rows(service, ctx, user)
    assert _fact(rows, "Ann's job: Ann works as a teacher at Lincoln High").status == "superseded"
    assert _fact(rows, "Ann's job: Ann works as a vice principal").status == "active"
    assert _fact(rows, "Ann's employer: Ann works at Lincoln High").status == "active"  # still there


def test_a_new_amount_or_address_replaces_the_old(service, tenant) -> None:  # type: ignore[no-untyped-def]
    ctx, _ = tenant
    user = _user()
    _add(service, ctx, user, ["My rent is $1,650 a month.", "I live at 14 Birch Lane in Portland."], T0, "s1")
    later = [
        "Update: my landlord raised the rent to $1,820 starting April 1.",
        "I moved, I now live at 220 Elm Street in Portland.",
    ]
    _add(service, ctx, user, later, T0 + timedelta(days=50), "s2")
    rows = _rows(service, ctx, user)
    assert _fact(rows, "Ann's rent is $1,650 a month").status == "superseded"
    assert _fact(rows, "Ann lives at 14 Birch Lane in Portland").status == "superseded"
    assert _fact(rows, "Ann lives at 220 Elm Street").status == "active"
    assert [m.status for m in rows if m.type == "semantic" and "$1,820" in m.content] == ["active"]


def test_an_amount_said_without_my_or_changed_by_someone_else_replaces_the_old(service, tenant) -> None:  # type: ignore[no-untyped-def]
    ctx, _ = tenant
    user = _user()
    first = ["My rent is 1500 a month.", "My salary is 60k.", "I take 10mg of lisinopril."]
    _add(service, ctx, user, first, T0, "s1")
    later = ["Rent went up to 1650.", "Salary is now 65k.", "My doctor upped my lisinopril to 20mg."]
    _add(service, ctx, user, later, T0 + timedelta(days=30), "s2")
    rows = _rows(service, ctx, user)
    for old, new in (
        ("Ann's rent is 1500 a month", "Ann's rent went up to 1650"),
        ("Ann's salary is 60k", "Ann's salary is now 65k"),
        ("Ann takes 10mg of lisinopril", "Ann's doctor upped Ann's lisinopril to 20mg"),
    ):
        assert _fact(rows, old).superseded_by == _fact(rows, new).id, old
        assert _fact(rows, new).status == "active"


def test_an_age_a_weight_and_a_car_traded_in_replace_the_old(service, tenant) -> None:  # type: ignore[no-untyped-def]
    ctx, _ = tenant
    user = _user()
    _add(service, ctx, user, ["I'm 34.", "I weigh 80 kg.", "I drive a Honda Civic."], T0, "s1")
    later = ["I'm 35 now.", "I'm down to 76 kg now.", "I traded the Civic for a Tesla Model 3."]
    _add(service, ctx, user, later, T0 + timedelta(days=40), "s2")
    rows = _rows(service, ctx, user)
    for old, new in (
        ("Ann is 34", "Ann is 35 now"),
        ("Ann weighs 80 kg", "Ann is down to 76 kg now"),
        ("Ann drives a Honda Civic", "Ann traded the Civic for a Tesla Model 3"),
    ):
        assert _fact(rows, old).status == "superseded", old
        assert _fact(rows, new).status == "active"


def test_someone_of_the_user_s_named_alone_later_replaces_their_value(service, tenant) -> None:  # type: ignore[no-untyped-def]
    ctx, _ = tenant
    user = _user()
    _add(service, ctx, user, ["My sister Emma lives in Chicago.", "My friend Jon lives in Oslo."], T0, "s1")
    _add(service, ctx, user, ["Emma moved to Denver.", "Jo moved to Rome."], T0 + timedelta(days=20), "s2")
    rows = _rows(service, ctx, user)
    chicago = _fact(rows, "Ann's sister Emma lives in Chicago")
    assert chicago.superseded_by == _fact(rows, "Ann's sister Emma moved to Denver").id
    assert _fact(rows, "Ann's friend Jon lives in Oslo").status == "active"  # Jo is no Jon


def test_a_new_pet_joins_the_one_the_user_has(service, tenant) -> None:  # type: ignore[no-untyped-def]
    ctx, _ = tenant
    user = _user()
    _add(service, ctx, user, ["I have a cat named Miso."], T0, "s1")
    _add(service, ctx, user, ["We adopted a dog named Biscuit today!"], T0 + timedelta(days=90), "s2")
    rows = _rows(service, ctx, user)
    for pet in ("Ann's pet is called Miso", "Ann has a cat named Miso", "Ann's pet is called Biscuit"):
        assert _fact(rows, pet).status == "active", pet


def test_a_pet_named_beside_one_that_died_stays_a_pet(service, tenant) -> None:  # type: ignore[no-untyped-def]
    ctx, _ = tenant
    user = _user()
    _add(service, ctx, user, ["I have a dog named Rex and a cat named Luna."], T0, "s1")
    _add(service, ctx, user, ["Rex passed away."], T0 + timedelta(days=200), "s2")
    rows = _rows(service, ctx, user)
    assert _fact(rows, "Ann has a dog named Rex and a cat named Luna").status == "superseded"
    assert _fact(rows, "Ann's pet is called Luna").status == "active"


def test_a_turn_whose_news_is_past_but_an_end_goes_out_of_date(service, tenant) -> None:  # type: ignore[no-untyped-def]
    ctx, _ = tenant
    user = _user()
    _add(service, ctx, user, ["My dog is called Rex."], T0, "s1")
    _add(service, ctx, user, ["Rex died. We adopted a dog named Bruno."], T0 + timedelta(days=30), "s2")
    turn = next(m for m in _rows(service, ctx, user) if m.kind == "turn" and "Bruno" in m.content)
    assert turn.status == "active"  # Bruno is the dog now
    _add(
        service,
        ctx,
        user,
        ["Bruno passed away. We adopted a dog named Pepper."],
        T0 + timedelta(days=90),
        "s3",
    )
    rows = _rows(service, ctx, user)
    assert next(m for m in rows if m.id == turn.id).status == "superseded"  # "Rex died" is past news
    assert _fact(rows, "Rex died").status == "active"  # it happened
    assert _fact(rows, "Ann's pet is called Pepper").status == "active"


def test_a_taste_turned_round_ends_the_old_one_either_way(service, tenant) -> None:  # type: ignore[no-untyped-def]
    ctx, _ = tenant
    user = _user()
    _add(
        service,
        ctx,
        user,
        ["I hate running.", "I love cilantro.", "I hate it when people are late."],
        T0,
        "s1",
    )
    _add(
        service,
        ctx,
        user,
        ["I love running now.", "Honestly I hate cilantro now.", "I love it when plans work out."],
        T0 + timedelta(days=30),
        "s2",
    )
    rows = _rows(service, ctx, user)
    for old, new in (
        ("Ann hates running", "Ann loves running now"),
        ("Ann loves cilantro", "Ann hates cilantro now"),
    ):
        assert _fact(rows, old).superseded_by == _fact(rows, new).id, old
        assert _fact(rows, new).status == "active"
    assert _fact(rows, "Ann hates it when people are late").status == "active"  # names no taste


def test_a_pet_that_died_told_by_name_is_no_pet(service, tenant) -> None:  # type: ignore[no-untyped-def]
    ctx, _ = tenant
    user = _user()
    _add(service, ctx, user, ["I have a cat named Tiger."], T0, "s1")
    _add(
        service,
        ctx,
        user,
        ["Tiger passed away this morning.", "Rome died down after the festival."],
        T0 + timedelta(days=30),
        "s2",
    )
    rows = _rows(service, ctx, user)
    assert _fact(rows, "Ann's pet is called Tiger").status == "superseded"
    assert _fact(rows, "Tiger passed away on 9 February 2024").status == "active"
    # A new pet ends the petless state the death left, but the death happened: no "(until …)".
    _add(service, ctx, user, ["I adopted a puppy named Biscuit."], T0 + timedelta(days=60), "s3")
    block = service.context(ctx, ContextRequest(query="Did Ann's cat Tiger die?", user_id=user)).context
    died = next(line for line in block.splitlines() if "Tiger passed away" in line and "src:" in line)
    assert "(until" not in died


def test_what_a_relative_does_leaves_the_users_own_facts_alone(service, tenant) -> None:  # type: ignore[no-untyped-def]
    ctx, _ = tenant
    user = _user()
    _add(service, ctx, user, ["I live in Paris. I work at Renault as an engineer."], T0, "s1")
    _add(service, ctx, user, ["My sister lives in Rome and works at Fiat."], T0 + timedelta(days=1), "s2")
    rows = _rows(service, ctx, user)
    active = {m.content for m in rows if m.type == "semantic" and m.status == "active"}
    assert not any("Ann works at Fiat" in c or "employer: Ann works at Fiat" in c for c in active), active
    assert all(m.status == "active" for m in rows if m.type == "semantic" and "Renault" in m.content)


def test_a_plan_that_fell_through_is_called_off(service, tenant) -> None:  # type: ignore[no-untyped-def]
    ctx, _ = tenant
    user = _user()
    _add(service, ctx, user, ["I'm moving to Berlin in June."], T0, "s1")
    _add(
        service,
        ctx,
        user,
        ["Our Berlin move fell through, we're staying in Paris."],
        T0 + timedelta(days=20),
        "s2",
    )
    rows = _rows(service, ctx, user)
    plan = next(m for m in rows if m.kind == "plan" and "Berlin" in m.content)
    fell = _fact(rows, "Ann's Berlin move fell through, Ann and others are staying in Paris")
    assert plan.status == "superseded" and plan.superseded_by == fell.id


def test_joining_a_company_as_a_title_is_the_job_now(service, tenant) -> None:  # type: ignore[no-untyped-def]
    ctx, _ = tenant
    user = _user()
    _add(service, ctx, user, ["I work as an engineer at Google."], T0, "s1")
    _add(
        service,
        ctx,
        user,
        ["I quit my job at Google and joined Stripe as a product manager."],
        T0 + timedelta(days=30),
        "s2",
    )
    rows = _rows(service, ctx, user)
    assert _fact(rows, "Ann's job: Ann works as a product manager at Stripe").status == "active"
    assert _fact(rows, "Ann's employer: Ann works at Stripe").status == "active"
    assert _fact(rows, "Ann works as an engineer at Google").status == "superseded"


def test_an_appointment_someone_else_moved_replaces_the_old_date(service, tenant) -> None:  # type: ignore[no-untyped-def]
    ctx, _ = tenant
    user = _user()
    said = datetime(2024, 3, 10, tzinfo=UTC)
    _add(service, ctx, user, ["My dentist appointment is on the 5th."], said, "s1")
    _add(
        service,
        ctx,
        user,
        ["They moved my dentist appointment to Thursday."],
        datetime(2024, 4, 3, tzinfo=UTC),
        "s2",
    )
    rows = _rows(service, ctx, user)
    moved = _fact(rows, "They moved Ann's dentist appointment to 4 April 2024")
    old = _fact(rows, "Ann's dentist appointment is on 5 April 2024")
    assert old.status == "superseded" and old.superseded_by == moved.id and moved.status == "active"
