"""Extraction: conversation turns in, facts, entities and relations (with provenance) out.

`make_extractor("rules")` is the default: offline, deterministic, thousands of turns a second.
`make_extractor("llm", llm_base_url=..., llm_model=...)` calls an OpenAI-compatible endpoint and
falls back to the rules when it fails.
"""

from __future__ import annotations

from memsvc.errors import InvalidInput
from memsvc.extraction.base import (
    EntityType,
    ExtractedEntity,
    ExtractedFact,
    ExtractedRelation,
    Extraction,
    Extractor,
    FactKind,
    Turn,
)
from memsvc.extraction.dates import ResolvedDate, main_date, resolve_dates, rewrite_relative, valid_from
from memsvc.extraction.llm import LLMExtractor
from memsvc.extraction.rules import RulesExtractor

__all__ = [
    "EntityType",
    "ExtractedEntity",
    "ExtractedFact",
    "ExtractedRelation",
    "Extraction",
    "Extractor",
    "FactKind",
    "LLMExtractor",
    "ResolvedDate",
    "RulesExtractor",
    "Turn",
    "main_date",
    "make_extractor",
    "resolve_dates",
    "rewrite_relative",
    "valid_from",
]


def make_extractor(
    kind: str,
    *,
    llm_base_url: str | None = None,
    llm_model: str | None = None,
    llm_api_key: str | None = None,
    llm_timeout_s: float = 30.0,
    llm_max_retries: int = 2,
) -> Extractor:
    """The extractor named by `kind`: "rules", or "llm" (which needs `llm_base_url` and `llm_model`).

    Raises `InvalidInput` for an unknown kind or an "llm" without its endpoint and model.
    """
    if kind == "rules":
        return RulesExtractor()
    if kind == "llm":
        if not llm_base_url or not llm_model:
            raise InvalidInput(
                "the llm extractor needs llm_base_url and llm_model (MEMSVC_LLM_BASE_URL, MEMSVC_LLM_MODEL)"
            )
        return LLMExtractor(
            llm_base_url,
            llm_model,
            api_key=llm_api_key,
            timeout_s=llm_timeout_s,
            max_retries=llm_max_retries,
        )
    raise InvalidInput(f"unknown extractor {kind!r}: expected 'rules' or 'llm'")
