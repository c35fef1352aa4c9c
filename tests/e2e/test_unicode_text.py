"""Unicode text through real HTTP: decomposed (NFD) text is stored as NFC and is the same message as
its NFC send; text with nothing visible is a 422 like blank text."""

from __future__ import annotations

import unicodedata

import httpx
import pytest

from memsvc.client import MemoryClient

NFC = "Renée and I had coffee at Café Zürich in Malmö."
NFD = unicodedata.normalize("NFD", NFC)


def _message(content: str, name: str = "Renée") -> dict[str, str]:
    # No client id: the server's id, a hash of what was said, is what must recognise the re-send.
    return {
        "role": "user",
        "name": unicodedata.normalize("NFD", name) if content == NFD else name,
        "content": content,
        "created_at": "2024-03-01T10:00:00Z",
    }


def test_nfd_text_is_stored_as_nfc_and_is_the_same_message_as_its_nfc_send(client: MemoryClient) -> None:
    assert NFD != NFC
    first = client.add([_message(NFD)], "unicode", session_id="s", wait=True)
    assert first.status == "succeeded" and first.result, first.error
    turns = [m for m in client.list("unicode", type="episodic").items if m.kind == "turn"]
    assert [t.content for t in turns] == [NFC]
    # Read as NFD, the extractor cut these names at the combining marks: "Rene", "Zu", "Malmo".
    assert {"Renée", "Café Zürich", "Malmö"} <= {e.name for e in client.graph("unicode").entities}
    # An entity asked for decomposed is found by its stored (NFC) name.
    near = client.graph("unicode", entity=unicodedata.normalize("NFD", "Malmö"), depth=0)
    assert [e.name for e in near.entities] == ["Malmö"]

    again = client.add([_message(NFC)], "unicode", session_id="s", wait=True)
    assert again.result and again.result.duplicates == 1 and not again.result.memory_ids
    turns = [m for m in client.list("unicode", type="episodic").items if m.kind == "turn"]
    assert len(turns) == 1


@pytest.mark.parametrize("invisible", ["\u200b", "\u200c\u200d", "\u2060", "\ufeff", " \u200b "])
def test_content_with_nothing_visible_is_422_naming_the_field(
    live_server: str, tenant, invisible: str
) -> None:
    key = {"Authorization": f"Bearer {tenant[1]}"}
    body = {"user_id": "u", "wait": True, "messages": [{"role": "user", "content": invisible}]}
    response = httpx.post(f"{live_server}/v1/memories", json=body, headers=key)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert "content" in str(problem) and "blank" in str(problem), problem
    assert httpx.get(f"{live_server}/v1/memories", params={"user_id": "u"}, headers=key).json()["items"] == []


def test_the_sdk_sends_a_lone_surrogate_for_the_server_to_name_and_refuses_nan(client: MemoryClient) -> None:
    from memsvc.client import BadRequest

    with pytest.raises(BadRequest) as refused:  # was a UnicodeEncodeError from httpx
        client.add([{"role": "user", "content": "bad \ud800 text"}], "unicode-sdk")
    assert refused.value.status_code == 422 and "content" in str(refused.value)
    with pytest.raises(BadRequest) as nan:
        client.add([{"role": "user", "content": "fine"}], "unicode-sdk", metadata={"x": float("nan")})
    assert nan.value.status_code == 422 and "nan" in str(nan.value).lower()
    assert client.list("unicode-sdk").items == []
