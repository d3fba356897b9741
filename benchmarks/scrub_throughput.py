"""Secret scrubbing throughput: 64 MB of app logs with 50 secrets, next to floors from the same run.

Takes the 50 secrets of tests/test_scrub.py (8-character to 4 KB ones, regex metacharacters,
Unicode, PEM keys, JSON documents, URLs with credentials) and log text from its clean-log
generator (HTTP access lines, JSON lines, stack traces, base64 blobs, hex ids, UUIDs), repeated
up to --mb megabytes. Measures, each the median of --repeats runs, interleaved:

- ``scrub``: ``Scrubber.scrub`` of the whole text at once;
- ``stream``: ``StreamScrubber.feed`` of each 4 KB chunk, then ``flush``;
  both on clean text and on text where one line in 1,000 holds a secret, in one of the tests'
  encodings (raw, base64, hex, percent-, JSON-escaped…);
- floors: a plain copy of the same text (``"".join`` of the 4 KB chunks), and one ``re.search``
  pass of a pattern that never matches: a literal (``re`` skips ahead with a fast substring
  search) and a character class (``re`` looks at every character);
- for scale: one regular expression of all the forms, longest first, through ``re.sub``, on the
  first --regex-mb megabytes only (it is that slow): the design the module does not use;
- the same with 50 secrets of 32+ bytes (no short ones), for which the scan samples sparser.

Prints MB/s (of UTF-8) and each figure's time over the copy's. Asserts nothing.
Run: .venv/bin/python benchmarks/scrub_throughput.py [--mb 64] [--repeats 3] [--regex-mb 1]
"""

from __future__ import annotations

import argparse
import gc
import random
import re
import statistics
import string
import sys
import time
from collections.abc import Callable
from pathlib import Path

from support import parse_sizes, report

from panel.logs.scrub import Scrubber, StreamScrubber

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "tests"))  # the secrets and the log generator are test code

from test_scrub import all_cases, clean_log_lines, leak_case, make_secrets  # noqa: E402

CHUNK = 4096  # characters per fed chunk (bytes, for the mostly-ASCII log text)
BASE_LINES = 40_000  # distinct clean lines (about 4 MB), repeated up to --mb
SECRET_EVERY = 1_000  # lines: one holds a secret, in the "with secrets" text
MB = 1_000_000


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=64, help="megabytes of log text (default 64)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats (default 3)")
    parser.add_argument(
        "--regex-mb", type=float, default=1.0,
        help="megabytes the one-regex alternative scrubs (default 1)",
    )  # fmt: skip
    return parse_sizes(parser, {"mb": 8, "regex_mb": 0.25})


def build_texts(megabytes: int) -> tuple[str, str]:
    """(clean text, the same with a secret every SECRET_EVERY lines), each about that big."""
    lines = clean_log_lines(BASE_LINES)
    cases = all_cases()
    leaky = list(lines)
    for n, at in enumerate(range(SECRET_EVERY // 2, len(leaky), SECRET_EVERY)):
        key, encoding = cases[(n * 97) % len(cases)]  # a stride through all the cases
        leaky[at] = leak_case(n, key, encoding)[0]
    texts = []
    for base in ("\n".join(lines) + "\n", "\n".join(leaky) + "\n"):
        texts.append(base * max(1, round(megabytes * MB / len(base.encode()))))
    return texts[0], texts[1]


def typical_secrets() -> dict[str, str]:
    """The tests' secrets of 32+ bytes, topped up to 50 with 32-64 character tokens."""
    rng = random.Random(7)
    kept = {k: v for k, v in make_secrets().items() if len(v.strip().encode()) >= 32}
    alphabet = string.ascii_letters + string.digits + "_-"
    while len(kept) < 50:
        kept[f"TOKEN_{len(kept)}"] = "".join(rng.choices(alphabet, k=rng.randint(32, 64)))
    return kept


def timed(work: Callable[[], object]) -> float:
    """Seconds one call of work takes (garbage collected beforehand, not during)."""
    gc.collect()
    gc.disable()
    try:
        start = time.perf_counter()
        work()
        return time.perf_counter() - start
    finally:
        gc.enable()


def stream_through(scrubber: Scrubber, chunks: list[str]) -> str:
    stream = StreamScrubber(scrubber)
    return "".join([*map(stream.feed, chunks), stream.flush()])


def one_regex(scrubber: Scrubber) -> Callable[[str], str]:
    """``scrub`` as one regular expression of all the forms, longest first."""
    forms = scrubber.forms
    pattern = re.compile("|".join(map(re.escape, sorted(forms, key=len, reverse=True))))
    return lambda text: pattern.sub(lambda m: f"[secret {forms[m.group()]}]", text)


def measure(
    title: str, secrets: dict[str, str], clean: str, leaky: str, args: argparse.Namespace
) -> None:
    started = time.perf_counter()
    scrubber = Scrubber(secrets)
    build_ms = (time.perf_counter() - started) * 1000
    shortest = min(len(form.encode()) for form in scrubber.forms)
    chunked = {name: [text[i : i + CHUNK] for i in range(0, len(text), CHUNK)]
               for name, text in (("clean", clean), ("leaky", leaky))}  # fmt: skip
    never_literal = re.compile("\x00never\x00")
    never_class = re.compile("[\x00-\x08]{8}")
    cases: dict[str, tuple[str, Callable[[], object]]] = {
        "floor: copy (join 4 KB chunks)": ("clean", lambda: "".join(chunked["clean"])),
        "floor: re.search, literal": ("clean", lambda: never_literal.search(clean)),
        "floor: re.search, char class": ("clean", lambda: never_class.search(clean)),
        "scrub, clean": ("clean", lambda: scrubber.scrub(clean)),
        "scrub, 1 line in 1,000 leaks": ("leaky", lambda: scrubber.scrub(leaky)),
        "stream 4 KB, clean": ("clean", lambda: stream_through(scrubber, chunked["clean"])),
        "stream 4 KB, 1 in 1,000 leaks": (
            "leaky", lambda: stream_through(scrubber, chunked["leaky"])
        ),
    }  # fmt: skip
    sizes = {"clean": len(clean.encode()), "leaky": len(leaky.encode())}
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.repeats):  # interleaved, so drift hits every case alike
        for name, (_, work) in cases.items():
            samples[name].append(timed(work))

    scrubbed = scrubber.scrub(leaky)
    same = stream_through(scrubber, chunked["leaky"]) == scrubbed
    print(f"{len(secrets)} secrets, {len(scrubber.forms)} forms, shortest {shortest} B, "
          f"longest {max(len(f.encode()) for f in scrubber.forms):,} B; "
          f"Scrubber built in {build_ms:.0f} ms")  # fmt: skip
    print(f"text: {sizes['clean'] / MB:.1f} MB clean; {sizes['leaky'] / MB:.1f} MB with "
          f"{scrubbed.count('[secret '):,} replacements; stream output = one-shot output: "
          f"{'yes' if same else 'NO'}")  # fmt: skip
    floor_s = statistics.median(samples["floor: copy (join 4 KB chunks)"])
    print(f"{'':34} {'MB/s':>9} {'x copy':>8}   (min-max MB/s)")
    for name, times in samples.items():
        size = sizes[cases[name][0]]
        median = statistics.median(times)
        spread = f"{size / max(times) / MB:,.0f}-{size / min(times) / MB:,.0f}"
        print(f"{name:34} {size / median / MB:>9,.1f} {median / floor_s:>8.1f}   ({spread})")

    started = time.perf_counter()
    regex_scrub = one_regex(scrubber)
    compile_s = time.perf_counter() - started
    sample = leaky[: int(args.regex_mb * MB)]
    seconds = timed(lambda: regex_scrub(sample))
    size = len(sample.encode())
    print(f"{'for scale: one regex, first ' + str(args.regex_mb) + ' MB':34} "
          f"{size / seconds / MB:>9,.1f} {seconds / (floor_s * size / sizes['clean']):>8.1f}"
          f"   (compiled in {compile_s:.1f} s)")  # fmt: skip

    def rate(name: str) -> float:
        return sizes[cases[name][0]] / statistics.median(samples[name]) / MB

    for name, floor_name in (
        ("scrub, clean", "floor: copy (join 4 KB chunks)"),
        ("stream 4 KB, 1 in 1,000 leaks", "floor: copy (join 4 KB chunks)"),
        ("scrub, clean", "floor: re.search, char class"),
    ):
        report(figure=f"scrub {title}: {name}", value=rate(name), unit="MB/s",
               floor_name=floor_name.removeprefix("floor: "), floor=rate(floor_name),
               better="higher")  # fmt: skip


def main() -> None:
    args = parse_args()
    run_started = time.perf_counter()
    clean, leaky = build_texts(args.mb)
    print(f"repeats: {args.repeats}, median shown; built the texts in "
          f"{time.perf_counter() - run_started:.1f} s\n")  # fmt: skip
    print("== the tests' 50 secrets (8 B to 4 KB) ==")
    measure("50 test secrets", make_secrets(), clean, leaky, args)
    print("\n== 50 secrets of 32+ bytes ==")
    measure("50 secrets of 32+ B", typical_secrets(), clean, leaky, args)
    print(f"\ntotal {time.perf_counter() - run_started:.1f} s")


if __name__ == "__main__":
    main()
