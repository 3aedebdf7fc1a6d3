"""ACL grants on the local Apache Kafka broker, sent as Kafka protocol requests.

Why this exists: aiokafka's admin client has no ACL calls, and ACL tests must give the SCRAM users
(``alice``, ``bob``) exactly the rights they need. So :func:`grant` sends CreateAcls itself, as the super user
on the PLAINTEXT listener, and waits until the broker's authorizer shows the new ACLs (DescribeAcls).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from typing import Literal

from aiokafka import AIOKafkaClient
from aiokafka.protocol.admin import CreateAclsRequest, DescribeAclsRequest

from battery_worker.kafka.exceptions import ApacheKafkaError

__all__ = ["ResourceType", "grant"]

ResourceType = Literal["topic", "group", "cluster", "transactional_id"]

_POLL_S = 0.05

# Kafka's protocol enums (org.apache.kafka.common.acl / resource), for CreateAcls and DescribeAcls.
_RESOURCE_TYPES = {"topic": 2, "group": 3, "cluster": 4, "transactional_id": 5}
_OPERATIONS = {
    "ALL": 2,
    "READ": 3,
    "WRITE": 4,
    "CREATE": 5,
    "DELETE": 6,
    "ALTER": 7,
    "DESCRIBE": 8,
    "CLUSTER_ACTION": 9,
    "DESCRIBE_CONFIGS": 10,
    "ALTER_CONFIGS": 11,
    "IDEMPOTENT_WRITE": 12,
}
_ANY = 1
_ALLOW = 3
_LITERAL = 3
_PREFIXED = 4


async def grant(
    bootstrap_servers: str,
    user: str,
    resource: ResourceType,
    name: str,
    operations: Iterable[str] = ("ALL",),
    *,
    prefixed: bool = False,
) -> None:
    """Allow SCRAM ``user`` the ``operations`` on a resource, and wait until the broker enforces it.

    :param bootstrap_servers: a listener on which the client is a super user (the broker's PLAINTEXT one).
    :param operations: names such as ``READ``, ``WRITE``, ``DESCRIBE``, ``CREATE``, ``ALL``.
    :param prefixed: ``name`` is a prefix (PREFIXED pattern) rather than a literal name.
    :raises ApacheKafkaError: the broker refused an ACL or did not show it within 10 s.
    """
    resource_type = _RESOURCE_TYPES[resource]
    codes = [_OPERATIONS[operation.upper()] for operation in operations]
    pattern = _PREFIXED if prefixed else _LITERAL
    principal = f"User:{user}"
    client = AIOKafkaClient(bootstrap_servers=bootstrap_servers, client_id="battery-worker-acl")
    try:
        await client.bootstrap()
        node = client.get_random_node()
        for code in codes:
            request = CreateAclsRequest(resource_type, name, pattern, principal, "*", code, _ALLOW)
            response = await client.send(node, request)
            for error_code, message in response.creation_responses:
                if error_code:
                    raise ApacheKafkaError(f"CreateAcls {principal} {resource} {name}: {message}")
        # CreateAcls answers once the controller committed; the broker's authorizer applies it a
        # moment later, and DescribeAcls on the broker reads that authorizer.
        deadline = time.monotonic() + 10.0
        wanted = DescribeAclsRequest(resource_type, name, pattern, principal, "*", _ANY, _ANY)
        while True:
            described = await client.send(node, wanted)
            found = {acl[2] for entry in described.resources for acl in entry[-1]}
            if set(codes) <= found:
                return
            if time.monotonic() >= deadline:
                raise ApacheKafkaError(f"ACLs for {principal} on {resource} {name} not visible in 10 s")
            await asyncio.sleep(_POLL_S)
    finally:
        await client.close()
