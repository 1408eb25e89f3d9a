"""Entropy coding of the integer latents with constriction's ANS coder against integer PMF tables.

Tables
------
Every probability the coder uses comes from a :class:`TableSet`: a list of integer PMFs, each over a
contiguous range of values ``offset .. offset + length - 2`` plus one final *escape* entry. The
integers are computed once, at export time, and stored with the weights; nothing is recomputed from
floats at load time, so encoder and decoder use bit-identical models on every machine.

A table with ``n`` entries ``q`` (integers >= 0, ``sum(q) == 2**24 - n``) is handed to constriction
as ``Categorical(q, perfect=False)``, which then represents exactly the PMF ``(q + 1) / 2**24``:
every entry, escape included, has non-zero probability, so any symbol is encodable.

z uses one table per channel (the tabulated factorized density); y uses one table per scale index
(a zero-mean discretized Gaussian for each of the 64 fixed scales), and its symbols are
``round(y - mean)`` with the mean from the integer prior.

Streams
-------
Symbols are grouped by table and each group is coded with a single ``encode_reverse`` call, which is
several times faster than coding symbol by symbol with per-symbol models. One ANS stack holds z and
y: y is pushed first and z last, so the decoder pops z first, runs h_s on it to learn each y
symbol's table, then pops y. y comes in one or more *parts* that the decoder pops in order: one
(all of y) for the plain hyperprior; two for the checkerboard context model, the anchors and then
the rest, whose tables the decoder learns from the decoded anchors. Within a part, symbols are
grouped by table in ascending order, and in the order the caller gives them within a group (raster
order, channel, row, column, of the latent tensor).

Values outside a table's range are coded as the escape entry; the actual value goes to a separate
escape stream (zigzag LEB128 varints) in decode order. So no input, however extreme, can make
encoding fail.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import constriction
import numpy as np

from .bits import BitReader, BitWriter
from .errors import CorruptFileError

PRECISION = 24
TOTAL = 1 << PRECISION
MAX_TABLE_LENGTH = 1 << 16


@contextmanager
def _coder_errors() -> Iterator[None]:
    """Turn constriction's failures on bad data into CorruptFileError. Its Rust panics surface as
    PanicException, which derives from BaseException, so ``except Exception`` would miss them."""
    try:
        yield
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:
        raise CorruptFileError(f"ANS stream rejected ({type(exc).__name__}: {exc})") from None


def quantize_pmf(probs: np.ndarray, tail: float) -> np.ndarray:
    """Float probabilities of a range of values plus the escape (tail) mass -> integer table.

    Returns int64 ``q`` of length ``len(probs) + 1`` with ``sum(q) == 2**24 - len(q)``: floor of
    the scaled probabilities, with the remainder given to the largest fractional parts (ties broken
    by position, so the result is deterministic).
    """
    p = np.append(np.asarray(probs, dtype=np.float64), max(float(tail), 0.0))
    p = np.clip(p, 0, None)
    p /= p.sum()
    budget = TOTAL - len(p)
    scaled = p * budget
    q = np.floor(scaled).astype(np.int64)
    rest = budget - int(q.sum())
    order = np.argsort(-(scaled - q), kind="stable")
    q[order[:rest]] += 1
    return q


@dataclass
class TableSet:
    """Integer PMF tables stored back to back: table ``t`` covers values ``offsets[t] ..
    offsets[t] + lengths[t] - 2``, and its last entry is the escape."""

    offsets: np.ndarray  # int64 (T,)
    lengths: np.ndarray  # int64 (T,)
    pmfs: np.ndarray  # int64 (sum(lengths),)

    @classmethod
    def from_tables(cls, tables: list[tuple[int, np.ndarray]]) -> TableSet:
        """From (offset, q) pairs as returned with :func:`quantize_pmf`."""
        return cls(
            np.array([o for o, _ in tables], dtype=np.int64),
            np.array([len(q) for _, q in tables], dtype=np.int64),
            np.concatenate([q for _, q in tables]).astype(np.int64),
        )

    def validate(self) -> None:
        """Refuse tables that constriction would not represent exactly (e.g. damaged weights)."""
        if len(self.offsets) != len(self.lengths) or int(self.lengths.sum()) != len(self.pmfs):
            raise ValueError("entropy tables: inconsistent sizes")
        if (self.lengths < 2).any() or (self.lengths > MAX_TABLE_LENGTH).any() or (self.pmfs < 0).any():
            raise ValueError("entropy tables: bad table length or negative entry")
        for t, q in enumerate(self.split()):
            if int(q.sum()) != TOTAL - len(q):
                raise ValueError(f"entropy tables: table {t} does not sum to 2**24 - n")

    def split(self) -> list[np.ndarray]:
        return np.split(self.pmfs, np.cumsum(self.lengths)[:-1])

    def models(self) -> list:
        """One constriction Categorical per table (built once per loaded model)."""
        cat = constriction.stream.model.Categorical
        return [cat(q.astype(np.float64), perfect=False) for q in self.split()]

    def symbol_bits(self, values: np.ndarray, table: np.ndarray) -> np.ndarray:
        """The bits each value costs (float64, the shape of ``values``) under its table: the ideal
        ``-log2((q + 1) / 2**24)`` of its entry, and for a value outside the table's range the
        escape entry's plus the bytes of its zigzag varint in the escape stream."""
        rel = values - self.offsets[table]
        escape = self.lengths[table] - 1
        escaped = (rel < 0) | (rel >= escape)
        start = np.concatenate([[0], np.cumsum(self.lengths)[:-1]])
        q = self.pmfs[start[table] + np.where(escaped, escape, rel)]
        bits = PRECISION - np.log2(q + 1.0)
        if escaped.any():
            u = np.abs(values[escaped]) * 2 - (values[escaped] < 0)  # zigzag, as write_escapes does
            bits[escaped] += 8 * np.maximum(1, np.ceil(np.log2(u.astype(np.float64) + 1) / 7))  # LEB128
        return bits


class TableCoder:
    """A TableSet together with its constriction models, ready to code grouped symbols."""

    def __init__(self, tables: TableSet) -> None:
        tables.validate()
        self.tables = tables
        self.models = tables.models()

    def to_groups(self, values: np.ndarray, table: np.ndarray) -> tuple[list[np.ndarray], list[int]]:
        """Flat values and their table indices -> per-table int32 symbol arrays, plus the escaped
        values in decode order (ascending table, raster order within a table)."""
        order = np.argsort(table, kind="stable")
        counts = np.bincount(table, minlength=len(self.models))
        groups, escapes = [], []
        for t, part in enumerate(np.split(order, np.cumsum(counts)[:-1])):
            sym = values[part] - self.tables.offsets[t]
            esc = self.tables.lengths[t] - 1
            out = (sym < 0) | (sym >= esc)
            escapes.extend(values[part][out].tolist())
            groups.append(np.where(out, esc, sym).astype(np.int32))
        return groups, escapes

    def push(self, coder, groups: list[np.ndarray]) -> None:
        """Encode groups so that :meth:`pop` returns them in ascending table order."""
        for t in reversed(range(len(groups))):
            if len(groups[t]):
                coder.encode_reverse(groups[t], self.models[t])

    def pop(self, decoder: StreamDecoder, table: np.ndarray) -> np.ndarray:
        """Decode the values whose table indices are ``table`` (flat), consuming escapes."""
        values = np.empty(len(table), dtype=np.int64)
        order = np.argsort(table, kind="stable")
        counts = np.bincount(table, minlength=len(self.models))
        if len(counts) > len(self.models):
            raise CorruptFileError("table index out of range")
        for t, part in enumerate(np.split(order, np.cumsum(counts)[:-1])):
            if not len(part):
                continue
            sym = decoder.take(self.models[t], len(part))
            esc = self.tables.lengths[t] - 1
            vals = sym + self.tables.offsets[t]
            where = np.flatnonzero(sym == esc)
            if len(where):
                vals[where] = decoder.escapes.take(len(where))
            values[part] = vals
        return values


def write_escapes(values: list[int]) -> bytes:
    """The escape stream: zigzag LEB128 varints (:mod:`vaecodec.bits`)."""
    out = BitWriter()
    for v in values:
        out.signed_varint(v)
    return out.getvalue()


class EscapeReader:
    """Reads the escape stream, refusing anything malformed or out of range."""

    MAX_BYTES = 10  # a signed 64-bit value takes at most 10 bytes

    def __init__(self, data: bytes) -> None:
        self.reader = BitReader(data, "escape stream")

    def take(self, count: int) -> np.ndarray:
        out = np.empty(count, dtype=np.int64)
        for i in range(count):
            v = self.reader.signed_varint(self.MAX_BYTES)
            if not -(1 << 63) <= v < 1 << 63:
                raise CorruptFileError("escape value out of range")
            out[i] = v
        return out

    def finish(self) -> None:
        self.reader.finish()


def encode(z_coder: TableCoder, z: np.ndarray, y_coder: TableCoder,
           y_parts: list[tuple[np.ndarray, np.ndarray]]) -> tuple[bytes, bytes]:
    """Code z (C, h, w) with one table per channel, then the parts of y, each a pair (values,
    table indices) of equal shapes, in the order the decoder will pop them.

    Returns (ANS stream, escape stream).
    """
    z_table = np.broadcast_to(np.arange(z.shape[0])[:, None, None], z.shape).ravel()
    z_groups, escapes = z_coder.to_groups(z.ravel(), z_table)
    y_groups = []
    for values, table in y_parts:
        groups, part_escapes = y_coder.to_groups(values.ravel(), table.ravel())
        y_groups.append(groups)
        escapes += part_escapes
    coder = constriction.stream.stack.AnsCoder()
    for groups in reversed(y_groups):  # a stack: the last part pushed is the first popped
        y_coder.push(coder, groups)
    z_coder.push(coder, z_groups)
    words = coder.get_compressed()
    return words.astype("<u4").tobytes(), write_escapes(escapes)


class StreamDecoder:
    """Decoding side of :func:`encode`, step by step because y's tables depend on z (and, with a
    context model, a part's tables on the parts before it): :meth:`z`, :meth:`y` once per part,
    then :meth:`finish`.

    An ANS decoder whose data is gone does not stop: it keeps producing the first entry of each
    table, so a file that claims a large image with no data behind it would "decode" to a flat image
    after minutes of work. The first entry of every table is a far tail (the lowest value kept), so
    a real stream ends with a run of them essentially never: once the coder is empty, at most
    ``MAX_DRY`` more symbols are accepted, and the stream is refused as soon as there are more.
    """

    MAX_DRY = 16

    def __init__(self, stream: bytes, escapes: bytes) -> None:
        if len(stream) % 4:
            raise CorruptFileError("ANS stream length is not a multiple of 4 bytes")
        words = np.frombuffer(stream, dtype="<u4").astype(np.uint32)
        with _coder_errors():
            self.decoder = constriction.stream.stack.AnsCoder(words)
        self.escapes = EscapeReader(escapes)
        self.dry = 0  # symbols decoded from an empty coder

    def take(self, model: object, count: int) -> np.ndarray:
        """``count`` table entries decoded with one model; CorruptFileError when the data ran out."""
        if self.decoder.is_empty() and self.dry + count > self.MAX_DRY:
            raise CorruptFileError("ANS stream ran out of data before the last symbol")
        with _coder_errors():
            sym = np.asarray(self.decoder.decode(model, count), dtype=np.int64)
        if self.decoder.is_empty():  # it emptied in this group: what followed came from nothing
            nonzero = np.flatnonzero(sym)
            self.dry += count - (int(nonzero[-1]) + 1 if len(nonzero) else 0)
            if self.dry > self.MAX_DRY:
                raise CorruptFileError("ANS stream ran out of data before the last symbol")
        return sym

    def z(self, z_coder: TableCoder, shape: tuple[int, int, int]) -> np.ndarray:
        table = np.broadcast_to(np.arange(shape[0])[:, None, None], shape).ravel()
        return z_coder.pop(self, table).reshape(shape)

    def y(self, y_coder: TableCoder, y_table: np.ndarray) -> np.ndarray:
        """The next part of y, whose table indices are ``y_table``."""
        return y_coder.pop(self, y_table.ravel()).reshape(y_table.shape)

    def finish(self) -> None:
        """Refuse a stream with anything left after the last symbol."""
        if not self.decoder.is_empty():
            raise CorruptFileError("ANS stream has data left after the last symbol")
        self.escapes.finish()
