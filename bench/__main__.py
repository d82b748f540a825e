"""`python -m bench [name ...]`: run the benchmarks (all by default)."""

from __future__ import annotations

import sys

from bench import (
    audit_sink,
    audit_trace,
    coder_best_of_n,
    executor_overhead,
    faust_hop,
    llm_concurrency,
    llm_throughput,
    reflex_core,
    reflex_e2e,
    replay,
    retrieval,
    sdk_throughput,
)


def llm_main() -> None:
    llm_concurrency.main()
    llm_throughput.main()


BENCHMARKS = {
    "sdk": sdk_throughput.main,
    "reflex": reflex_e2e.main,
    "reflex-core": reflex_core.main,
    "llm": llm_main,
    "llm-concurrency": llm_concurrency.main,
    "llm-latency": llm_throughput.main,
    "coder": coder_best_of_n.main,
    "coder-heldout": coder_best_of_n.heldout_main,
    "faust-hop": faust_hop.main,
    "orchestrator-machinery": faust_hop.machinery_main,
    "retrieval": retrieval.main,
    "executor": executor_overhead.main,
    "audit-sink": audit_sink.main,
    "replay": replay.main,
    "audit-trace": audit_trace.main,
}


def main(argv: list[str]) -> int:
    names = argv or list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        print(
            f"bench: unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(BENCHMARKS)}",
            file=sys.stderr,
        )
        return 2
    for name in names:
        BENCHMARKS[name]()
    return 0


sys.exit(main(sys.argv[1:]))
