"""A simulated OpenAI-compatible LLM server (vLLM's shapes), in its own process, for tests and benchmarks.

It answers Sprout's prompts with tasks drawn from a pool of real instructions, so that jobs sharing a small
pool really receive near-duplicates of each other, and it answers as slowly (lognormal) or as fast (zero) as
asked, so a benchmark can compare clients, or find Sprout's own ceiling, against a server that is never the
bottleneck. It is a bare ASGI app under uvicorn: no framework, no request validation layer, since at 1,000+
requests/s on two cores those cost more than the answers do.

    python -m tests.support.sim_server --port 8000 --pool PATH.jsonl.gz --pool-size 40 --latency zero

Endpoints: GET /health, GET /v1/models, GET /metrics (vllm:num_requests_running / _waiting and token
counters, in sequences = prompts x n, like vLLM), POST /v1/chat/completions (the reply is {"tasks": [...]} as
JSON text, as many tasks as the request's json schema's maxItems), POST /v1/completions (each prompt is a
numbered list ending "K. Instruction:"; the reply continues it in the Alpaca format, up to the item the stop
strings name). Errors look like vLLM's ({"error": {"message", "type", "param", "code"}}).

From Python (tests, benchmarks): `with running_sim_server(pool_size=40, latency="zero") as sim: sim.base_url`.
Only the process started there is stopped afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import itertools
import json
import math
import os
import random
import re
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, MutableMapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path
from typing import IO, Any, Literal, NamedTuple

REPO_ROOT = Path(__file__).resolve().parents[2]
LatencyKind = Literal["zero", "lognormal"]

DEFAULT_TASKS = 5  # tasks per answer when the request does not say how many
MAX_TASKS = 100  # a runaway maxItems or stop number must not make one answer huge
MAX_N = 128
MIN_WORDS, MAX_WORDS = 3, 150  # the instruction length Sprout's filters accept (in words)

ASGIScope = MutableMapping[str, Any]
ASGIMessage = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[ASGIMessage]]
Send = Callable[[ASGIMessage], Awaitable[None]]


@dataclass(frozen=True)
class SimOptions:
    """The server's settings; each field is also a command-line flag (pool_size -> --pool-size)."""

    served_model_name: str = "sim"
    pool: str | None = None  # JSONL or JSONL.gz of {"instruction": ...}; None: a small built-in pool
    pool_size: int | None = None  # use only the first K usable pool lines
    mutate_rate: float = 0.0  # chance that a task's instruction gets one word swapped or replaced
    rewrite_rate: float = 0.0  # share of an instruction's words replaced by pool words: new tasks, real shape
    seed: int = 0
    latency: LatencyKind = "zero"
    median: float = 1.0  # lognormal latency: median seconds per request
    sigma: float = 0.6  # lognormal latency: sigma of the underlying normal
    record: str | None = None  # append every generation request's body here, one JSON line each
    api_key: str | None = None  # when set, /v1/* needs "Authorization: Bearer <key>"

    def to_args(self) -> list[str]:
        """The command-line flags that reproduce these options (defaults left out)."""
        args: list[str] = []
        for item in fields(self):
            value = getattr(self, item.name)
            if value is not None and value != item.default:
                args += [f"--{item.name.replace('_', '-')}", str(value)]
        return args


# --- the pool and the tasks made from it --------------------------------------------------------------------

# Built-in pool (no --pool): instructions made from a few templates, so that near-duplicates abound as they do
# in real generated data. Topics avoid Sprout's blocklist (image, file, map, ...).
_TEMPLATES = (
    "Give three practical tips for {}.",
    "Explain to a beginner why {} matters.",
    "Write a short, friendly email asking a colleague for advice on {}.",
    "Summarize the main difficulties of {} in two sentences.",
    "List five common mistakes people make when {}.",
    "Describe a typical first week of {} for someone who has never tried it.",
)
_TOPICS = (
    "saving money on groceries",
    "learning a second language",
    "training for a first marathon",
    "starting a vegetable garden",
    "preparing for a job interview",
    "cooking rice on a stove",
    "writing a cover letter",
    "keeping a reading habit",
    "planning a weekend trip",
    "studying for a history exam",
)
BUILTIN_POOL: tuple[str, ...] = tuple(t.format(topic) for topic in _TOPICS for t in _TEMPLATES)

_SHORT_INPUTS = (
    "The meeting has been moved from Monday to Thursday afternoon.",
    "apples, bread, milk, rice, eggs",
    "I have 12 euros and a sandwich costs 3 euros.",
    "The quick brown fox jumps over the lazy dog.",
    "Our team finished the project two weeks ahead of schedule.",
    "Paris, Tokyo, Nairobi, Lima",
)
_INPUT_RATE = 0.3  # share of tasks that get an input

# Text that would change how Sprout's numbered-list parser splits an answer: a line that looks like a field
# label, a "###" separator line, a special token. Deliberately broader than the parser, and checked on the
# instruction as it is sent (after any mutation), so every completions answer parses back to what was sent.
_LABEL_LINE_RE = re.compile(
    r"^[ \t\-*>#_]*(?:\d+[ \t]*[.．、)]?)?[ \t*_]*(?:instructions?|inputs?|outputs?|指令|输入|输出)[ \t*_]*[:：]",
    re.IGNORECASE | re.MULTILINE,
)
_SEPARATOR_LINE_RE = re.compile(r"^\s*#{3,}\s*$", re.MULTILINE)
_SPECIAL_TOKEN_RE = re.compile(r"<\|[A-Za-z0-9_]+\|>|</s>")
_WORD_RE = re.compile(r"\S+")
_PLAIN_WORD_RE = re.compile(r"[^\W_]+")
_VOCAB_RE = re.compile(r"[A-Za-z]{3,12}")


def list_safe(instruction: str) -> bool:
    """True when the instruction can sit in a numbered-list answer without being misread."""
    return not (
        "\r" in instruction
        or _LABEL_LINE_RE.search(instruction)
        or _SEPARATOR_LINE_RE.search(instruction)
        or _SPECIAL_TOKEN_RE.search(instruction)
    )


def usable(instruction: object) -> bool:
    """A pool line worth serving: text of 3..150 words that a numbered list can carry."""
    return (
        isinstance(instruction, str)
        and MIN_WORDS <= len(instruction.split()) <= MAX_WORDS
        and list_safe(instruction)
    )


def load_pool(path: str | Path | None, size: int | None = None) -> list[str]:
    """The first `size` usable instructions of a JSONL (optionally gzipped) file, or of the built-in pool.

    Unusable lines (see `usable`) are skipped and do not count towards `size`, so a pool of K is K items.
    """
    lines: Iterator[str]
    if path is None:
        lines = (json.dumps({"instruction": text}) for text in BUILTIN_POOL)
        return _take_usable(lines, size)
    with Path(path).open("rb") as raw:
        gzipped = raw.read(2) == b"\x1f\x8b"
    opener = gzip.open if gzipped else open
    with opener(path, "rt", encoding="utf-8") as handle:  # type: ignore[operator]
        return _take_usable(handle, size)


def _take_usable(lines: Iterator[str] | IO[str], size: int | None) -> list[str]:
    pool: list[str] = []
    for line in lines:
        if size is not None and len(pool) >= size:
            break
        if not line.strip():
            continue
        record = json.loads(line)
        text = record.get("instruction") if isinstance(record, dict) else None
        if isinstance(text, str) and usable(text.strip()):
            pool.append(text.strip())
    return pool


class TaskMaker:
    """Turns pool instructions into tasks; all randomness comes from the caller's `random.Random`."""

    def __init__(self, pool: Sequence[str], mutate_rate: float = 0.0, rewrite_rate: float = 0.0) -> None:
        if not pool:
            raise ValueError("the instruction pool is empty (no usable lines)")
        self.pool = list(pool)
        self.mutate_rate = mutate_rate
        self.rewrite_rate = rewrite_rate
        vocabulary = {word.lower() for text in self.pool for word in _VOCAB_RE.findall(text)}
        self.vocabulary = sorted(vocabulary) or ["simply"]

    def tasks(self, rng: random.Random, count: int) -> list[dict[str, str]]:
        """`count` tasks from distinct pool lines (repeating only when the pool is smaller than `count`)."""
        picks = rng.sample(range(len(self.pool)), min(count, len(self.pool)))
        picks += [rng.randrange(len(self.pool)) for _ in range(count - len(picks))]
        return [self.task(rng, self.pool[i]) for i in picks]

    def task(self, rng: random.Random, instruction: str) -> dict[str, str]:
        if self.rewrite_rate:
            instruction = self.rewrite(rng, instruction)
        if self.mutate_rate and rng.random() < self.mutate_rate:
            instruction = self.mutate(rng, instruction)
        task_input = rng.choice(_SHORT_INPUTS) if rng.random() < _INPUT_RATE else ""
        # Letters and digits only: markup copied from the instruction ("**", a trailing "###") would be
        # trimmed by the parser, and the item would no longer read back as it was sent.
        output = "Answer: " + (" ".join(_PLAIN_WORD_RE.findall(instruction)[:8]) or "yes")
        return {"instruction": instruction, "input": task_input, "output": output}

    def rewrite(self, rng: random.Random, instruction: str) -> str:
        """Replace each word with a pool word with probability `rewrite_rate`: a task no index holds yet,
        with the length and style of a real one (what a strong model's new tasks look like to the index)."""
        words = [
            rng.choice(self.vocabulary) if rng.random() < self.rewrite_rate else w
            for w in instruction.split()
        ]
        rewritten = " ".join(words)
        return rewritten if list_safe(rewritten) else instruction

    def mutate(self, rng: random.Random, instruction: str) -> str:
        """Swap two adjacent words or replace one with a pool word, keeping the whitespace between words.

        One word in three or more stays a ROUGE-L near-duplicate of the original. A result that a numbered
        list could not carry is dropped in favour of the original.
        """
        spans = [match.span() for match in _WORD_RE.finditer(instruction)]
        words = [instruction[start:end] for start, end in spans]
        if len(words) >= 2 and rng.random() < 0.5:
            i = rng.randrange(len(words) - 1)
            words[i], words[i + 1] = words[i + 1], words[i]
        else:
            words[rng.randrange(len(words))] = rng.choice(self.vocabulary)
        pieces = [instruction[: spans[0][0]]]
        for i, word in enumerate(words):
            gap_end = spans[i + 1][0] if i + 1 < len(spans) else len(instruction)
            pieces += [word, instruction[spans[i][1] : gap_end]]
        mutated = "".join(pieces)
        return mutated if list_safe(mutated) else instruction


# --- reading Sprout's requests -------------------------------------------------------------------------------

_PROMPT_TAIL_RE = re.compile(r"(\d+)\.[ \t]*(Instruction:|指令：)[ \t]*\Z")
_STOP_NUMBER_RE = re.compile(r"(?:\A|\n)(\d+)\.")
_LIST_FORMAT = {
    "en": ("Instruction:", "Input:", "Output:", "<noinput>", " "),
    "zh": ("指令：", "输入：", "输出：", "<无输入>", ""),
}


def _max_items(schema: Any) -> int | None:
    try:
        value = schema["properties"]["tasks"]["maxItems"]
    except (KeyError, TypeError):
        return None
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 1 else None


def chat_task_count(body: dict[str, Any]) -> int:
    """maxItems of the tasks array in response_format (json_schema or json_object + schema) or guided_json."""
    response_format = body.get("response_format")
    schema: Any = None
    if isinstance(response_format, dict):
        if response_format.get("type") == "json_schema" and isinstance(
            response_format.get("json_schema"), dict
        ):
            schema = response_format["json_schema"].get("schema")
        else:
            schema = response_format.get("schema")
    count = _max_items(schema) or _max_items(body.get("guided_json")) or DEFAULT_TASKS
    return min(count, MAX_TASKS)


def stop_strings(body: dict[str, Any]) -> list[str]:
    stop = body.get("stop")
    if isinstance(stop, str):
        return [stop] if stop else []
    return [s for s in stop if isinstance(s, str) and s] if isinstance(stop, list) else []


def list_continuation(
    prompt: str, stops: Sequence[str], maker: TaskMaker, rng: random.Random
) -> tuple[str, str | None]:
    """What a model would write after a prompt ending "K. Instruction:", cut where vLLM would cut it.

    The number of items is read from the stop strings ("###\\nM." stops before item M), else DEFAULT_TASKS.
    The text is cut before the first stop string it contains, which is not included, as vLLM does; that stop
    string is returned with the text (vLLM's stop_reason), None when no stop string matched.
    """
    tail = _PROMPT_TAIL_RE.search(prompt)
    first, language = (int(tail.group(1)), "zh" if tail.group(2) == "指令：" else "en") if tail else (1, "en")
    instruction_label, input_label, output_label, no_input, gap = _LIST_FORMAT[language]
    numbers = [int(m.group(1)) for s in stops for m in _STOP_NUMBER_RE.finditer(s) if int(m.group(1)) > first]
    count = min(min(numbers) - first if numbers else DEFAULT_TASKS, MAX_TASKS)
    parts: list[str] = []
    for index, task in enumerate(maker.tasks(rng, count), start=first):
        parts.append(
            f"{gap}{task['instruction']}\n{index}. {input_label}\n{task['input'] or no_input}\n"
            f"{index}. {output_label}\n{task['output']}\n###\n{index + 1}. {instruction_label}"
        )
    text = "".join(parts)
    cuts = [(at, stop) for stop in stops if (at := text.find(stop)) >= 0]
    if not cuts:
        return text, None
    at, stop = min(cuts)
    return text[:at], stop


def _message_chars(messages: list[Any]) -> int:
    chars = 0
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            chars += len(content)
        elif isinstance(content, list):
            chars += sum(len(p.get("text", "")) for p in content if isinstance(p, dict))
    return chars


def _tokens(chars: int) -> int:
    return max(1, chars // 4)


def _completion_tokens(body: dict[str, Any], text: str) -> int:
    """~chars / 4, or exactly max_tokens when the request forces full-length answers (vLLM benchmark style)."""
    max_tokens = body.get("max_tokens")
    if isinstance(max_tokens, int) and (body.get("ignore_eos") or body.get("min_tokens") == max_tokens):
        return max_tokens
    return _tokens(len(text))


# --- the ASGI app --------------------------------------------------------------------------------------------


class HTTPError(Exception):
    """An error answer, in vLLM's shape unless `body` says otherwise."""

    def __init__(
        self, status: int, message: str, *, kind: str = "BadRequestError", param: str | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body: Any = {"error": {"message": message, "type": kind, "param": param, "code": status}}


class _Disconnected(Exception):
    """The client went away before its answer was ready."""


class SimApp:
    """The ASGI application. Its counters live in one event loop, so plain ints are enough."""

    def __init__(self, options: SimOptions, maker: TaskMaker) -> None:
        self.options = options
        self.model = options.served_model_name
        self.maker = maker
        self.requests = itertools.count()
        self.started = time.monotonic()
        self.running = 0  # sequences (prompts x n) being answered now
        self.running_max = 0
        self.prompt_tokens = 0
        self.generation_tokens = 0
        self.sequences_done = 0
        self.aborted = 0
        self.served: dict[str, int] = {}
        self._record: IO[str] | None = open(options.record, "a", encoding="utf-8") if options.record else None
        self._auth = f"Bearer {options.api_key}".encode() if options.api_key else None
        self._label = f'model_name="{self.model}"'

    async def __call__(self, scope: ASGIScope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # lifespan is off; nothing else is served
            return
        path, method = scope["path"], scope["method"]
        try:
            if path in ("/v1/chat/completions", "/v1/completions"):
                if method != "POST":
                    raise _not_allowed()
                self._check_auth(scope)
                body = await _read_body(receive)
                await self._respond(send, 200, await self._generate(path, body, receive))
            elif path in ("/health", "/v1/models", "/metrics"):
                if method != "GET":
                    raise _not_allowed()
                if path == "/health":
                    await self._respond(send, 200, b"")
                elif path == "/metrics":
                    await self._respond(send, 200, self.metrics().encode(), "text/plain; version=0.0.4")
                else:
                    self._check_auth(scope)
                    await self._respond(send, 200, self.models())
            else:
                await self._respond(send, 404, {"detail": "Not Found"})
        except HTTPError as error:
            await self._respond(send, error.status, error.body)
        except _Disconnected:
            self.aborted += 1

    def _check_auth(self, scope: ASGIScope) -> None:
        if self._auth is not None and dict(scope["headers"]).get(b"authorization") != self._auth:
            error = HTTPError(401, "Unauthorized")
            error.body = {"error": "Unauthorized"}  # vLLM's exact body
            raise error

    async def _respond(
        self, send: Send, status: int, body: Any, content_type: str = "application/json"
    ) -> None:
        data = body if isinstance(body, bytes) else json.dumps(body, ensure_ascii=False).encode()
        headers = [(b"content-type", content_type.encode()), (b"content-length", str(len(data)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": data})

    # -- generation ------------------------------------------------------------------------------------------

    async def _generate(self, path: str, raw: bytes, receive: Receive) -> dict[str, Any]:
        self.served[path] = self.served.get(path, 0) + 1
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            self._write_record(path, raw=raw.decode("utf-8", "replace"))
            raise HTTPError(400, f"Invalid JSON body: {exc}") from None
        self._write_record(path, body=body)
        if not isinstance(body, dict):
            raise HTTPError(400, "The request body must be a JSON object.")
        model = body.get("model") or self.model  # vLLM too serves its one model when none is named
        if model != self.model:
            raise HTTPError(404, f"The model `{model}` does not exist.", kind="NotFoundError", param="model")
        n = body.get("n", 1)
        if n is None:
            n = 1
        if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= MAX_N:
            raise HTTPError(400, f"n must be an integer from 1 to {MAX_N}.", param="n")
        if body.get("stream"):
            raise HTTPError(400, "The simulator does not stream; send stream=false.", param="stream")
        if path == "/v1/chat/completions":
            messages = body.get("messages")
            if not isinstance(messages, list) or not messages:
                raise HTTPError(400, "messages must be a non-empty list.", param="messages")
            prompts_chars = [_message_chars(messages)]
        else:
            prompt = body.get("prompt")
            prompts = [prompt] if isinstance(prompt, str) else prompt
            if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) for p in prompts):
                raise HTTPError(
                    400, "prompt must be a string or a non-empty list of strings.", param="prompt"
                )
            prompts_chars = [len(p) for p in prompts]

        number = next(self.requests)
        sequences = len(prompts_chars) * n
        self.running += sequences
        self.running_max = max(self.running_max, self.running)
        try:
            await self._wait(number, receive)
            rng = random.Random(f"{self.options.seed}:items:{number}")
            if path == "/v1/chat/completions":
                count = chat_task_count(body)
                texts = [
                    json.dumps({"tasks": self.maker.tasks(rng, count)}, ensure_ascii=False) for _ in range(n)
                ]
                response = self._chat_response(number, texts)
            else:
                stops = stop_strings(body)
                answers = [list_continuation(p, stops, self.maker, rng) for p in prompts for _ in range(n)]
                texts = [text for text, _ in answers]
                response = self._completion_response(number, answers)
        finally:
            self.running -= sequences
        completion_tokens = sum(_completion_tokens(body, text) for text in texts)
        prompt_tokens = sum(_tokens(chars) for chars in prompts_chars)
        response["usage"] = {
            "prompt_tokens": prompt_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "completion_tokens": completion_tokens,
        }
        self.prompt_tokens += prompt_tokens
        self.generation_tokens += completion_tokens
        self.sequences_done += sequences
        return response

    async def _wait(self, number: int, receive: Receive) -> None:
        """Sleep the request's latency; a client that disconnects meanwhile aborts it (vLLM does too)."""
        if self.options.latency == "zero":
            return
        rng = random.Random(f"{self.options.seed}:latency:{number}")
        delay = rng.lognormvariate(math.log(self.options.median), self.options.sigma)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + delay
        try:
            async with asyncio.timeout(delay):
                message = await receive()  # with the body read, uvicorn only answers this on a disconnect
        except TimeoutError:
            return
        if message["type"] == "http.disconnect":
            raise _Disconnected
        await asyncio.sleep(max(0.0, deadline - loop.time()))

    def _chat_response(self, number: int, texts: list[str]) -> dict[str, Any]:
        choices = [
            {
                "index": i,
                "message": {"role": "assistant", "content": text, "tool_calls": []},
                "logprobs": None,
                "finish_reason": "stop",
                "stop_reason": None,
            }
            for i, text in enumerate(texts)
        ]
        return {
            "id": f"chatcmpl-sim-{number}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.model,
            "choices": choices,
        }

    def _completion_response(self, number: int, answers: list[tuple[str, str | None]]) -> dict[str, Any]:
        """Choice i answers prompt i // n (answers are in prompt-major order), as vLLM numbers them."""
        choices = [
            {"index": i, "text": text, "logprobs": None, "finish_reason": "stop", "stop_reason": stop}
            for i, (text, stop) in enumerate(answers)
        ]
        return {
            "id": f"cmpl-sim-{number}",
            "object": "text_completion",
            "created": int(time.time()),
            "model": self.model,
            "choices": choices,
        }

    def _write_record(self, path: str, **fields: Any) -> None:
        if self._record is not None:
            line = {"t": round(time.monotonic() - self.started, 6), "path": path, **fields}
            self._record.write(json.dumps(line, ensure_ascii=False) + "\n")
            self._record.flush()

    # -- the rest --------------------------------------------------------------------------------------------

    def models(self) -> dict[str, Any]:
        card = {
            "id": self.model,
            "object": "model",
            "created": int(time.time()),
            "owned_by": "sprout-sim",
            "root": self.model,
            "parent": None,
            "max_model_len": 32768,
            "permission": [],
        }
        return {"object": "list", "data": [card]}

    def metrics(self) -> str:
        """vLLM's gauge and counter names, so a benchmark reads the sim exactly as it reads vLLM."""
        label = self._label
        rows = [
            ("vllm:num_requests_running", "gauge", f"{{{label}}}", self.running),
            ("vllm:num_requests_waiting", "gauge", f"{{{label}}}", 0),
            ("vllm:prompt_tokens_total", "counter", f"{{{label}}}", self.prompt_tokens),
            ("vllm:generation_tokens_total", "counter", f"{{{label}}}", self.generation_tokens),
            (
                "vllm:request_success_total",
                "counter",
                f'{{finished_reason="stop",{label}}}',
                self.sequences_done,
            ),
            ("sim:num_requests_running_max", "gauge", f"{{{label}}}", self.running_max),
            ("sim:requests_aborted_total", "counter", f"{{{label}}}", self.aborted),
        ]
        lines: list[str] = []
        for name, kind, labels, value in rows:
            lines += [f"# TYPE {name} {kind}", f"{name}{labels} {float(value)}"]
        lines.append("# TYPE sim:http_requests_total counter")
        lines += [
            f'sim:http_requests_total{{path="{p}",{label}}} {float(c)}'
            for p, c in sorted(self.served.items())
        ]
        return "\n".join(lines) + "\n"


def _not_allowed() -> HTTPError:
    error = HTTPError(405, "Method Not Allowed")
    error.body = {"detail": "Method Not Allowed"}
    return error


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _Disconnected
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


# --- running it ----------------------------------------------------------------------------------------------


def build_app(options: SimOptions) -> SimApp:
    pool = load_pool(options.pool, options.pool_size)
    return SimApp(options, TaskMaker(pool, options.mutate_rate, options.rewrite_rate))


def serve(options: SimOptions, sock: socket.socket) -> None:
    """Serve on an already bound socket until SIGINT/SIGTERM (uvicorn's graceful shutdown, at most 3 s)."""
    import uvicorn

    app = build_app(options)
    host, port = sock.getsockname()[:2]
    print(f"sim server: http://{host}:{port}/v1 model={app.model} pool={len(app.maker.pool)}", flush=True)
    config = uvicorn.Config(
        app, lifespan="off", log_level="warning", access_log=False, timeout_graceful_shutdown=3, backlog=4096
    )
    uvicorn.Server(config).run(sockets=[sock])


def parse_args(argv: Sequence[str] | None = None) -> tuple[SimOptions, argparse.Namespace]:
    parser = argparse.ArgumentParser(
        prog="python -m tests.support.sim_server", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000, help="0 picks a free port (printed on stdout)")
    parser.add_argument("--fd", type=int, default=None, help="serve on this inherited, bound socket instead")
    parser.add_argument("--served-model-name", default=SimOptions.served_model_name)
    parser.add_argument("--pool", default=None, help="JSONL(.gz) of {'instruction': ...}; default: built-in")
    parser.add_argument("--pool-size", type=int, default=None, help="use only the first K usable lines")
    parser.add_argument("--mutate-rate", type=float, default=0.0)
    parser.add_argument(
        "--rewrite-rate",
        type=float,
        default=0.0,
        help="replace this share of words: novel tasks, real shapes",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--latency", choices=("zero", "lognormal"), default="zero")
    parser.add_argument("--median", type=float, default=1.0, help="lognormal: median seconds")
    parser.add_argument("--sigma", type=float, default=0.6, help="lognormal: sigma")
    parser.add_argument("--record", default=None, help="append each request body to this JSONL file")
    parser.add_argument("--api-key", default=None)
    ns = parser.parse_args(argv)
    if ns.latency == "lognormal" and (ns.median <= 0 or ns.sigma < 0):
        parser.error("lognormal latency needs --median > 0 and --sigma >= 0")
    if not 0.0 <= ns.mutate_rate <= 1.0 or not 0.0 <= ns.rewrite_rate <= 1.0:
        parser.error("--mutate-rate and --rewrite-rate must be within 0..1")
    names = {item.name for item in fields(SimOptions)}
    return SimOptions(**{k: v for k, v in vars(ns).items() if k in names}), ns


def main(argv: Sequence[str] | None = None) -> None:
    options, ns = parse_args(argv)
    if ns.fd is not None:
        sock = socket.socket(fileno=ns.fd)
    else:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((ns.host, ns.port))
    serve(options, sock)


class SimServer(NamedTuple):
    """Where a running sim server listens."""

    base_url: str  # the API root, ending in /v1
    model: str
    port: int
    pid: int
    metrics_url: str
    log_path: Path  # its stdout+stderr, while it runs
    options: SimOptions

    def backend_settings(self, **overrides: Any) -> Any:
        """BackendSettings of an openai backend pointing here (imported lazily: the server never needs app)."""
        from app.core.config import BackendSettings

        return BackendSettings(
            **{"kind": "openai", "base_url": self.base_url, "model": self.model, **overrides}
        )


@contextmanager
def running_sim_server(
    *, startup_timeout: float = 30.0, port: int = 0, **options: Any
) -> Iterator[SimServer]:
    """Start a sim server subprocess on a free 127.0.0.1 port (or on `port`), wait for /health, and stop it
    afterwards.

    `options` are SimOptions fields (pool=..., pool_size=40, latency="lognormal", median=0.5, ...). The port
    is picked by binding port 0 here and handing the bound socket to the child, so no other process can take
    it in between; it is bound with SO_REUSEADDR, so a server started on the port of one that stopped can bind
    it while the old connections linger in TIME_WAIT. Only this child is stopped (terminate, then kill after
    10 s); if it dies or is not ready in time, the error carries the tail of its log.
    """
    from tests.support.processes import stop, wait_until_ready  # the server itself needs neither

    sim_options = SimOptions(**options)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    port = int(sock.getsockname()[1])
    cmd = [
        sys.executable,
        "-m",
        "tests.support.sim_server",
        "--fd",
        str(sock.fileno()),
        *sim_options.to_args(),
    ]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
    }
    root = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="sprout-sim-") as workdir:
        log_path = Path(workdir) / "server.log"
        with log_path.open("w+b") as log:
            try:
                process = subprocess.Popen(
                    cmd,
                    cwd=REPO_ROOT,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    pass_fds=(sock.fileno(),),
                )
            finally:
                sock.close()  # the child has its own copy
            try:
                wait_until_ready(
                    process, f"{root}/health", timeout=startup_timeout, log=log, name="sim server", poll=0.05
                )
                model = sim_options.served_model_name
                yield SimServer(
                    f"{root}/v1", model, port, process.pid, f"{root}/metrics", log_path, sim_options
                )
            finally:
                stop(process)


__all__ = ["SimOptions", "SimServer", "TaskMaker", "build_app", "load_pool", "running_sim_server"]

if __name__ == "__main__":
    main()
