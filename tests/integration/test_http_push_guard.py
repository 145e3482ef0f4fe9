"""HTTP push as a way in (issue 24, items 10 and 12): a queue's target cannot make the server
call its own network (loopback, private, link-local and metadata addresses are refused
statically and on every connection unless --http-allow-cidr lists them), a response body is
kept only when the queue asks for it, and target headers are write-only."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator

import pytest

from dispatchd.config import Config
from dispatchd.runtime import DispatchdServer
from dispatchd_client import AsyncClient, FailedPrecondition, HttpTarget, JobState, NotFound

from ..inproc import serving
from .dispatchctl import Dispatchctl
from .endpoint import Endpoint

#: What the push tests allow: the endpoint listens on 127.0.0.1.
LOOPBACK = ("127.0.0.0/8",)


@pytest.fixture
async def endpoint() -> AsyncIterator[Endpoint]:
    ep = await Endpoint().start()
    try:
        yield ep
    finally:
        await ep.stop()


@pytest.mark.parametrize(
    ("host", "kind"),
    [
        ("127.0.0.1:{port}", "loopback"),
        ("2130706433:{port}", "loopback"),  # 127.0.0.1 as one number
        ("0x7f.1:{port}", "loopback"),
        ("[::1]:{port}", "loopback"),
        ("[::ffff:127.0.0.1]:{port}", "loopback"),
        ("0.0.0.0:{port}", "unspecified"),
        ("10.1.2.3", "private"),
        ("192.168.0.1", "private"),
        ("172.16.5.4", "private"),
        ("100.64.0.1", "shared"),
        ("169.254.169.254", "link-local"),  # the cloud metadata service
        ("[fd00:ec2::254]", "private"),  # its IPv6 address on AWS
        ("[fe80::1]", "link-local"),
        ("224.0.0.1", "multicast"),
        ("[64:ff9b::a9fe:a9fe]", "link-local"),  # 169.254.169.254 through NAT64
    ],
)
async def test_a_target_on_an_internal_address_is_refused_naming_the_flag(
    client: AsyncClient, endpoint: Endpoint, host: str, kind: str
) -> None:
    port = endpoint.url.rsplit(":", 1)[1]
    url = f"http://{host.format(port=port)}/hook"
    with pytest.raises(FailedPrecondition, match=f"{kind}.*--http-allow-cidr"):
        await client.update_queue("ssrf", http_target=HttpTarget(url=url), create=True)
    with pytest.raises(NotFound):  # refused whole: not even the queue was created
        await client.get_queue("ssrf")
    assert endpoint.calls == []


async def test_a_hostname_that_resolves_to_loopback_is_refused_when_it_connects(
    client: AsyncClient, endpoint: Endpoint
) -> None:
    """`localhost` is a name, so UpdateQueue cannot know where it leads; the connection
    does (as it would for a name whose DNS answer changes later): the attempt fails,
    not to be retried, and the endpoint is never called."""
    port = endpoint.url.rsplit(":", 1)[1]
    target = HttpTarget(url=f"http://localhost:{port}/hook")
    await client.update_queue("rebind", http_target=target, create=True)
    job = await client.submit("rebind", b"x")
    done = await client.wait(job.id, timeout=10)
    assert done.state is JobState.FAILED
    assert done.error is not None
    assert (done.error.code, done.error.retryable) == ("TargetForbidden", False)
    assert "loopback" in done.error.message
    assert "--http-allow-cidr" in done.error.message
    assert endpoint.calls == []


@pytest.fixture
async def allowed_target(server_config: Config) -> AsyncIterator[str]:
    """A server whose --http-allow-cidr lets it call the loopback endpoint."""
    config = dataclasses.replace(server_config, http_allow_cidr=LOOPBACK)
    async with serving(DispatchdServer(config)) as srv:
        yield f"127.0.0.1:{srv.port}"


@pytest.fixture
async def allowed(allowed_target: str) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(allowed_target) as c:
        yield c


async def test_the_allow_list_lets_internal_targets_through(
    allowed: AsyncClient, endpoint: Endpoint
) -> None:
    port = endpoint.url.rsplit(":", 1)[1]
    for name, url in [("by-ip", endpoint.url), ("by-name", f"http://localhost:{port}")]:
        await allowed.update_queue(name, http_target=HttpTarget(url=url + "/"), create=True)
        job = await allowed.submit(name, b"x")
        assert (await allowed.wait(job.id, timeout=10)).state is JobState.SUCCEEDED
    # Only what the list names: 10.0.0.0/8 stays refused.
    with pytest.raises(FailedPrecondition, match="private"):
        await allowed.update_queue("other", http_target=HttpTarget(url="http://10.0.0.1/"))


async def test_the_response_body_is_kept_only_when_the_queue_asks(
    allowed: AsyncClient, endpoint: Endpoint
) -> None:
    await allowed.update_queue("drop", http_target=HttpTarget(url=endpoint.url), create=True)
    keep = HttpTarget(url=endpoint.url, keep_response_body=True)
    queue = await allowed.update_queue("keep", http_target=keep, create=True)
    assert queue.http_target is not None
    assert queue.http_target.keep_response_body is True
    dropped = await allowed.wait((await allowed.submit("drop", b"a")).id, timeout=10)
    kept = await allowed.wait((await allowed.submit("keep", b"b")).id, timeout=10)
    assert (dropped.state, dropped.result) == (JobState.SUCCEEDED, b"")
    assert (kept.state, kept.result) == (JobState.SUCCEEDED, b"ok:b")


async def test_target_headers_are_write_only(
    allowed: AsyncClient, allowed_target: str, endpoint: Endpoint
) -> None:
    secret = "Bearer s3cr3t-token"
    target = HttpTarget(url=endpoint.url, headers={"Authorization": secret, "X-Team": "a"})
    answers = [
        (await allowed.update_queue("hdr", http_target=target, create=True)).http_target,
        (await allowed.get_queue("hdr")).http_target,
        *[q.http_target for q in await allowed.list_queues() if q.name == "hdr"],
    ]
    for shown in answers:
        assert shown is not None
        assert (shown.headers, shown.header_names) == ({}, ("Authorization", "X-Team"))
    job = await allowed.submit("hdr", b"x")
    assert (await allowed.wait(job.id, timeout=10)).state is JobState.SUCCEEDED
    assert endpoint.calls[0].headers["authorization"] == secret  # the stored form keeps it
    ctl = Dispatchctl(allowed_target)
    for args in (("queue", "show", "hdr"), ("queue", "show", "hdr", "-o", "json")):
        run = await ctl(*args)
        assert run.code == 0, run.err
        assert "s3cr3t" not in run.out
        assert "Authorization" in run.out
    run = await ctl("queues", "-o", "json")
    assert run.code == 0
    assert "s3cr3t" not in run.out
