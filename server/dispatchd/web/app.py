"""Routes, CSRF, auth and actions of the operator dashboard.

Every action calls the same backend method the matching gRPC RPC calls, so it works on
every backend and is journaled, frozen by a drain and validated as the RPC is.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import math
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib import resources
from typing import Any

from dispatchd.backend import Backend, DrainReport
from dispatchd.engine import EngineError, JobState, QueueView, Rate
from dispatchd.engine import errors as engine_errors
from dispatchd.loop_http import bearer_token
from dispatchd.security import Role, TokenTable
from dispatchd.web import pages, schedule_page, search
from dispatchd.web.bulk import Bulk
from dispatchd.web.errors import WebError
from dispatchd.web.links import url
from dispatchd.web.live import LiveStreams
from dispatchd.web.origin import check_host, check_origin
from dispatchd.web.overview import Attention, attention, sort_rated
from dispatchd.web.pulse import Pulse
from dispatchd.web.server import Request, Response
from dispatchd.web.sessions import SESSION_SECONDS, Sessions
from dispatchd.web.trends import FleetChart, Trend, Trends

log = logging.getLogger("dispatchd.web")

PAGE_SIZE = 50
#: Seconds an /api/overview answer is reused (tabs poll every 2 s).
OVERVIEW_CACHE = 1.0
#: Queues (trends read and rated, JSON rows written) the overview handles between two
#: yields to the loop.
_YIELD_EVERY = 25
#: Seconds between two readings of Backend.fleet_counts for the overview's chart (at most:
#: with shorter buckets, once a bucket).
SAMPLE_SECONDS = 1.0
#: The pushed pages (GET /api/live/<page>) and their topics (web/pulse.py).
_PUSHED = {"overview": "overview", "workers": "workers"}
#: The longest drain grace the dashboard offers: an hour is already a long goodbye.
MAX_DRAIN_GRACE = 3600.0
COOKIE = "dispatchd_session"
STATIC = {
    "dashboard.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
#: The states a queue's jobs can be filtered by (?state=NAME).
_STATES = {s.name: s for s in JobState if s.name in pages.FILTER_STATES}
_STATUS = {
    engine_errors.InvalidArgument: 400,
    engine_errors.NotFound: 404,
    engine_errors.FailedPrecondition: 409,
    engine_errors.ResourceExhausted: 409,
    engine_errors.Unavailable: 409,
}


@dataclass(frozen=True, slots=True)
class Hooks:
    """What the dashboard needs from the running server besides the backend."""

    clock: Callable[[], float]
    start_drain: Callable[[float | None], Awaitable[DrainReport | None]]
    tokens: TokenTable | None
    trends: Trends | None = None
    """The sparkline rings (an engine observer the server adds with the dashboard)."""
    allowed_hosts: frozenset[str] = frozenset()
    """Host names besides IP literals and localhost it answers for (DNS rebinding)."""


def _secure(request: Request) -> str:
    """ "; Secure" when the browser reached us over TLS (a TLS-terminating proxy says so in
    X-Forwarded-Proto): the cookie then never travels in clear text."""
    return "; Secure" if request.headers.get("x-forwarded-proto", "").lower() == "https" else ""


def _int(form: dict[str, str], name: str, low: int, high: int) -> int:
    text = form.get(name, "").strip()
    try:
        value = int(text)
    except ValueError:
        raise WebError(400, f"{name} must be an integer, got {text!r}") from None
    if not low <= value <= high:
        raise WebError(400, f"{name} must be {low}..{high}, got {value}")
    return value


def _grace(form: dict[str, str]) -> float | None:
    """The drain grace in seconds; empty means the server's --drain-grace."""
    text = form.get("grace", "").strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        raise WebError(400, f"grace must be a number of seconds, got {text!r}") from None
    if not (math.isfinite(value) and 0 <= value <= MAX_DRAIN_GRACE):
        raise WebError(400, f"grace must be 0..{MAX_DRAIN_GRACE:g} seconds, got {text}")
    return value


def _required(form: dict[str, str], name: str) -> str:
    value = form.get(name, "")
    if not value:
        raise WebError(400, f"missing form field {name!r}")
    return value


class Dashboard:
    """``handle(request)`` answers one dashboard request."""

    def __init__(self, backend: Backend, hooks: Hooks) -> None:
        self._backend = backend
        self._hooks = hooks
        self._secret = secrets.token_bytes(32)  # per process: tokens die with it
        self._sessions = Sessions()
        self._bulk = Bulk(backend)
        self._pulse = Pulse(self._topic)
        self._live = LiveStreams(backend, self._pulse)
        #: The latest /api/overview answers (with ?all=1 and without) and their times.
        self._overview_cache: dict[bool, tuple[float, bytes]] = {}
        bucket = hooks.trends.bucket_seconds if hooks.trends is not None else 5.0
        buckets = hooks.trends.buckets if hooks.trends is not None else 60
        #: The chart: the fleet's counts (every replica's on Redis), read every second.
        self.chart = FleetChart(bucket, buckets)
        self._sampling: asyncio.Task[None] | None = None

    # ---- lifecycle ------------------------------------------------------------------

    async def start(self) -> None:
        """Starts reading the fleet's counts for the chart (from now on)."""
        await self.sample()
        self._sampling = asyncio.get_running_loop().create_task(self._sample_loop())

    async def close(self) -> None:
        if self._sampling is not None:
            self._sampling.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sampling
        await self._pulse.close()

    async def sample(self) -> None:
        """One reading of the fleet's counts into the chart."""
        try:
            counts = await self._backend.fleet_counts()
        except Exception as e:  # noqa: BLE001 - Redis away, or closed at a drain's end:
            log.debug("fleet counts not read: %s", e)  # those jobs show in the next reading
            return
        self.chart.sample(self._hooks.clock(), counts)

    async def _sample_loop(self) -> None:
        every = min(SAMPLE_SECONDS, self.chart.bucket_seconds)
        while True:
            await asyncio.sleep(every)
            await self.sample()

    async def _topic(self, topic: str) -> bytes:
        """A pushed topic's JSON (web/pulse.py): what /api/overview or /api/workers say."""
        if topic == "workers":
            return pages.workers_json(await self._backend.list_workers())
        return await self._overview_json(topic == "overview-all")

    # ---- auth and CSRF ------------------------------------------------------------

    def _credential(self, request: Request) -> str:
        """The admin token of the request ('' with auth off): an ``Authorization: Bearer``
        header, or the session the HttpOnly cookie /login sets names. Raises WebError."""
        if self._hooks.tokens is None:
            return ""
        token = bearer_token(request.headers.get("authorization", ""))
        session = request.cookie(COOKIE)
        if not token and session:
            token = self._sessions.token(session, self._hooks.clock()) or ""
            if not token:
                raise WebError(401, "the session has ended; log in again at /login")
        if not token:
            raise WebError(401, "auth is on: log in at /login or send 'Authorization: Bearer'")
        self._check_admin(token)
        return token

    def _check_admin(self, token: str) -> None:
        assert self._hooks.tokens is not None
        identity = self._hooks.tokens.identify(token)
        if identity is None:
            raise WebError(401, "unknown token; log in again at /login")
        if not identity.has(Role.ADMIN):
            raise WebError(403, "the dashboard needs a token with the admin role")

    def _login(self, request: Request) -> Response:
        """A form that trades the admin token for an HttpOnly, SameSite=Strict cookie, so
        a browser can use the dashboard with auth on (scripts on the page never see it)."""
        if request.method != "POST":
            return Response(200, pages.login_page(self._hooks.tokens is not None))
        if self._hooks.tokens is None:
            raise WebError(400, "auth is off: no login needed")
        token = request.form.get("token", "").strip()
        self._check_admin(token)
        session = self._sessions.open(token, self._hooks.clock())
        cookie = (
            f"{COOKIE}={session}; HttpOnly; SameSite=Strict; Path=/; "
            f"Max-Age={int(SESSION_SECONDS)}{_secure(request)}"
        )
        return Response(200, pages.done_page("logged in", "/"), headers={"Set-Cookie": cookie})

    def _account(self, page: str, request: Request) -> Response:
        if page == "login":
            return self._login(request)
        return self._logout(request, self._credential(request))

    def _logout(self, request: Request, credential: str) -> Response:
        """Ends the session the cookie names (a POST with the page's CSRF token)."""
        if request.method != "POST":
            return Response(200, pages.logout_page(self.csrf_token(credential)))
        self._check_csrf(request.form, credential)
        session = request.cookie(COOKIE)
        if session:
            self._sessions.close(session)
        cookie = f"{COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0{_secure(request)}"
        return Response(
            200, pages.done_page("logged out", "/login"), headers={"Set-Cookie": cookie}
        )

    def _sign(self, nonce: str, credential: str) -> str:
        bound = hashlib.sha256(credential.encode()).hexdigest()
        msg = f"{nonce}|{bound}".encode()
        return hmac.new(self._secret, msg, hashlib.sha256).hexdigest()

    def csrf_token(self, credential: str) -> str:
        nonce = secrets.token_hex(8)
        return f"{nonce}.{self._sign(nonce, credential)}"

    def _check_csrf(self, form: dict[str, str], credential: str) -> None:
        nonce, _, mac = form.get("csrf", "").partition(".")
        if not nonce or not hmac.compare_digest(mac, self._sign(nonce, credential)):
            raise WebError(403, "missing or invalid CSRF token; reload the page and retry")

    # ---- routing -----------------------------------------------------------------

    async def handle(self, request: Request) -> Response:
        check_host(request.headers, self._hooks.allowed_hosts)
        if request.method == "POST":
            check_origin(request.headers)
        try:
            return await self._route(request)
        except EngineError as e:
            raise WebError(_STATUS.get(type(e), 400), str(e)) from None

    async def _route(self, request: Request) -> Response:
        parts = [p for p in request.path.split("/") if p]
        if parts == ["favicon.ico"]:  # browsers ask for it even on the login page
            parts = ["static", "favicon.svg"]
        if parts[:1] == ["static"]:
            return self._static(request, parts[1:])
        if parts in (["login"], ["logout"]):
            return self._account(parts[0], request)
        credential = self._credential(request)
        if parts[:1] == ["actions"] and len(parts) == 2:
            if request.method != "POST":
                raise WebError(405, "actions are POST forms")
            self._check_csrf(request.form, credential)
            return await self._action(parts[1], request.form, self.csrf_token(credential))
        if request.method not in ("GET", "HEAD"):
            raise WebError(405, "only GET here; actions are POST to /actions/<name>")
        return await self._page(parts, request, self.csrf_token(credential))

    async def _page(self, parts: list[str], request: Request, csrf: str) -> Response:
        """A GET of an authorized caller."""
        b = self._backend
        if not parts:
            every = request.query.get("all") == "1"
            return Response(200, pages.overview_page(await self._fleet(), csrf, every))
        if parts == ["api", "events"]:
            return await self._events(request)
        if len(parts) == 3 and parts[:2] == ["api", "live"] and parts[2] in _PUSHED:
            every = parts[2] == "overview" and request.query.get("all") == "1"
            return self._pushed(request, parts[2], _PUSHED[parts[2]] + ("-all" if every else ""))
        if parts[:1] == ["api"]:
            query = request.query
            return await self._api(parts[1:], query.get("all") == "1", query.get("queue", ""))
        if parts in (["workers"], ["schedules"]):
            return await self._listing(parts[0])
        if len(parts) == 2 and parts[0] == "queues":
            return await self._queue(parts[1], request.query, csrf)
        if len(parts) == 2 and parts[0] == "jobs":
            return Response(200, pages.job_page(await b.get_job(parts[1]), csrf))
        if len(parts) == 3 and parts[0] == "jobs" and parts[2] in ("payload", "result"):
            return await self._download(parts[1], parts[2])
        if parts == ["search"]:
            return await self._search(request.query)
        raise WebError(404, "no such page; try /")

    async def _search(self, query: dict[str, str]) -> Response:
        text = query.get("q", "").strip()
        field = query.get("field", "any")
        if field not in search.FIELDS:
            raise WebError(400, f"field must be one of {', '.join(search.FIELDS)}, got {field!r}")
        queue = query.get("queue", "").strip()
        found = await search.find_jobs(self._backend, text, field, queue) if text else None
        return Response(200, pages.search_page(text, field, queue, found))

    async def _download(self, job_id: str, which: str) -> Response:
        """The whole payload (or result) as an attachment: never rendered by the browser
        (octet-stream, nosniff, attachment), so any bytes are safe to hand over."""
        job = await self._backend.get_job(job_id)
        body = job.payload if which == "payload" else job.result
        disposition = f'attachment; filename="{job.id}.{which}"'  # ids are [0-9A-Z]
        return Response(
            200, body, "application/octet-stream", headers={"Content-Disposition": disposition}
        )

    async def _fleet(self) -> pages.Fleet:
        b = self._backend
        figures = await b.queue_figures()  # the views, and what they hold dead and why
        views = [f.view for f in figures]
        workers = await b.list_workers()
        now = self._hooks.clock()
        trends: dict[str, Trend | None] = {}
        rated: list[tuple[QueueView, Attention]] = []
        for i, f in enumerate(figures):
            if i and i % _YIELD_EVERY == 0:
                await asyncio.sleep(0)  # let dispatch run between slices of many queues
            v = f.view
            trend = trends[v.name] = self._trend(v.name)
            rated.append((v, attention(v, trend, f, now)))
        rates = self.chart.rates(now)
        by_name = {f.view.name: f for f in figures}
        shared = b.capabilities.shared
        rated = sort_rated(rated)
        return pages.Fleet(views, workers, trends, rates, shared, by_name, now, rated)

    def forget_overview(self) -> None:
        """Drops the cached /api/overview answers (the bench computes them afresh)."""
        self._overview_cache.clear()

    async def overview_json(self, every: bool) -> bytes:
        """/api/overview's body (every queue's rows with ``every``)."""
        return await self._overview_json(every)

    async def _overview_json(self, every: bool) -> bytes:
        """/api/overview, computed at most once per OVERVIEW_CACHE seconds: every open tab
        polls it, and many tabs must not mean many passes over a thousand queues."""
        now = self._hooks.clock()
        cached = self._overview_cache.get(every)
        if cached is not None and 0 <= now - cached[0] < OVERVIEW_CACHE:
            return cached[1]
        pieces: list[str] = []
        for i, piece in enumerate(pages.overview_json_parts(await self._fleet(), every)):
            if i % _YIELD_EVERY == 0:
                await asyncio.sleep(0)  # let dispatch run between slices of the rows
            pieces.append(piece)
        body = "".join(pieces).encode()
        self._overview_cache[every] = (now, body)
        return body

    async def _events(self, request: Request) -> Response:
        """The Server-Sent Events the job and queue pages listen to (web/live.py)."""
        if request.method != "GET":
            raise WebError(405, "only GET: a HEAD would hold a stream slot for nothing")
        stream = await self._live.start(request.query, request.headers.get("last-event-id", ""))
        headers = {"X-Accel-Buffering": "no"}  # a proxy must not hold events back
        return Response(200, b"", "text/event-stream", headers, stream=stream.run)

    def _pushed(self, request: Request, page: str, topic: str) -> Response:
        """The overview's or the workers page's figures, pushed (web/pulse.py)."""
        if request.method != "GET":
            raise WebError(405, "only GET: a HEAD would hold a stream slot for nothing")
        stream = self._live.pushed(topic, page)
        headers = {"X-Accel-Buffering": "no"}
        return Response(200, b"", "text/event-stream", headers, stream=stream.run)

    async def _api(self, parts: list[str], every: bool, queue: str) -> Response:
        """The JSON the pages' live refresh polls."""
        b = self._backend
        if parts == ["queues"] and queue:
            body = pages.queues_json([await b.get_queue(queue)], self._trend)
        elif parts == ["queues"]:
            body = pages.queues_json(await b.list_queues(), self._trend)
        elif parts == ["overview"]:
            body = await self._overview_json(every)
        elif parts == ["workers"]:
            body = pages.workers_json(await b.list_workers())
        elif len(parts) == 2 and parts[0] == "jobs":
            body = pages.job_json(await b.get_job(parts[1]))
        else:
            raise WebError(
                404,
                "no such API; /api/overview, /api/queues, /api/workers, /api/jobs/ID, "
                "/api/events?job=ID|queue=NAME, /api/live/overview, /api/live/workers",
            )
        return Response(200, body, "application/json")

    async def _listing(self, page: str) -> Response:
        """The workers page, or the schedules page."""
        b = self._backend
        if page == "workers":
            workers = await b.list_workers()
            return Response(200, pages.workers_page(workers, b.capabilities.shared))
        found, more = await b.list_schedules(schedule_page.SHOWN, "")
        return Response(200, schedule_page.schedules_page(found, bool(more)))

    @staticmethod
    def _static(request: Request, name: list[str]) -> Response:
        """The page's own assets, public like any login page's (nothing secret in them)."""
        if len(name) != 1 or name[0] not in STATIC:
            raise WebError(404, "no such file")
        if request.method not in ("GET", "HEAD"):
            raise WebError(405, "only GET")
        body = resources.files("dispatchd.web").joinpath("static", name[0]).read_bytes()
        return Response(200, body, STATIC[name[0]])

    def _trend(self, queue: str) -> Trend | None:
        trends = self._hooks.trends
        return None if trends is None else trends.trend(queue, self._hooks.clock())

    async def _queue(self, name: str, query: dict[str, str], csrf: str) -> Response:
        b = self._backend
        view = await b.get_queue(name)
        token = query.get("page", "")
        state_name = query.get("state", "").upper()
        if state_name:
            state = _STATES.get(state_name)
            if state is None:
                raise WebError(400, f"state must be one of {', '.join(_STATES)}")
            jobs, next_token = await b.list_jobs(name, state, PAGE_SIZE, token)
            return Response(200, pages.queue_state_page(view, state, jobs, next_token, csrf))
        pending, next_token = await b.list_jobs(name, JobState.PENDING, PAGE_SIZE, token)
        underway, _ = await b.list_jobs(name, JobState.UNDERWAY, PAGE_SIZE, "")
        dead, _ = await b.list_jobs(name, JobState.DEAD, PAGE_SIZE, "")
        body = pages.queue_page(view, pending, next_token, underway, dead, csrf)
        return Response(200, body)

    # ---- actions -----------------------------------------------------------------

    async def _action(self, action: str, form: dict[str, str], csrf: str) -> Response:
        if action in Bulk.NAMES:
            return await self._bulk_action(action, form, csrf)
        describe = _ACTIONS.get(action)
        if describe is None:
            names = ", ".join([*_ACTIONS, *Bulk.NAMES])
            raise WebError(404, f"unknown action {action!r}; one of {names}")
        what, run = describe
        args = {k: v for k, v in form.items() if k not in ("csrf", "confirm")}
        await self._validate(action, form)  # bad input is refused before the confirmation too
        if form.get("confirm") != "yes":
            summary = what + ": " + ", ".join(f"{k}={v}" for k, v in sorted(args.items()))
            return Response(200, pages.confirm_page(action, form, csrf, summary))
        message, back = await run(self, form)
        return Response(200, pages.done_page(message, back))

    async def _bulk_action(self, action: str, form: dict[str, str], csrf: str) -> Response:
        """A bulk action: its preview (how many it touches) asks for the confirmation."""
        preview = await self._bulk.preview(action, form)  # validates: bad input stops here
        if form.get("confirm") != "yes":
            return Response(200, pages.confirm_page(action, form, csrf, preview.what, preview))
        message, back = await self._bulk.run(action, form)
        return Response(200, pages.done_page(message, back))

    async def _validate(self, action: str, form: dict[str, str]) -> None:
        if action in ("pause", "resume", "width", "rate", "delete_queue"):
            await self._backend.get_queue(_required(form, "queue"))
        if action in ("cancel", "reprioritize", "retry"):
            await self._backend.get_job(_required(form, "job"))
        if action == "width":
            _int(form, "width", 0, 1_000_000)
        if action == "rate":
            self._rate(form)
        if action == "reprioritize":
            _int(form, "priority", -(2**31), 2**31 - 1)
        if action == "drain":
            _grace(form)

    @staticmethod
    def _rate(form: dict[str, str]) -> Rate | None:
        text = form.get("per_second", "").strip()
        if not text:
            return None
        try:
            per_second = float(text)
        except ValueError:
            raise WebError(400, f"per_second must be a number, got {text!r}") from None
        try:
            return Rate.of(per_second, _int(form, "burst", 0, 1_000_000))
        except EngineError as e:
            raise WebError(400, str(e)) from None

    async def _pause(self, form: dict[str, str]) -> tuple[str, str]:
        view = await self._backend.update_queue(form["queue"], paused=True)
        return f"queue {view.name} paused", url("queues", view.name)

    async def _resume(self, form: dict[str, str]) -> tuple[str, str]:
        view = await self._backend.update_queue(form["queue"], paused=False)
        return f"queue {view.name} resumed", url("queues", view.name)

    async def _update(self, form: dict[str, str], **changes: Any) -> tuple[str, str]:
        view = await self._backend.update_queue(form["queue"], **changes)
        return f"queue {view.name} updated", url("queues", view.name)

    async def _width(self, form: dict[str, str]) -> tuple[str, str]:
        return await self._update(form, width=_int(form, "width", 0, 1_000_000))

    async def _set_rate(self, form: dict[str, str]) -> tuple[str, str]:
        return await self._update(form, rate=self._rate(form))

    async def _delete_queue(self, form: dict[str, str]) -> tuple[str, str]:
        forgotten = await self._backend.delete_queue(form["queue"])
        return f"queue {form['queue']} deleted with {forgotten} finished jobs", "/"

    async def _cancel(self, form: dict[str, str]) -> tuple[str, str]:
        job = await self._backend.cancel_job(form["job"])
        return f"job {job.id} is {job.state.name}", url("jobs", job.id)

    async def _reprioritize(self, form: dict[str, str]) -> tuple[str, str]:
        priority = _int(form, "priority", -(2**31), 2**31 - 1)
        job = await self._backend.reprioritize_job(form["job"], priority)
        return f"job {job.id} has priority {job.priority}", url("jobs", job.id)

    async def _retry(self, form: dict[str, str]) -> tuple[str, str]:
        job = await self._backend.retry_job(form["job"])
        return f"job {job.id} is {job.state.name} again", url("jobs", job.id)

    async def _drain(self, form: dict[str, str]) -> tuple[str, str]:
        grace = _grace(form)
        if await self._hooks.start_drain(grace) is None:
            return "a drain is already under way; its grace stays in force", "/"
        within = "the server's --drain-grace" if grace is None else f"{grace:g} s"
        return (
            f"drain started: intake stopped, underway jobs get {within} to end, "
            "then the server stops",
            "/",
        )


_Run = Callable[[Dashboard, dict[str, str]], Awaitable[tuple[str, str]]]
_ACTIONS: dict[str, tuple[str, _Run]] = {
    "pause": ("Pause queue", Dashboard._pause),
    "resume": ("Resume queue", Dashboard._resume),
    "width": ("Set width", Dashboard._width),
    "rate": ("Set rate", Dashboard._set_rate),
    "delete_queue": ("Delete queue (it must be empty)", Dashboard._delete_queue),
    "cancel": ("Cancel job", Dashboard._cancel),
    "reprioritize": ("Reprioritize job", Dashboard._reprioritize),
    "retry": ("Retry job", Dashboard._retry),
    "drain": ("Drain the server", Dashboard._drain),
}
