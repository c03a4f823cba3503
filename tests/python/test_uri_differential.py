"""Differential test: secref's reference parser against `secrets_sdk` 0.1.0.

The Python package's `secrets_sdk.secret_uri.parse` is the reference for the
Canonical Secret URI (protocols.md §2.2). We feed the same inputs (the §2.2
vectors plus a few thousand generated ones, from a seeded RNG so every run is
the same) to both parsers and require:

* both accept → the canonical strings are equal;
* both reject → the error codes agree (`ILLEGAL_SEGMENT` ↔ `illegal_segment`);
* every other outcome is explained by one of secref's documented choices
  (see `DISAGREEMENT_RULES` and the module docs of `reference.rs`). Anything
  unexplained fails the test with the list of inputs.

Our side runs through the `canonicalize` example binary in one batch.
"""
from __future__ import annotations

import collections
import json
import os
import random
import re
import subprocess
import unicodedata

import pytest

from secrets_sdk import secret_uri
from secrets_sdk.errors import SecretURIError

from conftest import ROOT

SEED = 20240611
GENERATED = 4000
TENANT_MOUNTS = ["secret"]


# --- running both parsers ------------------------------------------------------


@pytest.fixture(scope="session")
def canonicalize_bin() -> str:
    """The built `canonicalize` example (scripts/test.sh builds examples)."""
    target = os.environ.get("CARGO_TARGET_DIR") or str(ROOT / "target")
    path = os.environ.get("SECREF_CANONICALIZE_BIN") or os.path.join(
        target, "debug", "examples", "canonicalize"
    )
    assert os.path.exists(path), (
        f"build it first: cargo build -p secref --example canonicalize ({path})"
    )
    return path


def run_ours(binary: str, cases: list[tuple[str, list[str]]]) -> list[dict]:
    """Parses every (input, tenant_mounts) pair with secref, in one process."""
    stdin = "".join(
        json.dumps({"input": s, "tenant_mounts": mounts}) + "\n" for s, mounts in cases
    )
    proc = subprocess.run(
        [binary], input=stdin, capture_output=True, text=True, check=True, timeout=120
    )
    # Split on "\n" only: canonical strings may hold U+2028 or U+0085, which
    # serde_json writes raw and str.splitlines() would break on.
    replies = [json.loads(line) for line in proc.stdout.split("\n") if line]
    assert len(replies) == len(cases), proc.stderr
    return replies


def run_python(s: str, mounts: list[str]) -> tuple[str, str]:
    """("ok", canonical) or ("err", snake_case_code) from the reference."""
    try:
        return "ok", secret_uri.parse(s, "dev", mounts).to_canonical()
    except SecretURIError as e:
        return "err", e.code.lower()


# --- classifying disagreements -------------------------------------------------

OWN_SCHEMES = {"secret", "infisical", "coze+credential", "coze+env", "env", "local"}
POSITIVE_INT = re.compile(r"[1-9][0-9]*\Z")
U64_MAX = 2**64 - 1


def scheme_of(s: str) -> str | None:
    return s.split("://", 1)[0].lower() if "://" in s else None


def query_of(s: str) -> str | None:
    rest = s.split("://", 1)[1] if "://" in s else s
    return rest.split("?", 1)[1] if "?" in rest else None


def version_param(s: str) -> str | None:
    try:
        params = dict(secret_uri.parse(s, "dev", []).params)
    except SecretURIError:
        return None
    return params.get("version")


def has_control(s: str) -> bool:
    return any(unicodedata.category(c) == "Cc" for c in s)


def is_bad_version(v: str | None) -> bool:
    return v is not None and not (POSITIVE_INT.match(v) and int(v) <= U64_MAX)


# Each rule: (class name, predicate(input, ours, python)). `ours` is the
# binary's reply; `python` is run_python's tuple. A rule for one of secref's
# strictness choices only applies when the reference accepted the input and
# secref rejected it with the code that choice documents.
DISAGREEMENT_RULES = [
    (
        "file scheme belongs to secref",
        lambda s, o, p: (scheme_of(s) or "").split("+", 1)[0] == "file",
    ),
    (
        "secref's own scheme (reference: unsupported_engine)",
        lambda s, o, p: scheme_of(s) in OWN_SCHEMES and p == ("err", "unsupported_engine"),
    ),
    (
        "empty engine",
        lambda s, o, p: p[0] == "ok"
        and o.get("code") == "unsupported_engine"
        and (scheme_of(s) or "").endswith("+")
        and scheme_of(s).count("+") == 1,
    ),
    (
        "trailing newline / control char",
        lambda s, o, p: p[0] == "ok"
        and o.get("code") == "illegal_segment"
        and has_control(s),
    ),
    (
        "# after ?",
        lambda s, o, p: p[0] == "ok"
        and o.get("code") == "ambiguous_query"
        and "#" in (query_of(s) or ""),
    ),
    (
        "non-positive-integer version",
        lambda s, o, p: p[0] == "ok"
        and o.get("code") == "invalid_reference"
        and is_bad_version(version_param(s)),
    ),
]


def classify(s: str, ours: dict, python: tuple[str, str]) -> str | None:
    """None when both agree, else the first rule explaining it, else "UNCLASSIFIED"."""
    if python[0] == "ok" and ours.get("ok") == python[1]:
        return None
    if python[0] == "err" and ours.get("code") == python[1]:
        return None
    for name, rule in DISAGREEMENT_RULES:
        if rule(s, ours, python):
            return name
    return "UNCLASSIFIED"


# --- inputs --------------------------------------------------------------------

# protocols.md §2.2, observed with allowed mounts ["secret"]: (input, python
# result, secref result when it differs by a documented choice).
VECTORS = [
    ("OpenBao+KV2://secret/myapp/api#token?version=3", ("ok", "openbao+kv2://secret/myapp/api#token?version=3"), None),
    ("openbao+kv2://secret/myapp/api/#token", ("ok", "openbao+kv2://secret/myapp/api#token"), None),
    ("hashicorp+kv2://secret/a/b?z=1&a=2&&b", ("ok", "hashicorp+kv2://secret/a/b?a=2&b=&z=1"), None),
    ("openbao+kv2://secret/a#tok?en", ("ok", "openbao+kv2://secret/a#tok?en="), None),
    ("openbao+kv2://secret/myapp/api?version=3#token", ("ok", "openbao+kv2://secret/myapp/api?version=3#token"), {"code": "ambiguous_query"}),
    ("openbao://secret/a", ("ok", "openbao://secret/a"), None),
    ("db+cred://secret/a", ("ok", "db+cred://secret/a"), None),
    ("openbao+kv2://secret", ("ok", "openbao+kv2://secret"), None),
    ("openbao+kv2://secret/a#", ("ok", "openbao+kv2://secret/a"), None),
    ("openbao+kv2://secret/a\n", ("ok", "openbao+kv2://secret/a\n"), {"code": "illegal_segment"}),
    ("openbao+://secret/a", ("ok", "openbao+://secret/a"), {"code": "unsupported_engine"}),
    ("hashicorp+kv1://secret/a", ("err", "unsupported_engine"), None),
    ("aws://secret/a", ("err", "unsupported_engine"), None),
    ("yaml+x://secret/a", ("err", "unsupported_engine"), None),
    ("openbao+kv2+x://secret/a", ("err", "unsupported_engine"), None),
    ("openbao+kv2://other/a", ("err", "tenant_mount_mismatch"), None),
    ("openbao+kv2://secret//a", ("err", "illegal_segment"), None),
    ("openbao+kv2://secret/a//", ("err", "illegal_segment"), None),
    ("openbao+kv2:///a", ("err", "illegal_segment"), None),
    ("openbao+kv2://", ("err", "illegal_segment"), None),
    ("://secret/a", ("err", "illegal_segment"), None),
    ("secret/a", ("err", "illegal_segment"), None),
    ("openbao+kv2://secret/a%2Fb", ("err", "illegal_segment"), None),
    ("openbao+kv2://secret/a/../b", ("err", "illegal_segment"), None),
    ("openbao+kv2://secret/a..b", ("err", "illegal_segment"), None),
    ("openbao+kv2://secret/a b", ("err", "illegal_segment"), None),
    ("openbao+kv2://secret/ünicode", ("err", "illegal_segment"), None),
    ("openbao+kv2://secret/a*", ("err", "invalid_wildcard"), None),
    ("openbao+kv2://secret/a?version=1&version=2", ("err", "ambiguous_query"), None),
    ("openbao+kv2://secret/a?mount=secret", ("err", "double_mount_source"), None),
    ("openbao+kv2://secret/a#k#l", ("err", "illegal_segment"), None),
    # Step order: the guard comes before secref's own checks.
    ("openbao+kv2://other/a?version=x", ("err", "tenant_mount_mismatch"), None),
    ("openbao+kv2://other/a?v=1#f", ("err", "tenant_mount_mismatch"), None),
]

VALID_SCHEMES = [
    "openbao+kv2", "hashicorp+kv2", "openbao", "hashicorp", "db+cred", "db+db", "db",
    "bootstrap", "yaml", "OpenBao+KV2", "HASHICORP", "Db+Cred", "openbao+\u212av2",
]
OTHER_SCHEMES = [
    "openbao+", "db+", "hashicorp+kv1", "openbao+kv2+x", "yaml+x", "bootstrap+x",
    "aws", "", "file", "FILE", "file+", "secret", "local", "env", "infisical",
    "coze+env", "coze+credential", "openbao kv2", "open\u00e9bao",
]
PLAIN = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-"
EDGE_SEGMENTS = [
    "", "*", "a*b", "..", "a..b", ".", "-", "_", "%2f", "a%2Fb", "%41", "a b",
    "ünicode", "中文", "a\n", "\n", "a\t", "a\x00", "a\x7f", "a\x85", "a\u2028",
    "a\r", "a=b", "a&b", "\u212a", "a:b", "a\\b",
]
NOISE = (
    "abcXYZ019._-/*#?&=%: +\\"
    "\n\t\r\x00\x1b\x7f\x85\u00a0\u2028\u200b\u212a\u00e9\u00fc\u4e2d\U0001F600"
)
VERSIONS = ["1", "3", "42", "0", "-1", "01", "x", "", "1.5", "3#frag", " 1",
            "18446744073709551615", "18446744073709551616", "\u0663"]


def plain_segment(rng: random.Random) -> str:
    return "".join(rng.choice(PLAIN) for _ in range(rng.randint(1, 8)))


def segment(rng: random.Random) -> str:
    return rng.choice(EDGE_SEGMENTS) if rng.random() < 0.08 else plain_segment(rng)


def noise(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(NOISE) for _ in range(n))


def fragment(rng: random.Random) -> str:
    r = rng.random()
    if r < 0.5:
        return plain_segment(rng)
    if r < 0.6:
        return ""
    if r < 0.8:
        return "/" + "/".join(plain_segment(rng) for _ in range(rng.randint(1, 3)))
    return noise(rng, rng.randint(1, 6))


def query(rng: random.Random) -> str:
    pairs = []
    for _ in range(rng.randint(0, 4)):
        r = rng.random()
        if r < 0.35:
            pairs.append("version=" + rng.choice(VERSIONS))
        elif r < 0.4:
            pairs.append("mount=" + plain_segment(rng))
        elif r < 0.45:
            pairs.append("")
        elif r < 0.5:
            pairs.append(plain_segment(rng))  # no '='
        elif r < 0.55:
            pairs.append("=" + plain_segment(rng))  # empty key
        elif r < 0.65:
            pairs.append(noise(rng, 3) + "=" + noise(rng, 3))
        else:
            pairs.append(plain_segment(rng) + "=" + plain_segment(rng))
    if pairs and rng.random() < 0.1:
        pairs.append(rng.choice(pairs))  # duplicate key
    return "&".join(pairs)


def from_grammar(rng: random.Random) -> str:
    """A URI built from the §2.2 grammar, with occasional edge pieces."""
    mount = rng.choice(["secret", "secret", "other", "kv", "Secret"]) if rng.random() < 0.7 else segment(rng)
    segs = [mount] + [segment(rng) for _ in range(rng.randint(0, 4))]
    schemes = VALID_SCHEMES if rng.random() < 0.75 else OTHER_SCHEMES
    s = rng.choice(schemes) + "://" + "/".join(segs)
    if rng.random() < 0.15:
        s += "/"
    if rng.random() < 0.05:
        s = s.replace("://", ":///", 1)
    if rng.random() < 0.4:
        s += "#" + fragment(rng)
    if rng.random() < 0.4:
        s += "?" + query(rng)
    if rng.random() < 0.08:
        s += "#" + fragment(rng)  # fragment after the query
    return s


def mutate(rng: random.Random, s: str) -> str:
    """Small random edits: insert, delete, duplicate, case-flip, splice noise."""
    for _ in range(rng.randint(1, 3)):
        i = rng.randint(0, len(s))
        op = rng.random()
        if op < 0.35:
            s = s[:i] + noise(rng, rng.randint(1, 3)) + s[i:]
        elif op < 0.55 and s:
            j = min(len(s), i + rng.randint(1, 4))
            s = s[:i] + s[j:]
        elif op < 0.7:
            s = s[:i] + rng.choice(["/", "//", "..", "*", "#", "?", "&", "=", "%2f", "%2F", "://", "\n"]) + s[i:]
        elif op < 0.85:
            s = s.swapcase()
        else:
            j = min(len(s), i + rng.randint(1, 6))
            s = s[:j] + s[i:j] + s[j:]
    return s


def generated_inputs() -> list[str]:
    rng = random.Random(SEED)
    out = []
    for _ in range(GENERATED):
        r = rng.random()
        if r < 0.55:
            out.append(from_grammar(rng))
        elif r < 0.9:
            out.append(mutate(rng, from_grammar(rng)))
        else:
            out.append(noise(rng, rng.randint(0, 30)))
    # No lone surrogates can arise (NOISE has none), so JSON round-trips.
    return out


# --- tests ---------------------------------------------------------------------


def test_section_2_2_vectors(canonicalize_bin):
    cases = [(s, TENANT_MOUNTS) for s, _, _ in VECTORS]
    ours = run_ours(canonicalize_bin, cases)
    for (s, py_want, ours_differs), o in zip(VECTORS, ours):
        assert run_python(s, TENANT_MOUNTS) == py_want, f"reference changed for {s!r}"
        if ours_differs is None:
            want = {"ok": py_want[1]} if py_want[0] == "ok" else {"code": py_want[1]}
        else:
            want = ours_differs
        got = {k: o[k] for k in want}
        assert got == want, f"{s!r}: ours {o}"


def compare(binary, inputs, mounts):
    cases = [(s, mounts) for s in inputs]
    ours = run_ours(binary, cases)
    classes = collections.Counter()
    unclassified = []
    agree = collections.Counter()
    for s, o in zip(inputs, ours):
        py = run_python(s, mounts)
        c = classify(s, o, py)
        if c is None:
            agree["both accept" if py[0] == "ok" else "both reject"] += 1
        elif c == "UNCLASSIFIED":
            unclassified.append((s, o, py))
        else:
            classes[c] += 1
    return agree, classes, unclassified


def report(label, agree, classes):
    print(f"\n[{label}] agree: {dict(agree)}")
    for name, n in classes.most_common():
        print(f"[{label}] disagreement '{name}': {n}")


def test_generated_inputs_agree_or_are_documented(canonicalize_bin):
    inputs = generated_inputs()
    agree, classes, unclassified = compare(canonicalize_bin, inputs, [])
    report("guard off", agree, classes)
    assert not unclassified, "unclassified disagreements:\n" + "\n".join(
        f"  {s!r}: ours {o}, python {p}" for s, o, p in unclassified[:50]
    )
    # The generator must actually reach both outcomes and every documented
    # class, or this test proves little.
    assert agree["both accept"] > 500 and agree["both reject"] > 500, agree
    for name, _ in DISAGREEMENT_RULES:
        assert classes[name] > 0, f"generator never hit '{name}'"


def test_generated_inputs_with_tenant_guard(canonicalize_bin):
    inputs = generated_inputs()[::2]
    agree, classes, unclassified = compare(canonicalize_bin, inputs, TENANT_MOUNTS)
    report("mounts=['secret']", agree, classes)
    assert not unclassified, "unclassified disagreements:\n" + "\n".join(
        f"  {s!r}: ours {o}, python {p}" for s, o, p in unclassified[:50]
    )
    mismatches = sum(
        1 for s in inputs if run_python(s, TENANT_MOUNTS) == ("err", "tenant_mount_mismatch")
    )
    assert mismatches > 50 and agree["both accept"] > 100, (mismatches, agree)


def test_generated_canonicals_are_fixed_points(canonicalize_bin):
    """Every canonical string secref produces parses back to itself, in both
    parsers when the reference accepts it too."""
    inputs = generated_inputs()
    ours = run_ours(canonicalize_bin, [(s, []) for s in inputs])
    canon = [o["ok"] for o in ours if "ok" in o]
    again = run_ours(canonicalize_bin, [(c, []) for c in canon])
    for c, o in zip(canon, again):
        assert o == {"ok": c}, f"{c!r} → {o}"
        py = run_python(c, [])
        if py[0] == "ok" and (scheme_of(c) or "").split("+", 1)[0] != "file":
            assert py == ("ok", c), f"{c!r}: python {py}"
