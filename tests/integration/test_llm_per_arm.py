"""One endpoint per arm, against two real local LLM servers: the session's (the default) and a
second instance started here. An arm with `llm.arms.<arm>.url` talks to its own server; the
others keep the default. Which server answered is read from each server's log."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from octollm.runtime.arm import ArmContext
from octollm.settings import LLMEndpoint, LLMRouting, Settings
from octollm.supervisor import llm
from tests.conftest import free_port

pytestmark = pytest.mark.integration

MESSAGES = [{"role": "user", "content": "Say OK."}]


@pytest.fixture
def second_server(tmp_path: Path) -> Iterator[Settings]:
    settings = Settings(data_dir=tmp_path / "llm-b", llm_port=free_port())
    url = llm.start_llm(settings)
    try:
        yield settings.model_copy(update={"llm_base_url": url})
    finally:
        llm.stop_llm(settings)


def completions_served(settings: Settings) -> int:
    return llm.completions_served(settings)


async def test_an_arm_with_its_own_endpoint_talks_only_to_that_server(
    llm_settings: Settings, second_server: Settings
) -> None:
    routed = llm_settings.model_copy(
        update={"llm": LLMRouting(arms={"judge": LLMEndpoint(url=second_server.llm_base_url)})}
    )
    default_before = completions_served(llm_settings)
    second_before = completions_served(second_server)
    judge, planner = ArmContext(routed, "w-1", "judge"), ArmContext(routed, "w-1", "planner")
    try:
        assert judge.llm.base_url == second_server.llm_base_url
        assert planner.llm.base_url == llm_settings.llm_base_url
        for _ in range(2):
            done = await judge.llm.complete(MESSAGES, max_tokens=4, timeout_s=120)
            assert done.completion_tokens > 0
        await planner.llm.complete(MESSAGES, max_tokens=4, timeout_s=120)
    finally:
        await judge.aclose()
        await planner.aclose()
    assert completions_served(second_server) - second_before == 2
    assert completions_served(llm_settings) - default_before == 1
