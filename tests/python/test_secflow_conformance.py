"""`secref serve` driven by the official SecFlow SDK (secflow-sdk 0.1.9).

A module fixture starts the built `secref` binary on 127.0.0.1 with a temp
config whose `secret://` refs map onto files in a temp dir, plus an env ref,
and access rules that deny some refs. Every test talks to it through the SDK
only; the last test checks that no value ever reached the server's log.
"""
import os
import pathlib
import re
import subprocess
import time

import pytest
from secflow_sdk import (
    SecFlowClient,
    SecFlowHttpError,
    SecFlowItemError,
    SecFlowSecretProvider,
)

CANARY = "canary-sf-5b1e0d-not-for-logs"
ENV_CANARY = "canary-sf-env-93c1a7"
BINARY = bytes([0xFF, 0x00, 0xFE, 0x80]) + b"bin\n"
TOKEN = "conformance-token-0123456789"
LIMITED_TOKEN = "limited-token-0123456789ab"


def start_serve(secref_bin, cwd, env, *args):
    """Starts `secref serve` with stderr to cwd/serve.log; returns (proc, url, log)."""
    log = pathlib.Path(cwd) / "serve.log"
    with open(log, "wb") as err:
        proc = subprocess.Popen(
            [secref_bin, "serve", *args],
            stdin=subprocess.DEVNULL, stdout=err, stderr=err, env=env, cwd=cwd,
        )
    # Up to 30 s: a loaded 2-core machine can be slow to start a process.
    for _ in range(600):
        m = re.search(r"listening on (http://127\.0\.0\.1:\d+)", log.read_text(errors="replace"))
        if m:
            return proc, m.group(1), log
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    pytest.fail("secref serve did not start: " + log.read_text(errors="replace"))


@pytest.fixture(scope="module")
def serve(secref_bin, tmp_path_factory):
    root = tmp_path_factory.mktemp("secflow")
    store = root / "s" / "dev" / "app" / "token"
    store.mkdir(parents=True)
    (store / "text").write_text(CANARY)
    (store / "bin").write_bytes(BINARY)
    (store / "public").write_text("public-value")
    other = root / "s" / "dev" / "other" / "token"
    other.mkdir(parents=True)
    (other / "x").write_text(CANARY + "-other")
    config = root / "secref.toml"
    config.write_text(
        f"""
[server]
bind = "127.0.0.1:0"
secflow_ref_template = "file://{root}/s/{{environment}}/{{service}}/{{kind}}/{{name}}"

[server.tokens.limited]
token_env = "LIMITED_TOKEN"

[[server.rules]]
principals = ["default"]
refs = ["secret://dev/app/*", "env://SF_CONF_*"]

[[server.rules]]
principals = ["limited"]
refs = ["secret://dev/app/token/public"]
actions = ["read"]
"""
    )
    env = dict(os.environ)
    env.update(
        SECREF_SERVE_TOKEN=TOKEN,
        LIMITED_TOKEN=LIMITED_TOKEN,
        SF_CONF_CANARY=ENV_CANARY,
        RUST_LOG="debug",
    )
    proc, url, log = start_serve(secref_bin, root, env, "--config", str(config))
    yield {"url": url, "log": log, "proc": proc}
    proc.terminate()  # SIGTERM: graceful shutdown, exit status 0
    assert proc.wait(timeout=10) == 0


@pytest.fixture
def client(serve):
    return SecFlowClient(serve["url"], sdk_token=TOKEN, target_environment="dev", timeout=5)


def test_resolve_text(client):
    assert client.resolve_text("secret://dev/app/token/text") == CANARY


def test_resolve_text_via_env_and_dotenv_style_config(serve):
    c = SecFlowClient.from_env(
        {
            "SECFLOW_BASE_URL": serve["url"] + "/",
            "SECFLOW_SDK_TOKEN": TOKEN,
            "SECFLOW_TARGET_ENVIRONMENT": "dev",
            "SECFLOW_TIMEOUT_SECONDS": "5",
        }
    )
    assert c.resolve_text("env://SF_CONF_CANARY") == ENV_CANARY


def test_resolve_bytes_binary_round_trip(client):
    secret = client.resolve_bytes("secret://dev/app/token/bin")
    assert secret == BINARY


def test_resolved_secret_has_lease_and_revision(client):
    batch = client.resolve_many_partial(["secret://dev/app/token/text"], lease_ttl_seconds=60)
    resolved = batch.resolved["secret://dev/app/token/text"]
    assert resolved.lease_id.startswith("lease-")
    assert resolved.revision_id
    assert resolved.expires_at and resolved.expires_at.endswith("Z")
    assert CANARY not in repr(resolved)


def test_resolve_many(client):
    refs = ["secret://dev/app/token/text", "secret://dev/app/token/public", "env://SF_CONF_CANARY"]
    out = client.resolve_many(refs)
    assert out["secret://dev/app/token/text"].as_text() == CANARY
    assert out["secret://dev/app/token/public"].as_text() == "public-value"
    assert out["env://SF_CONF_CANARY"].as_text() == ENV_CANARY


def test_resolve_many_raises_first_failure(client):
    with pytest.raises(SecFlowItemError) as err:
        client.resolve_many(["secret://dev/app/token/text", "secret://dev/app/token/missing"])
    assert err.value.code == "NOT_FOUND"
    assert err.value.retryable is False


def test_resolve_many_partial_ok_missing_denied(client):
    out = client.resolve_many_partial(
        [
            "secret://dev/app/token/text",
            "secret://dev/app/token/missing",
            "secret://dev/other/token/x",
            "secret://prod/app/token/text",
        ]
    )
    assert not out.ok
    assert out.resolved["secret://dev/app/token/text"].as_text() == CANARY
    missing = out.failures["secret://dev/app/token/missing"]
    assert (missing.result, missing.code, missing.retryable) == ("failed", "NOT_FOUND", False)
    denied = out.failures["secret://dev/other/token/x"]
    assert (denied.result, denied.code) == ("denied", "PERMISSION_DENIED")
    assert denied.decision_id == "default-deny"
    wrong_env = out.failures["secret://prod/app/token/text"]
    assert (wrong_env.result, wrong_env.code) == ("denied", "PERMISSION_DENIED")


def test_invalid_ref_is_item_failure(client):
    out = client.resolve_many_partial(["secret://dev/app/token"])
    failure = out.failures["secret://dev/app/token"]
    assert failure.code == "INVALID_REFERENCE"


def test_validate(client):
    out = client.validate(["secret://dev/app/token/text", "secret://dev/app/token/missing"])
    ok = out["secret://dev/app/token/text"]
    assert (ok.valid, ok.exists, ok.namespace, ok.secret_type) == (True, True, "dev/app", "token")
    assert out["secret://dev/app/token/missing"].exists is False


def test_metadata(client):
    out = client.metadata(["secret://dev/app/token/text"])
    m = out["secret://dev/app/token/text"]
    assert (m.environment, m.service) == ("dev", "app")
    assert m.tags == () or list(m.tags) == []
    assert CANARY not in repr(m)


def test_permission_check(serve, client):
    out = client.permission_check(
        ["secret://dev/app/token/text", "secret://dev/other/token/x"], action="read"
    )
    assert out["secret://dev/app/token/text"].allowed is True
    assert out["secret://dev/other/token/x"].allowed is False
    limited = SecFlowClient(serve["url"], sdk_token=LIMITED_TOKEN, timeout=5)
    out = limited.permission_check(["secret://dev/app/token/public"], action="metadata_read")
    assert out["secret://dev/app/token/public"].allowed is False
    assert limited.resolve_text("secret://dev/app/token/public") == "public-value"
    with pytest.raises(SecFlowItemError) as err:
        limited.resolve_text("secret://dev/app/token/text")
    assert err.value.code == "PERMISSION_DENIED"


def test_revoke_leases(serve, client):
    lease = client.resolve_many_partial(["secret://dev/app/token/text"]).resolved[
        "secret://dev/app/token/text"
    ].lease_id
    # Another caller cannot revoke it.
    limited = SecFlowClient(serve["url"], sdk_token=LIMITED_TOKEN, timeout=5)
    with pytest.raises(SecFlowItemError) as err:
        limited.revoke_leases([lease])
    assert err.value.code == "NOT_FOUND"
    out = client.revoke_leases([lease], reason="job_completed")
    assert out[lease].status == "revoked"
    assert out[lease].revoked_at
    with pytest.raises(SecFlowItemError) as err:
        client.revoke_leases([lease])
    assert err.value.code == "NOT_FOUND"


def test_wrong_token(serve):
    bad = SecFlowClient(serve["url"], sdk_token="wrong-token-value-xyz", timeout=5)
    with pytest.raises(SecFlowHttpError) as err:
        bad.resolve_text("secret://dev/app/token/text")
    e = err.value
    assert (e.status_code, e.code, e.retryable) == (401, "UNAUTHENTICATED", False)
    assert e.request_id and e.trace_id


def test_sdk_cached_provider(client):
    provider = SecFlowSecretProvider(client, ttl_seconds=30)
    assert provider.get_text("secret://dev/app/token/text") == CANARY
    assert provider.get_many_bytes(["secret://dev/app/token/bin"]) == {
        "secret://dev/app/token/bin": BINARY
    }


def test_generated_token_file(secref_bin, tmp_path):
    token_file = tmp_path / "serve.token"
    env = {k: v for k, v in os.environ.items() if k != "SECREF_SERVE_TOKEN"}
    (tmp_path / "secref.toml").write_text("[server]\nbind = '127.0.0.1:0'\n")
    proc, url, log = start_serve(secref_bin, tmp_path, env, "--token-file", str(token_file))
    try:
        assert token_file.stat().st_mode & 0o777 == 0o600
        token = token_file.read_text()
        assert len(token) >= 32
        assert token not in log.read_text(errors="replace")
        c = SecFlowClient(url, sdk_token=token, timeout=5)
        with pytest.raises(SecFlowItemError) as err:
            c.resolve_text("local://app/surely-missing-entry-x")
        assert err.value.code == "NOT_FOUND"
        # Without rules the server's own environment is still not served.
        with pytest.raises(SecFlowItemError) as err:
            c.resolve_text("env://SECREF_SURELY_UNSET_VARIABLE_X")
        assert err.value.code == "PERMISSION_DENIED"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_default_mapping_reads_values_seeded_with_secref_set(secref_bin, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SECREF_")}
    env.update(
        SECREF_STORE=str(tmp_path / "data" / "secref.store"),
        SECREF_KEY_FILE=str(tmp_path / "config" / "key"),
        SECREF_SERVE_TOKEN=TOKEN,
    )
    subprocess.run([secref_bin, "init"], env=env, cwd=tmp_path, check=True, capture_output=True)
    subprocess.run(
        [secref_bin, "set", "local://secflow/dev/app/password/db"],
        input=CANARY.encode(), env=env, cwd=tmp_path, check=True, capture_output=True,
    )
    (tmp_path / "secref.toml").write_text("[server]\nbind = '127.0.0.1:0'\n")
    proc, url, log = start_serve(secref_bin, tmp_path, env)
    try:
        c = SecFlowClient(url, sdk_token=TOKEN, timeout=5)
        assert c.resolve_text("secret://dev/app/password/db") == CANARY
        meta = c.metadata(["secret://dev/app/password/db"])["secret://dev/app/password/db"]
        assert (meta.environment, meta.service) == ("dev", "app")
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0
    assert CANARY not in log.read_text(errors="replace")


def test_zz_no_value_or_token_in_server_log(serve):
    # Runs last (file order): every request above has been logged by now.
    log = pathlib.Path(serve["log"]).read_bytes()
    assert b"/v1/secrets/resolve:batch" in log, "the access log is missing"
    for needle in (CANARY, ENV_CANARY, TOKEN, LIMITED_TOKEN, "public-value"):
        assert needle.encode() not in log, needle
    assert BINARY not in log
