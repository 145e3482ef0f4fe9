"""Sortable job ids (ULID) and unguessable lease ids, from an injected random source."""

from __future__ import annotations

import random

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
# Two characters (10 bits) per table lookup: a job id costs 13 lookups, not 26.
_PAIRS = [a + b for a in _CROCKFORD for b in _CROCKFORD]
_RANDOM_BITS = 80
_RANDOM_MAX = (1 << _RANDOM_BITS) - 1


def _encode(value: int, length: int) -> str:
    """Crockford base32 of ``value``, zero-padded to ``length`` characters."""
    out = []
    if length % 2:
        out.append(_CROCKFORD[value & 31])
        value >>= 5
    for _ in range(length // 2):
        out.append(_PAIRS[value & 1023])
        value >>= 10
    return "".join(reversed(out))


class IdSource:
    """Makes job ids that sort by submit time, monotonic within a millisecond.

    The random part comes from ``rng`` so tests can seed it; production passes
    ``random.SystemRandom()``.
    """

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._last_ms = -1
        self._last_random = 0
        self._prefix = ""  # the encoded _last_ms: ids of one millisecond share it
        self._lease_prefix = _encode(rng.getrandbits(40), 8)
        self._lease_counter = 0

    def job_id(self, now: float) -> str:
        ms = max(int(now * 1000), self._last_ms)
        if ms == self._last_ms and self._last_random < _RANDOM_MAX:
            self._last_random += 1
        else:
            self._last_ms = ms
            self._last_random = self._rng.getrandbits(_RANDOM_BITS - 1)
            self._prefix = _encode(ms, 10)
        # 26 characters = 10 for the 48-bit time (2 padding bits) + 16 for the 80 random bits.
        return self._prefix + _encode(self._last_random, 16)

    def lease_id(self) -> str:
        """Unique per engine instance; the random prefix keeps ids from colliding across
        restarts, where a counter alone would hand an old worker a matching id."""
        self._lease_counter += 1
        return f"{self._lease_prefix}-{self._lease_counter:x}"
