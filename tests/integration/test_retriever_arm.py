"""The retriever arm on the real broker, fed by the real CLI: `octollm ingest` fills the
embedded store, `octollm worker arm retriever` answers ArmRequests with passages and sources,
and while the worker owns the store the CLI says so instead of fighting over it."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from octollm.contracts.models import ArmResult, ArmStatus
from octollm.settings import PROJECT_ROOT, Settings
from octollm.topics import ARM_RESULTS
from tests.conftest import OCTOLLM, cli_env
from tests.integration.test_arm_runtime import (
    create_topics,
    read_until,
    request,
    send_requests,
    stop,
)

pytestmark = pytest.mark.integration


def octollm(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [OCTOLLM, *args], env=env, capture_output=True, text=True, timeout=180, cwd=PROJECT_ROOT
    )


def test_retriever_worker_answers_with_passages_and_sources(
    isolated: Settings, tmp_path: Path
) -> None:
    create_topics(isolated)
    # Its own engine dir: the session's data dir is shared by every test.
    env = cli_env(isolated, OCTO_RETRIEVAL_DATA_DIR=str(tmp_path / "qdrant"))
    done = octollm(env, "ingest", "examples/corpus")
    assert done.returncode == 0, done.stderr
    assert "ingested 13 file(s)" in done.stdout

    reqs = {
        "rate": request("Which component throttles a tenant sending too many tasks?", "retriever"),
        "filtered": request(
            "partitions", "retriever", inputs={"k": "2", "filters": '{"kind": "md"}'}
        ),
        "bad": request("anything", "retriever", inputs={"k": "zero"}),
    }
    send_requests(isolated, list(reqs.values()), arm="retriever")
    log_path = tmp_path / "worker.log"
    with open(log_path, "wb") as log:
        worker = subprocess.Popen(
            [OCTOLLM, "worker", "arm", "retriever"], env=env, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True, cwd=PROJECT_ROOT,
        )  # fmt: skip
    try:
        results = read_until(isolated, ARM_RESULTS, lambda got: len(got) >= len(reqs), settle=0)
        # While the worker owns the embedded store, the CLI refuses with a clear message.
        busy = octollm(env, "search", "kafka")
        assert busy.returncode == 1
        assert "held by another process" in busy.stderr
    finally:
        stop(worker)
    by_id = {r.request_id: r for r in results if isinstance(r, ArmResult)}
    assert len(by_id) == len(reqs), log_path.read_text()[-3000:]

    rate = by_id[reqs["rate"].request_id]
    assert rate.status is ArmStatus.OK, rate.reason
    body = json.loads(rate.output)
    assert "examples/corpus/reflex-layer.md" in {p["source"] for p in body["passages"]}
    assert all(set(p) >= {"text", "source", "score"} for p in body["passages"])
    assert len(body["passages"]) == 5
    assert rate.artifacts["passages_md"].startswith(f"[1] {body['passages'][0]['source']}")

    filtered = json.loads(by_id[reqs["filtered"].request_id].output)["passages"]
    assert len(filtered) == 2 and filtered[0]["source"] == "examples/corpus/kafka-topics.md"
    assert by_id[reqs["bad"].request_id].status is ArmStatus.REJECTED

    # Once the worker is gone the CLI owns the store again.
    free = octollm(env, "search", "kafka partition", "--json", "--k", "1")
    assert free.returncode == 0, free.stderr
    assert json.loads(free.stdout)["passages"][0]["source"] == "examples/corpus/kafka-topics.md"
