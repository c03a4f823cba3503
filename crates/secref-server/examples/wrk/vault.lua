-- wrk script: Vault KV v2 read (GET /v1/secret/data/<path>) with X-Vault-Token.
wrk.method = "GET"
wrk.headers["X-Vault-Token"] = os.getenv("WRK_TOKEN") or ""
