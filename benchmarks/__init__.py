"""fastio's benchmark harness: `python -m benchmarks` (the entry of `make bench`).

Each suite is a module exposing ``run(config) -> dict`` (JSON-able results) and
``to_markdown(result) -> str``. To add one (loop micro-benchmarks, echo servers,
asyncio loops, rabbitmq), write ``benchmarks/bench_<name>.py`` and list it in `SUITES`;
`benchmarks.harness` holds the shared timing, pinning and machine-info helpers.
"""

#: Suite name -> module, in the order `python -m benchmarks` runs them.
SUITES = {
    "selectors": "benchmarks.bench_selectors",
    "loop": "benchmarks.bench_loop",
    "echo": "benchmarks.bench_echo",
    "uring": "benchmarks.bench_uring",
    "asyncio": "benchmarks.bench_asyncio",
    "rabbitmq": "benchmarks.bench_rabbitmq",
    "rabbitmq-cluster": "benchmarks.bench_rabbitmq_cluster",
    "import": "benchmarks.bench_import",
}
