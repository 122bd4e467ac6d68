"""Request and decision ids: 32 hex digits of a version-4, RFC 4122 UUID, all distinct."""

from __future__ import annotations

import uuid

from protos.protocol import new_id


def test_ids_are_uuid4_hex_and_distinct() -> None:
    ids = [new_id() for _ in range(20000)]
    assert len(set(ids)) == len(ids)
    for value in ids:
        parsed = uuid.UUID(hex=value)
        assert parsed.hex == value and len(value) == 32
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122
    # the 122 random bits all vary (no bit stuck by the version/variant masks)
    bits = [int(v, 16) for v in ids[:2000]]
    fixed = (0xF000 << 64) | (0xC000 << 48)
    assert all(any(b >> k & 1 for b in bits) and not all(b >> k & 1 for b in bits)
               for k in range(128) if not fixed >> k & 1)
