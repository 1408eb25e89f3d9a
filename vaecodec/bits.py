"""The one reader and writer of the small integer codes in a .vaez file.

Three codes share it: unsigned LEB128 varints (the container's lengths and sizes), zigzag LEB128
varints (the escape stream's signed values) and zigzag Exp-Golomb codes, most significant bit first
(the Wiener filter's coefficients). A reader never reads past its data and never accepts a code longer
than its caller allows; every malformed input is a :class:`CorruptFileError` that says what was being
read, so a damaged file is refused in one line, never decoded into garbage.
"""

from __future__ import annotations

from .errors import CorruptFileError


def zigzag(v: int) -> int:
    """Signed -> unsigned, small magnitudes first: 0, -1, 1, -2, ... -> 0, 1, 2, 3, ..."""
    return 2 * v if v >= 0 else -2 * v - 1


def unzigzag(u: int) -> int:
    return (u >> 1) ^ -(u & 1)


class BitWriter:
    """Bytes built from varints (byte-aligned) and bit fields (most significant bit first)."""

    def __init__(self) -> None:
        self._out = bytearray()
        self._acc = 0  # pending bits, not yet a whole byte
        self._n = 0

    def varint(self, u: int) -> None:
        """Unsigned LEB128: 7 bits a byte, least significant group first."""
        self._require_aligned()
        if u < 0:
            raise ValueError(f"varint of a negative value {u}")
        while True:
            byte, u = u & 0x7F, u >> 7
            self._out.append(byte | (0x80 if u else 0))
            if not u:
                return

    def signed_varint(self, v: int) -> None:
        self.varint(zigzag(v))

    def bits(self, value: int, n: int) -> None:
        """The low n bits of value, most significant first."""
        self._acc = (self._acc << n) | (value & ((1 << n) - 1))
        self._n += n
        while self._n >= 8:
            self._n -= 8
            self._out.append((self._acc >> self._n) & 0xFF)
        self._acc &= (1 << self._n) - 1

    def exp_golomb(self, u: int, k: int) -> None:
        """Exp-Golomb of order k: q = (u >> k) + 1 as (len(q) - 1) zero bits and q, then u's k low bits."""
        q = (u >> k) + 1
        self.bits(0, q.bit_length() - 1)
        self.bits(q, q.bit_length())
        self.bits(u, k)

    def getvalue(self) -> bytes:
        """The bytes written, the last one completed with zero bits."""
        tail = bytes([self._acc << (8 - self._n)]) if self._n else b""
        return bytes(self._out) + tail

    def _require_aligned(self) -> None:
        if self._n:
            raise ValueError("a varint must start on a byte boundary")


class BitReader:
    """Reads what :class:`BitWriter` writes; ``what`` names the data in error messages."""

    def __init__(self, data: bytes, what: str, pos: int = 0) -> None:
        self.data, self.what = data, what
        self.pos = pos  # in bits
        self.end = 8 * len(data)

    @property
    def byte_pos(self) -> int:
        return self.pos // 8

    def varint(self, max_bytes: int) -> int:
        """Unsigned LEB128 of at most ``max_bytes`` bytes."""
        if self.pos % 8:
            raise ValueError("a varint must start on a byte boundary")
        value = 0
        for i in range(max_bytes):
            if self.pos >= self.end:
                raise CorruptFileError(f"{self.what} is truncated")
            byte = self.data[self.pos // 8]
            self.pos += 8
            value |= (byte & 0x7F) << (7 * i)
            if not byte & 0x80:
                return value
        raise CorruptFileError(f"{self.what} is malformed (a varint longer than {max_bytes} bytes)")

    def signed_varint(self, max_bytes: int) -> int:
        return unzigzag(self.varint(max_bytes))

    def bits(self, n: int) -> int:
        if self.pos + n > self.end:
            raise CorruptFileError(f"{self.what} is truncated (a code runs past its end)")
        value = 0
        for _ in range(n):  # bit by bit: fields are few and short, and this never over-reads
            value = (value << 1) | ((self.data[self.pos >> 3] >> (7 - (self.pos & 7))) & 1)
            self.pos += 1
        return value

    def exp_golomb(self, k: int, max_prefix: int) -> int:
        """An Exp-Golomb code of order k whose prefix has at most ``max_prefix`` zero bits."""
        zeros = 0
        while self.bits(1) == 0:
            zeros += 1
            if zeros > max_prefix:
                raise CorruptFileError(f"{self.what} is malformed (an Exp-Golomb prefix is too long)")
        q = (1 << zeros) | self.bits(zeros)
        return ((q - 1) << k) | self.bits(k)

    def finish_bits(self) -> None:
        """Refuse anything after the last code but zero bits up to the byte boundary."""
        if self.end - self.pos >= 8 or self.bits(self.end - self.pos):
            raise CorruptFileError(f"{self.what} has unexpected trailing bits")

    def finish(self) -> None:
        """Refuse trailing bytes."""
        if self.pos != self.end:
            raise CorruptFileError(f"{self.what} has trailing bytes")
