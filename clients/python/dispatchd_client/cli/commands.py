"""What each dispatchctl command does: build the request, call, show the answer.

Every command takes the parsed arguments and an :class:`Api`, and prints either a table for
people or the response as JSON (``--output json``). Failures propagate as ``grpc.RpcError``
(the entry point prints the server's status and message) or
:class:`~dispatchd_client.cli.requests.UsageError`.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.message import Message

from dispatchd_client.cli import render
from dispatchd_client.cli import requests as rq
from dispatchd_client.errors import status_code_of
from dispatchd_client.v1 import dispatcher_pb2 as pb
from dispatchd_client.v1 import dispatcher_pb2_grpc as pb_grpc

CLEAR = "\x1b[H\x1b[2J"
PAGE_SIZE = 500


class Api:
    """The generated stub with dispatchctl's deadline on every call."""

    def __init__(self, channel: grpc.Channel, timeout: float | None) -> None:
        self._stub = pb_grpc.DispatcherServiceStub(channel)
        self._timeout = timeout

    def __call__(self, method: str, request: Message) -> Any:
        return getattr(self._stub, method)(request, timeout=self._timeout)

    def stream(self, method: str, request: Message) -> Any:
        """A server-streaming call, without a deadline (it lasts until cancelled)."""
        return getattr(self._stub, method)(request)


Command = Callable[[argparse.Namespace, Api], None]


def details_of(e: grpc.RpcError) -> str:
    """The status message of a failed call (a bare RpcError has none)."""
    details = getattr(e, "details", None)
    text = details() if callable(details) else None
    return str(text) if text else str(e)


def _emit(ns: argparse.Namespace, message: Message, human: Callable[[], str]) -> None:
    print(render.to_json(message) if ns.output == "json" else human())


def queues(ns: argparse.Namespace, api: Api) -> None:
    resp: pb.ListQueuesResponse = api("ListQueues", pb.ListQueuesRequest())
    _emit(ns, resp, lambda: render.queues_table(resp.queues))


def queue_show(ns: argparse.Namespace, api: Api) -> None:
    resp: pb.GetQueueResponse = api("GetQueue", pb.GetQueueRequest(name=ns.name))
    _emit(ns, resp, lambda: render.queue_details(resp.queue))


def queue_set(ns: argparse.Namespace, api: Api) -> None:
    request = rq.update_queue(
        ns.name,
        width=ns.width,
        rate=ns.rate,
        burst=ns.burst,
        lease=ns.lease,
        create=ns.create,
        max_throttle_bounces=ns.max_throttle_bounces,
        adaptive=ns.adaptive,
        windows=ns.windows,
    )
    resp: pb.UpdateQueueResponse = api("UpdateQueue", request)
    _emit(ns, resp, lambda: render.queue_details(resp.queue))


def pause(ns: argparse.Namespace, api: Api) -> None:
    resp: pb.PauseQueueResponse = api("PauseQueue", pb.PauseQueueRequest(name=ns.name))
    _emit(ns, resp, lambda: render.queue_details(resp.queue))


def resume(ns: argparse.Namespace, api: Api) -> None:
    resp: pb.ResumeQueueResponse = api("ResumeQueue", rq.resume_queue(ns.name, ns.width))
    _emit(ns, resp, lambda: render.queue_details(resp.queue))


def jobs(ns: argparse.Namespace, api: Api) -> None:
    """Pages through ListJobs until --limit jobs; says so on stderr when more are left."""
    if ns.limit < 1:
        raise rq.UsageError(f"--limit must be >= 1, got {ns.limit}")
    listed = pb.ListJobsResponse()
    token = ""
    while len(listed.jobs) < ns.limit:
        size = min(PAGE_SIZE, ns.limit - len(listed.jobs))
        page: pb.ListJobsResponse = api("ListJobs", rq.list_jobs(ns.name, ns.state, size, token))
        listed.jobs.extend(page.jobs)
        token = page.next_page_token
        if not token:
            break
    listed.next_page_token = token
    _emit(ns, listed, lambda: render.jobs_table(listed.jobs))
    if token and ns.output != "json":
        print(f"(first {len(listed.jobs)} jobs; raise --limit for more)", file=sys.stderr)


def job(ns: argparse.Namespace, api: Api) -> None:
    resp: pb.GetJobResponse = api("GetJob", pb.GetJobRequest(job_id=ns.id))
    _emit(ns, resp, lambda: render.job_details(resp.job))


def _act_on_job(ns: argparse.Namespace, api: Api, method: str, request: Message) -> None:
    """Calls a method that answers ``{job: Job}`` and shows that job as a one-row table."""
    resp = api(method, request)
    _emit(ns, resp, lambda: render.jobs_table([resp.job]))


def cancel(ns: argparse.Namespace, api: Api) -> None:
    _act_on_job(ns, api, "CancelJob", pb.CancelJobRequest(job_id=ns.id))


def reprioritize(ns: argparse.Namespace, api: Api) -> None:
    request = pb.ReprioritizeJobRequest(job_id=ns.id, priority=ns.priority)
    _act_on_job(ns, api, "ReprioritizeJob", request)


def retry(ns: argparse.Namespace, api: Api) -> None:
    _act_on_job(ns, api, "RetryJob", pb.RetryJobRequest(job_id=ns.id))


def _payload(ns: argparse.Namespace) -> bytes:
    if ns.payload is not None:
        return str(ns.payload).encode()
    if ns.payload_file == "-":
        return sys.stdin.buffer.read()
    try:
        return Path(ns.payload_file).read_bytes()
    except OSError as e:
        raise rq.UsageError(f"cannot read --payload-file {ns.payload_file}: {e.strerror}") from None


def submit(ns: argparse.Namespace, api: Api) -> None:
    request = rq.submit(
        ns.name,
        _payload(ns),
        priority=ns.priority,
        content_type=ns.content_type,
        header_map=rq.headers(ns.header),
    )
    resp: pb.SubmitResponse = api("Submit", request)
    _emit(ns, resp, lambda: render.jobs_table([resp.job]))


def drain(ns: argparse.Namespace, api: Api) -> None:
    resp: pb.DrainResponse = api("Drain", rq.drain(ns.grace))
    _emit(
        ns,
        resp,
        lambda: f"draining: {resp.pending_count} pending, {resp.underway_count} underway",
    )


def purge(ns: argparse.Namespace, api: Api) -> None:
    resp: pb.PurgeJobsResponse = api("PurgeJobs", rq.purge(ns.name, ns.state))
    _emit(ns, resp, lambda: f"purged {resp.purged_count} jobs from {ns.name}")


def queue_delete(ns: argparse.Namespace, api: Api) -> None:
    resp: pb.DeleteQueueResponse = api("DeleteQueue", pb.DeleteQueueRequest(name=ns.name))
    _emit(
        ns,
        resp,
        lambda: f"deleted queue {ns.name} and {resp.forgotten_count} finished jobs",
    )


def watch(ns: argparse.Namespace, api: Api) -> None:
    """Redraws the queue table every --interval seconds until --count frames or Ctrl-C.

    On a terminal each frame clears the screen first; into a pipe frames follow each other
    (JSON output: one ListQueuesResponse per line). A server that is briefly unavailable
    (restarting) shows as such in the frame; any other failure ends the watch.
    """
    if ns.events:
        _watch_events(ns, api)
        return
    if ns.interval <= 0:
        raise rq.UsageError(f"--interval must be > 0 seconds, got {ns.interval:g}")
    frames = 1 if ns.once else ns.count
    clear = sys.stdout.isatty() and ns.output != "json"
    shown = 0
    while True:
        _watch_frame(ns, api, clear)
        shown += 1
        if frames is not None and shown >= frames:
            return
        time.sleep(ns.interval)


def _watch_events(ns: argparse.Namespace, api: Api) -> None:
    """One line per event (JSON: one WatchEventsResponse per line), until Ctrl-C or
    --count events. A gap the server reports is printed as such: nothing is skipped
    silently. Pass the last line's token to --from to go on later."""
    kinds = []
    for name in ns.kind:
        try:
            kinds.append(pb.JobEventKind.Value(f"JOB_EVENT_KIND_{name.upper()}"))
        except ValueError:
            raise rq.UsageError(f"--kind {name!r} is not an event kind") from None
    request = pb.WatchEventsRequest(
        queues=ns.queue,
        job_ids=ns.job,
        batch_ids=ns.batch,
        kinds=kinds,  # type: ignore[arg-type]
        resume_token=ns.resume,
    )
    limit = 1 if ns.once else ns.count
    shown = 0
    stream = api.stream("WatchEvents", request)
    try:
        for resp in stream:
            print(render.to_json_line(resp) if ns.output == "json" else render.event_line(resp))
            sys.stdout.flush()
            shown += 1
            if limit is not None and shown >= limit:
                return
    finally:
        stream.cancel()


def _watch_frame(ns: argparse.Namespace, api: Api, clear: bool) -> None:
    try:
        resp: pb.ListQueuesResponse = api("ListQueues", pb.ListQueuesRequest())
    except grpc.RpcError as e:
        if status_code_of(e) != grpc.StatusCode.UNAVAILABLE:
            raise
        body = f"server unavailable: {details_of(e)}"
        if ns.output == "json":
            print(json.dumps({"error": "UNAVAILABLE", "details": details_of(e)}), flush=True)
            return
    else:
        if ns.output == "json":
            print(render.to_json_line(resp), flush=True)
            return
        body = render.queues_table(resp.queues)
    now = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    head = f"dispatchctl watch {ns.target}  every {ns.interval:g}s  {now}"
    sys.stdout.write(f"{CLEAR if clear else ''}{head}\n\n{body}\n\n")
    sys.stdout.flush()
