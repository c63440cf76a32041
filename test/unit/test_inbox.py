"""The nodes' inboxes: L{p2pnet.services.inbox.InboxReader} on a fake inbox, and
L{p2pnet.store.redis.RedisInbox} on an in-memory stand-in for Redis's lists."""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from txredisapi import ResponseError

from p2pnet.services.inbox import RETRY, InboxReader
from p2pnet.store.redis import INBOX_BATCH, INBOX_TTL, RedisInbox


class ListInbox:
    """Reads answered by hand: L{reads} holds the pending ones."""

    node = "a"

    def __init__(self) -> None:
        self.reads: list[Deferred[list[dict[str, Any]]]] = []
        self.closed = False

    def send(self, node: str, payload: dict[str, Any]) -> Deferred[None]:
        return succeed(None)

    def receive(self, timeout: int = 1) -> Deferred[list[dict[str, Any]]]:
        self.reads.append(Deferred())
        return self.reads[-1]

    def close(self) -> None:
        self.closed = True


class InboxReaderTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.inbox = ListInbox()
        self.handled: list[dict[str, Any]] = []
        self.failures: list[Any] = []
        self.reader = InboxReader(self.clock, self.inbox, self.handle, self.failures.append)
        self.reader.start()

    def handle(self, payload: dict[str, Any]) -> None:
        if payload.get("bad"):
            raise ValueError("bad message")
        self.handled.append(payload)

    def test_batchHandledInOrderThenReadAgain(self) -> None:
        self.inbox.reads[0].callback([{"n": 1}, {"n": 2}, {"n": 3}])
        self.assertEqual(self.handled, [{"n": 1}, {"n": 2}, {"n": 3}])
        self.assertEqual(len(self.inbox.reads), 2)
        self.inbox.reads[1].callback([])  # a read that timed out
        self.assertEqual(len(self.inbox.reads), 3)

    def test_oneBadMessageDoesNotLoseTheRest(self) -> None:
        self.inbox.reads[0].callback([{"n": 1}, {"bad": True}, {"n": 3}])
        self.assertEqual(self.handled, [{"n": 1}, {"n": 3}])
        self.assertEqual(len(self.failures), 1)
        self.assertEqual(len(self.inbox.reads), 2)

    def test_failedReadRetriedAfterAPause(self) -> None:
        self.inbox.reads[0].errback(ConnectionError("gone"))
        self.assertEqual(len(self.failures), 1)
        self.assertEqual(len(self.inbox.reads), 1)
        self.clock.advance(RETRY)
        self.assertEqual(len(self.inbox.reads), 2)

    def test_stopEndsTheBatchAndCloses(self) -> None:
        def stopping(payload: dict[str, Any]) -> None:
            self.handled.append(payload)
            self.reader.stop()

        self.reader.handle = stopping
        self.inbox.reads[0].callback([{"n": 1}, {"n": 2}])
        self.assertEqual(self.handled, [{"n": 1}])
        self.assertTrue(self.inbox.closed)
        self.assertEqual(len(self.inbox.reads), 1)


class FakeLists:
    """LPUSH, BRPOP, RPOP (with a count unless C{old}), EXPIRE on dicts of lists."""

    def __init__(self, old: bool = False) -> None:
        self.lists: dict[str, list[str]] = {}
        self.expires: list[str] = []
        self.old = old
        self.commands = 0

    def lpush(self, key: str, value: str) -> Deferred[Any]:
        self.commands += 1
        self.lists.setdefault(key, []).insert(0, value)
        return succeed(len(self.lists[key]))

    def expire(self, key: str, seconds: int) -> Deferred[Any]:
        self.commands += 1
        self.expires.append(key)
        return succeed(1)

    def brpop(self, key: str, timeout: int = 0) -> Deferred[Any]:
        self.commands += 1
        items = self.lists.get(key)
        return succeed((key, items.pop()) if items else None)

    def execute_command(self, name: str, key: str, count: int) -> Deferred[Any]:
        self.commands += 1
        if self.old:
            return fail(ResponseError("ERR wrong number of arguments for 'rpop' command"))
        items = self.lists.get(key, [])
        taken = [items.pop() for _ in range(min(count, len(items)))]
        return succeed(taken or None)

    def disconnect(self) -> None:
        pass


class RedisInboxTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.redis = FakeLists()
        self.a = RedisInbox("", "a", clock=self.clock, redis=(self.redis, self.redis))
        self.b = RedisInbox("", "b", clock=self.clock, redis=(self.redis, self.redis))

    def test_oneReadTakesEveryWaitingMessageInOrder(self) -> None:
        for n in range(INBOX_BATCH + 5):
            self.b.send("a", {"n": n})
        first = self.successResultOf(self.a.receive())
        self.assertEqual([m["n"] for m in first], list(range(INBOX_BATCH)))
        rest = self.successResultOf(self.a.receive())
        self.assertEqual([m["n"] for m in rest], list(range(INBOX_BATCH, INBOX_BATCH + 5)))
        self.assertEqual(self.successResultOf(self.a.receive()), [])

    def test_oneMessageOneRead(self) -> None:
        self.b.send("a", {"n": 1})
        self.assertEqual(self.successResultOf(self.a.receive()), [{"n": 1}])

    def test_redisBefore62ReadsOneAtATime(self) -> None:
        self.redis.old = True
        self.b.send("a", {"n": 1})
        self.b.send("a", {"n": 2})
        self.assertEqual(self.successResultOf(self.a.receive()), [{"n": 1}])
        before = self.redis.commands
        self.assertEqual(self.successResultOf(self.a.receive()), [{"n": 2}])
        self.assertEqual(self.redis.commands, before + 1)  # no second try of the count

    def test_expiryRenewedASixthOfTheTtlApart(self) -> None:
        """An inbox nobody reads still expires, but a busy sender does not renew it
        with every push."""
        for _ in range(10):
            self.b.send("a", {})
        self.assertEqual(self.redis.expires, ["p2pnet:rendezvous:inbox:a"])
        self.b.send("c", {})
        self.assertEqual(len(self.redis.expires), 2)
        self.clock.advance(INBOX_TTL / 6)
        self.b.send("a", {})
        self.assertEqual(len(self.redis.expires), 3)

    def test_payloadIsJson(self) -> None:
        self.b.send("a", {"kind": "deliver"})
        self.assertEqual(json.loads(self.redis.lists["p2pnet:rendezvous:inbox:a"][0]),
                         {"kind": "deliver"})
