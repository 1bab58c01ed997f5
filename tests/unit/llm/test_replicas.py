"""Replicas of one backend: the pool's choice (least in flight, ties in turn), taking replicas out and putting
them back (failed requests, the health probe), the all-out fallback; the settings that name them; and the
openai backend over two replicas behind a mock transport (failover, 404 on one replica, health, metrics).
No network, no sleeps longer than a fraction of a second."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections import Counter
from contextlib import ExitStack, nullcontext
from typing import Any

import httpx2
import openai
import pytest
from prometheus_client import REGISTRY
from pydantic import ValidationError

from app.core.config import BackendSettings
from app.finetune import serving
from app.finetune.serving import AdapterLoadError, ensure_loaded, load_adapter
from app.llm import ChatMessage, LLMFatalError, SamplingParams
from app.llm.openai_compat import OpenAICompatBackend
from app.llm.replicas import Replica, ReplicaPool, replica_label, server_root

MESSAGES = [ChatMessage("user", "hi")]
PARAMS = SamplingParams(max_tokens=8)


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def tick(self, seconds: float = 1.0) -> float:
        self.now += seconds
        return self.now


def unique(name: str = "b") -> str:
    """A backend name of this test alone: the metrics registry is the process's."""
    return f"{name}-{uuid.uuid4().hex[:8]}"


def pool_of(count: int, **kwargs: Any) -> ReplicaPool:
    urls = [f"http://gpu{i}:8000/v1" for i in range(count)]
    return ReplicaPool(unique(), urls, **kwargs)


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


# -- names ---------------------------------------------------------------------------------------------------


def test_the_health_url_is_at_the_server_root_and_the_label_is_host_and_port() -> None:
    assert server_root("http://gpu1:8000/v1") == "http://gpu1:8000"
    assert server_root("https://llm.example.org/team/v1/") == "https://llm.example.org/team"
    assert server_root("http://gpu1:8000/openai") == "http://gpu1:8000/openai"
    assert replica_label("http://gpu1:8000/v1") == "gpu1:8000"
    assert replica_label("https://llm.example.org/v1") == "llm.example.org:443"
    assert replica_label("http://[::1]:9000/v1") == "[::1]:9000"
    pool = ReplicaPool(unique(), ["http://gpu1:8000/v1", "http://gpu2:8000/v1"])
    assert [r.health_url for r in pool.replicas] == ["http://gpu1:8000/health", "http://gpu2:8000/health"]
    assert [r.label for r in pool.replicas] == ["gpu1:8000", "gpu2:8000"]
    behind_one_proxy = ReplicaPool(unique(), ["http://proxy/a/v1", "http://proxy/b/v1"])
    assert [r.label for r in behind_one_proxy.replicas] == ["proxy:80/a/v1", "proxy:80/b/v1"]
    assert ReplicaPool(unique(), ["http://gpu1/v1"], health_path=None).replicas[0].health_url is None


# -- choosing ------------------------------------------------------------------------------------------------


def test_requests_go_to_the_replica_with_the_fewest_in_flight() -> None:
    pool = pool_of(3)
    with ExitStack() as stack:
        held = [stack.enter_context(pool.attempt()) for _ in range(6)]
        assert Counter(r.index for r in held) == {0: 2, 1: 2, 2: 2}
        assert [r.in_flight for r in pool.replicas] == [2, 2, 2]
    assert [r.in_flight for r in pool.replicas] == [0, 0, 0]  # every attempt counted out again

    busy = pool.replicas[0]
    busy.in_flight = 3  # three requests held there (by other jobs)
    with ExitStack() as stack:
        picks = [stack.enter_context(pool.attempt()).index for _ in range(7)]
    busy.in_flight = 0
    assert Counter(picks[:6]) == {1: 3, 2: 3}  # the others get requests until they are as busy
    assert picks[6] in (0, 1, 2)


def test_ties_are_taken_in_turn() -> None:
    pool = pool_of(3)
    assert [pool.pick().index for _ in range(7)] == [0, 1, 2, 0, 1, 2, 0]


def test_the_replica_a_request_just_failed_on_is_passed_over_while_another_is_free() -> None:
    pool = pool_of(2)
    a, b = pool.replicas
    for _ in range(4):
        assert pool.pick(avoid=[a]) is b
    b.in_flight = 5  # even when it is busier
    assert pool.pick(avoid=[a]) is b
    pool.mark_down(b, "gone")
    assert pool.pick(avoid=[a]) is a  # the only one in rotation
    assert pool.pick(exclude=[a]) is b  # excluded (it refused the request): an out replica is tried instead
    assert pool.pick(exclude=[a, b]) in (a, b)  # nothing left: anything rather than nothing


def test_a_replica_taken_out_gets_no_requests_until_it_is_put_back(caplog: pytest.LogCaptureFixture) -> None:
    pool = pool_of(2)
    a, b = pool.replicas
    ejections = sample("sprout_llm_replica_ejections_total", backend=pool.backend, replica=a.label)
    assert sample("sprout_llm_replica_up", backend=pool.backend, replica=a.label) == 1
    with caplog.at_level(logging.INFO, logger="app.llm.replicas"):
        assert pool.mark_down(a, "connection failed") is True
        assert pool.mark_down(a, "connection failed") is False  # already out: one log line, one ejection
        assert {pool.pick().index for _ in range(5)} == {1}
        assert pool.mark_up(a) is True
    assert {pool.pick().index for _ in range(4)} == {0, 1}
    assert sample("sprout_llm_replica_up", backend=pool.backend, replica=a.label) == 1
    assert (
        sample("sprout_llm_replica_ejections_total", backend=pool.backend, replica=a.label) == ejections + 1
    )
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2
    assert pool.backend in lines[0] and "gpu0:8000" in lines[0] and "taken out" in lines[0]
    assert pool.backend in lines[1] and "gpu0:8000" in lines[1] and "back in rotation" in lines[1]


def test_when_every_replica_is_out_the_least_recently_failed_is_tried_first() -> None:
    clock = FakeClock()
    pool = pool_of(3, clock=clock)
    a, b, c = pool.replicas
    pool.mark_down(b, "x")
    clock.tick()
    pool.mark_down(c, "x")
    clock.tick()
    pool.mark_down(a, "x")
    assert pool.pick() is b
    pool.failed(b, "still down", take_out=True)  # it failed again: now the oldest failure is c's
    clock.tick()
    assert pool.pick() is c
    assert pool.pick(avoid=[c]) is a  # and the one this request just failed on comes last


def test_an_answer_older_than_the_latest_failure_does_not_put_a_replica_back() -> None:
    clock = FakeClock()
    pool = pool_of(2, clock=clock)
    a = pool.replicas[0]
    probe_started = clock()
    clock.tick()
    pool.mark_down(a, "connection reset")  # failed after the probe was sent
    assert pool.mark_up(a, since=probe_started) is False and not a.up
    clock.tick()
    assert pool.mark_up(a, since=clock()) is True and a.up


def test_with_a_probe_only_the_probe_puts_a_replica_back_without_one_an_answer_does() -> None:
    probed = pool_of(2)
    a = probed.replicas[0]
    probed.mark_down(a, "health check: HTTP 503")
    probed.succeeded(a, since=probed.now() + 1)  # a request that got through anyway (all-out fallback)
    assert not a.up and a.answered == 1  # no flapping: /health decides

    single = pool_of(1)
    (only,) = single.replicas
    assert not single.probed
    single.failed(only, "connection failed", take_out=True)
    assert not only.up and single.pick() is only  # out, yet still tried: it is all there is
    single.succeeded(only, since=single.now() + 1)
    assert only.up and only.failures == 1

    no_path = ReplicaPool(unique(), ["http://a/v1", "http://b/v1"], health_path=None)
    assert not no_path.probed
    x = no_path.replicas[0]
    no_path.failed(x, "timeout", take_out=True)
    no_path.succeeded(x, since=no_path.now() + 1)
    assert x.up


def test_failures_that_do_not_say_the_server_is_gone_leave_it_in_rotation() -> None:
    pool = pool_of(2)
    a = pool.replicas[0]
    pool.failed(a, "HTTP 503: busy", take_out=False)
    assert a.up and a.failures == 1


# -- the health probe ----------------------------------------------------------------------------------------


def test_one_probe_round_takes_out_the_failing_and_puts_back_the_recovered() -> None:
    pool = pool_of(3)
    a, b, c = pool.replicas
    healthy = {a.index: True, b.index: False, c.index: True}

    async def probe(replica: Replica) -> str | None:
        if replica is c:
            raise OSError("no route to host")  # a probe that cannot even ask counts as failed
        return None if healthy[replica.index] else "HTTP 503"

    asyncio.run(pool.probe_once(probe))
    assert [r.up for r in pool.replicas] == [True, False, False]
    assert b.reason == "health check: HTTP 503" and "no route to host" in (c.reason or "")
    healthy[b.index] = True
    asyncio.run(pool.probe_once(probe))
    assert [r.up for r in pool.replicas] == [True, True, False]
    assert sample("sprout_llm_replica_up", backend=pool.backend, replica=b.label) == 1
    assert sample("sprout_llm_replica_up", backend=pool.backend, replica=c.label) == 0


def test_the_background_probe_runs_every_interval_and_stops_on_close() -> None:
    pool = pool_of(2)
    a = pool.replicas[0]
    healthy = True
    asked: list[str] = []

    async def probe(replica: Replica) -> str | None:
        asked.append(replica.label)
        return None if healthy or replica is not a else "connection refused"

    async def until(condition: Any) -> None:
        async with asyncio.timeout(2):
            while not condition():
                await asyncio.sleep(0.005)

    async def go() -> None:
        nonlocal healthy
        pool.start_probing(probe, 0.02)
        pool.start_probing(probe, 0.02)  # once only
        await until(lambda: len(asked) >= 4)
        healthy = False
        await until(lambda: not a.up)
        healthy = True
        await until(lambda: a.up)
        await pool.aclose()
        count = len(asked)
        await asyncio.sleep(0.06)
        assert len(asked) == count  # stopped

    asyncio.run(go())
    assert set(asked) == {"gpu0:8000", "gpu1:8000"}  # every replica, each round


def test_one_replica_alone_is_never_probed() -> None:
    pool = pool_of(1)

    async def probe(replica: Replica) -> str | None:  # pragma: no cover (must not run)
        raise AssertionError("probed")

    async def go() -> None:
        pool.start_probing(probe, 0.01)
        await asyncio.sleep(0.03)
        await pool.aclose()

    asyncio.run(go())


# -- settings ------------------------------------------------------------------------------------------------


def test_settings_take_base_urls_normalised_and_in_flight_per_replica() -> None:
    s = BackendSettings(base_urls=["http://gpu1:8000/v1/", "http://gpu2:8000/v1"], health_interval=2)
    assert s.replica_urls == ["http://gpu1:8000/v1", "http://gpu2:8000/v1"] and s.base_url is None
    assert s.in_flight == 128 and s.health_interval == 2 and s.health_path == "/health"
    assert BackendSettings(base_urls=["http://gpu1:8000/v1"], max_in_flight=10).in_flight == 10
    one = BackendSettings(base_url="http://gpu1:8000/v1/")
    assert one.replica_urls == ["http://gpu1:8000/v1"] and one.base_url == "http://gpu1:8000/v1"
    assert one.in_flight == 64
    assert BackendSettings(kind="llamacpp").replica_urls == []
    again = BackendSettings.model_validate(json.loads(s.model_dump_json()))  # as SPROUT_BACKENDS carries it
    assert again.replica_urls == s.replica_urls


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"base_urls": []}, "at least 1"),
        ({"base_urls": ["http://a/v1", "ftp://b/v1"]}, r"needs base_urls\[1\]"),
        ({"base_urls": ["http://a/v1", "http://A:80/v1/"]}, r"base_urls\[1\] repeats base_urls\[0\]"),
        ({"base_url": "http://a/v1", "base_urls": ["http://b/v1"]}, "not both"),
        ({"kind": "llamacpp", "base_urls": ["http://a/v1"]}, "belongs to openai backends"),
        ({"base_urls": ["http://a/v1"], "health_interval": 0}, "health_interval"),
        ({"base_urls": ["http://a/v1"], "health_path": "health"}, "health_path"),
    ],
)
def test_settings_refuse_bad_replica_lists(values: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        BackendSettings(**{"kind": "openai", **values})


# -- the openai backend over two replicas (mock transport) ---------------------------------------------------


def chat_reply(text: str = "ok") -> httpx2.Response:
    return httpx2.Response(
        200,
        json={
            "id": "x",
            "object": "chat.completion",
            "created": 0,
            "model": "m",
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
            ],
            "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
        },
    )


def two_replicas(handler: Any, **overrides: Any) -> OpenAICompatBackend:
    settings = BackendSettings(
        kind="openai",
        model="m",
        base_urls=["http://a.test/v1", "http://b.test/v1"],
        **{"max_retries": 3, "backoff_max": 0.01, "health_interval": 60, **overrides},
    )
    client = httpx2.AsyncClient(transport=httpx2.MockTransport(handler))
    return OpenAICompatBackend(unique("two"), settings, http_client=client, backoff_initial=0.001)


def test_concurrent_requests_spread_over_both_replicas() -> None:
    hosts: Counter[str] = Counter()

    async def handler(request: httpx2.Request) -> httpx2.Response:
        if request.url.path == "/health":
            return httpx2.Response(200)
        hosts[request.url.host] += 1
        await asyncio.sleep(0.02)
        return chat_reply()

    async def go() -> OpenAICompatBackend:
        backend = two_replicas(handler)
        try:
            await asyncio.gather(*(backend.chat(MESSAGES, PARAMS) for _ in range(8)))
            return backend
        finally:
            await backend.aclose()

    backend = asyncio.run(go())
    assert hosts == {"a.test": 4, "b.test": 4}
    for label in ("a.test:80", "b.test:80"):
        labels = {"backend": backend.name, "replica": label}
        assert REGISTRY.get_sample_value("sprout_llm_request_seconds_count", labels) == 4
        assert REGISTRY.get_sample_value("sprout_llm_tokens_total", {**labels, "type": "completion"}) == 8
        assert REGISTRY.get_sample_value("sprout_llm_in_flight", labels) == 0


def test_a_connection_error_is_retried_on_the_other_replica_which_takes_the_first_out() -> None:
    seen: list[str] = []

    async def handler(request: httpx2.Request) -> httpx2.Response:
        if request.url.path == "/health":
            return httpx2.Response(503 if request.url.host == "a.test" else 200)
        seen.append(request.url.host)
        if request.url.host == "a.test":
            raise httpx2.ConnectError("refused", request=request)
        return chat_reply()

    async def go() -> OpenAICompatBackend:
        backend = two_replicas(handler)
        try:
            replies = [await backend.chat(MESSAGES, PARAMS) for _ in range(4)]
            assert all(r.choices[0].text == "ok" for r in replies)
            return backend
        finally:
            await backend.aclose()

    backend = asyncio.run(go())
    a, b = backend.replicas.replicas
    assert seen.count("a.test") <= 1 and seen.count("b.test") == 4  # at most the first attempt went to a
    assert not a.up and b.up
    labels = {"backend": backend.name, "replica": "a.test:80"}
    assert REGISTRY.get_sample_value("sprout_llm_replica_up", labels) == 0
    assert REGISTRY.get_sample_value("sprout_llm_replica_ejections_total", labels) == 1
    errors = REGISTRY.get_sample_value("sprout_llm_errors_total", {**labels, "kind": "connection"}) or 0
    assert errors == seen.count("a.test")


def test_when_both_replicas_fail_the_request_still_gets_through_once_one_is_back() -> None:
    calls = 0

    async def handler(request: httpx2.Request) -> httpx2.Response:
        nonlocal calls
        if request.url.path == "/health":
            return httpx2.Response(503)
        calls += 1
        if calls <= 3:  # both down, then one comes back
            raise httpx2.ConnectError("refused", request=request)
        return chat_reply("through")

    async def go() -> Any:
        backend = two_replicas(handler, max_retries=5)
        try:
            return await backend.chat(MESSAGES, PARAMS)
        finally:
            await backend.aclose()

    assert asyncio.run(go()).choices[0].text == "through"
    assert calls == 4


def test_a_404_from_one_replica_sends_the_request_to_the_other_and_from_all_is_fatal() -> None:
    missing_on = {"a.test"}
    seen: list[str] = []

    async def handler(request: httpx2.Request) -> httpx2.Response:
        if request.url.path == "/health":
            return httpx2.Response(200)
        seen.append(request.url.host)
        if request.url.host in missing_on:
            body = {"error": {"message": "The model `ft:x` does not exist.", "code": 404}}
            return httpx2.Response(404, json=body)
        return chat_reply()

    async def go() -> None:
        backend = two_replicas(handler, max_retries=0)  # a 404 elsewhere is asked even with no retries left
        try:
            for _ in range(3):
                assert (await backend.chat(MESSAGES, SamplingParams(model="ft:x"))).choices[0].text == "ok"
            missing_on.add("b.test")
            seen.clear()
            with pytest.raises(LLMFatalError, match="does not exist"):
                await backend.chat(MESSAGES, SamplingParams(model="ft:x"))
            assert sorted(seen) == ["a.test", "b.test"]  # each asked once, then fatal
        finally:
            await backend.aclose()

    asyncio.run(go())


def test_health_reports_each_replica_and_is_ok_when_any_serves_the_model() -> None:
    async def handler(request: httpx2.Request) -> httpx2.Response:
        if request.url.host == "a.test":
            raise httpx2.ConnectError("refused", request=request)
        models = [{"id": "m", "object": "model", "created": 0, "owned_by": "x"}]
        return httpx2.Response(200, json={"object": "list", "data": models})

    async def go() -> dict[str, Any]:
        backend = two_replicas(handler)
        try:
            return await backend.health()
        finally:
            await backend.aclose()

    result = asyncio.run(go())
    assert result["ok"] is True and "error" not in result
    a, b = result["replicas"]
    assert (a["replica"], a["ok"], b["replica"], b["ok"]) == ("a.test:80", False, "b.test:80", True)
    assert "connection failed" in a["error"] and a["in_rotation"] is True


def test_the_probe_asks_health_at_the_server_root_and_puts_a_recovered_replica_back() -> None:
    health = {"a.test": 503, "b.test": 200}
    paths: set[str] = set()

    async def handler(request: httpx2.Request) -> httpx2.Response:
        if request.method == "GET":
            paths.add(request.url.path)
            return httpx2.Response(health[request.url.host])
        return chat_reply(request.url.host)

    async def go() -> None:
        backend = two_replicas(handler, health_interval=0.02, health_timeout=0.5)
        a = backend.replicas.replicas[0]
        try:
            await backend.chat(MESSAGES, PARAMS)  # first use starts the probe
            async with asyncio.timeout(2):
                while a.up:
                    await asyncio.sleep(0.005)
            texts = {(await backend.chat(MESSAGES, PARAMS)).choices[0].text for _ in range(4)}
            assert texts == {"b.test"}
            health["a.test"] = 200
            async with asyncio.timeout(2):
                while not a.up:
                    await asyncio.sleep(0.005)
            texts = {(await backend.chat(MESSAGES, PARAMS)).choices[0].text for _ in range(4)}
            assert texts == {"a.test", "b.test"}
        finally:
            await backend.aclose()

    asyncio.run(go())
    assert paths == {"/health"}


# -- LoRA adapters on every replica (app/finetune/serving.py; vLLM's endpoints behind a mock transport) ------


class FakeVLLMs:
    """Per host: the adapters it holds (a restarted server holds none), or down (connections refused)."""

    def __init__(self, *hosts: str) -> None:
        self.adapters: dict[str, set[str]] = {h: set() for h in hosts}
        self.down: set[str] = set()
        self.loads: Counter[str] = Counter()

    async def handler(self, request: httpx2.Request) -> httpx2.Response:
        host = request.url.host
        if host in self.down:
            raise httpx2.ConnectError("refused", request=request)
        if request.url.path == "/v1/models":
            ids = ["m", *sorted(self.adapters[host])]
            data = [{"id": i, "object": "model", "created": 0, "owned_by": "vllm"} for i in ids]
            return httpx2.Response(200, json={"object": "list", "data": data})
        if request.url.path == "/v1/load_lora_adapter":
            name = json.loads(request.content)["lora_name"]
            if name in self.adapters[host]:
                return httpx2.Response(
                    400, json={"error": {"message": f"The lora adapter '{name}' has already been loaded."}}
                )
            self.adapters[host].add(name)
            self.loads[host] += 1
            return httpx2.Response(200, text="Success")
        return httpx2.Response(404, json={"detail": "Not Found"})


@pytest.fixture
def vllms(monkeypatch: pytest.MonkeyPatch) -> FakeVLLMs:
    fake = FakeVLLMs("a.test", "b.test")

    def client(settings: BackendSettings, url: str) -> openai.AsyncOpenAI:
        http = httpx2.AsyncClient(transport=httpx2.MockTransport(fake.handler))
        return openai.AsyncOpenAI(base_url=url, api_key="unused", max_retries=0, http_client=http)

    monkeypatch.setattr(serving, "_client", client)
    monkeypatch.setattr(
        serving, "check_adapter", lambda session, backend, name: type("Row", (), {"path": "/ad"})
    )
    return fake


SERVE = BackendSettings(kind="openai", model="m", base_urls=["http://a.test/v1", "http://b.test/v1"])


def test_an_adapter_is_loaded_on_every_replica_and_again_where_one_lost_it(vllms: FakeVLLMs) -> None:
    sessions: Any = lambda: nullcontext(None)  # noqa: E731 (check_adapter is replaced: no database)
    backends = {"serve": SERVE}

    asyncio.run(load_adapter(SERVE, "ft:x", "/ad"))
    assert vllms.adapters == {"a.test": {"ft:x"}, "b.test": {"ft:x"}}
    assert asyncio.run(ensure_loaded(sessions, backends, "serve", "ft:x")) is False  # both hold it

    vllms.adapters["b.test"].clear()  # b restarted
    assert asyncio.run(ensure_loaded(sessions, backends, "serve", "ft:x")) is True
    assert vllms.loads == {"a.test": 1, "b.test": 2}  # loaded again on b only

    vllms.adapters["a.test"].clear()
    vllms.down.add("b.test")  # a restarted, b is down: a gets it, b is skipped (the backend routes around it)
    assert asyncio.run(ensure_loaded(sessions, backends, "serve", "ft:x")) is True
    assert vllms.loads == {"a.test": 2, "b.test": 2}

    vllms.down.add("a.test")
    with pytest.raises(openai.APIConnectionError):
        asyncio.run(ensure_loaded(sessions, backends, "serve", "ft:x"))


def test_loading_where_a_replica_is_down_says_how_many_did_load(vllms: FakeVLLMs) -> None:
    vllms.down.add("b.test")
    with pytest.raises(AdapterLoadError, match="b.test") as caught:
        asyncio.run(load_adapter(SERVE, "ft:y", "/ad"))
    assert caught.value.loaded == 1 and vllms.adapters["a.test"] == {"ft:y"}
