"""boto3 and `secref get` read the same bytes from the same AWS API server.

moto runs in server mode (scripts/test.sh starts it and exports
SECREF_TEST_AWS_ENDPOINT). boto3 seeds secrets and parameters and reads them
back; `secref get -n` must print exactly what boto3 returned — strings,
binary secrets, JSON fields, version stages and ids, deleted secrets (both
fail), SSM String / StringList / SecureString, hierarchical names, versions.
"""
import json
import os
import subprocess
import uuid

import pytest

ENDPOINT = os.environ.get("SECREF_TEST_AWS_ENDPOINT")
pytestmark = pytest.mark.skipif(
    not ENDPOINT, reason="SECREF_TEST_AWS_ENDPOINT is not set (scripts/test.sh starts moto)"
)

REGION = "us-east-1"
CREDS = {"aws_access_key_id": "AKIDBOTO3TEST", "aws_secret_access_key": "boto3-secret-canary"}


@pytest.fixture(scope="module")
def clients():
    import boto3

    sm = boto3.client("secretsmanager", endpoint_url=ENDPOINT, region_name=REGION, **CREDS)
    ssm = boto3.client("ssm", endpoint_url=ENDPOINT, region_name=REGION, **CREDS)
    return sm, ssm


def secref_get(secref_bin, tmp_path, reference):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        HOME=str(tmp_path),
        SECREF_STORE=str(tmp_path / "none.store"),
        SECREF_KEY_FILE=str(tmp_path / "none.key"),
        AWS_ACCESS_KEY_ID=CREDS["aws_access_key_id"],
        AWS_SECRET_ACCESS_KEY=CREDS["aws_secret_access_key"],
        AWS_REGION=REGION,
        AWS_ENDPOINT_URL=ENDPOINT,
    )
    return subprocess.run(
        [secref_bin, "get", "-n", reference], env=env, capture_output=True, timeout=60
    )


def read_ok(secref_bin, tmp_path, reference):
    p = secref_get(secref_bin, tmp_path, reference)
    assert p.returncode == 0, p.stderr.decode()
    assert b"boto3-secret-canary" not in p.stderr
    return p.stdout


def boto3_value(sm, **kw):
    v = sm.get_secret_value(**kw)
    return v["SecretString"].encode() if "SecretString" in v else v["SecretBinary"]


def name(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def test_strings_binary_and_json_fields(clients, secref_bin, tmp_path):
    sm, _ = clients
    s = name("py/str")
    sm.create_secret(Name=s, SecretString="ünïcode value with spaces\nand a newline")
    b = name("py/bin")
    sm.create_secret(Name=b, SecretBinary=bytes(range(256)))
    j = name("py/json")
    doc = {"user": "app", "port": 5432, "ok": True, "nested": {"k": [1, 2]}, "empty": ""}
    sm.create_secret(Name=j, SecretString=json.dumps(doc))

    assert read_ok(secref_bin, tmp_path, f"aws-sm://{s}") == boto3_value(sm, SecretId=s)
    assert read_ok(secref_bin, tmp_path, f"aws-sm://{b}") == boto3_value(sm, SecretId=b)
    assert read_ok(secref_bin, tmp_path, f"aws-sm://{b}") == bytes(range(256))
    whole = json.loads(boto3_value(sm, SecretId=j))
    for field, value in whole.items():
        expected = value.encode() if isinstance(value, str) else json.dumps(value, separators=(",", ":")).encode()
        assert read_ok(secref_bin, tmp_path, f"aws-sm://{j}#{field}") == expected
    # By ARN too.
    arn = sm.describe_secret(SecretId=s)["ARN"]
    assert read_ok(secref_bin, tmp_path, f"aws-sm://{arn}") == boto3_value(sm, SecretId=arn)


def test_version_stages_and_ids(clients, secref_bin, tmp_path):
    sm, _ = clients
    s = name("py/staged")
    v1 = sm.create_secret(Name=s, SecretString="one")["VersionId"]
    sm.put_secret_value(SecretId=s, SecretString="two")
    v3 = sm.put_secret_value(SecretId=s, SecretString="three", VersionStages=["CUSTOM"])["VersionId"]
    for stage in ["AWSCURRENT", "AWSPREVIOUS", "CUSTOM"]:
        mine = read_ok(secref_bin, tmp_path, f"aws-sm://{s}?version-stage={stage}")
        assert mine == boto3_value(sm, SecretId=s, VersionStage=stage)
    assert read_ok(secref_bin, tmp_path, f"aws-sm://{s}") == b"two"
    for vid in [v1, v3]:
        mine = read_ok(secref_bin, tmp_path, f"aws-sm://{s}?version-id={vid}")
        assert mine == boto3_value(sm, SecretId=s, VersionId=vid)


def test_deleted_and_missing_secrets_fail_for_both(clients, secref_bin, tmp_path):
    import botocore.exceptions

    sm, _ = clients
    s = name("py/deleted")
    sm.create_secret(Name=s, SecretString="deleted-value")
    sm.delete_secret(SecretId=s)
    for sid in [s, name("py/never")]:
        with pytest.raises(botocore.exceptions.ClientError):
            sm.get_secret_value(SecretId=sid)
        p = secref_get(secref_bin, tmp_path, f"aws-sm://{sid}")
        assert p.returncode == 3, p.stderr.decode()
        assert b"error[not_found]" in p.stderr
        assert p.stdout == b""
        assert b"deleted-value" not in p.stderr


def test_ssm_parameters(clients, secref_bin, tmp_path):
    _, ssm = clients
    root = "/" + name("py")
    params = {
        f"{root}/db/password": ("SecureString", "s3cure-pässword"),
        f"{root}/db/host": ("String", "db.internal"),
        f"{root}/list": ("StringList", "a,b,c"),
        name("py.flat"): ("SecureString", "flat-secure"),
    }
    for n, (kind, value) in params.items():
        ssm.put_parameter(Name=n, Value=value, Type=kind)
    pw = f"{root}/db/password"
    ssm.put_parameter(Name=pw, Value="rotated-pässword", Type="SecureString", Overwrite=True)
    for n in params:
        expected = ssm.get_parameter(Name=n, WithDecryption=True)["Parameter"]["Value"].encode()
        assert read_ok(secref_bin, tmp_path, f"aws-ssm://{n}") == expected
    for version in [1, 2]:
        expected = ssm.get_parameter(Name=f"{pw}:{version}", WithDecryption=True)["Parameter"]["Value"]
        assert read_ok(secref_bin, tmp_path, f"aws-ssm://{pw}?version={version}") == expected.encode()
    p = secref_get(secref_bin, tmp_path, f"aws-ssm://{pw}?version=9")
    assert p.returncode == 3 and b"error[not_found]" in p.stderr
