"""The test-support servers themselves: the simulated LLM server (tests/support/sim_server.py) and the TCP
proxy (tests/support/tcp_proxy.py). Other tests and the benchmark trust what these report, so check it."""

from __future__ import annotations

import json
import os
import random
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from app.dedup.rouge import rouge_l_f1
from app.dedup.tokenize import tokenize
from app.generation.candidates import TaskExample
from app.generation.parsing import parse_json_tasks, parse_numbered_tasks, tasks_json_schema
from app.generation.prompting import completion_stop_sequences, render_completion_prompt
from tests.support.sim_server import SimServer, TaskMaker, load_pool, running_sim_server
from tests.support.tcp_proxy import TcpProxy

REPO_ROOT = Path(__file__).resolve().parents[3]
POOL_SIZE = 40
EXAMPLES = [
    TaskExample(instruction="Name a fruit that is yellow.", input="", output="A banana."),
    TaskExample(instruction="Add the two numbers.", input="2 and 3", output="5"),
]


@pytest.fixture(scope="module")
def pool_path(shared_data: Path) -> Path:
    return shared_data / "bench_instructions.jsonl.gz"


@pytest.fixture(scope="module")
def record_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("sim") / "requests.jsonl"


@pytest.fixture(scope="module")
def sim(pool_path: Path, record_path: Path) -> Iterator[SimServer]:
    """Answers at once, from the first 40 real instructions (so answers overlap), recording every request."""
    with running_sim_server(pool=str(pool_path), pool_size=POOL_SIZE, record=str(record_path)) as server:
        yield server


@pytest.fixture(scope="module")
def slow_sim() -> Iterator[SimServer]:
    """Takes ~0.5 s per request (lognormal, narrow), from the built-in pool."""
    with running_sim_server(latency="lognormal", median=0.5, sigma=0.1, seed=7) as server:
        yield server


def _metric(server: SimServer, name: str) -> float:
    for line in httpx.get(server.metrics_url, trust_env=False).text.splitlines():
        if line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in /metrics")


def _completion_prompt(language: str, num_tasks: int) -> tuple[str, list[str]]:
    template = (REPO_ROOT / "prompts" / f"completion.{language}.txt").read_text(encoding="utf-8")
    prompt = render_completion_prompt(template, EXAMPLES, num_tasks)
    return prompt, list(completion_stop_sequences(len(EXAMPLES), num_tasks, language=language))


# --- sim server ---------------------------------------------------------------------------------------------


def test_chat_answers_max_items_tasks_through_the_openai_sdk(sim: SimServer, pool_path: Path) -> None:
    client = openai.OpenAI(base_url=sim.base_url, api_key="x", max_retries=0)
    response_format = {
        "type": "json_schema",
        "json_schema": {"name": "tasks", "schema": tasks_json_schema(3), "strict": True},
    }
    reply = client.chat.completions.create(
        model=sim.model,
        messages=[{"role": "user", "content": "Write 3 new tasks as JSON."}],
        response_format=response_format,  # type: ignore[arg-type]
        n=2,
    )
    pool = set(load_pool(pool_path, POOL_SIZE))
    assert [choice.index for choice in reply.choices] == [0, 1]
    for choice in reply.choices:
        assert choice.finish_reason == "stop"
        parsed = parse_json_tasks(choice.message.content or "", finish_reason="stop")
        assert len(parsed.items) == 3 and parsed.unparsed == 0
        assert all(item.instruction in pool for item in parsed.items)  # mutate_rate 0: verbatim pool lines
    assert reply.usage is not None and reply.usage.completion_tokens > 0
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
    assert [model.id for model in client.models.list()] == [sim.model]


def test_chat_reads_json_object_schema_and_defaults_to_five(sim: SimServer) -> None:
    body = {"model": sim.model, "messages": [{"role": "user", "content": "go"}]}
    json_object = {"type": "json_object", "schema": tasks_json_schema(2)}
    for response_format, expected in ((json_object, 2), (None, 5)):
        reply = httpx.post(
            f"{sim.base_url}/chat/completions",
            json={**body, "response_format": response_format},
            trust_env=False,
        ).json()
        content = reply["choices"][0]["message"]["content"]
        assert len(json.loads(content)["tasks"]) == expected


def test_completions_continue_each_prompt_n_times_in_the_numbered_format(sim: SimServer) -> None:
    """Two prompts (English and Chinese labels) x n=2: choice index = prompt_index * n + j, as vLLM numbers."""
    english, stops = _completion_prompt("en", 4)
    chinese, _ = _completion_prompt("zh", 4)  # same stop numbers; the "###\n7." one fits both languages
    body = {"model": sim.model, "prompt": [english, chinese], "n": 2, "stop": stops, "max_tokens": 900}
    reply = httpx.post(f"{sim.base_url}/completions", json=body, trust_env=False).json()
    first = len(EXAMPLES) + 1
    assert [choice["index"] for choice in reply["choices"]] == [0, 1, 2, 3]
    for choice in reply["choices"]:
        parsed = parse_numbered_tasks(
            choice["text"], finish_reason=choice["finish_reason"], first_index=first
        )
        assert len(parsed.items) == 4 and parsed.unparsed == 0, choice["text"]
        assert all(item.output.startswith("Answer: ") for item in parsed.items)
    assert "3. 输入：" in reply["choices"][2]["text"] and "3. Input:" in reply["choices"][0]["text"]
    assert reply["usage"]["prompt_tokens"] == (len(english) // 4) + (len(chinese) // 4)


def test_completions_without_stop_write_five_items(sim: SimServer) -> None:
    body = {"model": sim.model, "prompt": "A list.\n1. Instruction:", "max_tokens": 50, "ignore_eos": True}
    reply = httpx.post(f"{sim.base_url}/completions", json=body, trust_env=False).json()
    parsed = parse_numbered_tasks(reply["choices"][0]["text"], finish_reason="stop", first_index=1)
    assert len(parsed.items) == 5 and parsed.unparsed == 0
    assert reply["usage"]["completion_tokens"] == 50  # ignore_eos: the full max_tokens, as vLLM reports


def test_errors_look_like_vllm(sim: SimServer) -> None:
    client = openai.OpenAI(base_url=sim.base_url, api_key="x", max_retries=0)
    with pytest.raises(openai.NotFoundError) as caught:
        client.completions.create(model="x", prompt="hello")
    assert caught.value.body == {
        "message": "The model `x` does not exist.",
        "type": "NotFoundError",
        "param": "model",
        "code": 404,
    }
    bad = httpx.post(
        f"{sim.base_url}/chat/completions",
        content=b"{not json",
        headers={"content-type": "application/json"},
        trust_env=False,
    )
    assert bad.status_code == 400 and bad.json()["error"]["code"] == 400
    no_prompt = httpx.post(f"{sim.base_url}/completions", json={"model": sim.model}, trust_env=False)
    assert no_prompt.status_code == 400 and no_prompt.json()["error"]["param"] == "prompt"
    assert httpx.get(f"http://127.0.0.1:{sim.port}/health", trust_env=False).status_code == 200


def test_record_holds_each_request_body_with_its_path(sim: SimServer, record_path: Path) -> None:
    marker = f"record-me-{random.random()}"
    body = {"model": sim.model, "prompt": [marker], "n": 1}
    assert httpx.post(f"{sim.base_url}/completions", json=body, trust_env=False).status_code == 200
    lines = [json.loads(line) for line in record_path.read_text(encoding="utf-8").splitlines()]
    assert {"path": "/v1/completions", "body": body} in [
        {k: r.get(k) for k in ("path", "body")} for r in lines
    ]


def _post_raw(port: int, path: str, body: dict[str, object]) -> socket.socket:
    """Send a request on a connection of its own and return without waiting: requests sent this way are all
    at the server within milliseconds, whatever a client library's pool would do."""
    data = json.dumps(body).encode()
    head = f"POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
    head += f"Content-Length: {len(data)}\r\n\r\n"
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(head.encode() + data)
    return sock


def _read_status(sock: socket.socket) -> int:
    sock.settimeout(10.0)
    data = b""
    while b"\r\n" not in data:
        data += sock.recv(4096)
    return int(data.split(b" ", 2)[1])


def test_metrics_count_sequences_in_flight_and_requests_overlap(slow_sim: SimServer) -> None:
    """6 requests x n=2 at ~0.5 s each: the gauge reads 12 sequences while they run, and they run at once."""
    body = {"model": slow_sim.model, "messages": [{"role": "user", "content": "go"}], "n": 2}
    done_before = _metric(slow_sim, "vllm:request_success_total")
    started = time.monotonic()
    connections = [_post_raw(slow_sim.port, "/v1/chat/completions", body) for _ in range(6)]
    running = [_metric(slow_sim, "vllm:num_requests_running")]
    while running[-1] < 12 and time.monotonic() - started < 0.3:
        running.append(_metric(slow_sim, "vllm:num_requests_running"))
    statuses = [_read_status(conn) for conn in connections]
    elapsed = time.monotonic() - started
    for conn in connections:
        conn.close()
    assert statuses == [200] * 6
    assert running[-1] == 12, running
    assert elapsed < 1.5  # one after another would take ~3 s
    assert _metric(slow_sim, "vllm:num_requests_running") == 0
    assert _metric(slow_sim, "vllm:num_requests_waiting") == 0
    assert _metric(slow_sim, "vllm:request_success_total") == done_before + 12
    assert _metric(slow_sim, "sim:num_requests_running_max") >= 12


def test_a_client_that_gives_up_aborts_its_request(slow_sim: SimServer) -> None:
    aborted_before = _metric(slow_sim, "sim:requests_aborted_total")
    body = {"model": slow_sim.model, "prompt": ["a", "b"]}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{slow_sim.base_url}/completions", json=body, timeout=0.1, trust_env=False)
    deadline = time.monotonic() + 5
    while _metric(slow_sim, "sim:requests_aborted_total") == aborted_before and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _metric(slow_sim, "sim:requests_aborted_total") == aborted_before + 1
    assert _metric(slow_sim, "vllm:num_requests_running") == 0


def test_mutations_stay_near_duplicates_and_draws_are_seeded(pool_path: Path) -> None:
    pool = load_pool(pool_path, POOL_SIZE)
    maker = TaskMaker(pool, mutate_rate=1.0)
    first = maker.tasks(random.Random("7:items:0"), 20)
    assert first == maker.tasks(random.Random("7:items:0"), 20)
    changed = [task for task in first if task["instruction"] not in pool]
    assert changed  # every task was mutated (a swap of two equal words aside)
    for task in changed:
        best = max(rouge_l_f1(tokenize(task["instruction"]), tokenize(original)) for original in pool)
        assert best >= 0.7, task["instruction"]


def test_pool_keeps_the_first_usable_lines(tmp_path: Path) -> None:
    """Too short, too long, or a line a numbered list would misread: skipped, and not counted in pool_size."""
    lines = [
        {"instruction": "Too short."},
        {"instruction": "Summarize this text.\nInput: a text"},  # a label line inside the instruction
        {"instruction": " ".join(["word"] * 151)},
        {"instruction": "Name three rivers in Europe."},
        {"source": "no instruction"},
        {"instruction": "Translate the sentence into French."},
        {"instruction": "Give one synonym of happy."},
    ]
    path = tmp_path / "pool.jsonl"
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n", encoding="utf-8")
    assert load_pool(path, 2) == ["Name three rivers in Europe.", "Translate the sentence into French."]
    assert len(load_pool(path)) == 3


# --- TCP proxy ----------------------------------------------------------------------------------------------


def _connection_closed(sock: socket.socket) -> bool:
    """True when the peer closed or reset the connection (recv sees EOF or an error within 2 s)."""
    sock.settimeout(2.0)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def _http_get(sock: socket.socket, path: str) -> bytes:
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: test\r\n\r\n".encode())
    sock.settimeout(5.0)
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(4096)
    return data


def test_proxy_forwards_keep_alive_http(sim: SimServer) -> None:
    with TcpProxy("127.0.0.1", sim.port) as proxy:
        with httpx.Client(base_url=proxy.url_for("/v1"), trust_env=False) as client:
            for _ in range(3):
                assert client.get("/models").json()["data"][0]["id"] == sim.model
        assert proxy.connections_total == 1  # one keep-alive connection carried all three
        assert proxy.bytes_forwarded > 0


def test_cut_resets_open_connections_refuses_new_ones_and_restore_reuses_the_port(sim: SimServer) -> None:
    with TcpProxy("127.0.0.1", sim.port) as proxy:
        port = proxy.port
        open_conn = socket.create_connection(("127.0.0.1", port))
        assert _http_get(open_conn, "/health").startswith(b"HTTP/1.1 200")

        proxy.cut()
        assert proxy.is_cut and proxy.cut_events == 1
        assert _connection_closed(open_conn)
        open_conn.close()
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=2.0)
        with pytest.raises(httpx.ConnectError):
            httpx.get(proxy.url_for("/health"), trust_env=False)
        proxy.cut()  # already cut: nothing happens
        assert proxy.cut_events == 1

        proxy.restore()
        assert proxy.port == port and not proxy.is_cut
        assert httpx.get(f"http://127.0.0.1:{port}/health", trust_env=False).status_code == 200
        assert proxy.connections_total == 2  # the refused attempts never reached it


def test_cut_breaks_a_request_in_flight(slow_sim: SimServer) -> None:
    """The mid-job case: the server stops answering while a request waits on it."""
    with TcpProxy("127.0.0.1", slow_sim.port) as proxy:
        outcome: list[BaseException | int] = []

        def request() -> None:
            body = {"model": slow_sim.model, "prompt": "x"}
            try:
                outcome.append(
                    httpx.post(proxy.url_for("/v1/completions"), json=body, trust_env=False).status_code
                )
            except httpx.TransportError as exc:
                outcome.append(exc)

        thread = threading.Thread(target=request)
        thread.start()
        deadline = time.monotonic() + 5
        while proxy.active_connections == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        proxy.cut()
        thread.join(timeout=10)
        assert len(outcome) == 1 and isinstance(outcome[0], httpx.RemoteProtocolError | httpx.ReadError)


class _UpperCaseServer:
    """Reads a connection until the client half-closes it, then answers the data upper-cased and closes."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._serve_one, daemon=True)
        self.thread.start()

    def _serve_one(self) -> None:
        conn, _ = self.listener.accept()
        with conn:
            chunks = []
            while chunk := conn.recv(65536):
                chunks.append(chunk)
            conn.sendall(b"".join(chunks).upper())
        self.listener.close()


def test_proxy_passes_half_close_and_large_payloads_on() -> None:
    upstream = _UpperCaseServer()
    payload = random.Random(1).randbytes(4 * 1024 * 1024)
    with TcpProxy("127.0.0.1", upstream.port) as proxy:
        with socket.create_connection(("127.0.0.1", proxy.port)) as conn:
            conn.sendall(payload)
            conn.shutdown(socket.SHUT_WR)  # our EOF must reach the server, which then answers
            conn.settimeout(10)
            received = bytearray()
            while chunk := conn.recv(65536):
                received += chunk
        assert bytes(received) == payload.upper()
    upstream.thread.join(timeout=5)


def test_a_down_server_resets_the_client_connection() -> None:
    with socket.create_server(("127.0.0.1", 0)) as placeholder:
        dead_port = placeholder.getsockname()[1]  # closed on leaving the block: nothing listens there
    with TcpProxy("127.0.0.1", dead_port) as proxy:
        with socket.create_connection(("127.0.0.1", proxy.port)) as conn:
            assert _connection_closed(conn)


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="counts file descriptors in /proc")
def test_stop_leaks_no_socket_or_thread(sim: SimServer) -> None:
    def open_fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    before = open_fds()
    proxy = TcpProxy("127.0.0.1", sim.port).start()
    clients = [socket.create_connection(("127.0.0.1", proxy.port)) for _ in range(3)]
    assert _http_get(clients[0], "/health").startswith(b"HTTP/1.1 200")
    proxy.cut()
    proxy.restore()
    clients.append(socket.create_connection(("127.0.0.1", proxy.port)))
    assert _http_get(clients[-1], "/health").startswith(b"HTTP/1.1 200")
    proxy.stop()
    proxy.stop()  # idempotent
    for client in clients:
        assert _connection_closed(client)
        client.close()
    assert open_fds() == before
    assert not any(thread.name.startswith("tcp-proxy-") for thread in threading.enumerate())
    with pytest.raises(RuntimeError):
        proxy.cut()
