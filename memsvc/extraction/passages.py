"""Passages: a long message cut into pieces that each answer on their own.

An assistant's answer runs to hundreds of words (BEAM's average ~335), and a search result that is
the whole message costs all of them in a context block, while the question needs a paragraph of
it. Ingest stores each piece as a `passage` memory whose provenance is exactly that message, so a
result costs the words that answer and still names the message it came from.

Pure: text in, passages out. Cuts fall between paragraphs, then between sentences, then (a single
sentence longer than a passage) between words; a fenced code block is split only at its lines.
Consecutive passages may share up to `overlap_words` words of whole pieces, so an answer that
straddles a cut is whole in one of them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_PARAGRAPH = re.compile(r"\n\s*\n")
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[]?[A-Z0-9#*`-])")
_FENCE = re.compile(r"^\s*```")


@dataclass(frozen=True, slots=True)
class PassageConfig:
    """How long messages are cut (chosen on BEAM's tune half: BENCHMARKS.md)."""

    # A message of more words than this becomes passages of at most about this many words.
    max_words: int = 80
    # Words of whole pieces a passage may repeat from the end of the one before it: an answer cut
    # in two is whole in one passage (BEAM tune half, session 13: R@10 0.6819 / 0.6869 / 0.6901 /
    # 0.6885 at 0 / 10 / 20 / 30 words, words@10 1,121 -> 1,097 at 20).
    overlap_words: int = 20

    def __post_init__(self) -> None:
        if self.max_words < 10:
            raise ValueError("max_words must be at least 10")
        if not 0 <= self.overlap_words < self.max_words // 2:
            raise ValueError("overlap_words must be within 0..max_words/2")


@dataclass(frozen=True, slots=True)
class Passage:
    """One piece of a message: its text and its place (index of n, first word, end word)."""

    index: int
    text: str
    start_word: int
    end_word: int  # exclusive

    @property
    def words(self) -> int:
        return self.end_word - self.start_word


def plan_passages(text: str, config: PassageConfig | None = None) -> list[Passage]:
    """The passages of `text`, in order; none when the message is short enough to stand whole (at
    most `max_words`, or one passage and a small tail).

    Every word of the message is in at least one passage, in the message's order; a passage holds
    at most `max_words` words unless it ends in a last piece too small to stand alone (under a
    quarter of `max_words`), which joins the passage before it.
    """
    config = config or PassageConfig()
    if len(text.split()) <= config.max_words:
        return []
    pieces = _pieces(text, config.max_words)
    # (first word, words) of each piece: word offsets into the whole message.
    spans: list[tuple[int, int, str]] = []
    offset = 0
    for piece, new_line in pieces:
        n = len(piece.split())
        spans.append((offset, n, ("\n" if new_line else " ") + piece))
        offset += n
    windows: list[list[int]] = []
    current: list[int] = []
    size = 0
    carried = 0  # the first pieces of `current` repeat the end of the window before it
    for i, (_start, n, _piece) in enumerate(spans):
        if len(current) > carried and size + n > config.max_words:
            windows.append(current)
            current, size = _overlap(spans, current, config.overlap_words)
            carried = len(current)
        while carried and size + n > config.max_words:  # less overlap rather than an oversize window
            size -= spans[current.pop(0)][1]
            carried -= 1
        current.append(i)
        size += n
    new = current[carried:]
    if windows and sum(spans[i][1] for i in new) < config.max_words // 4:
        windows[-1] = windows[-1] + new  # a small tail joins the passage before it
    else:
        windows.append(current)
    if len(windows) < 2:  # a message barely over the size: one passage would be the message
        return []
    out = []
    for index, window in enumerate(windows):
        first, last = spans[window[0]], spans[window[-1]]
        body = "".join(spans[i][2] for i in window)[1:]
        out.append(Passage(index, body, first[0], last[0] + last[1]))
    return out


def _overlap(spans: list[tuple[int, int, str]], window: list[int], budget: int) -> tuple[list[int], int]:
    """The last whole pieces of `window` that fit in `budget` words (the next passage's start)."""
    kept: list[int] = []
    size = 0
    for i in reversed(window[1:]):  # never the whole window again
        n = spans[i][1]
        if size + n > budget:
            break
        kept.insert(0, i)
        size += n
    return kept, size


def _pieces(text: str, max_words: int) -> list[tuple[str, bool]]:
    """The message as pieces of at most `max_words` words, each with whether it starts a new line:
    paragraphs that fit whole, else their lines (a code block, a list) or sentences, else (a single
    line or sentence longer than a passage, which has no better seam) runs of words."""
    out: list[tuple[str, bool]] = []
    for block in _blocks(text):
        if len(block.split()) <= max_words:
            out.append((block, True))
            continue
        if _FENCE.match(block) is not None:
            parts = [(line, True) for line in block.split("\n") if line.strip()]
        else:
            parts = _split_prose(block)
        for part, new_line in parts:
            words = part.split()
            if len(words) <= max_words:
                out.append((part, new_line))
                continue
            for i in range(0, len(words), max_words):
                out.append((" ".join(words[i : i + max_words]), new_line and i == 0))
    return out


def _blocks(text: str) -> list[str]:
    """Paragraphs, with a fenced code block (blank lines and all) as one block."""
    blocks: list[str] = []
    fence: list[str] | None = None
    for paragraph in _PARAGRAPH.split(text.strip()):
        paragraph = paragraph.strip("\n")
        if not paragraph.strip():
            continue
        if fence is not None:
            fence.append(paragraph)
            if paragraph.count("```") % 2 == 1:
                blocks.append("\n\n".join(fence))
                fence = None
            continue
        if paragraph.count("```") % 2 == 1:
            fence = [paragraph]
            continue
        blocks.append(paragraph)
    if fence is not None:
        blocks.append("\n\n".join(fence))
    return blocks


def _split_prose(paragraph: str) -> list[tuple[str, bool]]:
    lines = [line for line in paragraph.split("\n") if line.strip()]
    if len(lines) > 1:  # a list: its items are the pieces
        return [(line, True) for line in lines]
    sentences = [s for s in _SENTENCE.split(paragraph) if s.strip()]
    return [(sentence, i == 0) for i, sentence in enumerate(sentences)]


__all__ = ["Passage", "PassageConfig", "plan_passages"]
