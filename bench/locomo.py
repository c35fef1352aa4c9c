"""LoCoMo alone: `bench/retrieval.py --sets locomo`, kept for `make bench` and old commands.

The metric, the baselines and the split live in bench/retrieval.py; this runs all eight
conversations (both halves) unless told `--half`.

    python bench/locomo.py [--half tune|report|all] [--json PATH]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.retrieval import CATEGORIES, KS, Scores, evidence_turns, main, result_words

__all__ = ["CATEGORIES", "KS", "Scores", "evidence_turns", "result_words"]

if __name__ == "__main__":
    argv = sys.argv[1:]
    if "--half" not in argv:
        argv += ["--half", "all"]
    main(["--sets", "locomo", *argv])
