# -*- test-case-name: test.unit.test_gateway_operator -*-
"""Operator lists the other services offer through the gateway (issue 14 item 5).

The gateway imports no other service. It declares what it needs — a paged list of rows
(L{OperatorRows}) and the service that owns it (running or not) — and the application
wiring (L{p2pnet.app}) hands it the sibling services' typed listing methods, e.g.
C{rendezvous.peers.list} from the rendezvous service's C{onlinePeers(offset, limit)}.
A method is served and advertised in hello-ok only when the wiring provided it.

Every list answers C{{items, offset, limit, nextOffset}}: C{params} may give C{offset}
(default 0) and C{limit} (1 to L{MAX_LIMIT}, default L{DEFAULT_LIMIT}); C{nextOffset} is
where the next page starts, or C{None} after the last one. Rows may come at once or in a
Deferred (a list read from a database).

An L{OperatorAction} is a change another service offers (C{turn.users.add}): the wiring
hands in a function of the request's params; its C{ValueError} or C{KeyError} is the
caller's mistake (C{INVALID_REQUEST}), its result (or Deferred) the answer.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.python.failure import Failure

from p2pnet.codecs.gateway_frames import ErrorCode
from p2pnet.services.gateway_methods import RequestContext
from p2pnet.services.gateway_pairing import MethodError

__all__ = [
    "DEFAULT_LIMIT",
    "MAX_LIMIT",
    "OperatorAction",
    "OperatorListing",
    "OperatorRows",
    "actionHandler",
    "listingHandler",
]

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000


class OperatorRows(Protocol):
    """C{limit} rows from C{offset}, in a stable order (dataclasses or mappings)."""

    def __call__(self, offset: int, limit: int) -> Sequence[Any] | Deferred[Sequence[Any]]:
        """The rows of one page (or a Deferred of them)."""


class RunningService(Protocol):
    """The owner of a list: only its C{running} flag and C{name} are read."""

    running: int | bool
    name: str | None


@dataclass(frozen=True)
class OperatorListing:
    """A paged list a sibling service offers, as the wiring hands it over."""

    owner: RunningService
    rows: OperatorRows


@dataclass(frozen=True)
class OperatorAction:
    """A change a sibling service offers: C{call(params)} gives the answer (or a
    Deferred of it)."""

    owner: RunningService
    call: Callable[[Mapping[str, Any]], Any]


def jsonRow(row: Any) -> Any:
    """A row as JSON-ready data (a dataclass as its fields; tuples as lists)."""
    if dataclasses.is_dataclass(row) and not isinstance(row, type):
        return {f.name: jsonRow(getattr(row, f.name)) for f in dataclasses.fields(row)}
    if isinstance(row, Mapping):
        return {str(k): jsonRow(v) for k, v in row.items()}
    if isinstance(row, list | tuple):
        return [jsonRow(item) for item in row]
    return row


def _integer(params: Mapping[str, Any], name: str, default: int, low: int, high: int) -> int:
    value = params.get(name, default)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise MethodError(ErrorCode.INVALID_REQUEST,
                          f"{name} must be an integer from {low} to {high}")
    return value


def listingHandler(listing: OperatorListing) -> Callable[[RequestContext], Any]:
    """The method handler serving C{listing} with paging."""

    def handler(context: RequestContext) -> Any:
        params = context.params
        if not isinstance(params, Mapping):
            raise MethodError(ErrorCode.INVALID_REQUEST, "params must be an object")
        offset = _integer(params, "offset", 0, 0, 2**31)
        limit = _integer(params, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
        _running(listing.owner)

        def page(found: Sequence[Any]) -> dict[str, Any]:
            rows = list(found)
            return {
                "items": [jsonRow(row) for row in rows[:limit]],
                "offset": offset,
                "limit": limit,
                "nextOffset": offset + limit if len(rows) > limit else None,
            }

        rows = listing.rows(offset, limit + 1)
        if isinstance(rows, Deferred):
            return rows.addCallback(page)
        return page(rows)

    return handler


def _running(owner: RunningService) -> None:
    if not owner.running:
        raise MethodError(ErrorCode.UNAVAILABLE, f"service not running: {owner.name}",
                          {"code": "SERVICE_NOT_RUNNING", "service": owner.name})


def _mistake(failure: Failure) -> Any:
    """The action's C{ValueError}/C{KeyError}: the caller's mistake."""
    error = failure.value
    if isinstance(error, ValueError | KeyError):
        raise MethodError(ErrorCode.INVALID_REQUEST, str(error).strip("'"))
    return failure


def actionHandler(action: OperatorAction) -> Callable[[RequestContext], Any]:
    """The method handler running C{action}."""

    def handler(context: RequestContext) -> Any:
        if not isinstance(context.params, Mapping):
            raise MethodError(ErrorCode.INVALID_REQUEST, "params must be an object")
        _running(action.owner)
        return maybeDeferred(action.call, context.params).addCallbacks(jsonRow, _mistake)

    return handler
