"""The official JSON Schema Test Suite (draft 2020-12) against the msgspec compiler.

Where the suite comes from: the npm package ``json-schema-test-suite`` (0.0.10, the
latest) carries only draft3 and draft4, so it cannot check 2020-12 semantics. The
same official suite (github.com/json-schema-org/JSON-Schema-Test-Suite) ships inside
the source distribution of ``jsonschema`` on PyPI (``json/tests/draft2020-12``), a
package the dev dependencies already use. It is fetched at test time with ``pip
download`` (the ordinary client), pinned, cached under ``$STREAM_HOME/cache`` or
``~/.cache/stream``, and never copied into the repository.

Every case runs whose schema the compiler accepts (a :class:`SchemaError` means "not
supported" and the case is filtered out); for each, msgspec's accept/reject decision
must equal the suite's ``valid``. Known, deliberate divergences are listed in
:data:`DIVERGENCES` with the reason; a stale entry fails the run too.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from stream.schema import SchemaError, compile_type

SUITE_SDIST = ("jsonschema", "4.26.0")
SUITE_PREFIX = "json/tests/draft2020-12/"
#: Optional files that test keywords we assert (format-assertion of date-time).
OPTIONAL_FILES = ("optional/format/date-time.json",)
#: The run must execute at least this many cases (315 with jsonschema 4.26.0's copy).
MIN_EXECUTED = 280

_INTEGRAL_FLOAT = (
    "msgspec decodes a JSON number written with a fraction or exponent as a float, and an "
    "int or Literal[int] rejects it; JSON Schema counts 1.0 as the integer 1"
)
_LEAP_SECOND = "msgspec's RFC 3339 parser rejects second 60 (leap seconds)"
_FORMAT_ASSERTS = (
    "2020-12 makes 'format' an annotation by default; we assert date-time on purpose "
    "(the suite's optional format tests, which we also run, expect the assertion)"
)

#: (file, group description, test description) -> why msgspec's decision differs.
DIVERGENCES: dict[tuple[str, str, str], str] = {
    ("type.json", "integer type matches integers",
     "a float with zero fractional part is an integer"): _INTEGRAL_FLOAT,
    ("const.json", "const with 0 does not match other zero-like types",
     "float zero is valid"): _INTEGRAL_FLOAT,
    ("const.json", "const with 1 does not match true", "float one is valid"): _INTEGRAL_FLOAT,
    ("const.json", "const with -2.0 matches integer and float types",
     "float -2.0 is valid"): _INTEGRAL_FLOAT,
    ("const.json", "float and integers are equal up to 64-bit representation limits",
     "float is valid"): _INTEGRAL_FLOAT,
    ("enum.json", "enum with 0 does not match false", "float zero is valid"): _INTEGRAL_FLOAT,
    ("enum.json", "enum with 1 does not match true", "float one is valid"): _INTEGRAL_FLOAT,
    ("format.json", "date-time format",
     "invalid date-time string is only an annotation by default"): _FORMAT_ASSERTS,
    ("optional/format/date-time.json", "validation of date-time strings",
     "a valid date-time with a leap second, UTC"): _LEAP_SECOND,
    ("optional/format/date-time.json", "validation of date-time strings",
     "a valid date-time with a leap second, with minus offset"): _LEAP_SECOND,
}  # fmt: skip


def _cache_root() -> Path:
    home = os.environ.get("STREAM_HOME")
    return Path(home) / "cache" if home else Path.home() / ".cache" / "stream"


def _suite_dir() -> Path:
    name, version = SUITE_SDIST
    target = _cache_root() / f"json-schema-test-suite-{name}-{version}"
    if (target / ".complete").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        command = [
            sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
            "--no-binary", ":all:", f"{name}=={version}", "--dest", tmp,
        ]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            pytest.fail(f"could not fetch the JSON Schema Test Suite: {done.stderr[-2000:]}")
        (sdist,) = Path(tmp).glob("*.tar.gz")
        staging = Path(tmp) / "suite"
        with tarfile.open(sdist) as archive:
            for member in archive.getmembers():
                inner = member.name.split("/", 1)[-1]
                if member.isfile() and inner.startswith(SUITE_PREFIX):
                    out = staging / inner[len(SUITE_PREFIX) :]
                    out.parent.mkdir(parents=True, exist_ok=True)
                    source = archive.extractfile(member)
                    assert source is not None
                    out.write_bytes(source.read())
        (staging / ".complete").touch()
        if not (target / ".complete").exists():  # another run may have finished first
            shutil.rmtree(target, ignore_errors=True)
            try:
                staging.rename(target)
            except OSError:
                if not (target / ".complete").exists():
                    raise
    return target


def _files(root: Path) -> Iterator[tuple[str, Path]]:
    for path in sorted(root.glob("*.json")):
        yield path.name, path
    for name in OPTIONAL_FILES:
        yield name, root / name


def _accepts(decoder: msgspec.json.Decoder[Any], data: Any) -> bool:
    try:
        decoder.decode(json.dumps(data).encode())
    except msgspec.ValidationError:
        return False
    return True


@pytest.fixture(scope="module")
def suite_results() -> dict[str, Any]:
    root = _suite_dir()
    executed = 0
    unsupported_groups = 0
    mismatches: list[str] = []
    diverged: set[tuple[str, str, str]] = set()
    for name, path in _files(root):
        for group in json.loads(path.read_text()):
            try:
                decoder = msgspec.json.Decoder(compile_type(group["schema"], source=name))
            except SchemaError:
                unsupported_groups += 1
                continue
            for case in group["tests"]:
                key = (name, group["description"], case["description"])
                executed += 1
                got = _accepts(decoder, case["data"])
                if key in DIVERGENCES:
                    if got != case["valid"]:
                        diverged.add(key)
                    continue
                if got != case["valid"]:
                    mismatches.append(
                        f"{name}: {group['description']} / {case['description']}: "
                        f"suite says valid={case['valid']}, msgspec said {got}; "
                        f"schema {json.dumps(group['schema'])} data {json.dumps(case['data'])}"
                    )
    return {
        "executed": executed,
        "unsupported_groups": unsupported_groups,
        "mismatches": mismatches,
        "diverged": diverged,
    }


def test_every_supported_suite_case_decides_like_the_suite(suite_results: dict[str, Any]) -> None:
    assert suite_results["mismatches"] == []


def test_the_suite_actually_ran_enough_cases(suite_results: dict[str, Any]) -> None:
    assert suite_results["executed"] >= MIN_EXECUTED, suite_results["executed"]
    assert suite_results["unsupported_groups"] > 0  # the filter is real: some are refused


def test_every_listed_divergence_still_happens(suite_results: dict[str, Any]) -> None:
    stale = set(DIVERGENCES) - suite_results["diverged"]
    assert not stale, f"these cases now agree with the suite; remove them: {sorted(stale)}"
