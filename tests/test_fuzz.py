"""Fuzzing with hypothesis: the decoder on damaged and lying files, the encoder on any size and mode.

The decoder's target is bench/fuzz.py's (:func:`bench.fuzz.mutate` and :func:`bench.fuzz.check`),
run here over the corpus in tests/data/fuzz/ for a bounded number of examples, derandomized so
that CI sees the same cases every run; ``python -m bench.fuzz --minutes 10`` runs it long.

Property: decoding returns an image of the header's size and mode or raises a VaecodecError, never
another exception, within a per-example deadline; a file whose CRC was recomputed and whose symbols'
checksum is the original's decodes to the original symbols (and pixels, unless the header, the
filter or the alpha plane changed), or is refused.
"""

from __future__ import annotations

import resource
from datetime import timedelta

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from bench import fuzz
from vaecodec import VaecodecError, container

DEADLINE = timedelta(seconds=5)  # a small file decodes in tens of ms; a hang or a giant allocation does not
FUZZ = settings(deadline=DEADLINE, derandomize=True, database=None, print_blob=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def corpus(codec) -> dict[str, bytes]:
    return fuzz.corpus_for(codec)


@pytest.fixture(scope="module")
def refs(codec, corpus) -> dict[str, fuzz.Reference]:
    return {name: fuzz.reference(codec, data) for name, data in corpus.items()}


@pytest.fixture(scope="module")
def rss_guard():
    """The fuzzing may not raise the process's peak memory out of proportion: by 1.5 GB at most,
    whatever sizes the damaged files claim (up to 2**40 pixels a side)."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    yield
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 1500, f"fuzzing raised the peak RSS by {grown_mb:.0f} MB"


def test_corpus_covers_every_mode_and_section(codec):
    """The stored corpus is what bench/fuzz.py makes, by the shipped model, and covers what it claims."""
    files = fuzz.load_corpus()
    assert sorted(files) == sorted(fuzz.SPECS)
    assert sum(len(d) for d in files.values()) < 60_000
    parsed = [container.unpack(d) for d in files.values()]
    assert {h.mode for h, _ in parsed} == set(container.MODES)
    for mode in container.MODES:
        assert {bool(p.filter) for h, p in parsed if h.mode == mode} == {True, False}, mode
    assert {bool(p.metadata) for _, p in parsed} == {True, False}
    assert {p.metadata[:1] for _, p in parsed if p.metadata} == {b"\x00", b"\x01"}  # raw and deflated
    assert any(p.escapes for _, p in parsed)
    assert {h.quality for h, _ in parsed} >= {1, 5, 10}
    assert {(h.width, h.height) for h, _ in parsed} >= {(1, 1), (70, 40)}
    if parsed[0][0].model_id == codec.model.model_id:  # else the weights changed: the test remakes it
        for name, data in files.items():
            assert codec.decompress(data).size == fuzz.SPECS[name][1:3]


def _fuzz(codec, corpus, refs, data, families: tuple[str, ...]) -> None:
    name = data.draw(st.sampled_from(sorted(corpus)), label="file")

    def pick(lo: int, hi: int) -> int:
        return data.draw(st.integers(lo, hi))

    case = fuzz.mutate(name, corpus[name], pick, families)
    outcome = fuzz.check(codec, case, refs[name])
    assert outcome.ok, (case.kind, name, outcome.detail)


@pytest.mark.usefixtures("rss_guard")
@settings(FUZZ, max_examples=800)
@given(data=st.data())
def test_fuzz_raw_damage(codec, corpus, refs, data):
    """Truncation, bit flips, replaced, inserted and deleted bytes anywhere, CRC kept or recomputed."""
    _fuzz(codec, corpus, refs, data, ("raw", "rawcrc"))


@pytest.mark.usefixtures("rss_guard")
@settings(FUZZ, max_examples=1200)
@given(data=st.data())
def test_fuzz_payload_with_valid_crc(codec, corpus, refs, data):
    """One section (ANS stream, escapes, alpha, filter, metadata) damaged, the file packed again."""
    _fuzz(codec, corpus, refs, data, ("payload",))


@pytest.mark.usefixtures("rss_guard")
@settings(FUZZ, max_examples=500)
@given(data=st.data())
def test_fuzz_lying_header(codec, corpus, refs, data):
    """Header fields rewritten with a valid CRC: giant or tiny sizes with the streams kept or empty,
    mode, quality, symbols' checksum, model id."""
    _fuzz(codec, corpus, refs, data, ("header",))


@pytest.mark.parametrize("op", fuzz.HEADER_OPS)
def test_every_header_rewrite_is_judged(codec, corpus, refs, op):
    """Each header rewrite once per corpus file, whatever hypothesis happens to draw."""
    rng = np.random.default_rng(len(op))

    def pick(lo: int, hi: int) -> int:
        return int(rng.integers(lo, hi + 1))

    for name, data in sorted(corpus.items()):
        header, payload = container.unpack(data)
        out = container.pack(*fuzz._rewrite_header(op, header, payload, pick))
        outcome = fuzz.check(codec, fuzz.Case(name, f"header-{op}", out), refs[name])
        assert outcome.ok, (op, name, outcome.detail)


def test_mutations_are_deterministic(corpus):
    """A case number names the same bytes on every run (the bench's replay relies on it)."""
    assert [fuzz.case_of(7, i, corpus).data for i in range(20)] == [fuzz.case_of(7, i, corpus).data
                                                                    for i in range(20)]
    kinds = {fuzz.case_of(7, i, corpus).kind.split("-", 1)[0] for i in range(300)}
    assert kinds == {"raw", "rawcrc", "header", *fuzz.SECTIONS}


def test_recrc_makes_a_valid_crc(corpus):
    data = corpus["rgba-q5"]
    bad = bytearray(data)
    bad[-1] ^= 0x40  # last byte of the alpha PNG
    with pytest.raises(VaecodecError, match="checksum"):
        container.unpack(bytes(bad))
    container.unpack(fuzz.recrc(bytes(bad)))  # the CRC is right again: parses
    assert fuzz.recrc(data) == data
    assert fuzz.recrc(data[:10]) == data[:10]  # unreadable header: left as is


# ---- the encoder -------------------------------------------------------------------------------


def _image(mode: str, width: int, height: int, seed: int, transparent: bool) -> Image.Image:
    rng = np.random.default_rng(seed)
    smooth = np.linspace(0, 255, width * height * 3).reshape(height, width, 3)
    rgb = np.clip(smooth + rng.normal(0, 40, smooth.shape), 0, 255).astype(np.uint8)
    im = Image.fromarray(rgb)
    if mode == "P":
        im = im.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
        if transparent:
            im.info["transparency"] = 0
        return im
    if mode in ("L", "LA"):
        im = im.convert("L")
    if mode in ("RGBA", "LA"):
        im.putalpha(Image.fromarray(rng.integers(0, 256, (height, width), dtype=np.uint8)))
    return im


@settings(max_examples=25, deadline=timedelta(seconds=20), derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(width=st.integers(1, 70), height=st.integers(1, 70),
       mode=st.sampled_from(["RGB", "L", "RGBA", "LA", "P"]), transparent=st.booleans(),
       quality=st.floats(1, 10), seed=st.integers(0, 2**16))
def test_encoder_any_size_mode_quality(codec, width, height, mode, transparent, quality, seed):
    """Any size from 1x1 to 70x70, any mode, any quality: a file that decodes to that size and mode
    (a palette image to RGB, or RGBA with transparency), with the quality in its header."""
    im = _image(mode, width, height, seed, transparent)
    data = codec.compress(im, quality)
    header = container.unpack(data)[0]
    assert header.quality == round(quality * 100) / 100
    out = codec.decompress(data)
    expected = {"P": "RGBA" if transparent else "RGB"}.get(mode, mode)
    assert (out.size, out.mode, header.mode) == ((width, height), expected, expected)
    if expected in ("RGBA", "LA"):  # alpha is lossless
        assert np.array_equal(np.asarray(out)[..., -1], np.asarray(im.convert(expected))[..., -1])
