"""SecFlow benchmark: the official SDK vs secref's client, same `secref serve`.

Run through scripts/bench_secflow.sh. Starts one `secref serve` (release
build) over N file-backed secrets, then times, each as the median of ROUNDS:

* SDK `resolve_text` x N (one request each; the SDK opens a connection per
  request), and SDK `resolve_many(N)` (one request);
* secref's `SecFlowProvider`, one ref per request x N (pooled keep-alive), and
  one batch of N.

Writes the `## SecFlow` section of BENCHMARKS.md (replacing an old one).
"""
import json
import os
import pathlib
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time

from secflow_sdk import SecFlowClient

N = int(os.environ.get("BENCH_N", "100"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))
ROOT = pathlib.Path(__file__).resolve().parents[1]
TOKEN = "bench-token-" + os.urandom(12).hex()


def start_serve(secref_bin, root):
    store = root / "s" / "dev" / "bench" / "token"
    store.mkdir(parents=True)
    for i in range(N):
        (store / f"k{i}").write_text(f"value-{i}-" + "x" * 32)
    config = root / "secref.toml"
    config.write_text(
        "[server]\nbind = '127.0.0.1:0'\n"
        f"secflow_ref_template = 'file://{root}/s/{{environment}}/{{service}}/{{kind}}/{{name}}'\n"
    )
    log = root / "serve.log"
    env = dict(os.environ, SECREF_SERVE_TOKEN=TOKEN, RUST_LOG="warn")
    with open(log, "wb") as err:
        proc = subprocess.Popen(
            [secref_bin, "serve", "--config", str(config)],
            stdin=subprocess.DEVNULL, stdout=err, stderr=err, env=env, cwd=root,
        )
    for _ in range(200):
        m = re.search(r"listening on (http://127\.0\.0\.1:\d+)", log.read_text(errors="replace"))
        if m:
            return proc, m.group(1)
        time.sleep(0.05)
    proc.terminate()
    sys.exit("secref serve did not start:\n" + log.read_text(errors="replace"))


def timed(fn):
    times = []
    for _ in range(ROUNDS):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main():
    secref_bin, bench_client = (os.path.abspath(a) for a in sys.argv[1:3])
    with tempfile.TemporaryDirectory() as tmp:
        proc, url = start_serve(secref_bin, pathlib.Path(tmp))
        try:
            refs = [f"secret://dev/bench/token/k{i}" for i in range(N)]
            sdk = SecFlowClient(url, sdk_token=TOKEN, timeout=30)
            sdk.resolve_many(refs)  # warm the server's cache
            sdk_loop = timed(lambda: [sdk.resolve_text(r) for r in refs])
            sdk_batch = timed(lambda: sdk.resolve_many(refs))
            out = subprocess.run(
                [bench_client, url, str(N), str(ROUNDS)],
                env=dict(os.environ, SECREF_BENCH_TOKEN=TOKEN),
                check=True, capture_output=True, text=True,
            )
            rust = json.loads(out.stdout)
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    rows = [
        (f"resolve one ref x {N} (loop)", sdk_loop, rust["rust_loop_s"]),
        (f"resolve_many({N}) (one batch)", sdk_batch, rust["rust_batch_s"]),
    ]
    lines = [
        "## SecFlow",
        "",
        "Official `secflow-sdk` 0.1.9 vs secref's `SecFlowProvider`, both against the same",
        "`secref serve` (release build, file-backed secrets, server cache warm) on 127.0.0.1.",
        f"Median of {ROUNDS} rounds. Regenerate with `scripts/bench_secflow.sh`.",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}.",
        "",
        "| operation | SDK (ms) | secref (ms) | secref speed-up |",
        "|---|---:|---:|---:|",
    ]
    for name, sdk_s, rust_s in rows:
        lines.append(f"| {name} | {sdk_s * 1e3:.1f} | {rust_s * 1e3:.1f} | {sdk_s / rust_s:.1f}x |")
    lines += [
        "",
        "The loop gap is mostly connection setup: the SDK sends `Connection: close` and",
        "opens a new TCP connection per request; secref keeps one pooled keep-alive",
        "connection. In one big batch secref's client is no faster, because every value",
        "becomes a `Secret` on its own locked page (`mlock` + `MADV_DONTDUMP`, and",
        "`munlock` on drop): `perf` shows those syscalls (VMA splits) as most of the",
        "client's time for 100 values, about 5 µs per value; the SDK keeps values in",
        "ordinary Python strings. A shared locked arena for small secrets would remove",
        "that cost.",
        "",
    ]
    section = "\n".join(lines)
    print(section)
    bench = ROOT / "BENCHMARKS.md"
    text = bench.read_text() if bench.exists() else "# Benchmarks\n\n"
    pattern = re.compile(r"^## SecFlow\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _: section + "\n", text)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    bench.write_text(text.rstrip("\n") + "\n")


if __name__ == "__main__":
    main()
