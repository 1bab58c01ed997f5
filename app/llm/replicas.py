"""Data-parallel replicas of one openai backend (several vLLM servers of the same model): which one takes the
next request, and which are out of rotation.

The choice is plain bookkeeping, no I/O: the replica in rotation with the fewest requests in flight (this
process's), ties taken in turn. A replica is taken out when a request to it fails to connect or times out,
and while its health probe fails; the probe (a background task of the event loop, started on first use)
puts it back once it answers again. When every replica is out, requests still go somewhere, the least
recently failed first: a fleet-wide blip costs retries, not jobs. Each change is logged once and shows in
the metrics (`sprout_llm_replica_up`, `sprout_llm_replica_ejections`); requests in flight are counted per
replica in `sprout_llm_in_flight`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable, Collection, Iterator, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from app.ops.metrics import LLM_IN_FLIGHT, REPLICA_EJECTIONS, REPLICA_UP

log = logging.getLogger(__name__)

Probe = Callable[["Replica"], Awaitable[str | None]]  # None: healthy; otherwise why not


@dataclass(eq=False, slots=True)
class Replica:
    """One server of a backend, and what this process knows of it."""

    index: int
    url: str  # its API root (http://host:8000/v1)
    label: str  # host:port: its name in metrics, logs and health reports
    health_url: str | None  # what the probe asks (None: not probed)
    in_flight: int = 0  # requests this process has sent it and not yet seen answered
    up: bool = True  # in rotation
    failed_at: float | None = None  # clock time of its latest failure (the one that took it out, or later)
    reason: str | None = None  # why it is out
    answered: int = 0  # attempts it answered (any HTTP answer that was not a failure)
    failures: int = 0  # attempts that failed on it


def server_root(url: str) -> str:
    """The server's root for an API root: vLLM serves /health beside /v1, not under it."""
    url = url.rstrip("/")
    return url[: -len("/v1")] if url.endswith("/v1") else url


def replica_label(url: str) -> str:
    """host:port of a URL (the scheme's default port when it names none)."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    port = port or (443 if parts.scheme == "https" else 80)
    host = parts.hostname or ""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class ReplicaPool:
    """The replicas of one backend. Use it inside one event loop (it holds no lock: nothing here awaits)."""

    def __init__(
        self,
        backend: str,
        urls: Sequence[str],
        *,
        health_path: str | None = "/health",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not urls:
            raise ValueError("a replica pool needs at least one URL")
        labels = [replica_label(url) for url in urls]
        if len(set(labels)) < len(labels):  # replicas behind one host:port (a proxy's paths): add the path
            labels = [f"{label}{urlsplit(url).path}" for label, url in zip(labels, urls, strict=True)]
        self.backend = backend
        self.replicas = [
            Replica(
                index=i,
                url=url,
                label=label,
                health_url=f"{server_root(url)}{health_path}" if health_path else None,
            )
            for i, (url, label) in enumerate(zip(urls, labels, strict=True))
        ]
        self._clock = clock
        self._turn = 0  # round-robin cursor among replicas tied on in-flight requests
        self._prober: asyncio.Task[None] | None = None
        for replica in self.replicas:
            REPLICA_UP.labels(backend, replica.label).set(1)

    def __len__(self) -> int:
        return len(self.replicas)

    @property
    def probed(self) -> bool:
        """Whether a health probe runs: only with several replicas (one alone is always tried anyway)."""
        return len(self.replicas) > 1 and any(r.health_url for r in self.replicas)

    # -- choosing ---------------------------------------------------------------------------------------------

    def pick(self, avoid: Collection[Replica] = (), exclude: Collection[Replica] = ()) -> Replica:
        """The replica for the next attempt.

        In rotation first: the fewest requests in flight, ties in turn. `avoid` (where this request just
        failed) is passed over while any other replica is in rotation; `exclude` (replicas that refused this
        request outright) is left out unless nothing else is left. When every candidate is out, the least
        recently failed one (`avoid` last)."""
        candidates = [r for r in self.replicas if r not in exclude] or list(self.replicas)
        up = [r for r in candidates if r.up]
        if up:
            fresh = [r for r in up if r not in avoid] or up
            count = len(self.replicas)
            chosen = min(fresh, key=lambda r: (r.in_flight, (r.index - self._turn) % count))
            self._turn = (chosen.index + 1) % count
            return chosen
        return min(
            candidates,
            key=lambda r: (
                r in avoid,
                r.failed_at if r.failed_at is not None else -math.inf,
                r.in_flight,
                r.index,
            ),
        )

    @contextlib.contextmanager
    def attempt(
        self, avoid: Collection[Replica] = (), exclude: Collection[Replica] = ()
    ) -> Iterator[Replica]:
        """Pick a replica and count one request in flight on it for the duration."""
        replica = self.pick(avoid, exclude)
        gauge = LLM_IN_FLIGHT.labels(self.backend, replica.label)
        replica.in_flight += 1
        gauge.inc()
        try:
            yield replica
        finally:
            replica.in_flight -= 1
            gauge.dec()

    # -- in and out of rotation -------------------------------------------------------------------------------

    def now(self) -> float:
        return self._clock()

    def mark_down(self, replica: Replica, reason: str) -> bool:
        """A failed connection, a timeout or a failed probe: take the replica out (or keep it out, noting the
        time). Returns whether it was in rotation until now."""
        replica.failed_at = self._clock()
        replica.reason = reason
        if not replica.up:
            return False
        replica.up = False
        REPLICA_UP.labels(self.backend, replica.label).set(0)
        REPLICA_EJECTIONS.labels(self.backend, replica.label).inc()
        others = sum(1 for r in self.replicas if r.up)
        log.warning(
            "backend %s: replica %s taken out of rotation (%s); %d of %d in rotation",
            self.backend,
            replica.label,
            reason,
            others,
            len(self.replicas),
        )
        return True

    def mark_up(self, replica: Replica, since: float | None = None) -> bool:
        """The replica answered (a probe, or a request when no probe runs): put it back, unless it failed
        after `since` (when that evidence was gathered). Returns whether it was out until now."""
        if replica.up:
            return False
        if since is not None and replica.failed_at is not None and replica.failed_at > since:
            return False  # the answer is older than the latest failure
        replica.up = True
        replica.reason = None
        REPLICA_UP.labels(self.backend, replica.label).set(1)
        log.info(
            "backend %s: replica %s back in rotation; %d of %d in rotation",
            self.backend,
            replica.label,
            sum(1 for r in self.replicas if r.up),
            len(self.replicas),
        )
        return True

    def succeeded(self, replica: Replica, since: float) -> None:
        """An attempt started at `since` got its answer. Without a probe, that answer is what puts a replica
        back; with one, the probe alone does (a replica whose /health fails stays out, without flapping)."""
        replica.answered += 1
        if not self.probed:
            self.mark_up(replica, since)

    def failed(self, replica: Replica, reason: str, *, take_out: bool) -> None:
        """An attempt failed on `replica`; `take_out` for failures that say the server is gone (connection
        errors, timeouts)."""
        replica.failures += 1
        if take_out:
            self.mark_down(replica, reason)

    # -- the health probe -------------------------------------------------------------------------------------

    def start_probing(self, probe: Probe, interval: float) -> None:
        """Start the probe in the running loop, once (no-op when it runs, or when there is nothing to probe):
        every replica at once, now and then every `interval` seconds."""
        if not self.probed:
            return
        loop = asyncio.get_running_loop()
        running = self._prober
        if running is not None and not running.done() and running.get_loop() is loop:
            return  # (a task of a loop that has gone away never finishes: the probe starts anew here)
        self._prober = loop.create_task(
            self._probe_forever(probe, interval), name=f"replica-probe-{self.backend}"
        )

    async def probe_once(self, probe: Probe) -> None:
        """Ask every replica (at once) and take each out or put it back by its answer."""

        async def one(replica: Replica) -> None:
            started = self._clock()
            try:
                error = await probe(replica)
            except Exception as exc:  # noqa: BLE001 (a probe that cannot even ask says "not healthy")
                error = f"{type(exc).__name__}: {exc}"
            if error is None:
                self.mark_up(replica, since=started)
            else:
                self.mark_down(replica, f"health check: {error}")

        await asyncio.gather(*(one(r) for r in self.replicas if r.health_url is not None))

    async def _probe_forever(self, probe: Probe, interval: float) -> None:
        while True:
            try:
                await self.probe_once(probe)
            except Exception:  # pragma: no cover (probe_once catches the probe's errors; this keeps it alive)
                log.exception("backend %s: health probe failed", self.backend)
            await asyncio.sleep(interval)

    async def aclose(self) -> None:
        """Stop the probe."""
        task, self._prober = self._prober, None
        if task is None or task.done():
            return
        task.cancel()
        if task.get_loop() is asyncio.get_running_loop():
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # -- reporting --------------------------------------------------------------------------------------------

    def state(self) -> list[dict[str, Any]]:
        """Per replica: name, in rotation or not (and why), requests in flight, attempts answered and failed."""
        return [
            {
                "replica": r.label,
                "in_rotation": r.up,
                **({"reason": r.reason} if r.reason else {}),
                "in_flight": r.in_flight,
                "answered": r.answered,
                "failures": r.failures,
            }
            for r in self.replicas
        ]
