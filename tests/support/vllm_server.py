"""Start a REAL vLLM OpenAI-compatible server on the CPU, for integration tests.

vLLM runs from its own virtualenv (scripts/vllm_env.sh builds it once, outside the checkout, and prints its
python), serving a plain Hugging Face checkpoint directory (app/llm/checkpoint.py makes one from the embedded
GGUF). The server is fully offline, LoRA-enabled with runtime adapter loading (POST /v1/load_lora_adapter),
and runs in its own process group: vLLM forks an engine-core process, and stopping the group stops both.

    with running_vllm_server(checkpoint_dir, "SmolLM2-135M-Instruct") as server:
        httpx.post(f"{server.base_url}/completions", json={"model": server.model, "prompt": ["a", "b"]})

Startup on 2 CPU cores takes minutes (model load, CPU kernel warm-up), so share one server per test session.
"""

from __future__ import annotations

import functools
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

from tests.support.processes import wait_until_ready

REPO_ROOT = Path(__file__).resolve().parents[2]
ENV_SCRIPT = REPO_ROOT / "scripts" / "vllm_env.sh"

# Offline and quiet: no hub look-ups, no usage reports; runtime LoRA loading for fine-tuned adapters.
SERVER_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "VLLM_NO_USAGE_STATS": "1",
    "DO_NOT_TRACK": "1",
    "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True",
}
# KV cache per token for SmolLM2-135M: 30 layers x 3 KV heads x 64 dims x (K, V) = 11,520 values, so 1 GiB holds
# 46,592 tokens in bfloat16 (vLLM's log) and 23,296 in float32: 64 sequences of ~400 tokens need 2 GiB in float32.
KV_CACHE_GIB = {"bfloat16": 1, "float16": 1, "float32": 2}
# Adapters up to rank 64, two resident at a time (rank > 64 is refused at load time with HTTP 500).
LORA_ARGS = ["--enable-lora", "--max-lora-rank", "64", "--max-loras", "2"]
STOP_TIMEOUT = 30.0


class VLLMServer(NamedTuple):
    """Where the server listens."""

    base_url: str  # the API root, ending in /v1
    model: str  # the served model name
    pid: int  # the server process, also its process group id
    metrics_url: str  # Prometheus text format: vllm:num_requests_running, vllm:num_requests_waiting, ...
    log_path: Path  # the server's stdout+stderr, while it runs


@functools.cache
def vllm_python() -> Path:
    """The vLLM venv's python: scripts/vllm_env.sh creates the venv on first use (minutes), then reuses it."""
    result = subprocess.run(
        ["bash", str(ENV_SCRIPT)], cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=None, text=True, check=False
    )
    lines = result.stdout.strip().splitlines()
    if result.returncode != 0 or not lines:
        raise RuntimeError(f"{ENV_SCRIPT.name} failed (exit {result.returncode}); its stderr says why")
    return Path(lines[-1])


def free_port() -> int:
    """A port nothing listens on right now (the kernel picks it, so collisions are unlikely)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_command(
    python: str | Path,
    model_dir: str | Path,
    served_model_name: str,
    port: int,
    *,
    dtype: str = "float32",
    enable_lora: bool = True,
    extra_args: Sequence[str] = (),
) -> list[str]:
    cmd = [str(python), "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir)]
    cmd += ["--served-model-name", served_model_name, "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--dtype", dtype, "--max-model-len", "2048"]
    return cmd + (LORA_ARGS if enable_lora else []) + list(extra_args)


@contextmanager
def running_vllm_server(
    model_dir: str | Path,
    served_model_name: str,
    *,
    port: int | None = None,
    enable_lora: bool = True,
    startup_timeout: float = 900.0,
    dtype: str = "float32",
    python: str | Path | None = None,
    extra_args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
) -> Iterator[VLLMServer]:
    """Start vLLM, wait until GET /health is 200, yield where it is, and stop its process group afterwards.

    `dtype`: "float32" by default: on CPUs without AVX-512 BF16 (these machines: AVX2 only) it prefills about 4x
    faster than "bfloat16" (the weights are upcast; same model). `python` defaults to vllm_python(); `extra_args` are
    appended to the server's command line (a repeated flag overrides); `env` overrides SERVER_ENV and the KV
    cache size (VLLM_CPU_KVCACHE_SPACE, GiB, chosen per dtype). If the server exits or is not ready in time,
    the error carries the tail of its log.
    """
    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise FileNotFoundError(f"not a Hugging Face checkpoint directory (no config.json): {model_dir}")
    port = port or free_port()
    cmd = server_command(
        python or vllm_python(),
        model_dir,
        served_model_name,
        port,
        dtype=dtype,
        enable_lora=enable_lora,
        extra_args=extra_args,
    )
    # Sprout's PYTHONPATH must not leak into vLLM's interpreter (the repo's `app`/`tests` would shadow names).
    child_env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    child_env.update(SERVER_ENV)
    child_env["VLLM_CPU_KVCACHE_SPACE"] = str(KV_CACHE_GIB.get(dtype, 2))
    child_env.update(env or {})
    root = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="sprout-vllm-") as workdir:
        log_path = Path(workdir) / "server.log"
        with log_path.open("w+b") as log:
            process = subprocess.Popen(
                cmd,
                cwd=workdir,
                env=child_env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, so the engine-core child stops with it
            )
            try:
                wait_until_ready(
                    process, f"{root}/health", timeout=startup_timeout, log=log, name="vLLM server", poll=1.0
                )
                yield VLLMServer(f"{root}/v1", served_model_name, process.pid, f"{root}/metrics", log_path)
            finally:
                stop_process_group(process)


def stop_process_group(process: subprocess.Popen[bytes], timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM the process group led by `process`, SIGKILL it after `timeout`, and reap the leader.

    Only that group is signalled: it was created for this server (start_new_session), and its id stays
    reserved while any member lives, so no unrelated process can be hit."""
    pgid = process.pid
    _signal_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        pass
    while _group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if _group_alive(pgid):
        _signal_group(pgid, signal.SIGKILL)
    process.wait(timeout=timeout)
    kill_deadline = time.monotonic() + timeout
    while _group_alive(pgid) and time.monotonic() < kill_deadline:
        time.sleep(0.2)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _main(argv: list[str] | None = None) -> None:
    """Manual use: `python tests/support/vllm_server.py DIR [NAME] [--dtype D] [--no-lora] [-- VLLM_ARGS]`
    serves until Ctrl-C or SIGTERM, then stops the server (and its engine process)."""
    import argparse

    parser = argparse.ArgumentParser(description="Run a vLLM server the way the tests do.")
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("name", nargs="?", help="served model name (default: the directory's name)")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--no-lora", action="store_true")
    argv = sys.argv[1:] if argv is None else argv
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []  # after --: more vLLM arguments
    args = parser.parse_args(argv[: argv.index("--")] if "--" in argv else argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # unwinds through the context manager's cleanup
    started = time.monotonic()
    with running_vllm_server(
        args.model_dir,
        args.name or args.model_dir.name,
        dtype=args.dtype,
        enable_lora=not args.no_lora,
        extra_args=extra,
    ) as srv:
        print(f"ready after {time.monotonic() - started:.1f} s: {srv}", flush=True)
        try:
            signal.pause()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    _main()
