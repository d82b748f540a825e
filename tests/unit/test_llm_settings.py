"""The LLM settings (OCTO_LLM_*) and the local server's configuration, without starting it."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from octollm.settings import LLMSchemaFormat, LLMServerKind, Settings
from octollm.supervisor import llm

pytestmark = pytest.mark.unit


def test_defaults_point_at_the_local_server() -> None:
    s = Settings()
    assert s.llm_base_url == "http://127.0.0.1:8765/v1"
    assert s.llm_is_local
    assert s.llm_model_path is None
    assert s.llm_schema_format is LLMSchemaFormat.JSON_OBJECT
    assert s.llm_prompt_usd_per_1k == 0.0 and s.llm_completion_usd_per_1k == 0.0


def test_env_vars_named_in_the_issue(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OCTO_LLM_BASE_URL", "https://api.example.test/v1/")
    monkeypatch.setenv("OCTO_LLM_MODEL", "gpt-4o-mini")
    monkeypatch.setenv("OCTO_LLM_API_KEY", "sk-secret")
    monkeypatch.setenv("OCTO_LLM_SCHEMA_FORMAT", "json_schema")
    monkeypatch.setenv("OCTO_LLM_MODEL_PATH", "")
    s = Settings()
    assert s.llm_base_url == "https://api.example.test/v1"  # trailing slash dropped
    assert not s.llm_is_local
    assert s.llm_model == "gpt-4o-mini"
    assert s.llm_api_key is not None and s.llm_api_key.get_secret_value() == "sk-secret"
    assert "sk-secret" not in repr(s)
    assert s.llm_schema_format is LLMSchemaFormat.JSON_SCHEMA
    assert s.llm_model_path is None  # empty means the default model, not "."


def test_local_port_moves_the_default_url() -> None:
    s = Settings(llm_port=9911)
    assert s.llm_base_url == "http://127.0.0.1:9911/v1" and s.llm_is_local
    assert Settings(llm_port=9911, llm_base_url="http://localhost:9911/v1").llm_is_local


def test_the_default_model_ships_in_a_package() -> None:
    path = llm.default_model_path()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    with path.open("rb") as handle:
        assert handle.read(4) == b"GGUF"


def test_server_config_binds_loopback_with_our_threads_and_context(tmp_path: Path) -> None:
    s = Settings(data_dir=tmp_path, llm_threads=2, llm_ctx=2048, llm_model="local-x")
    cfg = llm.server_config(s, 18123, Path("/models/m.gguf"))
    assert (cfg["host"], cfg["port"], cfg["interrupt_requests"]) == ("127.0.0.1", 18123, False)
    (model,) = cfg["models"]
    assert model == {
        "model": "/models/m.gguf",
        "model_alias": "local-x",
        "n_threads": 2,
        "n_threads_batch": 2,
        "n_ctx": 2048,
        "verbose": False,
    }


def test_llama_server_argv_binds_loopback_with_parallel_slots(tmp_path: Path) -> None:
    s = Settings(data_dir=tmp_path, llm_threads=2, llm_ctx=2048, llm_parallel=3, llm_model="x")
    argv = llm.llama_server_argv(s, 18123, Path("/models/m.gguf"), Path("/opt/llama-server"))
    assert argv[0] == "/opt/llama-server"
    opts = dict(zip(argv[1::2], argv[2::2], strict=False))
    assert (opts["--host"], opts["--port"], opts["--model"]) == (
        "127.0.0.1",
        "18123",
        "/models/m.gguf",
    )
    assert (opts["--alias"], opts["--threads"], opts["--threads-batch"]) == ("x", "2", "2")
    # each of the 3 slots gets llm_ctx tokens: the server splits --ctx-size between them
    assert (opts["--parallel"], opts["--ctx-size"]) == ("3", str(3 * 2048))
    assert "--cont-batching" in argv and "--no-kv-unified" in argv and "--metrics" in argv
    # the marker that tells our process from any other llama-server
    assert str(tmp_path / "llm" / "slots") in argv


def test_llama_server_is_the_default_and_a_missing_binary_is_one_clear_line(
    tmp_path: Path,
) -> None:
    assert Settings().llm_server is LLMServerKind.LLAMA_SERVER and Settings().llm_parallel == 4
    s = Settings(data_dir=tmp_path, llm_server_bin=tmp_path / "nope")
    with pytest.raises(llm.LLMServerError, match=r"OCTO_LLM_SERVER_BIN=.*nope is not a file"):
        llm.llama_server_binary(s)


def test_a_missing_model_file_is_one_clear_line(tmp_path: Path) -> None:
    s = Settings(data_dir=tmp_path, llm_model_path=tmp_path / "nope.gguf")
    with pytest.raises(llm.LLMServerError, match=r"OCTO_LLM_MODEL_PATH=.*nope\.gguf is not a file"):
        llm.model_path(s)


def test_a_taken_port_is_one_clear_line(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        s = Settings(data_dir=tmp_path, llm_port=port)
        with pytest.raises(llm.LLMServerError) as err:
            llm.start_llm(s)
    message = str(err.value)
    assert f"port 127.0.0.1:{port} is taken by another process" in message
    assert "OCTO_LLM_PORT" in message and "\n" not in message
    assert not (tmp_path / "run" / "llm-server.pid").exists()


def test_status_of_a_data_dir_without_a_server(tmp_path: Path) -> None:
    st = llm.llm_status(Settings(data_dir=tmp_path))
    assert not st.running and st.pid is None and not st.answering
    assert llm.stop_llm(Settings(data_dir=tmp_path)) is None


def test_a_remote_base_url_needs_no_local_server(tmp_path: Path) -> None:
    s = Settings(data_dir=tmp_path, llm_base_url="http://gpu-box.internal:8000/v1")
    assert llm.ensure_llm(s) is None
    assert not (tmp_path / "llm").exists()


def test_an_arm_gets_its_own_endpoint_from_nested_env_vars(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OCTO_LLM_MODEL", "small")
    monkeypatch.setenv("OCTO_LLM__ARMS__JUDGE__URL", "http://127.0.0.1:9100/v1/")
    monkeypatch.setenv("OCTO_LLM__ARMS__JUDGE__MODEL", "big")
    monkeypatch.setenv("OCTO_LLM__ARMS__JUDGE__API_KEY", "sk-judge")
    monkeypatch.setenv("OCTO_LLM__ARMS__JUDGE__SCHEMA_FORMAT", "json_schema")
    s = Settings()
    judge = s.for_arm("judge")
    assert judge.llm_base_url == "http://127.0.0.1:9100/v1"
    assert judge.llm_model == "big"
    assert judge.llm_api_key is not None and judge.llm_api_key.get_secret_value() == "sk-judge"
    assert judge.llm_schema_format is LLMSchemaFormat.JSON_SCHEMA
    assert judge.llm_timeout_s == s.llm_timeout_s  # unset: the default server's
    coder = s.for_arm("coder")
    assert (coder.llm_base_url, coder.llm_model) == (s.llm_base_url, "small")
    assert "sk-judge" not in repr(s)


def test_arm_endpoints_from_the_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "octollm.toml"
    config.write_text(
        '[llm.arms.planner]\nurl = "http://127.0.0.1:9200/v1"\nmodel = "planner-model"\n'
        '[llm.arms.coder]\nurl = "http://127.0.0.1:9300/v1"\ntimeout_s = 30\n'
    )
    monkeypatch.setenv("OCTO_CONFIG", str(config))
    s = Settings()
    assert s.for_arm("planner").llm_model == "planner-model"
    assert s.for_arm("coder").llm_base_url == "http://127.0.0.1:9300/v1"
    assert s.for_arm("coder").llm_timeout_s == 30


def test_an_endpoint_for_no_such_arm_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OCTO_LLM__ARMS__JUGDE__URL", "http://127.0.0.1:9100/v1")
    with pytest.raises(ValueError, match=r"llm\.arms names no arm jugde"):
        Settings()
