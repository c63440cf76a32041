# -*- test-case-name: test.unit.test_nat_discovery -*-
"""NAT behaviour discovery (RFC 5780 §4) with L{StunClientProtocol}.

Against a server that names a second address in OTHER-ADDRESS, L{discover} finds how the
NAT in front of this socket maps (RFC 5780 §4.3) and filters (RFC 5780 §4.4) UDP. The
filtering tests run first: the mapping tests send to the server's other address, and
that traffic would open the very filters the filtering tests probe.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from enum import StrEnum
from typing import cast

from twisted.internet.defer import Deferred, DeferredList
from twisted.python.failure import Failure

from p2pnet.codecs.stun import Attr, Message, Method, StunClass, encodeChangeRequest
from p2pnet.protocols.stun_client import (
    LongTermCredentials,
    StunClientProtocol,
    StunTimeout,
    addressAttribute,
    mappedAddress,
)

__all__ = ["Behaviour", "NatBehaviour", "NatDiscoveryError", "bindingRequest", "discover"]

Address = tuple[str, int]


class Behaviour(StrEnum):
    """Mapping or filtering behaviour of a NAT (RFC 4787 §4.1 and §5, RFC 5780)."""

    ENDPOINT_INDEPENDENT = "endpoint-independent"
    ADDRESS_DEPENDENT = "address-dependent"
    ADDRESS_AND_PORT_DEPENDENT = "address-and-port-dependent"


class NatDiscoveryError(Exception):
    """The server's answers make no sense for RFC 5780 (e.g. it ignores CHANGE-REQUEST)."""


@dataclass(frozen=True, slots=True)
class NatBehaviour:
    """What the tests found.

    @ivar mappedAddress: the reflexive address from the first Binding response.
    @ivar responseOrigin: RESPONSE-ORIGIN of that response, if any.
    @ivar otherAddress: OTHER-ADDRESS of that response; without it the server cannot
        run the tests and C{mapping} and C{filtering} are C{None}.
    @ivar natPresent: whether the mapped address differs from the local one; C{None}
        when the socket's local address is unknown (bound to a wildcard address).
    @ivar mapping: the mapping behaviour.
    @ivar filtering: the filtering behaviour.
    """

    mappedAddress: Address
    responseOrigin: Address | None = None
    otherAddress: Address | None = None
    natPresent: bool | None = None
    mapping: Behaviour | None = None
    filtering: Behaviour | None = None


def bindingRequest(changeIp: bool = False, changePort: bool = False) -> Message:
    """A Binding request, with CHANGE-REQUEST when either flag is set (RFC 5780 §7.2)."""
    message = Message(Method.BINDING, StunClass.REQUEST)
    if changeIp or changePort:
        message.add(Attr.CHANGE_REQUEST, encodeChangeRequest(changeIp, changePort))
    return message


def _localAddress(client: StunClientProtocol) -> Address | None:
    host = client.transport.getHost()  # type: ignore[union-attr]
    if ipaddress.ip_address(host.host).is_unspecified:
        return None
    return str(ipaddress.ip_address(host.host)), host.port


async def discover(
    client: StunClientProtocol,
    server: Address,
    localAddress: Address | None = None,
    credentials: LongTermCredentials | None = None,
) -> NatBehaviour:
    """Run the RFC 5780 mapping and filtering tests against C{server}.

    @param client: a listening client; the tests use its socket and timers.
    @param server: the server's primary address, C{(ip, port)}.
    @param localAddress: this socket's address as the server should see it without a
        NAT; by default the socket's own, unless that is a wildcard.
    @param credentials: long-term credentials, for a server that answers only
        authenticated Binding requests.
    @raise StunTimeout: when the first Binding request is not answered.
    @raise StunErrorResponse: when the server answers a test with an error.
    @raise NatDiscoveryError: when the server ignores CHANGE-REQUEST.
    """
    if localAddress is None:
        localAddress = _localAddress(client)
    # RFC 5780 §4.3 and §4.4, test I: a plain Binding request to the primary address.
    first = await client.request(bindingRequest(), server, credentials=credentials)
    mapped1 = _mapped(first)
    origin = addressAttribute(first, Attr.RESPONSE_ORIGIN)
    other = addressAttribute(first, Attr.OTHER_ADDRESS)
    natPresent = None if localAddress is None else mapped1 != localAddress
    if other is None:
        return NatBehaviour(mapped1, origin, None, natPresent)
    filtering = await _filtering(client, server, origin, other, credentials)
    mapping = await _mapping(client, server, other, mapped1, natPresent, credentials)
    return NatBehaviour(mapped1, origin, other, natPresent, mapping, filtering)


def _mapped(response: Message) -> Address:
    mapped = mappedAddress(response)
    if mapped is None:
        raise NatDiscoveryError("a Binding response carries no mapped address")
    return mapped


async def _filtering(
    client: StunClientProtocol,
    server: Address,
    origin: Address | None,
    other: Address,
    credentials: LongTermCredentials | None,
) -> Behaviour:
    """RFC 5780 §4.4, tests II and III, sent together; a timeout counts as "no answer"."""
    # Test II asks for the answer from the alternate address and port, test III from
    # the primary address and the alternate port.
    expected = {0: other, 1: (server[0], other[1])}
    tests: list[Deferred[Message]] = [
        client.request(
            bindingRequest(changeIp=True, changePort=True),
            server,
            anySource=True,
            credentials=credentials,
        ),
        client.request(
            bindingRequest(changePort=True), server, anySource=True, credentials=credentials
        ),
    ]
    results = await DeferredList(tests, consumeErrors=True)
    answered: list[bool] = []
    for index, (ok, value) in enumerate(results):
        if not ok:
            failure = cast(Failure, value)  # a failed entry of a DeferredList
            if failure.check(StunTimeout) is None:
                failure.raiseException()
            answered.append(False)
            continue
        came = addressAttribute(value, Attr.RESPONSE_ORIGIN)
        if came is not None and origin is not None and came == origin:
            raise NatDiscoveryError(
                "the server answered a CHANGE-REQUEST from its primary address "
                f"instead of {expected[index][0]} port {expected[index][1]}"
            )
        answered.append(True)
    if answered[0]:
        return Behaviour.ENDPOINT_INDEPENDENT
    if answered[1]:
        return Behaviour.ADDRESS_DEPENDENT
    return Behaviour.ADDRESS_AND_PORT_DEPENDENT


async def _mapping(
    client: StunClientProtocol,
    server: Address,
    other: Address,
    mapped1: Address,
    natPresent: bool | None,
    credentials: LongTermCredentials | None,
) -> Behaviour:
    """RFC 5780 §4.3, tests II and III."""
    if natPresent is False:
        # Test I's mapped address is the local one: no NAT, nothing maps.
        return Behaviour.ENDPOINT_INDEPENDENT
    # Test II: to the alternate address and the primary port.
    mapped2 = _mapped(
        await client.request(bindingRequest(), (other[0], server[1]), credentials=credentials)
    )
    if mapped2 == mapped1:
        return Behaviour.ENDPOINT_INDEPENDENT
    # Test III: to the alternate address and the alternate port.
    mapped3 = _mapped(await client.request(bindingRequest(), other, credentials=credentials))
    if mapped3 == mapped2:
        return Behaviour.ADDRESS_DEPENDENT
    return Behaviour.ADDRESS_AND_PORT_DEPENDENT
