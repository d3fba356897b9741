"""Secret scrubbing: every form of an app's secret values becomes ``[secret KEY]`` (pure).

Build, deploy and runtime logs go through a :class:`Scrubber` before anything is stored,
published or returned. ``Scrubber(secrets)`` takes the app's secrets (env var name → clear value)
and never changes afterwards: build one per app and share it between that app's streams. Whole
texts go through ``Scrubber.scrub``; streams through a :class:`StreamScrubber` (text chunks) or a
:class:`ByteStreamScrubber` (raw bytes, decoded as UTF-8).

Caught: each value ``v`` of a secret ``KEY`` is replaced by ``[secret KEY]`` in every one of
these forms (``Scrubber.forms`` lists them for a given set of secrets):

- ``v`` itself, and ``v.strip()`` when ``v`` has whitespace around it (a value pasted with a
  trailing newline is usually printed without it);
- percent-encoded: ``quote(v, safe="")``, ``quote(v)`` (``/`` kept, ``quote``'s default) and
  ``quote_plus(v)``;
- JSON-escaped: ``json.dumps(v)[1:-1]``, and the same with ``ensure_ascii=False``;
- when ``v`` has at least ``MIN_ENCODED_BYTES`` bytes of UTF-8: hex of those bytes (lower and
  upper case); base64, standard and URL-safe, each with and without its ``=`` padding; and, for
  base64 of a longer text that contains ``v`` (a JSON document, a ``user:password`` pair), the
  characters that ``v``'s bits alone decide, for each of the 3 alignments of ``v`` in the
  encoded bytes, in both alphabets (:func:`_stable_base64`). The characters at the edges, which
  mix ``v``'s bits with its neighbours', stay: they hold at most 4 bits of ``v``'s first byte
  and 4 bits of its last;
- each line of a multi-line value (a PEM key) that is at least ``MIN_LINE_CHARS`` characters
  long once stripped, since logs print such values line by line or with other line ends. PEM
  armour lines (``-----BEGIN PRIVATE KEY-----``) are left out: they are no secret. The lines
  of a multi-line JSON or YAML document are all forms, its boilerplate too
  (``"type": "service_account",``): that scrubs more than needed, never less.

Not caught:

- other encodings: base64 wrapped over several lines (MIME, PEM), hex starting at an odd digit,
  percent-encoding with lowercase digits (``%2f``), JSON escapes of other encoders (``\\/``,
  ``\\u003c``, uppercase ``\\u00E9``), HTML entities, shell quoting (``'it'\\''s'``), double
  encodings (base64 of the hex), compressed or encrypted output, a value cut in pieces;
- the hex and base64 forms of a value shorter than ``MIN_ENCODED_BYTES`` bytes: the stable
  fragment of a 2-byte value's base64 is 1 or 2 characters, found in any log. Such a value is
  still replaced as itself, percent-encoded and JSON-escaped, however short: a one-character
  secret blanks that character everywhere (unreadable beats leaked);
- the part of one secret that sticks out of an occurrence of another it overlaps: matches are
  leftmost-longest and do not overlap (as with a regular expression), so with secrets
  ``A=abc-def`` and ``B=def-ghi`` the text ``abc-def-ghi`` becomes ``[secret A]-ghi``. A secret
  inside another (a password inside a database URL) is fine: the longer one goes whole;
- a value the text ends in the middle of (a process killed while printing it): the part printed
  is no form, so it stays; ``StreamScrubber.flush`` does the same as ``scrub``;
- empty and whitespace-only values: they are ignored, never matched everywhere.

When two secrets share a form (the same value twice), the label names the key whose own value
it is, else the first key by name.

How a chunk is scanned once: forms are looked up by their first ``stride + gram - 1`` bytes (the
*key*; gram 8, 4, 2 or 1 bytes, stride up to ``MAX_STRIDE``, as long as the shortest form
allows). The chunk's UTF-8 bytes are read as machine integers, one gram every ``stride`` bytes,
and checked in C (``frozenset.isdisjoint``) against the grams that keys hold at their first
``stride`` offsets. Wherever a key starts, the next multiple of the stride lies within its
first ``stride`` bytes and the gram there ends inside the key: a chunk without a hit holds no
form. Hits are confirmed with ``bytes.startswith``. Matching on UTF-8 bytes is matching on
characters: a form starts with a whole character, which never begins inside another one. One
regular expression of all the forms, longest first, is over 100 times slower (``re`` tries the
alternatives one after the other at every position); ``benchmarks/scrub_throughput.py``
measures both.

Streams: a :class:`StreamScrubber` emits all that its chunks so far decide and keeps back the
rest, from the first place where a form may begin but the text ends too soon to tell: at most
the longest form minus one character, and nothing when no form can begin there. The pieces it
returns, joined, equal ``scrub`` of the joined chunks, wherever the chunks were cut. A
:class:`ByteStreamScrubber` first decodes with an incremental UTF-8 decoder (invalid bytes become
U+FFFD), so a character cut between two chunks is never broken.
"""

from __future__ import annotations

import base64
import codecs
import json
import re
from array import array
from collections.abc import Callable, Iterator, Mapping
from itertools import compress, count
from types import MappingProxyType
from urllib.parse import quote, quote_plus

__all__ = [
    "MAX_STRIDE",
    "MIN_ENCODED_BYTES",
    "MIN_LINE_CHARS",
    "ByteStreamScrubber",
    "Scrubber",
    "StreamScrubber",
]

MIN_ENCODED_BYTES = 8  # bytes of UTF-8: the stable base64 fragment is then 10+ characters
MIN_LINE_CHARS = 16  # characters: a line of a multi-line value this long is a form of its own
MAX_STRIDE = 32  # bytes between two sampled grams of a chunk
_HIT_BLOCK = 64  # sampled grams checked at once, in C, before looking for the one that hit
_UTF8 = "utf-8"
_LOSSLESS = "surrogatepass"  # every str round-trips through bytes, lone surrogates too
_PEM_ARMOUR = re.compile(r"-----(?:BEGIN|END) [A-Z0-9 ]+-----")
_TYPECODES = {array(code).itemsize: code for code in "BHILQ"}  # gram bytes → array typecode
_PENDING = (b"", b"")  # a form may match at this offset: the text ends too soon to tell


# ---------------------------------------------------------------------------------------------
# The forms of a value
# ---------------------------------------------------------------------------------------------


def _stable_base64(encode: Callable[[bytes], bytes], raw: bytes, shift: int) -> str:
    """The base64 characters only ``raw``'s bits decide when ``shift`` bytes come before it."""
    text = encode(bytes(shift) + raw).decode("ascii")
    first = -(-8 * shift // 6)  # character i holds bits 6i to 6i+5 of the encoded bytes
    end = 8 * (shift + len(raw)) // 6
    return text[first:end]


def _encoded_forms(raw: bytes) -> set[str]:
    """Hex and base64 forms of a value's bytes, whole and embedded."""
    forms = {raw.hex(), raw.hex().upper()}
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        whole = encode(raw).decode("ascii")
        forms |= {whole, whole.rstrip("=")}
        forms |= {_stable_base64(encode, raw, shift) for shift in range(3)}
    return forms


def _escaped_forms(value: str) -> set[str]:
    """The value, percent-encoded and JSON-escaped."""
    raw = value.encode(_UTF8, _LOSSLESS)
    return {
        value,
        quote(raw, safe=""),
        quote(raw),
        quote_plus(raw),
        json.dumps(value)[1:-1],
        json.dumps(value, ensure_ascii=False)[1:-1],
    }


def _line_forms(value: str) -> set[str]:
    """The long lines of a multi-line value, PEM armour left out."""
    lines = value.splitlines()
    if len(lines) < 2:
        return set()
    return {
        line.strip()
        for line in lines
        if len(line.strip()) >= MIN_LINE_CHARS and not _PEM_ARMOUR.fullmatch(line.strip())
    }


def _forms_of(value: str) -> set[str]:
    """Every form of one secret value that is replaced (see the module docstring)."""
    forms = _line_forms(value)
    for variant in {value, value.strip()}:
        forms |= _escaped_forms(variant)
        raw = variant.encode(_UTF8, _LOSSLESS)
        if len(raw) >= MIN_ENCODED_BYTES:
            forms |= _encoded_forms(raw)
    forms.discard("")
    return forms


def _sampling(shortest: int) -> tuple[int, int]:
    """(gram, stride) in bytes such that any ``shortest`` bytes hold a gram at a stride multiple."""
    gram = next(size for size in (8, 4, 2, 1) if 2 * size - 1 <= shortest)
    stride = gram
    while 2 * stride + gram - 1 <= shortest and 2 * stride <= MAX_STRIDE:
        stride *= 2
    return gram, stride


# ---------------------------------------------------------------------------------------------
# Scrubbing
# ---------------------------------------------------------------------------------------------


def _owners(secrets: Mapping[str, str]) -> dict[str, str]:
    """Every form of every secret → the key it names: the key whose own value the form is, else
    the first key by name."""
    kept = sorted((key, value) for key, value in secrets.items() if value.strip())
    owners: dict[str, str] = {}
    for key, value in kept:
        for form in {value, value.strip()}:
            owners.setdefault(form, key)
    for key, value in kept:
        for form in _forms_of(value):
            owners.setdefault(form, key)
    return owners


class Scrubber:
    """Replaces every form of the secrets' values with ``[secret KEY]``; immutable, shareable.

    ``forms`` maps each form caught (see the module docstring) to the key its label names.
    """

    def __init__(self, secrets: Mapping[str, str]) -> None:
        self.forms: Mapping[str, str] = MappingProxyType(_owners(secrets))
        labels = {form.encode(_UTF8, _LOSSLESS): _label(key) for form, key in self.forms.items()}
        self._gram, self._stride = _sampling(min(map(len, labels), default=1))
        self._key_len = self._stride + self._gram - 1
        self._typecode = _TYPECODES[self._gram]
        by_key: dict[bytes, list[tuple[bytes, bytes]]] = {}
        for form in sorted(labels, key=len, reverse=True):
            by_key.setdefault(form[: self._key_len], []).append((form, labels[form]))
        self._by_key = {key: tuple(forms) for key, forms in by_key.items()}
        self._key_prefixes = frozenset(key[:n] for key in by_key for n in range(1, len(key)))
        offsets: dict[int, set[int]] = {}
        for key in by_key:
            for offset in range(self._stride):
                gram = array(self._typecode, key[offset : offset + self._gram])[0]
                offsets.setdefault(gram, set()).add(offset)
        self._offsets = {gram: tuple(sorted(found)) for gram, found in offsets.items()}
        self._grams = frozenset(self._offsets)

    def scrub(self, text: str) -> str:
        """The text with every form of every secret replaced by ``[secret KEY]``."""
        data = text.encode(_UTF8, _LOSSLESS)
        starts = self._candidates(data)
        if not starts:
            return text
        return self._scrub_prefix(data, starts, final=True)[0].decode(_UTF8, _LOSSLESS)

    def _candidates(self, data: bytes) -> list[int]:
        """Sorted offsets where a form may start: every one where a key does, and a few more."""
        if not self._grams:
            return []
        grams = array(self._typecode)
        grams.frombytes(memoryview(data)[: len(data) - len(data) % self._gram])
        if self._stride > self._gram:
            grams = grams[:: self._stride // self._gram]
        if self._grams.isdisjoint(grams):
            return []
        starts = set()
        for index in self._hits(grams):
            at = index * self._stride
            starts.update(at - offset for offset in self._offsets[grams[index]] if offset <= at)
        return sorted(starts)

    def _hits(self, grams: array) -> Iterator[int]:
        """Indices of the sampled grams some key holds, found block by block: most have none."""
        for base in range(0, len(grams), _HIT_BLOCK):
            block = grams[base : base + _HIT_BLOCK]
            if not self._grams.isdisjoint(block):
                yield from compress(count(base), map(self._grams.__contains__, block))

    def _match_at(self, data: bytes, at: int, final: bool) -> tuple[bytes, bytes] | None:
        """(form, label) of the longest form at ``at``; None if none; _PENDING if too soon."""
        for form, label in self._by_key.get(data[at : at + self._key_len], ()):
            if data.startswith(form, at):
                return form, label
            if not final and len(data) - at < len(form) and form.startswith(data[at:]):
                return _PENDING
        return None

    def _scrub_prefix(self, data: bytes, starts: list[int], final: bool) -> tuple[bytes, int]:
        """Scrub what ``data`` decides: (scrubbed bytes, offset where the undecided rest begins).

        ``starts`` are ``_candidates(data)``; with ``final``, no more data follows: all is decided.
        """
        pieces = []
        done = 0  # data[:done] is in pieces
        for at in starts:
            if at < done:
                continue
            found = self._match_at(data, at, final)
            if found is _PENDING:
                pieces.append(data[done:at])
                return b"".join(pieces), at
            if found:
                pieces += (data[done:at], found[1])
                done = at + len(found[0])
        cut = len(data) if final else self._unfinished_key(data, done)
        pieces.append(data[done:cut])
        return b"".join(pieces), cut

    def _unfinished_key(self, data: bytes, start: int) -> int:
        """The first offset from ``start`` where the data ends inside a key; else its length."""
        for at in range(max(start, len(data) - self._key_len + 1), len(data)):
            if data[at:] in self._key_prefixes:
                return at
        return len(data)


def _label(key: str) -> bytes:
    return f"[secret {key}]".encode(_UTF8, _LOSSLESS)


class StreamScrubber:
    """Scrubs a text stream fed in chunks: a form cut between two chunks is still caught."""

    def __init__(self, scrubber: Scrubber) -> None:
        self._scrubber = scrubber
        self._held = b""  # undecided UTF-8 bytes: where a form may begin, to the end

    def feed(self, chunk: str) -> str:
        """The scrubbed text this chunk decides (maybe ""); a possible form's start waits."""
        data = self._held + chunk.encode(_UTF8, _LOSSLESS)
        scrubber = self._scrubber
        if self._held and scrubber._match_at(data, 0, final=False) is _PENDING:
            self._held = data  # the held form is still unfinished: no need to scan again
            return ""
        scrubbed, cut = scrubber._scrub_prefix(data, scrubber._candidates(data), final=False)
        self._held = data[cut:]
        return scrubbed.decode(_UTF8, _LOSSLESS)

    def flush(self) -> str:
        """The rest of the stream, scrubbed; the scrubber is then ready for a new stream."""
        data, self._held = self._held, b""
        starts = self._scrubber._candidates(data)
        scrubbed, _ = self._scrubber._scrub_prefix(data, starts, final=True)
        return scrubbed.decode(_UTF8, _LOSSLESS)


class ByteStreamScrubber:
    """A StreamScrubber for raw bytes, decoded as UTF-8 with U+FFFD for invalid bytes.

    A character cut between two chunks waits for the next one. A replaced invalid byte never
    takes a valid character after it along, so a secret in the stream reaches the scrubber whole.
    """

    def __init__(self, scrubber: Scrubber) -> None:
        self._decoder = codecs.getincrementaldecoder(_UTF8)(errors="replace")
        self._text = StreamScrubber(scrubber)

    def feed(self, chunk: bytes) -> str:
        """The scrubbed text this chunk decides (maybe "")."""
        return self._text.feed(self._decoder.decode(chunk))

    def flush(self) -> str:
        """The rest of the stream, scrubbed (a cut character at the end becomes U+FFFD)."""
        rest = self._text.feed(self._decoder.decode(b"", final=True))
        self._decoder.reset()
        return rest + self._text.flush()
