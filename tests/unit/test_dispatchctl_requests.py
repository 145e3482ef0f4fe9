"""What dispatchctl sends, checked without a server: masks, rate and burst, states."""

from __future__ import annotations

import pytest
from google.protobuf.message import Message

from dispatchd_client.cli import render
from dispatchd_client.cli import requests as rq
from dispatchd_client.cli.app import build_parser
from dispatchd_client.v1 import dispatcher_pb2 as pb


def test_queue_set_names_exactly_the_given_settings() -> None:
    req = rq.update_queue("q", width=4, rate=2.5, burst=10)
    assert list(req.update_mask.paths) == ["width", "rate"]
    assert req.queue.name == "q"
    assert req.queue.width == 4
    assert (req.queue.rate.per_second, req.queue.rate.burst) == (2.5, 10)
    assert not req.allow_missing


def test_rate_alone_leaves_the_burst_to_the_server_and_zero_clears_it() -> None:
    req = rq.update_queue("q", rate=50)
    assert list(req.update_mask.paths) == ["rate"]
    assert req.queue.rate.burst == 0  # the server's default: max(1, ceil(rate))
    cleared = rq.update_queue("q", rate=0)
    assert list(cleared.update_mask.paths) == ["rate"]
    assert not cleared.queue.HasField("rate")  # a masked, unset message clears it


def test_lease_and_create() -> None:
    req = rq.update_queue("q", lease=1.5, create=True)
    assert list(req.update_mask.paths) == ["lease_duration"]
    assert (req.queue.lease_duration.seconds, req.queue.lease_duration.nanos) == (1, 500_000_000)
    assert req.allow_missing


def test_throttle_bounces_and_adaptive() -> None:
    req = rq.update_queue("q", max_throttle_bounces=5, adaptive="floor=2,decrease=0.25,quiet=3")
    assert sorted(req.update_mask.paths) == ["adaptive", "max_throttle_bounces"]
    a = req.queue.adaptive
    assert (a.floor, a.decrease, a.increase, a.quiet_interval.seconds) == (2.0, 0.25, 0.0, 3)
    quotas = rq.update_queue("q", windows="10/1s, 500/1m,20000/1d")
    assert list(quotas.update_mask.paths) == ["windows"]
    assert [(w.limit, w.period.seconds) for w in quotas.queue.windows] == [
        (10, 1),
        (500, 60),
        (20000, 86400),
    ]
    assert not rq.update_queue("q", windows="off").queue.windows
    off = rq.update_queue("q", adaptive="off")
    assert list(off.update_mask.paths) == ["adaptive"]
    assert not off.queue.HasField("adaptive")  # named but unset: cleared


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "nothing to set"),
        ({"max_throttle_bounces": 0}, "--max-throttle-bounces must be 1-10000"),
        ({"adaptive": "decrease=0.5"}, "needs floor="),
        ({"adaptive": "floor=x"}, "key=number pairs"),
        ({"adaptive": "floor=1,speed=2"}, "not 'speed'"),
        ({"windows": "500"}, "limit/period"),
        ({"windows": "500/1w"}, "limit/period"),
        ({"windows": "0/1m"}, "limit/period"),
        ({"burst": 3}, "--burst needs --rate"),
        ({"rate": -1.0}, "--rate must be 0"),
        ({"rate": 2e6}, "--rate must be 0"),
        ({"rate": 0.0, "burst": 3}, "no meaning with --rate 0"),
        ({"rate": 1.0, "burst": -3}, "--burst must be >= 0"),
        ({"width": -1}, "--width must be >= 0"),
        ({"lease": 0.0}, "--lease must be > 0"),
    ],
)
def test_impossible_queue_settings_fail_before_sending(
    kwargs: dict[str, float], message: str
) -> None:
    with pytest.raises(rq.UsageError, match=message):
        rq.update_queue("q", **kwargs)  # type: ignore[arg-type]


class Recorder:
    """Stands in for the CLI's Api: records (method, request), answers ``response``."""

    def __init__(self, response: Message) -> None:
        self.calls: list[tuple[str, Message]] = []
        self.response = response

    def __call__(self, method: str, request: Message) -> Message:
        self.calls.append((method, request))
        return self.response


@pytest.mark.parametrize(
    ("argv", "method", "request_", "response"),
    [
        (
            ["retry", "01JOBID"],
            "RetryJob",
            pb.RetryJobRequest(job_id="01JOBID"),
            pb.RetryJobResponse(job=pb.Job(id="01JOBID", state=pb.JOB_STATE_PENDING)),
        ),
        (
            ["queue", "set", "q", "--rate", "5", "--burst", "20"],
            "UpdateQueue",
            rq.update_queue("q", rate=5, burst=20),
            pb.UpdateQueueResponse(queue=pb.Queue(name="q", rate=pb.Rate(per_second=5))),
        ),
        (
            ["purge", "q", "--state", "dead"],
            "PurgeJobs",
            pb.PurgeJobsRequest(queue="q", state=pb.JOB_STATE_DEAD),
            pb.PurgeJobsResponse(purged_count=3),
        ),
    ],
)
def test_commands_send_their_rpc(
    argv: list[str],
    method: str,
    request_: Message,
    response: Message,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ns = build_parser().parse_args(argv)
    ns.output = "table"
    api = Recorder(response)
    ns.run(ns, api)
    assert api.calls == [(method, request_)]
    assert capsys.readouterr().out.strip()


@pytest.mark.parametrize(
    ("text", "state"),
    [
        ("pending", pb.JOB_STATE_PENDING),
        ("DEAD", pb.JOB_STATE_DEAD),
        ("job_state_failed", pb.JOB_STATE_FAILED),
        ("all", pb.JOB_STATE_UNSPECIFIED),
    ],
)
def test_states(text: str, state: int) -> None:
    assert rq.job_state(text) == state
    assert rq.purge("q", text).state == state


def test_unspecified_is_not_a_state_to_ask_for() -> None:
    with pytest.raises(rq.UsageError, match="unknown state"):
        rq.job_state("unspecified")


def test_rate_column() -> None:
    q = pb.Queue(name="q")
    assert render.rate(q) == "unlimited"
    q.rate.per_second = 2.5
    assert render.rate(q) == "2.5/s"
    q.rate.burst = 10
    assert render.rate(q) == "2.5/s burst 10"


def test_headers_and_drain() -> None:
    assert rq.headers(["a=b", "c=d=e", "empty="]) == {"a": "b", "c": "d=e", "empty": ""}
    with pytest.raises(rq.UsageError, match="KEY=VALUE"):
        rq.headers(["novalue"])
    assert not rq.drain(None).HasField("grace")
    assert rq.drain(2).grace.seconds == 2
    with pytest.raises(rq.UsageError):
        rq.drain(-1)


def test_options_before_or_after_the_command() -> None:
    before = build_parser().parse_args(["-o", "json", "--target", "h:1", "queues"])
    after = build_parser().parse_args(["queues", "-o", "json", "--target", "h:1"])
    assert (before.output, before.target) == (after.output, after.target) == ("json", "h:1")
