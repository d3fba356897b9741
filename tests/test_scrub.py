"""panel.logs.scrub: 50 varied secrets in every encoding, whole, split and in a clean log.

The encodings are computed here again, independently of the module, and put into realistic log
lines; the scrubbed line must not hold them (for base64 of a longer text: the characters only the
secret's bits decide) and must name the right key. Streams are cut at every character (and byte)
and at random places; their output must equal the one-shot scrub. A clean 10,000-line log must
come out unchanged. ``benchmarks/scrub_throughput.py`` reuses the generators below.

Every run tests the same cases: the data comes from ``SEED`` (the PEM keys are pinned) and
the property tests are derandomized.
"""

from __future__ import annotations

import ast
import base64
import json
import random
import re
import string
import sys
import uuid
from collections.abc import Callable, Iterable
from functools import cache
from itertools import pairwise
from pathlib import Path
from urllib.parse import quote, quote_plus

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from panel.logs import scrub as scrub_module
from panel.logs.scrub import (
    MIN_ENCODED_BYTES,
    ByteStreamScrubber,
    Scrubber,
    StreamScrubber,
)

SEED = 20260509
META = ".*+?[](){}|^$\\"
PRINTABLE = string.ascii_letters + string.digits + string.punctuation + " "
ACCENTS = "àáâãäåæçèéêëìíîïñòóôõöøùúûüýÿÀÉÎÕÜßœŁąčęěğışžż"
EMOJI = "🔑🚀😀🎉🔥💾🧪🛡🐍🌍👩‍💻"
CJK = "秘密鍵密码安全令牌認証資格情報暗号化키비밀번호"
UNICODE = ACCENTS + EMOJI + CJK + string.ascii_letters + string.digits
LABEL = re.compile(r"\[secret ([A-Z0-9_]+)\]")
FULL_SPLIT_MAX = 2_000  # characters: longer lines are cut near the secret's ends, and sampled


# ---------------------------------------------------------------------------------------------
# Secrets
# ---------------------------------------------------------------------------------------------


def pick(rng: random.Random, alphabet: str, size: int) -> str:
    return "".join(rng.choices(alphabet, k=size))


# A real RSA 2048 and a real EC P-256 private key, PKCS#8 PEM, generated once with cryptography
# and pinned: a key generated at each run made the secrets, and so every test, differ from one
# run (and xdist worker) to the next. They protect nothing.
RSA_PEM = (
    "-----BEGIN PRIVATE KEY-----\n"
    "MIIEvAIBADANBgkqhkiG9w0BAQEFAASCBKYwggSiAgEAAoIBAQCxzvRg2fljBq0F\n"
    "MuQ2lNDGI1vtLluuvaM3UjwbNMEjxlGd1jrofXl1SXFVB1UJuIRtnkAqKxfU4pfT\n"
    "12xYxnjNZP7M+VH5cpmTIE9dE0NFKGB5sbTzBUh++9vTWuckfBY7NZCywWnaQiFO\n"
    "c61VpDqYrtwOFlzxB46EfqTDgNUc6BuRvmt/nUVxNQ+H1ZDLnr4pEE9I9p2wFK9A\n"
    "xsqSMjp0WRHRfK3C5eXZf14DuD850emaq6qeQRf686yNUgS1REExGX2pzG09JByO\n"
    "GZGsG36KGpF+vRPjdDMF21wkLE986RnzaekrWZSoNqWO7go24vDUK2L7W9YdBkBN\n"
    "Ne4ZujGJAgMBAAECggEAA2jQOI+qWrfIoSeLUMlh80tJRtj11LT5zVXf1sp6v0xJ\n"
    "ZwuUc/kuHCZIQDxA30v14rgN/K/HO8iCNchoud36PRgoGE1jtzL3Y0lTbrdDaxFo\n"
    "3WZaqLK+Rj2uAdL+XKPF3OUDs1HGfnzuhC20MjMpssh8LweVcENro4Q2nR4mfOb0\n"
    "OIIZCyXy7cOdk50RqOR3qfewOIZawR+9/o4kcfa1SJnC9eGv0hRVtmLKxBmfPQiO\n"
    "S1nSSnmKxIk1/h8ca9a/E5eX7WHFfdvrn3x0SgV/uBRsXre1nUyUvwWBzzGznAr/\n"
    "dNEfrv76tImUE5LHz5WdSB9hzTIhSk5IUBRQQHITcwKBgQDySIprhQosHaSSimnk\n"
    "whT3U9Jpy6uR0bZkZu2D2WrxxTOC0Fq+oJhlAi6RAOs8wv1grbjAFvImDpvdRvKe\n"
    "XQgRVxdCuMv044AqeqfWK637TbEIztRTRzUR4ZsmaGbMiwVCpinwBiFVgEmII2jR\n"
    "l4hdGhpOWRPGv080iradHdZWtwKBgQC73/dUQlS/C3qvFrDbLIch8D2dfMS9q3Kt\n"
    "09e1iYI6kp4JPmnB7OfKLEOdUwRd8qUgsnF5FbVRSxE5ZdlepSCJuxx1Zaq5SQw0\n"
    "Y4UlmG5ZWTuFJfQ73Uc6y/WDFrhxdDD2lBhjvhs/KxCx59Try1sfFy2rzGzlbe1L\n"
    "20Efm8V5vwKBgFx9KKom3V0966ctQ4NaO5q22uocH+DIh7IIQL9GbjbhKurTEvEW\n"
    "aVaV4KTmDubhIMyZRJ+/oqy4gvOTs+aUaRIFhxGnbeSMPE77B7sQbZgzblOIcTFh\n"
    "S3cKAqpEzIlkwJtSx0uja3IySN+5dLgd+qZf4o7qHkyOl3PdSBzuWPY9AoGATdwL\n"
    "jAfRRztipJ0qvio99nqxjkre3hvnctKQWtOZ/Nw2Um5jNdMQXGDrxI9bB/Q/KsXI\n"
    "8P1mH0KU6MykwOx+B5ZbvOtdTVxQioWT8HizgqPQXuXTydtyYZOVM7Z+ycX1ZLsL\n"
    "QIrQj+UxDgmd2/py0PeyHbiiiJJ9/SnoW0kbFdECgYBGCvZTKDudITIjXr18AEkm\n"
    "dwSezqcpoI/6YbxjYUj74IOmcr4fpSwjRKXpY30rosVAQZXHEdB3kC2/n7Gbm9Pm\n"
    "Bwbil0+QaE3dzvlf90XkbXtPFkMLEb/X6f/ZlRTG50iz7LBBNlkhYhn2bQVZpZ8K\n"
    "3cgHk16zQXepf4p1dcn66g==\n"
    "-----END PRIVATE KEY-----\n"
)
EC_PEM = (
    "-----BEGIN PRIVATE KEY-----\n"
    "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgsWT0daCidUhCBPJY\n"
    "3cS7F6ZEE7nQId+SVevBIY3BdAGhRANCAARCsKjB1vfNwAbcZsYFe0f7M1OcFhC4\n"
    "9rHlUsZi2UJlrdEttzvJ/13oIHbDI2b2bOlbd3A/oJOX9NeXrPmj1X/f\n"
    "-----END PRIVATE KEY-----\n"
)


def unicode_text(rng: random.Random, min_bytes: int) -> str:
    text = ""
    while len(text.encode()) < min_bytes:
        text += rng.choice(UNICODE)
    return text


@cache
def make_secrets() -> dict[str, str]:
    """50 secrets: 8-character and 4 KB ones, regex metacharacters, Unicode, PEM keys, JSON
    documents, URLs with credentials and tokens shaped like real ones."""
    rng = random.Random(SEED)
    secrets = {f"SHORT_{i}": pick(rng, string.ascii_letters + string.digits + META, 8)
               for i in range(10)}  # fmt: skip
    secrets |= {f"LONG_{i}": pick(rng, PRINTABLE, 4096) for i in range(6)}
    secrets |= {f"LONG_UNICODE_{i}": unicode_text(rng, 4096) for i in range(2)}
    secrets |= {f"REGEX_{i}": pick(rng, META + "aZ9", rng.randint(12, 40)) for i in range(5)}
    secrets |= {f"UNICODE_{i}": pick(rng, UNICODE, rng.randint(8, 48)) for i in range(8)}
    hex_id = pick(rng, "0123456789abcdef", 40)
    secrets |= {
        "TLS_PRIVATE_KEY": RSA_PEM,
        "GOOGLE_CREDENTIALS": json.dumps(
            {
                "type": "service_account",
                "project_id": "acme-prod-4711",
                "private_key_id": hex_id,
                "private_key": EC_PEM,
                "client_email": "deployer@acme-prod-4711.iam.gserviceaccount.com",
            },
            indent=2,
        ),
        "FEATURE_CONFIG": json.dumps(
            {
                "beta": True,
                "signing": pick(rng, string.ascii_letters, 24),
                "note": 'naïve "quoted" \\ path/to/€',
            },
            ensure_ascii=False,
        ),
        "DATABASE_URL": f"postgres://helios:{pick(rng, string.ascii_letters, 12)}$%@"
        "db.internal:5432/helios?sslmode=require",
        "REDIS_URL": f"redis://:{pick(rng, string.ascii_letters + string.digits, 20)}"
        "+/=@cache.internal:6379/0",
        "GIT_REMOTE": f"https://deploy-bot:ghp_{pick(rng, string.ascii_letters, 36)}"
        "@github.com/acme/shop.git",
        "AMQP_URL": f"amqp://guest:gü€st {pick(rng, string.digits, 6)}@mq.internal:5672/%2F",
        "STRIPE_KEY": "sk_live_" + pick(rng, string.ascii_letters + string.digits, 24),
        "GITHUB_TOKEN": "ghp_" + pick(rng, string.ascii_letters + string.digits, 36),
        "AWS_ACCESS_KEY_ID": "AKIA" + pick(rng, string.ascii_uppercase + string.digits, 16),
        "AWS_SECRET_ACCESS_KEY": pick(rng, string.ascii_letters + string.digits + "+/", 40),
        "SLACK_BOT_TOKEN": f"xoxb-{pick(rng, string.digits, 12)}-{pick(rng, string.digits, 13)}"
        f"-{pick(rng, string.ascii_letters + string.digits, 24)}",
        "SENTRY_DSN": f"https://{pick(rng, '0123456789abcdef', 32)}@o4711.ingest.sentry.io/42",
        "SESSION_SECRET": pick(rng, "0123456789abcdef", 64),
        "JWT_SIGNING_KEY": base64.urlsafe_b64encode(rng.randbytes(36)).decode(),
        "SMTP_PASSWORD": "correct horse battery staple " + pick(rng, string.digits, 4),
        "PROMO_API_KEY": f"50%off+promo/{pick(rng, string.ascii_letters, 10)}&x=1",
        "PASTED_WITH_NEWLINE": f"  tok-{pick(rng, string.ascii_letters, 20)}\n",
        "WEBHOOK_SECRET": "whsec_" + pick(rng, string.ascii_letters + string.digits, 32),
    }
    assert len(secrets) == 50
    return secrets


# ---------------------------------------------------------------------------------------------
# Encodings, computed here independently of the module
# ---------------------------------------------------------------------------------------------


def utf8(value: str) -> bytes:
    return value.encode()


ENCODINGS: dict[str, Callable[[str], str]] = {
    "raw": lambda v: v,
    "base64": lambda v: base64.b64encode(utf8(v)).decode(),
    "base64-unpadded": lambda v: base64.b64encode(utf8(v)).decode().rstrip("="),
    "base64url": lambda v: base64.urlsafe_b64encode(utf8(v)).decode(),
    "base64url-unpadded": lambda v: base64.urlsafe_b64encode(utf8(v)).decode().rstrip("="),
    "percent": lambda v: quote(v, safe=""),
    "percent-plus": quote_plus,
    "hex": lambda v: utf8(v).hex(),
    "HEX": lambda v: utf8(v).hex().upper(),
    "json": lambda v: json.dumps(v)[1:-1],
    "json-unicode": lambda v: json.dumps(v, ensure_ascii=False)[1:-1],
}
# Base64 of a JSON document holding the secret: the prefix puts it at byte offset 0, 1 or 2 mod 3.
EMBED_PREFIXES = {0: b'{"t":"', 1: b'{"tk":"', 2: b'{"tok":"'}
EMBED_SUFFIX = b'","exp":1767225600}'


def in_json(encode: Callable[[bytes], bytes], prefix: bytes) -> Callable[[str], str]:
    return lambda value: encode(prefix + utf8(value) + EMBED_SUFFIX).decode()


for _shift, _prefix in EMBED_PREFIXES.items():
    ENCODINGS[f"base64-in-json-{_shift}"] = in_json(base64.b64encode, _prefix)
    ENCODINGS[f"base64url-in-json-{_shift}"] = in_json(base64.urlsafe_b64encode, _prefix)

TEMPLATES = [
    ("2026-05-09T07:35:25.118Z web.1 INFO connecting with ", " (pool=5, timeout=30s)"),
    ('{"ts":"2026-05-09T07:35:25Z","level":"error","msg":"auth failed","credential":"',
     '","attempt":3}'),
    ('10.0.3.7 - - [09/May/2026:07:35:25 +0000] "GET /oauth/callback?code=',
     '&state=af31c2 HTTP/1.1" 302 0 "-" "curl/8.5.0"'),
    ("Step 4/9 : RUN ./configure --with-key=", " && make -j2"),
    ("Authorization: Basic ", ""),
    ('worker.2 | Traceback (most recent call last):\n  File "/app/jobs.py", line 42, in run\n'
     "    client.login(", ")\nValueError: bad credentials"),
]  # fmt: skip


def must_go(encoding: str, value: str, encoded: str) -> str:
    """What of ``encoded`` must not survive: all of it, or for base64 of a longer text the
    characters whose 6 bits all come from the secret's bytes."""
    if "-in-json-" not in encoding:
        return encoded
    start = 8 * len(EMBED_PREFIXES[int(encoding[-1])])  # in bits
    end = start + 8 * len(utf8(value))
    return "".join(c for i, c in enumerate(encoded) if start <= 6 * i and 6 * i + 6 <= end)


def leak_case(index: int, key: str, encoding: str) -> tuple[str, str, int, int]:
    """(log line holding the secret in that encoding, what must go, where the encoding starts
    and ends in the line)."""
    value = make_secrets()[key]
    encoded = ENCODINGS[encoding](value)
    before, after = TEMPLATES[index % len(TEMPLATES)]
    start, end = len(before), len(before) + len(encoded)
    return before + encoded + after, must_go(encoding, value, encoded), start, end


@cache
def scrubber() -> Scrubber:
    return Scrubber(make_secrets())


def all_cases() -> list[tuple[str, str]]:
    return [(key, encoding) for encoding in ENCODINGS for key in make_secrets()]


# ---------------------------------------------------------------------------------------------
# Clean, realistic log text
# ---------------------------------------------------------------------------------------------

PATHS = ["/", "/healthz", "/api/v1/apps", "/api/v1/apps/shop/deployments", "/static/app.css",
         "/login", "/cart?item=42&qty=2", "/search?q=red+shoes&page=3"]  # fmt: skip
AGENTS = ["Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36", "curl/8.5.0",
          "python-requests/2.32.3", "kube-probe/1.29"]  # fmt: skip
WORDS = ["order", "cart", "user", "payment", "session", "cache", "queue", "invoice", "email",
         "shipment", "token", "refresh", "job", "retry", "timeout", "upstream"]  # fmt: skip


def clean_log_lines(count: int, seed: int = SEED) -> list[str]:
    """``count`` log lines as apps print them: HTTP access lines, JSON lines, stack traces,
    base64 blobs, hex ids, UUIDs, build steps. None holds a secret."""
    rng = random.Random(seed)
    lines: list[str] = []
    while len(lines) < count:
        kind = rng.randrange(8)
        ms = rng.randrange(3_600_000)
        ts = f"2026-05-09T07:{ms // 60_000:02d}:{ms // 1000 % 60:02d}.{ms % 1000:03d}Z"
        if kind == 0:
            lines.append(
                f"10.0.{rng.randrange(256)}.{rng.randrange(256)} - - [09/May/2026:07:35:25 +0000] "
                f'"{rng.choice(["GET", "POST", "PUT"])} {rng.choice(PATHS)} HTTP/1.1" '
                f'{rng.choice([200, 200, 201, 302, 404, 500])} {rng.randrange(50_000)} "-" '
                f'"{rng.choice(AGENTS)}" rt={rng.random():.3f}'
            )
        elif kind == 1:
            lines.append(json.dumps({
                "ts": ts, "level": rng.choice(["info", "warn", "error"]),
                "msg": f"{rng.choice(WORDS)} {rng.choice(WORDS)} done",
                "request_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                "duration_ms": round(rng.random() * 900, 2), "user": rng.randrange(10**6),
            }))  # fmt: skip
        elif kind == 2:
            lines += [
                "Traceback (most recent call last):",
                f'  File "/app/{rng.choice(WORDS)}/views.py", line {rng.randrange(1, 900)}, '
                "in handle",
                f"    result = service.{rng.choice(WORDS)}_{rng.choice(WORDS)}(request)",
                f'  File "/usr/lib/python3.11/json/decoder.py", line {rng.randrange(300, 360)}',
                f"KeyError: '{rng.choice(WORDS)}'",
            ]
        elif kind == 3:
            blob = base64.b64encode(rng.randbytes(rng.randrange(24, 240))).decode()
            lines.append(f"{ts} DEBUG payload={blob}")
        elif kind == 4:
            lines.append(
                f"{ts} INFO built image sha256:{rng.getrandbits(256):064x} "
                f"from commit {rng.getrandbits(160):040x} ({rng.getrandbits(28):07x})"
            )
        elif kind == 5:
            lines.append(
                f"{ts} INFO alloc {uuid.UUID(int=rng.getrandbits(128), version=4)} "
                f"task web.{rng.randrange(4)} started on node {rng.getrandbits(64):016x}"
            )
        elif kind == 6:
            lines.append(
                f"Step {rng.randrange(1, 12)}/12 : RUN pip install --no-cache-dir "
                f"{rng.choice(WORDS)}=={rng.randrange(1, 9)}.{rng.randrange(30)}.{rng.randrange(9)}"
            )
        else:
            lines.append(
                f"{ts} WARN {rng.choice(WORDS)} {rng.choice(WORDS)} slow: "
                f"{rng.randrange(100, 9000)} ms, retry {rng.randrange(1, 5)}/5 "
                f"key={rng.choice(WORDS)}:{rng.randrange(10**9)} hit={rng.random() < 0.5}"
            )
    return lines[:count]


# ---------------------------------------------------------------------------------------------
# Every secret in every encoding, whole
# ---------------------------------------------------------------------------------------------


def test_the_secrets_are_varied_as_promised():
    secrets = make_secrets()
    sizes = sorted(len(utf8(value)) for value in secrets.values())  # bytes
    assert sizes[0] == 8 and sum(size >= 4096 for size in sizes) == 8
    assert sum("-----BEGIN PRIVATE KEY-----" in value for value in secrets.values()) == 2
    assert all(len(utf8(value)) >= MIN_ENCODED_BYTES for value in secrets.values())
    assert set(META) <= set("".join(secrets.values()))
    assert {"🔑", "秘", "é"} <= set("".join(secrets.values()))


@pytest.mark.parametrize("encoding", list(ENCODINGS))
def test_every_secret_in_this_encoding_is_replaced_by_its_key(encoding: str):
    scrubbed_forms_by_key: dict[str, list[str]] = {}
    for form, key in scrubber().forms.items():
        scrubbed_forms_by_key.setdefault(key, []).append(form)
    problems = []
    for index, key in enumerate(make_secrets()):
        line, gone, _, _ = leak_case(index, key, encoding)
        out = scrubber().scrub(line)
        if gone in out:
            problems.append(f"{key}: the {encoding} form survives")
        if set(LABEL.findall(out)) != {key}:
            problems.append(f"{key}: labels {LABEL.findall(out)} instead of [{key}]")
        if any(form in out for form in scrubbed_forms_by_key[key]):
            problems.append(f"{key}: one of its forms survives")
        if scrubber().scrub(out) != out:
            problems.append(f"{key}: scrubbing twice changes the output again")
    assert not problems, "\n".join(problems)


def test_a_line_with_all_50_secrets_names_each_key_once():
    secrets = make_secrets()
    line = " | ".join(f"{key}={value}" for key, value in secrets.items())
    out = scrubber().scrub(line)
    assert out == " | ".join(f"{key}=[secret {key}]" for key in secrets)


def test_base64_fragments_at_each_alignment_are_exactly_the_stable_characters():
    """The module's fragments equal the characters this test finds bit by bit."""
    value = "k3y-Ünïcode-🔑"
    forms = set(Scrubber({"K": value}).forms)
    for encoding in ENCODINGS:
        if "-in-json-" in encoding:
            assert must_go(encoding, value, ENCODINGS[encoding](value)) in forms, encoding


# ---------------------------------------------------------------------------------------------
# Streams
# ---------------------------------------------------------------------------------------------


def split_points(line: str, start: int, end: int) -> Iterable[int]:
    """Every cut of a line up to FULL_SPLIT_MAX characters; for a longer one, every cut within
    64 characters of the secret's first and last character, and 64 spread over the rest."""
    if len(line) <= FULL_SPLIT_MAX:
        return range(len(line) + 1)
    near = {*range(start - 64, start + 65), *range(end - 64, end + 65)}
    spread = range(0, len(line) + 1, len(line) // 64)
    return sorted(cut for cut in near.union(spread) if 0 <= cut <= len(line))


@pytest.mark.parametrize("encoding", list(ENCODINGS))
def test_a_secret_cut_in_two_anywhere_is_still_replaced(encoding: str):
    stream = StreamScrubber(scrubber())
    problems = []
    for index, key in enumerate(make_secrets()):
        line, _, start, end = leak_case(index, key, encoding)
        whole = scrubber().scrub(line)
        for cut in split_points(line, start, end):
            out = stream.feed(line[:cut]) + stream.feed(line[cut:]) + stream.flush()
            if out != whole:
                problems.append(f"{key} cut at {cut}: {out!r} != {whole!r}"[:300])
                break
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("key", [f"UNICODE_{i}" for i in range(8)] + ["AMQP_URL"])
def test_bytes_cut_inside_a_character_are_decoded_and_scrubbed(key: str):
    """Every byte boundary, the ones inside a multi-byte character included."""
    stream = ByteStreamScrubber(scrubber())
    for encoding in ("raw", "json-unicode"):
        line, _, _, _ = leak_case(0, key, encoding)
        whole, data = scrubber().scrub(line), utf8(line)
        for cut in range(len(data) + 1):
            out = stream.feed(data[:cut]) + stream.feed(data[cut:]) + stream.flush()
            assert out == whole, (encoding, cut)


def test_invalid_bytes_become_replacement_characters_and_a_secret_next_to_them_goes():
    stream = ByteStreamScrubber(Scrubber({"K": "s3cr3t-välue"}))
    data = b"\xff\xe2" + utf8("s3cr3t-välue") + b"\xc3"
    out = "".join(stream.feed(data[i : i + 1]) for i in range(len(data))) + stream.flush()
    assert out == "\ufffd\ufffd[secret K]\ufffd"


@st.composite
def cut_case(draw) -> tuple[str, list[int]]:
    key, encoding = draw(st.sampled_from(all_cases()))
    line = leak_case(draw(st.integers(0, len(TEMPLATES) - 1)), key, encoding)[0]
    cuts = draw(st.lists(st.integers(0, len(line)), max_size=20))
    return line, sorted(cuts)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(cut_case())
def test_a_line_cut_in_many_random_chunks_comes_out_as_a_whole(case: tuple[str, list[int]]):
    line, cuts = case
    stream = StreamScrubber(scrubber())
    pieces = [line[a:b] for a, b in pairwise([0, *cuts, len(line)])]
    assert "".join(stream.feed(piece) for piece in pieces) + stream.flush() == scrubber().scrub(
        line
    )


def oracle(secrets: dict[str, str], text: str) -> str:
    """One regular expression of all the forms, longest first: leftmost-longest, slow, obvious."""
    forms = Scrubber(secrets).forms
    if not forms:
        return text
    pattern = "|".join(re.escape(form) for form in sorted(forms, key=len, reverse=True))
    return re.sub(pattern, lambda m: f"[secret {forms[m.group()]}]", text)


@settings(max_examples=400, deadline=None, derandomize=True)
@given(
    st.dictionaries(
        st.sampled_from(["A", "B", "C", "D"]), st.text("ab \n", min_size=1, max_size=12)
    ),
    st.text("ab \n[]", max_size=80),
    st.lists(st.integers(0, 80), max_size=8),
)
def test_tiny_alphabets_full_of_overlaps_match_the_regex_oracle(secrets, text, cuts):
    """Secrets and text of 'a', 'b', space and newline: forms overlap and repeat everywhere."""
    expected = oracle(secrets, text)
    assert Scrubber(secrets).scrub(text) == expected
    stream = StreamScrubber(Scrubber(secrets))
    edges = [0, *sorted(c for c in cuts if c <= len(text)), len(text)]
    pieces = [text[a:b] for a, b in pairwise(edges)]
    assert "".join(stream.feed(piece) for piece in pieces) + stream.flush() == expected


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.dictionaries(st.text(string.ascii_uppercase, min_size=1, max_size=3), st.text()),
       st.text(), st.data())  # fmt: skip
def test_any_text_with_any_secrets_matches_the_oracle(secrets, noise, data):
    """Any Unicode secrets, each dropped into any text, whole or in chunks."""
    values = [v for v in secrets.values() if v.strip()]
    text = noise
    for value in values:
        at = data.draw(st.integers(0, len(text)))
        text = text[:at] + value + text[at:]
    expected = oracle(secrets, text)
    assert Scrubber(secrets).scrub(text) == expected
    cuts = sorted(data.draw(st.lists(st.integers(0, len(text)), max_size=6)))
    stream = StreamScrubber(Scrubber(secrets))
    edges = [0, *cuts, len(text)]
    pieces = [text[a:b] for a, b in pairwise(edges)]
    assert "".join(stream.feed(piece) for piece in pieces) + stream.flush() == expected


def test_a_stream_emits_at_once_everything_before_a_possible_secret():
    s = Scrubber({"K": "abc123secretLONGER"})
    stream = StreamScrubber(s)
    assert stream.feed("INFO ready\nGET / 200\n") == "INFO ready\nGET / 200\n"  # nothing held
    assert stream.feed("token=abc1") == "token="  # the secret may begin here: kept back
    assert stream.feed("23secret") == ""  # still a prefix of the form
    assert stream.feed("LONGER and more\n") == "[secret K] and more\n"
    assert stream.feed("abc12") == ""
    assert stream.flush() == "abc12"  # the stream ended: not a secret after all


def test_a_stream_keeps_back_at_most_the_longest_form_minus_one_character():
    s = Scrubber({"K": "x" * 3 + "y" * 5000})
    longest = max(s.forms, key=len)
    stream = StreamScrubber(s)
    assert stream.feed("log: " + longest[:-1]) == "log: "  # all but its last character held
    assert stream.feed(longest[-1]) == "[secret K]"


# ---------------------------------------------------------------------------------------------
# No false positives
# ---------------------------------------------------------------------------------------------


def test_a_clean_10000_line_log_comes_out_unchanged():
    lines = clean_log_lines(10_000)
    text = "\n".join(lines) + "\n"
    assert len(text.splitlines()) == 10_000
    changed = [line for line in lines if scrubber().scrub(line) != line]
    print(f"clean log: {len(changed)} of {len(lines)} lines changed with 50 secrets")
    assert changed == []
    assert scrubber().scrub(text) == text
    stream = StreamScrubber(scrubber())
    chunks = [text[i : i + 4096] for i in range(0, len(text), 4096)]
    assert "".join(stream.feed(chunk) for chunk in chunks) + stream.flush() == text


# ---------------------------------------------------------------------------------------------
# Edge cases
# ---------------------------------------------------------------------------------------------


def test_of_two_secrets_one_inside_the_other_the_longer_wins_both_named():
    secrets = {"SHORTER": "abc123secret", "LONGER": "abc123secretLONGER"}
    s = Scrubber(secrets)
    text = "a=abc123secretLONGER b=abc123secret c=abc123secretLONG"
    assert s.scrub(text) == "a=[secret LONGER] b=[secret SHORTER] c=[secret SHORTER]LONG"
    for encoding in ENCODINGS:
        # Embedded in base64 of a longer text, only the part that must go becomes the label.
        encoded = {key: ENCODINGS[encoding](value) for key, value in secrets.items()}
        expected = {
            key: encoded[key].replace(must_go(encoding, value, encoded[key]), f"[secret {key}]")
            for key, value in secrets.items()
        }
        out = s.scrub(f"{encoded['LONGER']} {encoded['SHORTER']}")
        assert out == f"{expected['LONGER']} {expected['SHORTER']}", encoding


def test_a_password_inside_a_url_secret_goes_with_the_url():
    s = Scrubber(
        {"DB_PASSWORD": "pw-9f8e7d6c", "DATABASE_URL": "postgres://app:pw-9f8e7d6c@db/app"}
    )
    assert s.scrub("url=postgres://app:pw-9f8e7d6c@db/app pw=pw-9f8e7d6c") == (
        "url=[secret DATABASE_URL] pw=[secret DB_PASSWORD]"
    )


def test_overlapping_secrets_leave_what_sticks_out_as_documented():
    s = Scrubber({"A": "abc-def", "B": "def-ghi"})
    assert s.scrub("abc-def-ghi") == "[secret A]-ghi"


def test_empty_and_whitespace_only_values_are_ignored():
    s = Scrubber({"EMPTY": "", "SPACES": "   ", "BLANK": "\n\t \r\n"})
    assert dict(s.forms) == {}
    text = "nothing to hide here\n  \t\n"
    assert s.scrub(text) == text
    stream = StreamScrubber(s)
    assert stream.feed(text) + stream.flush() == text
    mixed = Scrubber({"EMPTY": "", "REAL": "hunter2hunter2"})
    assert set(mixed.forms.values()) == {"REAL"}
    assert mixed.scrub("a hunter2hunter2 b") == "a [secret REAL] b"


def test_a_short_value_is_caught_literally_but_not_encoded():
    s = Scrubber({"PIN": "4711", "TOKEN": "t0k3n-8b"})
    assert s.scrub("pin 4711, pin NDcxMQ==, pin 34373131") == "pin [secret PIN], " + (
        "pin NDcxMQ==, pin 34373131"
    )
    assert len(utf8("t0k3n-8b")) == MIN_ENCODED_BYTES
    assert s.scrub(ENCODINGS["base64"]("t0k3n-8b")) == "[secret TOKEN]"


def test_a_value_pasted_with_whitespace_around_is_caught_without_it():
    s = Scrubber({"K": "  tok-abcdefgh\n"})
    assert s.scrub("key=tok-abcdefgh;") == "key=[secret K];"
    assert s.scrub(ENCODINGS["base64"]("tok-abcdefgh")) == "[secret K]"


def test_each_long_line_of_a_pem_key_is_caught_alone_but_not_its_armour():
    pem = make_secrets()["TLS_PRIVATE_KEY"]
    s = Scrubber({"TLS_PRIVATE_KEY": pem})
    crlf = pem.replace("\n", "\r\n")  # another line end: the whole value no longer matches
    out = s.scrub(crlf)
    assert out.startswith("-----BEGIN PRIVATE KEY-----\r\n[secret TLS_PRIVATE_KEY]\r\n")
    body = [line for line in pem.splitlines() if not line.startswith("-----")]
    assert not any(line in out for line in body if len(line) >= 16)


def test_the_same_value_under_two_keys_is_named_after_the_first_key():
    s = Scrubber({"B_KEY": "same-value-1234", "A_KEY": "same-value-1234"})
    assert s.scrub("x same-value-1234") == "x [secret A_KEY]"


def test_a_value_that_is_another_secrets_hex_is_named_after_its_own_key():
    raw = "secret-bytes"
    s = Scrubber({"A_BYTES": raw, "Z_HEX": utf8(raw).hex()})
    assert s.scrub(utf8(raw).hex()) == "[secret Z_HEX]"


def test_regex_metacharacters_are_only_text():
    s = Scrubber({"K": ".*"})
    assert s.scrub("a.b .* ab") == "a.b [secret K] ab"


# ---------------------------------------------------------------------------------------------
# Purity
# ---------------------------------------------------------------------------------------------


def test_the_scrubber_imports_only_the_stdlib():
    source = Path(scrub_module.__file__).read_text()
    imported = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module or "")
    assert imported, "the walk found no import at all"
    assert all(name.split(".")[0] in sys.stdlib_module_names or name == "__future__"
               for name in imported), imported  # fmt: skip
