# -*- test-case-name: test.unit.test_gateway_node_pairing -*-
"""Node pairing and the nodes' pending work (gateway.md §2.6, §5.2).

Separate from device pairing, as in OpenClaw: device pairing lets a device connect in a
role; node pairing approves a node for being invoked, for the commands it declared. A
node connecting with no node pairing (or declaring commands beyond its approved ones)
makes a L{NodePairingRequest}, announced as C{node.pair.requested}; until an operator
approves it, only the approved commands can be invoked. A node on a loopback socket
without forwarding headers is approved silently, like its device.

The pending-work queue holds items operators queue for a node (C{node.pending.enqueue});
the node takes them with C{node.pending.drain} (at most once) or C{node.pending.pull}
then C{node.pending.ack} (at least once).

The handlers here take one L{RequestContext}; L{NodePairing.handlers} is what the
gateway registers.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from p2pnet.boundedmap import BoundedMap
from p2pnet.codecs.gateway_frames import ClientInfo, ErrorCode
from p2pnet.services.gateway_methods import RequestContext, param
from p2pnet.services.gateway_pairing import MethodError
from p2pnet.services.gateway_policy import ADMIN, PAIRING, WRITE
from p2pnet.store.gateway import GatewayStoreInterface, PairedNode

__all__ = [
    "ADMIN_APPROVAL_COMMANDS",
    "NodePairing",
    "NodePairingRequest",
    "NodeWork",
    "approvalScopes",
]

#: Lifetime of a pending node pairing request, seconds, and how many may wait.
NODE_PAIRING_TTL = 300.0
MAX_PENDING_NODE_PAIRINGS = 256
#: Work items one node may have queued, nodes with a queue, and the default lifetime.
MAX_WORK_ITEMS = 64
MAX_WORK_NODES = 4096
WORK_TTL = 600.0

#: Commands only an C{operator.admin} may approve: running programs on the node and
#: changing what it may run.
ADMIN_APPROVAL_COMMANDS = frozenset(
    {"system.run", "system.run.prepare", "system.execApprovals.get", "system.execApprovals.set"}
)


def approvalScopes(commands: tuple[str, ...]) -> list[str]:
    """The scopes approving a node declaring C{commands} needs (gateway.md §2.6)."""
    if any(c in ADMIN_APPROVAL_COMMANDS or c.startswith("system.execApprovals.")
           for c in commands):
        return [PAIRING, ADMIN]
    if commands:
        return [PAIRING, WRITE]
    return [PAIRING]


@dataclass
class NodePairingRequest:
    """A node waiting for approval of the commands it declared."""

    requestId: str
    nodeId: str
    displayName: str
    platform: str
    version: str
    commands: tuple[str, ...]
    remoteIp: str | None
    createdAtMs: int

    def describe(self) -> dict[str, Any]:
        """The JSON shape of C{node.pair.list}'s C{pending}."""
        return {
            "requestId": self.requestId,
            "nodeId": self.nodeId,
            "displayName": self.displayName,
            "platform": self.platform,
            "version": self.version,
            "commands": list(self.commands),
            "requiredApproveScopes": approvalScopes(self.commands),
            "remoteIp": self.remoteIp,
            "ts": self.createdAtMs,
        }


class NodeWork:
    """Bounded per-node queues of work items (C{node.pending.*})."""

    def __init__(self, clock: IReactorTime, newId: Callable[[], str]) -> None:
        self.clock = clock
        self.newId = newId
        self.queues: BoundedMap[str, dict[str, dict[str, Any]]] = BoundedMap(MAX_WORK_NODES)
        self.revisions: dict[str, int] = {}

    def _queue(self, nodeId: str) -> dict[str, dict[str, Any]]:
        queue = self.queues.get(nodeId)
        if queue is None:
            queue = self.queues[nodeId] = {}
        now = int(self.clock.seconds() * 1000)
        for itemId in [i for i, item in queue.items() if item["expiresAtMs"] <= now]:
            del queue[itemId]
        return queue

    def enqueue(self, nodeId: str, kind: str, priority: str, expiresInMs: int | None,
                payload: Any) -> tuple[dict[str, Any], bool]:
        """Queue an item (one per type: a second is answered with the first)."""
        queue = self._queue(nodeId)
        for existing in queue.values():
            if existing["type"] == kind:
                return existing, True
        if len(queue) >= MAX_WORK_ITEMS:
            raise MethodError(ErrorCode.UNAVAILABLE, "node work queue full")
        now = int(self.clock.seconds() * 1000)
        item: dict[str, Any] = {
            "id": self.newId(), "type": kind, "priority": priority, "createdAtMs": now,
            "expiresAtMs": now + (expiresInMs if expiresInMs else int(WORK_TTL * 1000)),
        }
        if payload is not None:
            item["payload"] = payload
        queue[item["id"]] = item
        self.revisions[nodeId] = self.revisions.get(nodeId, 0) + 1
        return item, False

    def items(self, nodeId: str) -> list[dict[str, Any]]:
        """The node's queued items, oldest first."""
        return list(self._queue(nodeId).values())

    def remove(self, nodeId: str, ids: list[str]) -> int:
        """Drop the items C{ids}; return how many remain."""
        queue = self._queue(nodeId)
        for itemId in ids:
            if queue.pop(itemId, None) is not None:
                self.revisions[nodeId] = self.revisions.get(nodeId, 0) + 1
        return len(queue)

    def forget(self, nodeId: str) -> None:
        """Drop the node's whole queue (its pairing was removed)."""
        self.queues.pop(nodeId, None)
        self.revisions.pop(nodeId, None)


class NodePairing:
    """Pending node pairing requests, approvals, renames, and the work queues.

    @param announce: sends an event to operators holding C{operator.pairing}.
    @param retarget: the approved commands of a connected node changed (or C{None}:
        its pairing was removed).
    """

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        store: GatewayStoreInterface,
        newId: Callable[[], str],
        announce: Callable[[str, dict[str, Any]], None],
        retarget: Callable[[str, tuple[str, ...] | None], None],
    ) -> None:
        self.clock = clock
        self.store = store
        self.newId = newId
        self.announce = announce
        self.retarget = retarget
        self.pending: BoundedMap[str, NodePairingRequest] = BoundedMap(MAX_PENDING_NODE_PAIRINGS)
        self.work = NodeWork(clock, newId)

    def nowMs(self) -> int:
        """The clock in epoch milliseconds."""
        return int(self.clock.seconds() * 1000)

    def requests(self) -> list[NodePairingRequest]:
        """Pending requests, oldest first (expired ones forgotten)."""
        cutoff = self.nowMs() - int(NODE_PAIRING_TTL * 1000)
        found = [p for p in map(self.pending.peek, list(self.pending)) if p is not None]
        for old in [p for p in found if p.createdAtMs < cutoff]:
            del self.pending[old.requestId]
        return [p for p in found if p.createdAtMs >= cutoff]

    def reconcile(self, nodeId: str, client: ClientInfo, declared: tuple[str, ...],
                  remoteIp: str | None, silent: bool) -> tuple[str, ...]:
        """A node connected declaring C{declared}: the commands it may be invoked for.

        Declared commands within its approval are granted; others wait for a node
        pairing request's approval (made here), unless C{silent} approves them now.
        """
        paired = self.store.nodes.get(nodeId)
        approved = paired.commands if paired is not None else ()
        if paired is not None and set(declared) <= set(approved):
            return declared
        if silent:
            node = PairedNode(nodeId, paired.displayName if paired else client.displayName or "",
                              client.platform, client.version,
                              tuple(dict.fromkeys((*approved, *declared))), self.nowMs())
            self.store.saveNode(node).addErrback(
                lambda f: self.log.failure("Gateway store write failed", f))
            self.log.info("Gateway node {nodeId} paired for {commands} (local auto-approval)",
                          nodeId=nodeId, commands=",".join(node.commands) or "no commands")
            return declared
        for old in [p for p in self.requests() if p.nodeId == nodeId]:
            del self.pending[old.requestId]
        request = NodePairingRequest(
            self.newId(), nodeId, client.displayName or "", client.platform, client.version,
            tuple(dict.fromkeys((*approved, *declared))), remoteIp, self.nowMs())
        self.pending[request.requestId] = request
        self.announce("node.pair.requested", request.describe())
        return tuple(c for c in declared if c in approved)

    # -- handlers ------------------------------------------------------------------------

    def handlers(self) -> Mapping[str, Callable[[RequestContext], Any]]:
        """The methods this room serves."""
        return {
            "node.pair.list": self.pairList,
            "node.pair.approve": self.pairApprove,
            "node.pair.reject": self.pairReject,
            "node.pair.remove": self.pairRemove,
            "node.rename": self.rename,
            "node.pending.enqueue": self.pendingEnqueue,
            "node.pending.pull": self.pendingPull,
            "node.pending.ack": self.pendingAck,
            "node.pending.drain": self.pendingDrain,
        }

    def pairList(self, context: RequestContext) -> Any:
        """C{node.pair.list}: pending requests and paired nodes."""
        return {"pending": [p.describe() for p in self.requests()],
                "paired": [n.describe() for n in self.store.nodes.values()]}

    def _take(self, requestId: str) -> NodePairingRequest:
        for request in self.requests():
            if request.requestId == requestId:
                return request
        raise MethodError(ErrorCode.INVALID_REQUEST, "unknown requestId")

    def pairApprove(self, context: RequestContext) -> Any:
        """C{node.pair.approve {requestId}}: exec-capable nodes need C{operator.admin}."""
        request = self._take(param(context.params, "requestId", str))
        held = set(context.session.scopes)
        for scope in approvalScopes(request.commands):
            if scope not in held and ADMIN not in held:
                raise MethodError(ErrorCode.FORBIDDEN, f"missing scope: {scope}", {
                    "code": "MISSING_SCOPE", "missingScope": scope,
                    "requiredScopes": approvalScopes(request.commands)})
        del self.pending[request.requestId]
        old = self.store.nodes.get(request.nodeId)
        node = PairedNode(request.nodeId, old.displayName if old else request.displayName,
                          request.platform, request.version, request.commands, self.nowMs())
        saved = self.store.saveNode(node)

        def done(_: None) -> dict[str, Any]:
            self.retarget(node.nodeId, node.commands)
            self.announce("node.pair.resolved", {"requestId": request.requestId,
                                                 "nodeId": node.nodeId,
                                                 "decision": "approved", "ts": self.nowMs()})
            self.log.info("Gateway node {nodeId} paired for {commands}", nodeId=node.nodeId,
                          commands=",".join(node.commands) or "no commands")
            return {"requestId": request.requestId, "node": node.describe()}

        return saved.addCallback(done)

    def pairReject(self, context: RequestContext) -> Any:
        """C{node.pair.reject {requestId}}."""
        request = self._take(param(context.params, "requestId", str))
        del self.pending[request.requestId]
        self.announce("node.pair.resolved", {"requestId": request.requestId,
                                             "nodeId": request.nodeId,
                                             "decision": "rejected", "ts": self.nowMs()})
        return {"requestId": request.requestId, "nodeId": request.nodeId}

    def pairRemove(self, context: RequestContext) -> Any:
        """C{node.pair.remove {nodeId}}: forget the node's pairing; it keeps no commands."""
        nodeId = param(context.params, "nodeId", str)
        if nodeId not in self.store.nodes:
            raise MethodError(ErrorCode.INVALID_REQUEST, "unknown nodeId")
        self.work.forget(nodeId)

        def done(_: None) -> dict[str, Any]:
            self.retarget(nodeId, None)
            self.log.info("Gateway node {nodeId} pairing removed", nodeId=nodeId)
            return {"nodeId": nodeId}

        return self.store.removeNode(nodeId).addCallback(done)

    def rename(self, context: RequestContext) -> Any:
        """C{node.rename {nodeId, displayName}}."""
        nodeId = param(context.params, "nodeId", str)
        name = param(context.params, "displayName", str).strip()
        if not name:
            raise MethodError(ErrorCode.INVALID_REQUEST, "displayName required")
        old = self.store.nodes.get(nodeId)
        if old is None:
            raise MethodError(ErrorCode.INVALID_REQUEST, "unknown nodeId")
        node = PairedNode(old.nodeId, name, old.platform, old.version, old.commands,
                          old.approvedAtMs)
        return self.store.saveNode(node).addCallback(
            lambda _: {"nodeId": nodeId, "displayName": name})

    # -- pending work --------------------------------------------------------------------

    def pendingEnqueue(self, context: RequestContext) -> Any:
        """C{node.pending.enqueue {nodeId, type, priority?, expiresInMs?, payload?}}."""
        params = context.params
        nodeId = param(params, "nodeId", str)
        kind = param(params, "type", str)
        if nodeId not in self.store.nodes:
            raise MethodError(ErrorCode.INVALID_REQUEST, "unknown nodeId")
        priority = params.get("priority", "normal")
        expiresInMs = params.get("expiresInMs")
        if not isinstance(priority, str) or (
            expiresInMs is not None
            and (not isinstance(expiresInMs, int) or isinstance(expiresInMs, bool)
                 or not 0 < expiresInMs <= 86_400_000)
        ):
            raise MethodError(ErrorCode.INVALID_REQUEST, "invalid priority or expiresInMs")
        item, deduped = self.work.enqueue(nodeId, kind, priority, expiresInMs,
                                          params.get("payload"))
        return {"nodeId": nodeId, "revision": self.work.revisions.get(nodeId, 0),
                "queued": item, "deduped": deduped, "wakeTriggered": False}

    def _nodeId(self, context: RequestContext) -> str:
        session = context.session
        assert session.params is not None
        return session.deviceId or session.params.client.id

    def pendingPull(self, context: RequestContext) -> Any:
        """C{node.pending.pull}: the node's queued items, kept until acknowledged."""
        nodeId = self._nodeId(context)
        return {"nodeId": nodeId, "actions": [
            {"id": item["id"], "command": item["type"],
             "paramsJSON": json.dumps(item["payload"]) if "payload" in item else None,
             "enqueuedAtMs": item["createdAtMs"]}
            for item in self.work.items(nodeId)]}

    def pendingAck(self, context: RequestContext) -> Any:
        """C{node.pending.ack {ids}}: drop the items the node has done."""
        ids = context.params.get("ids") if isinstance(context.params, dict) else None
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise MethodError(ErrorCode.INVALID_REQUEST, "ids must be a list of strings")
        nodeId = self._nodeId(context)
        ids = list(dict.fromkeys(i.strip() for i in ids if i.strip()))
        remaining = self.work.remove(nodeId, ids)
        return {"nodeId": nodeId, "ackedIds": ids, "remainingCount": remaining}

    def pendingDrain(self, context: RequestContext) -> Any:
        """C{node.pending.drain {maxItems?}}: take up to C{maxItems} items (default 16)."""
        params = context.params if isinstance(context.params, dict) else {}
        maxItems = params.get("maxItems", 16)
        if not isinstance(maxItems, int) or isinstance(maxItems, bool) or maxItems < 1:
            raise MethodError(ErrorCode.INVALID_REQUEST, "maxItems must be a positive integer")
        nodeId = self._nodeId(context)
        queued = self.work.items(nodeId)
        taken = queued[: min(maxItems, MAX_WORK_ITEMS)]
        self.work.remove(nodeId, [item["id"] for item in taken])
        return {"nodeId": nodeId, "revision": self.work.revisions.get(nodeId, 0),
                "items": taken, "hasMore": len(queued) > len(taken)}

