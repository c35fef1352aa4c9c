"""Which questions are about what was said (no instruction governs them) and which are requests for
work (the user's stated preferences govern them too): `search.RECALL_QUERY`, `search.REQUEST_QUERY`."""

from __future__ import annotations

import pytest

from memsvc.search import RECALL_QUERY, REQUEST_QUERY


@pytest.mark.parametrize(
    "question",
    [
        "What did you recommend for weaving keywords into my resume?",
        "How did you suggest I handle the rate limit?",
        "Have I ever used Redis in this project?",
        "Did we settle on a deadline for the first sprint?",
        "Which libraries did I say I wanted to avoid?",
        "Can you list the order in which I brought up different aspects of my app?",
        "Can you give me a summary of how my budget tracker project has progressed?",
        "What topics came up in our conversations about the move?",
        "How many days off did I take across my sessions?",
        "What was my score on the first quiz?",
        "When did I finish the wireframe?",
        "Do you remember what you told me about my essay?",
        "Remind me which library you recommended for storage.",
        "What was the essay structure you recommended?",
        "Tell me what I said about my sister.",
        "I'd like to know what we discussed about my move.",
        "Could you tell me what Ann likes?",
        "Can you tell me where my sister lives?",
        "Could you tell me whether Priya is vegetarian?",
    ],
)
def test_questions_about_what_was_said_are_recall(question: str) -> None:
    assert RECALL_QUERY.search(question), question


@pytest.mark.parametrize(
    "request_",
    [
        "Can you walk me through how to find the probability of drawing a red card?",
        "How should I format my resume for a UK job?",
        "What would you suggest for caching my API responses?",
        "I'm planning to add user login to my Flask app. Which libraries should I use?",
        "As I mentioned, I need a loading spinner. How do I add one?",
        "How should I apply the approach you suggested to my resume?",
        "Can you summarize these three methods for me?",
        "What is the best way to organize my past jobs?",
        "Help me set up a CI pipeline.",
        "Have you got any tips for my essay introduction?",
        "I need a recipe for tonight.",
        "What's a good recipe for tonight?",
        "Any ideas for dinner tonight?",
        "Should I take the job at Klarna?",
        "Which laptop should I buy?",
        "Is it worth buying an e-bike for my commute?",
        "Draft an email to my landlord about the boiler.",
        "Rewrite my bio in a more formal tone.",
        "Translate my bio into Spanish.",
        "Hi! Explain how carbon pricing works.",
        "Please, explain how tides work.",
        "Could you tell me what I should cook tonight?",
        "Can you tell me what the best way to learn Python is?",
        "Tell me what is a good name for a cat.",
    ],
)
def test_requests_for_work_are_not_recall(request_: str) -> None:
    assert not RECALL_QUERY.search(request_), request_
    assert REQUEST_QUERY.search(request_), request_


def test_a_question_about_history_is_not_about_the_conversation() -> None:
    assert not RECALL_QUERY.search("What were the main causes of the First World War?")


@pytest.mark.parametrize(
    "question",
    [
        "What does Melanie like to paint?",
        "When did Caroline go to the LGBTQ support group?",
        "Where is Jon from?",
    ],
)
def test_questions_about_someone_are_no_requests(question: str) -> None:
    assert not REQUEST_QUERY.search(question), question
