"""Which ``prices`` partition a site belongs to: the partition Kafka's default partitioner gives its key.

Why a fixed rule and not "the first partition a site's ticks arrive on": a site's state lives in the state
partition numbered like its ``prices`` partition, so the worker must know, for every tick on its own, whether
it is on the site's partition. Deciding by arrival let one stray tick (a null key with a ``site_id`` field,
sent to a random partition) claim the site for good, and made the audit replay's answer depend on the order
in which it happened to read the partitions. The key hash depends on nothing but the site id and the
partition count, so the live worker and every replay agree, whatever arrives where.

The hash is murmur2 of the UTF-8 site id, made positive and taken modulo the partition count: what the Java
client, librdkafka's ``murmur2_random`` and aiokafka's default partitioner do for a keyed record. A producer
that keys ticks by site id with any of them lands each site on its home partition.
"""

from __future__ import annotations

import struct

_SEED = 0x9747B28C
_M = 0x5BD1E995
_MASK = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 (``org.apache.kafka.common.utils.Utils.murmur2``) as an unsigned 32-bit number."""
    length = len(data)
    h = (_SEED ^ length) & _MASK
    whole = length - length % 4
    for k in _words(length // 4).unpack_from(data):
        k = (k * _M) & _MASK
        k ^= k >> 24
        k = (k * _M) & _MASK
        h = ((h * _M) & _MASK) ^ k
    rest = length % 4
    if rest >= 3:
        h ^= data[whole + 2] << 16
    if rest >= 2:
        h ^= data[whole + 1] << 8
    if rest >= 1:
        h ^= data[whole]
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h


_word_structs: dict[int, struct.Struct] = {}


def _words(count: int) -> struct.Struct:
    """Reads ``count`` little-endian 32-bit words in one call (murmur2 runs per output record: the worker
    partitions each history record, whose ``site|timestamp`` key is new every tick)."""
    words = _word_structs.get(count)
    if words is None:
        words = _word_structs[count] = struct.Struct(f"<{count}I")
    return words


def key_partition_uncached(key: bytes, partitions: int) -> int:
    """The default partitioner's choice for ``key`` among ``partitions`` (Kafka's Java client's formula)."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def home_partition(site_id: str, partitions: int) -> int:
    """The ``prices`` partition of ``site_id``'s ticks (and of its state record) among ``partitions``."""
    if partitions < 1:
        raise ValueError(f"partitions={partitions!r}: a topic has at least one partition")
    return key_partition_uncached(site_id.encode("utf-8"), partitions)
