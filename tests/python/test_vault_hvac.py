"""hvac (the reference Vault client) against `secref serve`'s Vault API.

The server runs over a real local store (`secref init` in a temporary
HOME), which the fixture fills through the Vault API itself with the KV v2
seed in tests/fixtures/vault/seed.json (`secret/myapp/api`: versions 1-5,
3 deleted, 4 destroyed). Each scenario is what a real Vault answers, as
hvac sees it; answers are also compared with the golden shapes taken from
the Vault API docs. Writes with hvac are read back with `secref get` and
the other way round.
"""
import json
import os
import pathlib
import queue
import re
import subprocess
import threading
import urllib.error
import urllib.request

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


def seed(client):
    """Writes the seed through the Vault API, as a Vault user would."""
    for key, secret in json.loads((FIXTURES / "seed.json").read_text()).items():
        mount, path = key.split("/", 1)
        deleted, destroyed = [], []
        for v in secret["versions"]:
            out = client.secrets.kv.v2.create_or_update_secret(path=path, secret=v["data"], mount_point=mount)
            n = out["data"]["version"]
            if v.get("deleted"):
                deleted.append(n)
            if v.get("destroyed"):
                destroyed.append(n)
        if deleted:
            client.secrets.kv.v2.delete_secret_versions(path=path, versions=deleted, mount_point=mount)
        if destroyed:
            client.secrets.kv.v2.destroy_secret_versions(path=path, versions=destroyed, mount_point=mount)
        if "custom_metadata" in secret:
            client.secrets.kv.v2.update_metadata(
                path=path, custom_metadata=secret["custom_metadata"], mount_point=mount
            )


@pytest.fixture(scope="module")
def server(secref_bin, tmp_path_factory):
    cwd = tmp_path_factory.mktemp("serve")
    env = dict(os.environ)
    env.update(
        SECREF_SERVE_TOKEN=TOKEN,
        HOME=str(cwd / "home"),
        SECREF_STORE=str(cwd / "secrets.store"),
        SECREF_KEY_FILE=str(cwd / "store.key"),
        RUST_LOG="secref=trace,secref_server=trace,info",
    )
    env.pop("SECREF_CONFIG", None)
    env.pop("SECREF_KEY", None)
    subprocess.run([secref_bin, "init"], cwd=cwd, env=env, check=True, capture_output=True)
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
    seed(hvac.Client(url=addr, token=TOKEN))
    yield {"addr": addr, "log": log, "env": env, "cwd": cwd, "bin": secref_bin}
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
    # The local store keeps text: a number reads back as its JSON text.
    assert pinned["data"]["data"] == {"token": "canary-kv2-v2-51c7", "port": "5432"}
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


def secref(server, *args, stdin=None):
    return subprocess.run(
        [server["bin"], *args],
        cwd=server["cwd"],
        env=server["env"],
        input=stdin,
        capture_output=True,
        text=True,
    )


def test_secref_set_then_hvac_reads_it(server, client):
    out = secref(server, "set", "local://myapp/db#password", stdin="canary-kv2-set-1b2c")
    assert out.returncode == 0, out.stderr
    got = client.secrets.kv.v2.read_secret_version(path="myapp/db", raise_on_deleted_version=True)
    assert got["data"]["data"] == {"password": "canary-kv2-set-1b2c"}
    assert got["data"]["metadata"]["version"] == 1


def test_hvac_write_then_secref_get(server, client):
    out = client.secrets.kv.v2.create_or_update_secret(
        path="hvac/written", secret={"user": "app", "password": "canary-kv2-hw-8d7e"}
    )
    assert out["data"]["version"] == 1
    got = secref(server, "get", "local://hvac/written#password")
    assert got.returncode == 0, got.stderr
    assert got.stdout.strip() == "canary-kv2-hw-8d7e"
    # A check-and-set mismatch is refused and changes nothing.
    with pytest.raises(hvac.exceptions.InvalidRequest):
        client.secrets.kv.v2.create_or_update_secret(path="hvac/written", secret={"user": "x"}, cas=0)
    out = client.secrets.kv.v2.create_or_update_secret(path="hvac/written", secret={"user": "b"}, cas=1)
    assert out["data"]["version"] == 2
    assert secref(server, "get", "local://hvac/written#user").stdout.strip() == "b"
    # PATCH merges into the current version.
    client.secrets.kv.v2.patch(path="hvac/written", secret={"password": "canary-kv2-hw-p"})
    got = client.secrets.kv.v2.read_secret_version(path="hvac/written", raise_on_deleted_version=True)
    assert got["data"]["data"] == {"user": "b", "password": "canary-kv2-hw-p"}
    assert got["data"]["metadata"]["version"] == 3


def test_delete_undelete_destroy_as_vault(server, client):
    for i in (1, 2, 3):
        client.secrets.kv.v2.create_or_update_secret(path="life/cycle", secret={"v": f"canary-kv2-life-{i}"})
    client.secrets.kv.v2.delete_latest_version_of_secret(path="life/cycle")
    with pytest.raises(hvac.exceptions.InvalidPath):
        client.secrets.kv.v2.read_secret_version(path="life/cycle", raise_on_deleted_version=True)
    assert secref(server, "get", "local://life/cycle#v").returncode == 3
    client.secrets.kv.v2.undelete_secret_versions(path="life/cycle", versions=[3])
    assert secref(server, "get", "local://life/cycle#v").stdout.strip() == "canary-kv2-life-3"
    client.secrets.kv.v2.delete_secret_versions(path="life/cycle", versions=[1])
    client.secrets.kv.v2.destroy_secret_versions(path="life/cycle", versions=[2])
    meta = client.secrets.kv.v2.read_secret_metadata(path="life/cycle")["data"]
    assert meta["versions"]["1"]["deletion_time"] != ""
    assert meta["versions"]["2"]["destroyed"] is True
    assert meta["current_version"] == 3
    with pytest.raises(hvac.exceptions.InvalidPath) as exc:
        client.secrets.kv.v2.read_secret_version(path="life/cycle", version=2, raise_on_deleted_version=True)
    assert exc.value.json["data"]["metadata"]["destroyed"] is True
    # What the CLI sees is the same.
    assert secref(server, "get", "local://life/cycle#v?version=2").returncode == 3
    # Metadata settings, listing, forgetting.
    client.secrets.kv.v2.update_metadata(path="life/cycle", max_versions=5, cas_required=True)
    meta = client.secrets.kv.v2.read_secret_metadata(path="life/cycle")["data"]
    assert (meta["max_versions"], meta["cas_required"]) == (5, True)
    with pytest.raises(hvac.exceptions.InvalidRequest):
        client.secrets.kv.v2.create_or_update_secret(path="life/cycle", secret={"v": "x"})
    assert client.secrets.kv.v2.list_secrets(path="life")["data"]["keys"] == ["cycle"]
    assert "life/" in client.secrets.kv.v2.list_secrets(path="")["data"]["keys"]
    client.secrets.kv.v2.delete_metadata_and_all_versions(path="life/cycle")
    with pytest.raises(hvac.exceptions.InvalidPath):
        client.secrets.kv.v2.read_secret_metadata(path="life/cycle")


def test_preflight_and_wrapping_lookup(server, client):
    assert client.sys.read_health_status(method="GET")["sealed"] is False
    mounts = client.sys.list_mounted_secrets_engines()
    assert mounts["data"]["secret/"]["options"]["version"] == "2"
    ui = client.adapter.get("/v1/sys/internal/ui/mounts/secret/myapp/api")
    assert ui["data"]["path"] == "secret/"
    wrapped = client.read("secret/metadata/myapp/api", wrap_ttl="30s")
    token = wrapped["wrap_info"]["token"]
    info = client.adapter.post("/v1/sys/wrapping/lookup", json={"token": token})
    assert info["data"]["creation_path"] == "secret/metadata/myapp/api"
    assert client.sys.unwrap(token=token)["data"]["current_version"] == 5


def test_errors_are_vaults_shape_and_never_cached(server):
    for method, path in [("PUT", "/v1/sys/health"), ("GET", "/v1/nomount/data/x"), ("GET", "/v1/secret/data/nope")]:
        req = urllib.request.Request(server["addr"] + path, method=method, headers={"X-Vault-Token": TOKEN})
        try:
            urllib.request.urlopen(req)
            raise AssertionError(f"{method} {path} succeeded")
        except urllib.error.HTTPError as e:
            assert e.code in (404, 405), (method, path, e.code)
            assert "errors" in json.loads(e.read())
            assert e.headers["Cache-Control"] == "no-store"
    req = urllib.request.Request(server["addr"] + "/v1/secret/data/myapp/api", headers={"X-Vault-Token": TOKEN})
    assert urllib.request.urlopen(req).headers["Cache-Control"] == "no-store"


def test_secrets_sdk_client(server, monkeypatch):
    import asyncio

    from secrets_sdk.vault_strategies.hashicorp_vault_strategy import HashiCorpVaultStrategy

    # The SDK passes `<mount>/<path>` as the path under hvac's default mount
    # `secret`, so `hashicorp+kv2://secret/sdk/app` is read from
    # /v1/secret/data/secret/sdk/app -- against a real Vault as well.
    client = hvac.Client(url=server["addr"], token=TOKEN)
    for token in ("canary-kv2-sdk-1", "canary-kv2-sdk-2"):
        client.secrets.kv.v2.create_or_update_secret(path="secret/sdk/app", secret={"token": token, "user": "u"})
    strategy = HashiCorpVaultStrategy({"url": server["addr"], "token": TOKEN})
    got = asyncio.run(strategy.get_credentials("hashicorp+kv2://secret/sdk/app#token?version=1"))
    assert got == {"token": "canary-kv2-sdk-1"}
    whole = asyncio.run(strategy.get_credentials("hashicorp+kv2://secret/sdk/app"))
    assert whole == {"token": "canary-kv2-sdk-2", "user": "u"}


def test_hvac_through_a_caching_proxy(server, secref_bin, tmp_path):
    """A second `secref serve` whose `secret` mount proxies the first one
    (KV v2 through secref's openbao+kv2 provider); hvac talks to the proxy."""
    client = hvac.Client(url=server["addr"], token=TOKEN)
    client.secrets.kv.v2.create_or_update_secret(path="proxied/app", secret={"token": "canary-kv2-px-1"})
    (tmp_path / "secref.toml").write_text(
        '[cache]\nttl_seconds = 300\n[server.vault.mounts.secret]\nbackend = "openbao+kv2://secret/{path}"\n'
    )
    env = dict(server["env"])
    env.update(VAULT_ADDR=server["addr"], VAULT_TOKEN=TOKEN, HOME=str(tmp_path / "home"))
    proc = subprocess.Popen(
        [secref_bin, "serve", "--bind", "127.0.0.1:0"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        addr = None
        for line in proc.stderr:
            m = re.search(r"listening on (http://\S+)", line)
            if m:
                addr = m.group(1)
                break
        assert addr, "the proxy did not start"
        threading.Thread(target=proc.stderr.read, daemon=True).start()
        px = hvac.Client(url=addr, token=TOKEN)
        got = px.secrets.kv.v2.read_secret_version(path="proxied/app", raise_on_deleted_version=True)
        assert got["data"]["data"] == {"token": "canary-kv2-px-1"}
        assert got["data"]["metadata"]["version"] == 1
        client.secrets.kv.v2.create_or_update_secret(path="proxied/app", secret={"token": "canary-kv2-px-2"})
        # Cached; a pinned read of the new version; then latest is never older.
        assert px.secrets.kv.v2.read_secret_version(path="proxied/app", raise_on_deleted_version=True)["data"]["metadata"]["version"] == 1
        two = px.secrets.kv.v2.read_secret_version(path="proxied/app", version=2, raise_on_deleted_version=True)
        assert two["data"]["data"]["token"] == "canary-kv2-px-2"
        assert px.secrets.kv.v2.read_secret_version(path="proxied/app", raise_on_deleted_version=True)["data"]["metadata"]["version"] == 2
        assert px.secrets.kv.v2.read_secret_metadata(path="proxied/app")["data"]["current_version"] == 2
        # Vault's own answer for a read-only mount (405; hvac has no class for it).
        with pytest.raises(hvac.exceptions.VaultError) as exc:
            px.secrets.kv.v2.create_or_update_secret(path="proxied/app", secret={"token": "x"})
        assert "cannot write to readonly storage" in str(exc.value)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
