"""Knowledge-update benchmark: users whose city, job, pet, car and partner change over a year of chat.

Generated and seeded. Each user chats about once a week for `--months` months: small talk, hobbies,
passing mentions of where they live and what they drive, and, in some weeks, a change ("I moved to
Boston", "I started a new job as a pilot"). Everything is ingested through the real pipeline
(supersession happens at ingest), optionally followed by a consolidation run, then three kinds of
question are asked through the same search the API uses:

- current: "Where does Ann live now?" — hit@5 when a top-5 result names the current value; stale
  when a result naming an older value ranks above the first one naming the current value.
- past: "Where did Ann live in March 2024?" with `as_of` in that month — hit@5 when a top-5 result
  names the value that held then.
- when: "When did Ann move to Boston?" — hit@5 when a top-5 result names the value and is dated
  in the month of the change.

Goals (issue 18): current ≥ 0.95, past ≥ 0.85, stale above current ≤ 5 %.

    python bench/knowledge_update.py [--users 12] [--months 12] [--seed 7] [--consolidate] [--json PATH]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import fresh_service, machine, print_table, write_json

NAMES = [
    "Ann",
    "Ben",
    "Chloe",
    "Dev",
    "Elena",
    "Farid",
    "Greta",
    "Hugo",
    "Ines",
    "Jonah",
    "Kira",
    "Liam",
    "Maya",
    "Noor",
    "Oscar",
    "Priya",
    "Quinn",
    "Rosa",
    "Sami",
    "Tara",
]
FRIENDS = ["Jo", "Max", "Lou", "Kim"]
VALUES = {
    "residence": [
        "Denver",
        "Boston",
        "Seattle",
        "Austin",
        "Chicago",
        "Portland",
        "Miami",
        "Atlanta",
        "Phoenix",
        "Nashville",
        "Toronto",
        "Dublin",
        "Lisbon",
        "Oslo",
    ],
    "job": [
        "nurse",
        "teacher",
        "pilot",
        "accountant",
        "architect",
        "chef",
        "pharmacist",
        "firefighter",
        "librarian",
        "electrician",
        "journalist",
        "dentist",
    ],
    "pet": ["Rex", "Luna", "Biscuit", "Pepper", "Milo", "Nala", "Ziggy", "Olive", "Mochi", "Bruno"],
    "car": [
        "Honda Civic",
        "Toyota Corolla",
        "Tesla Model 3",
        "Ford Focus",
        "Subaru Outback",
        "Mazda CX-5",
        "Volvo XC40",
        "Kia Soul",
    ],
    "partner": ["Alex", "Sam", "Jordan", "Robin", "Casey", "Morgan", "Taylor", "Jamie"],
}
FIRST = {
    "residence": ["I live in {v}.", "I've been living in {v} for a few years."],
    "job": ["I work as a {v}.", "I work as a {v} at the regional hospital group."],
    "pet": ["My dog is called {v}.", "My dog is called {v}, he loves the park."],
    "car": ["I drive a {v}.", "I drive a {v}, it's been reliable."],
    "partner": ["My partner is {v}.", "My partner is {v}, we met at university."],
}
CHANGE = {
    "residence": ["I moved to {v}.", "We just relocated to {v}.", "I'm now living in {v}."],
    "job": ["I started a new job as a {v}.", "I got a job as a {v}.", "I work as a {v} now."],
    # A new pet joins the old one unless that one is gone: say so, as people do.
    "pet": ["{old} passed away. We adopted a dog named {v}.", "{old} died. We adopted a new dog named {v}."],
    "car": ["I bought a {v}.", "I just bought a {v}."],
    "partner": ["I started dating {v}.", "My new partner is {v}."],
}
MENTION = {
    "residence": ["The weather in {v} has been wild this week.", "Traffic in {v} was terrible today."],
    "job": ["Work as a {v} keeps me busy.", "Long shift today, being a {v} is tiring."],
    "pet": ["{v} chewed my shoes again.", "Took {v} to the vet for a check-up."],
    "car": ["My {v} needed new tires.", "Washed the {v} this morning."],
    "partner": ["{v} and I cooked dinner together.", "{v} says hi!"],
}
QUESTION = {
    "residence": ("Where does {n} live now?", "Where did {n} live in {m}?", "When did {n} move to {v}?"),
    "job": ("What is {n}'s job now?", "What was {n}'s job in {m}?", "When did {n} start working as a {v}?"),
    "pet": (
        "What is the name of {n}'s dog now?",
        "What was {n}'s dog called in {m}?",
        "When did {n} get a dog named {v}?",
    ),
    "car": ("What car does {n} drive now?", "What car did {n} drive in {m}?", "When did {n} buy the {v}?"),
    "partner": (
        "Who is {n}'s partner now?",
        "Who was {n}'s partner in {m}?",
        "When did {n} start dating {v}?",
    ),
}
SMALL_TALK = [
    "Thanks, {f}! Appreciate it.",
    "Haha, that's awesome!",
    "Wow, congrats!",
    "Sounds good, talk soon!",
    "Good morning! How are you?",
    "That's so cool.",
    "Take care!",
    "Lol, same here.",
]
FILLER = [
    "I went hiking at the lake last weekend.",
    "I'm reading a novel about a lighthouse keeper.",
    "I've been learning to bake sourdough bread.",
    "I watched a documentary about octopuses.",
    "I signed up for a pottery class.",
    "I ran a 10k race on Sunday.",
    "I painted the kitchen yellow.",
    "I'm planning a trip to Japan next spring.",
    "I tried a new ramen place downtown.",
    "My sister visited for the weekend.",
    "I started a herb garden on the balcony.",
    "I finished a 1000-piece puzzle.",
    "I'm learning Spanish on my commute.",
]
FRIEND_LINES = ["How was your week?", "What have you been up to?", "Any news?", "Tell me everything!"]


@dataclass
class Timeline:
    name: str
    changes: dict[str, list[tuple[datetime, str]]] = field(default_factory=dict)  # attr → [(from, value)]

    def value_at(self, attribute: str, when: datetime) -> str | None:
        current = None
        for start, value in self.changes[attribute]:
            if start <= when:
                current = value
        return current


def generate(
    rng: random.Random, users: int, months: int, start: datetime
) -> list[tuple[Timeline, list[Any]]]:
    """Each user's timeline and sessions [(session_id, when, [(speaker, text)])]."""
    out = []
    weeks = months * 52 // 12
    for u in range(users):
        name = NAMES[u % len(NAMES)] + ("" if u < len(NAMES) else str(u))
        friend = rng.choice(FRIENDS)
        timeline = Timeline(name)
        statements: dict[int, list[str]] = defaultdict(list)
        for attribute, pool in VALUES.items():
            values = rng.sample(pool, 1 + rng.randint(1, 2))
            change_weeks = sorted(rng.sample(range(4, weeks - 2), len(values) - 1))
            timeline.changes[attribute] = [(start, values[0])]
            statements[rng.randint(0, 2)].append(rng.choice(FIRST[attribute]).format(v=values[0]))
            for week, (old, value) in zip(change_weeks, pairwise(values), strict=True):
                when = start + timedelta(weeks=week)
                timeline.changes[attribute].append((when, value))
                statements[week].append(rng.choice(CHANGE[attribute]).format(v=value, old=old))
        sessions = []
        for week in range(weeks):
            when = start + timedelta(weeks=week, days=rng.randint(0, 3), hours=rng.randint(9, 20))
            lines: list[tuple[str, str]] = [(friend, rng.choice(FRIEND_LINES))]
            for text in [*statements.get(week, []), *rng.sample(FILLER, 2)]:
                lines.append((name, text))
                lines.append((friend, rng.choice(SMALL_TALK).format(f=name)))
            attribute = rng.choice(list(VALUES))
            current = timeline.value_at(attribute, when - timedelta(days=1))
            if current and rng.random() < 0.7:
                lines.append((name, rng.choice(MENTION[attribute]).format(v=current)))
            lines.append((name, rng.choice(SMALL_TALK).format(f=friend)))
            sessions.append((f"w{week:03d}", when, lines))
        out.append((timeline, sessions))
    return out


def _names(text: str, values: list[str]) -> list[str]:
    low = text.lower()
    return [v for v in values if v.lower() in low]


def _show(question: str, expected: str, results: list[Any]) -> None:
    print(f"MISS {question} (expected {expected})")
    for r in results:
        when = r.valid_from or r.event_at
        print(f"   {r.score:6.2f} {r.kind:8} {r.status:10} {when:%Y-%m-%d} {r.content[:90]!r}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--users", type=int, default=12)
    parser.add_argument("--months", type=int, default=12)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--consolidate", action="store_true", help="run consolidation before asking")
    parser.add_argument("--show-misses", action="store_true", help="print the results of missed questions")
    parser.add_argument("--json")
    args = parser.parse_args()

    from memsvc.schemas import AddRequest, Message, SearchRequest

    rng = random.Random(args.seed)
    start = datetime(2024, 1, 8, tzinfo=UTC)
    data = generate(rng, args.users, args.months, start)
    service, ctx = fresh_service(search_backend="exact")
    t0 = time.perf_counter()
    n_turns = 0
    for timeline, sessions in data:
        for session_id, when, lines in sessions:
            messages = [
                Message(
                    role="user",
                    name=speaker,
                    content=text,
                    id=f"{session_id}-{i}",
                    created_at=when + timedelta(minutes=i),
                )
                for i, (speaker, text) in enumerate(lines)
            ]
            n_turns += len(messages)
            request = AddRequest(messages=messages, user_id=timeline.name, session_id=session_id)
            outcome = service.run_ingest_job(service.submit_ingest(ctx, request))
            assert outcome.status == "succeeded", outcome.error
    ingest_s = time.perf_counter() - t0
    consolidation: dict[str, Any] | None = None

    end = start + timedelta(weeks=args.months * 52 // 12)

    def evaluate() -> tuple[dict[str, float], dict[str, float]]:
        hits: dict[str, list[float]] = defaultdict(list)
        stale: list[float] = []
        by_attribute: dict[str, list[float]] = defaultdict(list)
        for timeline, _ in data:
            for attribute, changes in timeline.changes.items():
                all_values = [v for _, v in changes]
                current_q, past_q, when_q = QUESTION[attribute]
                current = changes[-1][1]
                results = service.search(
                    ctx,
                    SearchRequest(query=current_q.format(n=timeline.name), user_id=timeline.name, limit=5),
                )
                first_current = next(
                    (i for i, r in enumerate(results) if current in _names(r.content, all_values)), None
                )
                first_stale = next(
                    (i for i, r in enumerate(results) if set(_names(r.content, all_values)) - {current}), None
                )
                hit = float(first_current is not None)
                hits["current"].append(hit)
                by_attribute[attribute].append(hit)
                stale.append(
                    float(first_stale is not None and (first_current is None or first_stale < first_current))
                )
                if args.show_misses and (stale[-1] or not hit):
                    _show(current_q.format(n=timeline.name), current, results)
                # A month of each earlier value: asked as of the middle of it.
                for (begin, value), (finish, _) in zip(changes, [*changes[1:], (end, None)], strict=True):
                    middle = begin + (finish - begin) / 2
                    month = middle.strftime("%B %Y")
                    results = service.search(
                        ctx,
                        SearchRequest(
                            query=past_q.format(n=timeline.name, m=month),
                            user_id=timeline.name,
                            limit=5,
                            as_of=middle,
                        ),
                    )
                    hits["past"].append(float(any(value in _names(r.content, all_values) for r in results)))
                    if args.show_misses and not hits["past"][-1]:
                        _show(
                            past_q.format(n=timeline.name, m=month) + f" as_of {middle:%Y-%m-%d}",
                            value,
                            results,
                        )
                for begin, value in changes[1:]:
                    results = service.search(
                        ctx,
                        SearchRequest(
                            query=when_q.format(n=timeline.name, v=value), user_id=timeline.name, limit=5
                        ),
                    )
                    hits["when"].append(
                        float(
                            any(
                                value in _names(r.content, all_values)
                                and abs(((r.valid_from or r.event_at) - begin).days) <= 31
                                for r in results
                            )
                        )
                    )
        figures = {kind: sum(v) / len(v) for kind, v in hits.items()}
        figures["stale_above_current"] = sum(stale) / len(stale)
        figures["questions"] = float(len(stale) + len(hits["past"]) + len(hits["when"]))
        return figures, {a: sum(v) / len(v) for a, v in by_attribute.items()}

    figures, by_attribute = evaluate()
    after: dict[str, Any] | None = None
    if args.consolidate:
        report = service.consolidate(ctx.tenant_id)
        consolidation = report.totals() | {"seconds": round(report.seconds, 2)}
        after_figures, after_by_attribute = evaluate()
        after = {"figures": after_figures, "by_attribute": after_by_attribute}

    def table(f: dict[str, float]) -> list[list[Any]]:
        return [
            ["current hit@5", f"{f['current']:.3f}", "≥ 0.95"],
            ["past hit@5 (as_of)", f"{f['past']:.3f}", "≥ 0.85"],
            ["when hit@5", f"{f['when']:.3f}", ""],
            ["stale above current", f"{f['stale_above_current']:.3f}", "≤ 0.05"],
        ]

    print(f"{args.users} users, {n_turns} turns, ingest {ingest_s:.1f} s; consolidation: {consolidation}")
    print_table(["after ingest", "figure", "goal"], table(figures))
    print("current hit@5 by attribute:", by_attribute)
    if after is not None:
        print_table(["after consolidation", "figure", "goal"], table(after["figures"]))
    path = write_json(
        "knowledge_update",
        {
            "args": vars(args),
            "machine": machine(),
            "turns": n_turns,
            "ingest_s": ingest_s,
            "consolidation": consolidation,
            "figures": figures,
            "by_attribute": by_attribute,
            "after_consolidation": after,
        },
        args.json,
    )
    print(f"wrote {path}")
    service.close()


if __name__ == "__main__":
    main()
