"""`llmhost bench`: trustworthy latency and throughput for any OpenAI-compatible endpoint.

Entry points: `llmhost.bench.runner.run_blocking(BenchConfig) -> BenchResult` (or the coroutine
`run_bench`); the result contract is `llmhost.bench.models.BenchResult`. Definitions: docs/bench.md.
This package imports nothing heavy itself, so `from llmhost.bench.models import BenchResult` stays cheap.
"""

from llmhost.bench.models import SCHEMA_VERSION, BenchResult

__all__ = ["SCHEMA_VERSION", "BenchResult"]
