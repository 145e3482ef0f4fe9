"""Who hears of a queue's settings changing (Backend.on_queue_changed): the HTTP pusher
binds a target by it, so a change must never be missed — neither the one this server
made nor, on a shared backend, one another replica made."""

from __future__ import annotations

from dispatchd.engine import HttpTarget
from tests.conformance.harness import Driver
from tests.polling import eventually

TARGET = HttpTarget(url="https://example.test/hook")


async def test_a_change_made_here_is_heard_before_the_call_returns(driver: Driver) -> None:
    heard: list[str] = []
    driver.backend.on_queue_changed(heard.append)
    await driver.backend.update_queue("hooks", http_target=TARGET, create=True)
    assert "hooks" in heard  # not left to a pub/sub message that may come later, or never


async def test_a_change_made_by_another_replica_is_heard_from_the_start(driver: Driver) -> None:
    """Even by a replica that has just started: once start() returns, nothing another
    replica changes is missed (a new server binds the targets it lists at start, and hears
    of every change after)."""
    if not driver.backend.capabilities.shared:
        return  # one server: every change is made here
    fresh = await driver.peer()
    heard: list[str] = []
    fresh.on_queue_changed(heard.append)
    await driver.backend.update_queue("hooks", http_target=TARGET, create=True)
    await eventually(lambda: "hooks" in heard, within=5.0, what="the change heard")
