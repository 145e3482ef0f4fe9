"""Every role against every RPC: the token decides, the refusals are counted, health is open."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from dispatchd_client import TLS
from dispatchd_client.v1 import dispatcher_pb2 as pb
from tests.integration.security.conftest import WRONG_TOKEN, StartServer, token

SERVICE = pb.DESCRIPTOR.services_by_name["DispatcherService"]
# The groups as the issue states them, written out here rather than read from the server's
# table, so the test checks the table instead of repeating it.
SUBMIT_GROUP = {
    "Submit",
    "SubmitBatch",
    "GetJob",
    "WaitJob",
    "CancelJob",
    "CreateBatch",
    "GetBatch",
    "WaitBatch",
    "CloseBatch",
}
WORK_GROUP = {"Work", "AcquireSlot", "RenewSlot", "ReleaseSlot"}
ADMIN_GROUP = {
    "ReprioritizeJob",
    "ListJobs",
    "GetQueue",
    "ListQueues",
    "UpdateQueue",
    "PauseQueue",
    "ResumeQueue",
    "RetryJob",
    "PurgeJobs",
    "DeleteQueue",
    "Drain",
    "CreateSchedule",
    "GetSchedule",
    "ListSchedules",
    "UpdateSchedule",
    "DeleteSchedule",
    "PauseSchedule",
    "ResumeSchedule",
    "TriggerSchedule",
    "BackfillSchedule",
    "CancelBatch",
    "WatchEvents",
}
ALL = SUBMIT_GROUP | WORK_GROUP | ADMIN_GROUP
ALLOWED = {"admin": ALL, "submit": SUBMIT_GROUP, "work": WORK_GROUP}
REFUSED = {grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED}


def test_every_rpc_of_the_proto_is_in_exactly_one_group() -> None:
    names = {m.name for m in SERVICE.methods}
    assert names == ALL, f"classify {sorted(names - ALL)} in the auth policy and this test"
    assert len(SUBMIT_GROUP) + len(WORK_GROUP) + len(ADMIN_GROUP) == len(ALL)


async def _work(channel: grpc.aio.Channel, metadata: list[tuple[str, str]]) -> grpc.StatusCode:
    call = channel.stream_stream(
        f"/{SERVICE.full_name}/Work",
        request_serializer=pb.WorkRequest.SerializeToString,
        response_deserializer=pb.WorkResponse.FromString,
    )(None, metadata=metadata, timeout=10)
    try:
        await call.write(pb.WorkRequest(hello=pb.WorkerHello(queues=["q"], max_in_flight=1)))
        msg = await call.read()
        assert isinstance(msg, pb.WorkResponse)
        assert msg.HasField("welcome")
        return grpc.StatusCode.OK
    except grpc.aio.AioRpcError as e:
        # A write racing the server's refusal fails as INTERNAL; the call's status says why.
        return await call.code() if call.done() else e.code()
    finally:
        call.cancel()


async def _watch(channel: grpc.aio.Channel, metadata: list[tuple[str, str]]) -> grpc.StatusCode:
    """A server-streaming call: refused at once, or it streams (nothing happens here, so
    its deadline ends it: allowed)."""
    call = channel.unary_stream(
        f"/{SERVICE.full_name}/WatchEvents",
        request_serializer=pb.WatchEventsRequest.SerializeToString,
        response_deserializer=pb.WatchEventsResponse.FromString,
    )(pb.WatchEventsRequest(), metadata=metadata, timeout=0.5)
    try:
        async for _ in call:
            break
    except grpc.aio.AioRpcError as e:
        return e.code()
    finally:
        call.cancel()
    return grpc.StatusCode.OK


async def _call(
    channel: grpc.aio.Channel, name: str, metadata: list[tuple[str, str]]
) -> grpc.StatusCode:
    """The status of calling ``name`` with an empty request (OK or whatever the RPC says)."""
    if name == "Work":
        return await _work(channel, metadata)
    if name == "WatchEvents":
        return await _watch(channel, metadata)
    method = SERVICE.methods_by_name[name]
    request_cls = getattr(pb, method.input_type.name)
    response_cls = getattr(pb, method.output_type.name)
    rpc = channel.unary_unary(
        f"/{SERVICE.full_name}/{name}",
        request_serializer=request_cls.SerializeToString,
        response_deserializer=response_cls.FromString,
    )
    try:
        await rpc(request_cls(), metadata=metadata, timeout=10)
    except grpc.aio.AioRpcError as e:
        return e.code()
    return grpc.StatusCode.OK


@pytest.mark.parametrize("who", ["nobody", "wrong", "submit", "work", "admin"])
async def test_role_by_rpc_matrix(start_server: StartServer, client_tls: TLS, who: str) -> None:
    srv = await start_server()
    metadata = []
    if who != "nobody":
        metadata = [("authorization", f"Bearer {WRONG_TOKEN if who == 'wrong' else token(who)}")]
    allowed = ALLOWED.get(who, set())
    results: dict[str, grpc.StatusCode] = {}
    async with grpc.aio.secure_channel(f"127.0.0.1:{srv.port}", client_tls.credentials()) as ch:
        for name in [*sorted(ALL - {"Drain"}), "Drain"]:  # a permitted Drain stops the server
            results[name] = await _call(ch, name, metadata)
    if "Drain" in allowed:
        await asyncio.wait_for(srv.stopped.wait(), 30)  # let the drain finish before teardown
    for name, code in results.items():
        if name in allowed:
            assert code not in REFUSED, f"{who} was refused {name}: {code}"
        elif who in ("nobody", "wrong"):
            assert code == grpc.StatusCode.UNAUTHENTICATED, (name, code)
        else:
            assert code == grpc.StatusCode.PERMISSION_DENIED, (name, code)
    assert srv.auth is not None
    refused = len(ALL) - len(allowed)
    counted = (
        srv.auth.stats.unauthenticated
        if who in ("nobody", "wrong")
        else srv.auth.stats.permission_denied
    )
    assert counted.total() == refused == srv.auth.stats.total
    assert {m.rsplit("/", 1)[-1] for m in counted} == ALL - allowed


async def test_refusal_messages_say_what_to_do(start_server: StartServer, client_tls: TLS) -> None:
    srv = await start_server()
    target = f"127.0.0.1:{srv.port}"
    async with grpc.aio.secure_channel(target, client_tls.credentials()) as ch:
        drain = ch.unary_unary(
            f"/{SERVICE.full_name}/Drain",
            request_serializer=pb.DrainRequest.SerializeToString,
            response_deserializer=pb.DrainResponse.FromString,
        )
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await drain(pb.DrainRequest())
        assert "authorization: Bearer" in (missing.value.details() or "")
        with pytest.raises(grpc.aio.AioRpcError) as denied:
            await drain(pb.DrainRequest(), metadata=[("authorization", f"bearer {token('work')}")])
        assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert denied.value.details() == "Drain needs the admin role; work has work"


@pytest.mark.parametrize("tls", [True, False])
async def test_health_is_open_on_both_ports(
    start_server: StartServer, client_tls: TLS, tls: bool
) -> None:
    srv = await start_server(tls=tls, health_listen="127.0.0.1:0")
    assert srv.health_port
    target = f"127.0.0.1:{srv.port}"
    main = (
        grpc.aio.secure_channel(target, client_tls.credentials())
        if tls
        else grpc.aio.insecure_channel(target)
    )
    probe = grpc.aio.insecure_channel(f"127.0.0.1:{srv.health_port}")
    async with main, probe:
        for ch in (main, probe):
            stub = health_pb2_grpc.HealthStub(ch)
            for service in ("", SERVICE.full_name, "liveness"):
                resp = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
                assert resp.status == health_pb2.HealthCheckResponse.SERVING
        # The probe port serves health only: no dispatching there, token or not.
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await probe.unary_unary(
                f"/{SERVICE.full_name}/ListQueues",
                request_serializer=pb.ListQueuesRequest.SerializeToString,
                response_deserializer=pb.ListQueuesResponse.FromString,
            )(pb.ListQueuesRequest(), timeout=5)
        assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED
