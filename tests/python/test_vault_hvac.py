"""hvac (the reference Vault client) against `secref serve`'s Vault API.

The server is started with the KV v2 seed in tests/fixtures/vault/seed.json
(`secret/myapp/api`: versions 1-5, 3 deleted, 4 destroyed). Each scenario
is what a real Vault answers, as hvac sees it; answers are also compared
with the golden shapes taken from the Vault API docs.
"""
import json
import os
import pathlib
import queue
import re
import subprocess
import threading

import hvac
import hvac.exceptions
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "vault"
TOKEN = "canary-hvac-server-token-5d0c9e7a"
CANARIES = [TOKEN, "canary-kv2-"]


def golden(name):
    return json.loads((FIXTURES / name).read_text())


FREE_FORM = {"data.data", "data.metadata.custom_metadata", "data.custom_metadata"}


def assert_shape(actual, want, path=""):
    """Same keys and value types, recursively; values ignored."""
    if isinstance(want, dict) and path in FREE_FORM:
        assert isinstance(actual, dict), path
        return
    if isinstance(want, dict) and path == "data.versions":
        sample = next(iter(want.values()))
        for k, v in actual.items():
            assert k.isdigit(), path
            assert_shape(v, sample, path + ".*")
        return
    if isinstance(want, dict):
        assert isinstance(actual, dict), f"{path}: {actual!r}"
        assert sorted(actual) == sorted(want), f"keys at {path!r}"
        for k in want:
            assert_shape(actual[k], want[k], f"{path}.{k}" if path else k)
        return
    if want is None:
        assert actual is None, path
        return
    kinds = (bool,) if isinstance(want, bool) else (int, float) if isinstance(want, (int, float)) else (str,)
    assert isinstance(actual, kinds) and not (kinds != (bool,) and isinstance(actual, bool)), f"{path}: {actual!r}"


@pytest.fixture(scope="module")
def server(secref_bin, tmp_path_factory):
    cwd = tmp_path_factory.mktemp("serve")
    env = dict(os.environ)
    env.update(
        SECREF_SERVE_TOKEN=TOKEN,
        SECREF_SERVE_VAULT_SEED=str(FIXTURES / "seed.json"),
        RUST_LOG="secref=trace,secref_server=trace,info",
    )
    env.pop("SECREF_CONFIG", None)
    proc = subprocess.Popen(
        [secref_bin, "serve", "--bind", "127.0.0.1:0"],
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines = queue.Queue()
    log = []

    def pump():
        for line in proc.stderr:
            log.append(line)
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    addr = None
    while addr is None:
        line = lines.get(timeout=30)
        m = re.search(r"listening on (http://\S+)", line)
        if m:
            addr = m.group(1)
    yield {"addr": addr, "log": log}
    proc.terminate()
    proc.wait(timeout=10)
    text = "".join(log)
    for canary in CANARIES:
        assert canary not in text, f"{canary} leaked into the server log"


@pytest.fixture
def client(server):
    return hvac.Client(url=server["addr"], token=TOKEN)


def test_lookup_self(client):
    assert client.is_authenticated()
    info = client.lookup_token()
    assert info["data"]["display_name"] == "secref-default"
    assert "id" not in info["data"], "the server never echoes tokens"


def test_read_latest_and_pinned(client):
    latest = client.secrets.kv.v2.read_secret_version(
        path="myapp/api", mount_point="secret", raise_on_deleted_version=True
    )
    assert_shape(latest, golden("kv2_read.json"))
    assert latest["data"]["metadata"]["version"] == 5
    assert latest["data"]["data"]["token"] == "canary-kv2-v5-e4f0"
    pinned = client.secrets.kv.v2.read_secret_version(
        path="myapp/api", version=2, mount_point="secret", raise_on_deleted_version=True
    )
    assert pinned["data"]["data"] == {"token": "canary-kv2-v2-51c7", "port": 5432}
    assert pinned["data"]["metadata"]["version"] == 2


@pytest.mark.parametrize("version,deleted,destroyed", [(3, True, False), (4, False, True)])
def test_deleted_and_destroyed_versions(client, version, deleted, destroyed):
    with pytest.raises(hvac.exceptions.InvalidPath) as exc:
        client.secrets.kv.v2.read_secret_version(
            path="myapp/api", version=version, mount_point="secret", raise_on_deleted_version=True
        )
    body = exc.value.json
    assert_shape(body, golden("kv2_deleted_404.json"))
    meta = body["data"]["metadata"]
    assert meta["version"] == version
    assert (meta["deletion_time"] != "") == deleted
    assert meta["destroyed"] is destroyed
    assert body["data"]["data"] is None
    # Without raising, hvac hands back Vault's 404 body for a deleted version.
    if deleted:
        soft = client.secrets.kv.v2.read_secret_version(
            path="myapp/api", version=version, mount_point="secret", raise_on_deleted_version=False
        )
        assert soft["data"]["metadata"]["version"] == version


def test_missing(client):
    with pytest.raises(hvac.exceptions.InvalidPath):
        client.secrets.kv.v2.read_secret_version(
            path="nope/here", mount_point="secret", raise_on_deleted_version=True
        )


def test_metadata(client):
    meta = client.secrets.kv.v2.read_secret_metadata(path="myapp/api", mount_point="secret")
    assert_shape(meta, golden("kv2_metadata.json"))
    d = meta["data"]
    assert d["current_version"] == 5
    assert sorted(d["versions"], key=int) == ["1", "2", "3", "4", "5"]
    assert d["versions"]["4"]["destroyed"] is True
    assert d["versions"]["3"]["deletion_time"] != ""
    assert d["custom_metadata"] == {"owner": "team-a", "tier": "gold"}


def test_wrapping_and_single_use_unwrap(client):
    wrapped = client.read("secret/data/myapp/api", wrap_ttl="60s")
    assert_shape(wrapped, golden("wrapped.json"))
    info = wrapped["wrap_info"]
    assert info["creation_path"] == "secret/data/myapp/api"
    assert info["ttl"] == 60
    unwrapped = client.sys.unwrap(token=info["token"])
    assert unwrapped["data"]["data"]["token"] == "canary-kv2-v5-e4f0"
    with pytest.raises(hvac.exceptions.InvalidRequest) as exc:
        client.sys.unwrap(token=info["token"])
    assert "wrapping token is not valid" in str(exc.value)
    # Unwrapping with the wrapping token as the client token (no server token).
    again = client.read("secret/data/myapp/api?version=1", wrap_ttl="1m")
    wrapping_client = hvac.Client(url=client.url, token=again["wrap_info"]["token"])
    assert wrapping_client.sys.unwrap()["data"]["data"]["token"] == "canary-kv2-v1-3a9f"


def test_bad_token(server):
    bad = hvac.Client(url=server["addr"], token="wrong-token-wrong-token")
    assert not bad.is_authenticated()
    with pytest.raises(hvac.exceptions.Forbidden) as exc:
        bad.secrets.kv.v2.read_secret_version(
            path="myapp/api", mount_point="secret", raise_on_deleted_version=True
        )
    assert "permission denied" in str(exc.value)
