"""The Infisical double (`secref-fake infisical`) is faithful: the unofficial
Infisical SDK (`infisical-httpx-sdk` 1.1.0) works against it unchanged for
universal auth (with a re-login after expiry), token auth, the CLI
config-file login, secrets list/retrieve, folders, error messages and the
async client. The same double then serves secref's own CLI as a cross-check
of the CLI keyring that jwcrypto (the SDK's JOSE library) encrypts.
"""
import asyncio
import base64
import json
import os
import pathlib
import subprocess
import time

import pytest
from jwcrypto import jwe, jwk, jwt

from infisical import InfisicalAsyncClient, InfisicalClient
from infisical.credentials.keyring_handler import FileKeyringBackend
from infisical.exceptions import InfisicalCredentialsError, InfisicalHTTPError

ROOT = pathlib.Path(__file__).resolve().parents[2]
CLIENT_SECRET = "CANARY-client-secret-py"
DB_PASS = "CANARY-db-pass-v2-py"


def make_jwt(exp_in: int) -> str:
    """A token the double accepts verbatim (seeded), signed with some key."""
    now = int(time.time())
    key = jwk.JWK.generate(kty="oct", size=256)
    tok = jwt.JWT(header={"alg": "HS256", "typ": "JWT"},
                  claims={"iat": now - 5, "exp": now + exp_in, "sub": "user"})
    tok.make_signed_token(key)
    return tok.serialize()


STATIC_TOKEN = make_jwt(3600)


def seed(ttl: int = 600) -> dict:
    return {
        "token_ttl_seconds": ttl,
        "clients": [{"client_id": "cid", "client_secret": CLIENT_SECRET}],
        "tokens": [STATIC_TOKEN],
        "secrets": [
            {"project": "proj-1", "environment": "dev", "path": "/app", "key": "DB_PASS",
             "values": ["CANARY-db-pass-v1-py", DB_PASS], "comment": "db", "tags": ["db"]},
            {"project": "proj-1", "environment": "dev", "path": "/app", "key": "API_KEY",
             "values": ["CANARY-api-key-py"]},
            {"project": "proj-1", "environment": "dev", "path": "/app/sub", "key": "DEEP",
             "values": ["CANARY-deep-py"]},
        ],
        "folders": [{"project": "proj-1", "environment": "dev", "path": "/app/empty"}],
    }


def fake_bin() -> str:
    path = os.environ.get("SECREF_FAKE_BIN") or str(ROOT / "target" / "debug" / "secref-fake")
    assert os.path.exists(path), f"build secref-fake first: {path}"
    return path


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """HOME in a temp dir (the SDK reads ~/.infisical) and no INFISICAL_* vars."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for k in list(os.environ):
        if k.startswith("INFISICAL_"):
            monkeypatch.delenv(k)
    # The SDK computes these paths at import time.
    monkeypatch.setattr(FileKeyringBackend, "CONFIG_FILE", home / ".infisical" / "infisical-config.json")
    monkeypatch.setattr(FileKeyringBackend, "KEYRING_PATH", home / "infisical-keyring")
    return home


def start_double(tmp_path, seed_doc):
    seed_file = tmp_path / "seed.json"
    seed_file.write_text(json.dumps(seed_doc))
    proc = subprocess.Popen([fake_bin(), "infisical", "--seed", str(seed_file)],
                            stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline().strip()
    assert line.startswith("listening on http://127.0.0.1:"), line
    return proc, line.removeprefix("listening on ")


@pytest.fixture
def double(tmp_path):
    proc, url = start_double(tmp_path, seed())
    yield url
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture
def short_double(tmp_path):
    proc, url = start_double(tmp_path, seed(ttl=1))
    yield url
    proc.terminate()
    proc.wait(timeout=10)


def test_universal_auth_list_and_retrieve(double):
    with InfisicalClient(client_id="cid", client_secret=CLIENT_SECRET, endpoint=double) as c:
        page = c.secrets.v3.list(workspaceId="proj-1", environment="dev", secretPath="/app",
                                 recursive="false")
        assert sorted(s.secret_key for s in page.secrets) == ["API_KEY", "DB_PASS"]
        # The SDK always lists with viewSecretValue=false: values are hidden.
        assert {s.secret_value for s in page.secrets} == {"<hidden-by-infisical>"}
        assert all(s.secret_value_hidden for s in page.secrets)
        assert page.imports == []
        one = c.secrets.v3.retrieve(name="DB_PASS", workspaceId="proj-1", environment="dev",
                                    secretPath="/app")
        assert one.secret_value == DB_PASS
        assert one.version == 2
        assert one.secret_comment == "db"
        assert [t.slug for t in one.tags] == ["db"]
        assert one.secret_type == "shared"
        old = c.secrets.v3.retrieve(name="DB_PASS", workspaceId="proj-1", environment="dev",
                                    secretPath="/app", version="1")
        assert (old.secret_value, old.version) == ("CANARY-db-pass-v1-py", 1)
        deep = c.secrets.v3.list(workspaceId="proj-1", environment="dev", secretPath="/app",
                                 recursive="true")
        assert sorted(s.secret_key for s in deep.secrets) == ["API_KEY", "DB_PASS", "DEEP"]
        folders = c.folders.v1.list(workspaceId="proj-1", environment="dev", path="/app")
        assert sorted(f.name for f in folders.folders) == ["empty", "sub"]


def test_relogin_after_expiry(short_double):
    with InfisicalClient(client_id="cid", client_secret=CLIENT_SECRET, endpoint=short_double) as c:
        first = c.secrets.v3.retrieve(name="API_KEY", workspaceId="proj-1", environment="dev",
                                      secretPath="/app")
        assert first.secret_value == "CANARY-api-key-py"
        time.sleep(2.1)  # the 1 s token is now expired; the double would answer 401
        again = c.secrets.v3.retrieve(name="API_KEY", workspaceId="proj-1", environment="dev",
                                      secretPath="/app")
        assert again.secret_value == "CANARY-api-key-py"


def test_token_auth_and_expired_token(double):
    with InfisicalClient(token=STATIC_TOKEN, endpoint=double) as c:
        one = c.secrets.v3.retrieve(name="DB_PASS", workspaceId="proj-1", environment="dev",
                                    secretPath="/app")
        assert one.secret_value == DB_PASS
    with pytest.raises(InfisicalCredentialsError):
        InfisicalClient(token=make_jwt(-10), endpoint=double)


def test_wrong_client_secret_and_missing_secret_errors(double):
    with pytest.raises(InfisicalHTTPError) as err:
        InfisicalClient(client_id="cid", client_secret="wrong", endpoint=double)
    assert str(err.value) == "Client Error 401: Invalid credentials"
    with InfisicalClient(client_id="cid", client_secret=CLIENT_SECRET, endpoint=double) as c:
        with pytest.raises(InfisicalHTTPError) as err:
            c.secrets.v3.retrieve(name="NOPE", workspaceId="proj-1", environment="dev",
                                  secretPath="/app")
        assert str(err.value) == "Client Error 404: Secret with name 'NOPE' not found"


def write_cli_login(home: pathlib.Path, url: str, token: str, passphrase: bytes) -> None:
    """What `infisical login` leaves behind with the `file` vault."""
    key = jwk.JWK.from_password(passphrase.decode())
    payload = json.dumps(json.dumps({"JTWToken": token, "RefreshToken": "", "Email": "dev@example.com"}))
    enc = jwe.JWE(plaintext=payload.encode(),
                  protected={"alg": "PBES2-HS256+A128KW", "enc": "A256GCM"})
    enc.add_recipient(key)
    (home / "infisical-keyring").mkdir(exist_ok=True)
    (home / "infisical-keyring" / "dev@example.com").write_text(enc.serialize(compact=True))
    (home / ".infisical").mkdir(exist_ok=True)
    (home / ".infisical" / "infisical-config.json").write_text(json.dumps({
        "loggedInUserEmail": "dev@example.com",
        "LoggedInUserDomain": f"{url}/api",
        "loggedInUsers": [{"email": "dev@example.com", "domain": f"{url}/api"}],
        "vaultBackendType": "file",
        "vaultBackendPassphrase": base64.b64encode(passphrase).decode(),
    }))


def test_config_file_login(double, isolated):
    write_cli_login(isolated, double, STATIC_TOKEN, b"vault-passphrase")
    # No explicit or environment credentials: the chain falls to the CLI login.
    with InfisicalClient() as c:
        one = c.secrets.v3.retrieve(name="DB_PASS", workspaceId="proj-1", environment="dev",
                                    secretPath="/app")
        assert one.secret_value == DB_PASS


def test_async_client(double):
    async def run():
        async with InfisicalAsyncClient(client_id="cid", client_secret=CLIENT_SECRET,
                                        endpoint=double) as c:
            page = await c.secrets.v3.list(workspaceId="proj-1", environment="dev",
                                           secretPath="/app")
            one = await c.secrets.v3.retrieve(name="DB_PASS", workspaceId="proj-1",
                                              environment="dev", secretPath="/app")
            return sorted(s.secret_key for s in page.secrets), one.secret_value

    keys, value = asyncio.run(run())
    assert keys == ["API_KEY", "DB_PASS"]
    assert value == DB_PASS


def secref_bin():
    path = os.environ.get("SECREF_BIN") or str(ROOT / "target" / "debug" / "secref")
    return path if os.path.exists(path) else None


def run_secref(home: pathlib.Path, env_extra: dict, ref: str):
    env = {"HOME": str(home), "PATH": os.environ.get("PATH", ""),
           "SECREF_STORE": str(home / "none.store"), **env_extra}
    return subprocess.run([secref_bin(), "get", ref], cwd=home, env=env,
                          capture_output=True, text=True, timeout=60)


@pytest.mark.skipif(secref_bin() is None, reason="target/debug/secref not built")
def test_secref_reads_the_same_double(double, isolated):
    ref = "infisical://proj-1/dev/app/DB_PASS"
    out = run_secref(isolated, {"INFISICAL_URL": double, "INFISICAL_CLIENT_ID": "cid",
                                "INFISICAL_CLIENT_SECRET": CLIENT_SECRET}, ref)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == DB_PASS
    assert CLIENT_SECRET not in out.stderr
    out = run_secref(isolated, {"INFISICAL_URL": double, "INFISICAL_TOKEN": STATIC_TOKEN}, ref)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == DB_PASS
    # The keyring jwcrypto wrote for the SDK decrypts in secref too.
    write_cli_login(isolated, double, STATIC_TOKEN, b"vault-passphrase")
    out = run_secref(isolated, {}, ref)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == DB_PASS
    out = run_secref(isolated, {}, "infisical://proj-1/dev/app/NOPE")
    assert out.returncode != 0
    assert "not_found" in out.stderr
    assert "CANARY" not in out.stderr and STATIC_TOKEN not in out.stderr
