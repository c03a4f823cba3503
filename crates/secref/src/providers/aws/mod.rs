//! Amazon Web Services: what the `aws-sm://` ([`sm`]) and `aws-ssm://`
//! ([`ssm`]) providers share — the credential chain, the region, endpoint
//! resolution, SigV4 signing (the official `aws-sigv4` signer) and the
//! mapping of AWS JSON 1.1 error answers to [`ErrorCode`]s.
//!
//! # Configuration
//!
//! ```toml
//! [aws]
//! region = "eu-west-1"        # else AWS_REGION, AWS_DEFAULT_REGION, the profile's region
//! profile = "ci"              # else AWS_PROFILE, else "default"
//! endpoint_url = "http://127.0.0.1:5000"  # else AWS_ENDPOINT_URL_<SERVICE>, AWS_ENDPOINT_URL, the profile's endpoint_url
//! timeout_seconds = 30
//! ```
//!
//! Credentials come from the standard chain, in the SDK's order:
//! `AWS_ACCESS_KEY_ID` + `AWS_SECRET_ACCESS_KEY` (+ `AWS_SESSION_TOKEN`), then
//! the profile in the shared credentials file (`AWS_SHARED_CREDENTIALS_FILE`,
//! `~/.aws/credentials`), then the same profile in the shared config file
//! (`AWS_CONFIG_FILE`, `~/.aws/config`, `[profile <name>]`). SSO, web
//! identity, `credential_process` and instance metadata are not supported.
//! Missing credentials or region fail each AWS read (`unauthenticated` /
//! `config`), so other schemes keep working.
//!
//! Endpoints must be `https://`; plain `http://` is accepted only for
//! loopback hosts (a local test server such as moto), so neither a
//! signature nor a value ever crosses the network in clear text.

pub mod sm;
pub mod ssm;

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use reqwest::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use serde::Deserialize;
use url::Url;
use zeroize::Zeroizing;

use crate::config::{self, Config, Env};
use crate::credentials::{CredentialChain, CredentialField, CredentialSource};
use crate::error::{Error, ErrorCode, Result};
use crate::http::{self, ClientOptions, HttpClient};
use crate::reference::{ParseInput, ParsedRef, SecretRef};
use crate::provider::{Capabilities, Provider};
use crate::registry::{BuildFn, PartValue, ProviderSpec};
use crate::secret::Secret;

/// The environment variables both AWS providers read.
pub(crate) const ENV_VARS: &[&str] = &[
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_CONFIG_FILE",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_SECRETS_MANAGER",
    "AWS_ENDPOINT_URL_SSM",
    "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS",
];

/// The registry entry of one AWS service's provider: its name (also its
/// only scheme), grammar and constructor; the rest (the `aws` feature, the
/// `[aws]` section, the variables and credentials) both providers share.
pub(crate) const fn spec(
    name: &'static str,
    schemes: &'static [&'static str],
    capabilities: Capabilities,
    parse: fn(&ParseInput<'_>) -> Result<ParsedRef>,
    parts: fn(&SecretRef) -> Vec<(&'static str, PartValue)>,
    build: BuildFn,
) -> ProviderSpec {
    ProviderSpec {
        name,
        schemes,
        feature: Some("aws"),
        host_local: false,
        config_section: Some("aws"),
        env_vars: ENV_VARS,
        credential_env_vars: &["AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"],
        capabilities,
        parse,
        parts,
        credentials: credential_fields,
        build,
    }
}

/// Requests in flight at once for one batch.
pub(crate) const CONCURRENCY: usize = 8;

/// What is particular to one AWS service's provider: its [`Service`], how it
/// names a value and reads one or a batch of them. Construction
/// ([`with_chain`], [`build`]) and the batch plan ([`read_all`]) are shared.
#[async_trait::async_trait]
pub(crate) trait AwsReader: Provider + Sized + 'static {
    /// The service the provider calls.
    const SERVICE: &'static Service;
    /// The most names one batch call takes.
    const BATCH: usize;
    /// Which version of which value: one single read.
    type Key: Ord + Clone + Send + Sync;
    /// One read value.
    type Value: Send;

    /// The provider around its configured client.
    fn from_client(client: Client) -> Self;
    /// Whether `key` asks for the current version (which a batch call reads).
    fn is_current(key: &Self::Key) -> bool;
    /// One key's single read.
    async fn get(&self, key: &Self::Key) -> Result<Self::Value>;
    /// Reads current keys in one call, filling `out` for each key AWS
    /// answered for; the others are left for [`AwsReader::get`].
    async fn batch(
        &self,
        keys: &[&Self::Key],
        out: &mut BTreeMap<Self::Key, Result<Self::Value>>,
    ) -> Result<()>;
}

/// `P` as `cfg` configures it, with credentials from `chain`.
pub(crate) fn with_chain<P: AwsReader>(
    cfg: &Config,
    chain: &CredentialChain<Credentials>,
) -> Result<P> {
    Client::from_config(cfg, P::SERVICE, chain).map(P::from_client)
}

/// The registry's constructor of `P`: credentials from [`default_chain`].
pub(crate) fn build<P: AwsReader>(cfg: &Config) -> Result<Option<Arc<dyn Provider>>> {
    Ok(Some(Arc::new(with_chain::<P>(cfg, &default_chain())?)))
}

/// Reads every distinct key of `wanted` once: current ones in batch calls
/// (when there are two or more), the rest one by one, [`CONCURRENCY`] at a
/// time. A request-level error ([`is_request_level`]) fails the whole read,
/// so the resolver may serve a stale value within its grace.
pub(crate) async fn read_all<P: AwsReader>(
    provider: &P,
    wanted: Vec<&P::Key>,
) -> Result<BTreeMap<P::Key, Result<P::Value>>> {
    let mut unique = wanted;
    unique.sort();
    unique.dedup();
    let mut values = BTreeMap::new();
    let current: Vec<&P::Key> = unique.iter().copied().filter(|k| P::is_current(k)).collect();
    if current.len() > 1 {
        for chunk in current.chunks(P::BATCH) {
            provider.batch(chunk, &mut values).await?;
        }
    }
    let rest: Vec<&P::Key> = unique
        .into_iter()
        .filter(|k| !values.contains_key(*k))
        .collect();
    // Futures collected first: a closure held across the await trips
    // async_trait's Send check.
    let jobs: Vec<_> = rest.into_iter().map(|k| get_keyed(provider, k)).collect();
    let mut singles = futures::stream::iter(jobs).buffer_unordered(CONCURRENCY);
    while let Some((k, res)) = singles.next().await {
        match res {
            Err(e) if is_request_level(&e) => return Err(e),
            res => {
                values.insert(k.clone(), res);
            }
        }
    }
    Ok(values)
}

async fn get_keyed<'k, P: AwsReader>(
    provider: &P,
    key: &'k P::Key,
) -> (&'k P::Key, Result<P::Value>) {
    (key, provider.get(key).await)
}

/// One AWS service as the wire protocol names it.
#[derive(Debug)]
pub(crate) struct Service {
    /// The SigV4 signing name and endpoint host prefix.
    signing_name: &'static str,
    /// The `X-Amz-Target` prefix (`secretsmanager.GetSecretValue`).
    target_prefix: &'static str,
    /// The service-specific endpoint variable.
    endpoint_env: &'static str,
    /// The provider's name in errors.
    provider: &'static str,
}

/// AWS Secrets Manager.
pub(crate) const SECRETS_MANAGER: Service = Service {
    signing_name: "secretsmanager",
    target_prefix: "secretsmanager",
    endpoint_env: "AWS_ENDPOINT_URL_SECRETS_MANAGER",
    provider: "aws-sm",
};

/// AWS Systems Manager Parameter Store.
pub(crate) const SSM: Service = Service {
    signing_name: "ssm",
    target_prefix: "AmazonSSM",
    endpoint_env: "AWS_ENDPOINT_URL_SSM",
    provider: "aws-ssm",
};

/// The `[aws]` table of `secref.toml`.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Table {
    region: Option<String>,
    profile: Option<String>,
    endpoint_url: Option<String>,
    timeout_seconds: Option<f64>,
}

/// Static AWS credentials, what a link of the AWS credential chain finds.
/// `Debug` shows neither key.
#[derive(Clone)]
pub struct Credentials {
    /// The access key id.
    pub access_key_id: Secret,
    /// The secret access key.
    pub secret_access_key: Secret,
    /// The session token of temporary credentials.
    pub session_token: Option<Secret>,
}

/// The chain's first built-in link: `AWS_ACCESS_KEY_ID` +
/// `AWS_SECRET_ACCESS_KEY` (+ `AWS_SESSION_TOKEN`), named `environment`.
#[derive(Debug)]
pub struct EnvironmentSource;

impl CredentialSource<Credentials> for EnvironmentSource {
    fn name(&self) -> &str {
        "environment"
    }
    fn credentials(&self, cfg: &Config) -> Result<Option<Credentials>> {
        let env = &cfg.env;
        match (
            env.get("AWS_ACCESS_KEY_ID"),
            env.get("AWS_SECRET_ACCESS_KEY"),
        ) {
            (Some(id), Some(secret)) => Ok(Some(Credentials {
                access_key_id: Secret::from(id),
                secret_access_key: Secret::from(secret),
                session_token: env.get("AWS_SESSION_TOKEN").map(Secret::from),
            })),
            (Some(_), None) | (None, Some(_)) => Err(Error::config(
                "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY must be set together",
            )),
            (None, None) => Ok(None),
        }
    }
}

/// The second: the profile's keys in the shared credentials file, then in
/// the shared config file (named `profile`).
#[derive(Debug)]
pub struct ProfileSource;

impl CredentialSource<Credentials> for ProfileSource {
    fn name(&self) -> &str {
        "profile"
    }
    fn credentials(&self, cfg: &Config) -> Result<Option<Credentials>> {
        let table: Table = cfg.section("aws")?.unwrap_or_default();
        let files = ProfileFiles::load(&cfg.env, &profile_name(&table, &cfg.env))?;
        profile_credentials(&files)
    }
}

/// The SDK's order: [`EnvironmentSource`], [`ProfileSource`]. Insert your
/// own link with [`CredentialChain::insert`] and build a provider with
/// [`sm::SecretsManagerProvider::with_chain`] /
/// [`ssm::ParameterStoreProvider::with_chain`].
pub fn default_chain() -> CredentialChain<Credentials> {
    let mut chain = CredentialChain::new();
    chain.push(EnvironmentSource).push(ProfileSource);
    chain
}

/// Where AWS credentials are read ([`crate::credentials`]); each may be a
/// reference (`AWS_SECRET_ACCESS_KEY=local://aws/ci#secret_access_key`).
pub(crate) fn credential_fields(_cfg: &Config) -> Vec<CredentialField> {
    ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"]
        .into_iter()
        .map(|v| CredentialField::Env(v.into()))
        .collect()
}

fn profile_name(table: &Table, env: &Env) -> String {
    table
        .profile
        .as_deref()
        .or_else(|| env.get("AWS_PROFILE"))
        .unwrap_or("default")
        .to_owned()
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Credentials([REDACTED])")
    }
}

/// A signing, size-capped client for one AWS service. Problems found while
/// configuring it (no credentials, no region, a bad endpoint from the
/// environment) are kept and returned by every call instead of failing the
/// whole resolver.
#[derive(Debug)]
pub(crate) struct Client {
    http: HttpClient,
    service: &'static Service,
    target: std::result::Result<Target, Error>,
    /// Whether anything AWS is set up (`[aws]`, an `AWS_*` variable): the
    /// providers are always registered, and a host without AWS must not be
    /// reported not ready for them.
    configured: bool,
}

#[derive(Debug)]
struct Target {
    region: String,
    endpoint: Url,
    credentials: Credentials,
}

/// A successful answer's body (it holds secret values: wiped on drop).
pub(crate) type Body = Zeroizing<Vec<u8>>;

impl Client {
    /// Reads `[aws]` and the environment for `service`, with credentials
    /// from `chain`. Only a wrong `[aws]` table is an error here.
    pub(crate) fn from_config(
        cfg: &Config,
        service: &'static Service,
        chain: &CredentialChain<Credentials>,
    ) -> Result<Client> {
        let table: Table = cfg.section("aws")?.unwrap_or_default();
        let timeout = match table.timeout_seconds {
            Some(s) => config::check_timeout("aws.timeout_seconds", s)?,
            None => Duration::from_secs(30),
        };
        if let Some(url) = &table.endpoint_url {
            config::validate_base_url("aws.endpoint_url", url)?;
        }
        let http = ClientOptions::default()
            .timeout(timeout)
            .build_for(service.provider)?;
        let target = resolve_target(&table, cfg, service, chain)
            .map_err(|e| e.with_provider(service.provider));
        let configured = cfg.has_section("aws") || ENV_VARS.iter().any(|v| cfg.env.get(v).is_some());
        Ok(Client {
            http,
            service,
            target,
            configured,
        })
    }

    /// Calls `operation` with a JSON body; a 2xx answer's body, or the AWS
    /// error it carried.
    pub(crate) async fn call(&self, operation: &str, body: &serde_json::Value) -> Result<Body> {
        let t = self.target.as_ref().map_err(Clone::clone)?;
        let payload = serde_json::to_vec(body)
            .map_err(|_| Error::internal("cannot encode an AWS request"))?;
        let target_header = format!("{}.{operation}", self.service.target_prefix);
        let content_type = "application/x-amz-json-1.1";
        let signed = sign(t, self.service, &target_header, content_type, &payload)?;
        let mut req = self
            .http
            .post(t.endpoint.clone())
            .header(CONTENT_TYPE, content_type)
            .header("x-amz-target", &target_header);
        for (name, value) in signed {
            req = req.header(name, value);
        }
        tracing::trace!(operation, "AWS request");
        let reply = self.http.send(req.body(payload)).await?;
        if reply.is_success() {
            return Ok(reply.body);
        }
        Err(error_answer(&reply, operation).with_provider(self.service.provider))
    }

    /// `operation` answered at all, its body dropped: the cheapest signed
    /// call proves the endpoint is reachable and the credentials are
    /// accepted (readiness checks, [`Provider::health`](crate::provider::Provider::health)).
    /// Without any AWS set-up there is nothing to check: ready.
    pub(crate) async fn probe(&self, operation: &str) -> Result<()> {
        if self.target.is_err() && !self.configured {
            return Ok(());
        }
        // One result at most: nothing but the answer's status matters.
        self.call(operation, &serde_json::json!({ "MaxResults": 1 }))
            .await
            .map(drop)
    }

    /// The provider name, for errors.
    pub(crate) fn provider(&self) -> &'static str {
        self.service.provider
    }
}

/// The SigV4 headers (`authorization`, `x-amz-date`, and
/// `x-amz-security-token` with a session token) for one request.
fn sign(
    t: &Target,
    service: &Service,
    target_header: &str,
    content_type: &str,
    payload: &[u8],
) -> Result<Vec<(HeaderName, HeaderValue)>> {
    use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
    use aws_sigv4::sign::v4;

    let text = |s: &Secret| {
        s.as_text()
            .map(str::to_owned)
            .map_err(|_| Error::config("AWS credentials must be UTF-8 text"))
    };
    // aws-credential-types keeps the secret key and token zeroizing and
    // redacted in Debug; this copy lives only for one signature.
    let identity = aws_credential_types::Credentials::new(
        text(&t.credentials.access_key_id)?,
        text(&t.credentials.secret_access_key)?,
        t.credentials.session_token.as_ref().map(text).transpose()?,
        None,
        "secref",
    )
    .into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(&t.region)
        .name(service.signing_name)
        .time(SystemTime::now())
        .settings(SigningSettings::default())
        .build()
        .map_err(|_| Error::internal("cannot build the SigV4 signing parameters"))?
        .into();
    let headers = [
        ("content-type", content_type),
        ("x-amz-target", target_header),
    ];
    let request = SignableRequest::new(
        "POST",
        t.endpoint.as_str(),
        headers.into_iter(),
        SignableBody::Bytes(payload),
    )
    .map_err(|_| Error::config("the AWS endpoint URL cannot be signed"))?;
    let (instructions, _signature) = sign(request, &params)
        .map_err(|_| Error::internal("SigV4 signing failed"))?
        .into_parts();
    let (headers, _query) = instructions.into_parts();
    headers
        .into_iter()
        .map(|h| {
            let name = HeaderName::from_bytes(h.name().as_bytes())
                .map_err(|_| Error::internal("SigV4 produced an invalid header name"))?;
            let mut value = HeaderValue::from_str(h.value()).map_err(|_| {
                Error::config("AWS credentials have characters not allowed in a header")
            })?;
            value.set_sensitive(h.sensitive() || name == "authorization");
            Ok((name, value))
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Region, endpoint and credentials
// ---------------------------------------------------------------------------

fn resolve_target(
    table: &Table,
    cfg: &Config,
    service: &Service,
    chain: &CredentialChain<Credentials>,
) -> Result<Target> {
    let env = &cfg.env;
    let profile_name = profile_name(table, env);
    let explicit_profile = table.profile.is_some() || env.get("AWS_PROFILE").is_some();
    let files = ProfileFiles::load(env, &profile_name)?;
    if explicit_profile && files.credentials.is_none() && files.config.is_none() {
        return Err(Error::config(format!(
            "AWS profile '{}' is not in the shared config or credentials file",
            crate::reference::printable(&profile_name)
        )));
    }
    let region = table
        .region
        .as_deref()
        .or_else(|| env.get("AWS_REGION"))
        .or_else(|| env.get("AWS_DEFAULT_REGION"))
        .or_else(|| files.config_value("region"))
        .ok_or_else(|| {
            Error::config("no AWS region configured")
                .with_hint("set AWS_REGION, or region in [aws] or the AWS profile")
        })?
        .trim()
        .to_owned();
    if region.is_empty()
        || !region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(Error::config(format!(
            "AWS region '{}' is not a region name",
            crate::reference::printable(&region)
        )));
    }
    let endpoint = endpoint(table, env, &files, service, &region)?;
    let credentials = match chain.find(cfg)? {
        Some((c, _source)) => c,
        None => return Err(Error::new(ErrorCode::Unauthenticated, "no AWS credentials found")
            .with_hint("set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE with keys in ~/.aws/credentials")),
    };
    Ok(Target {
        region,
        endpoint,
        credentials,
    })
}

/// The endpoint, in the order of the SDKs' "service-specific endpoints"
/// rules: explicit config, `AWS_ENDPOINT_URL_<SERVICE>`, `AWS_ENDPOINT_URL`,
/// the profile's `endpoint_url`, else the public regional endpoint.
fn endpoint(
    table: &Table,
    env: &Env,
    files: &ProfileFiles,
    service: &Service,
    region: &str,
) -> Result<Url> {
    if let Some(url) = &table.endpoint_url {
        return config::validate_base_url("aws.endpoint_url", url);
    }
    let ignore = match env.get("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS") {
        Some(raw) => config::parse_bool("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", raw)?,
        None => false,
    };
    if !ignore {
        for name in [service.endpoint_env, "AWS_ENDPOINT_URL"] {
            if let Some(url) = env.get(name) {
                return config::validate_base_url(name, url);
            }
        }
        if let Some(url) = files.config_value("endpoint_url") {
            return config::validate_base_url("endpoint_url (AWS profile)", url);
        }
    }
    let suffix = if region.starts_with("cn-") {
        "amazonaws.com.cn"
    } else {
        "amazonaws.com"
    };
    config::validate_base_url(
        "AWS endpoint",
        &format!("https://{}.{region}.{suffix}", service.signing_name),
    )
}

fn profile_credentials(files: &ProfileFiles) -> Result<Option<Credentials>> {
    // The credentials file wins over the config file for the same profile.
    for section in [&files.credentials, &files.config].into_iter().flatten() {
        let get = |k: &str| section.get(k).map(|v| v.as_str()).filter(|v| !v.is_empty());
        match (get("aws_access_key_id"), get("aws_secret_access_key")) {
            (Some(id), Some(secret)) => {
                return Ok(Some(Credentials {
                    access_key_id: Secret::from(id),
                    secret_access_key: Secret::from(secret),
                    session_token: get("aws_session_token").map(Secret::from),
                }))
            }
            (Some(_), None) | (None, Some(_)) => {
                return Err(Error::config(format!(
                    "AWS profile '{}' has only one of aws_access_key_id and aws_secret_access_key",
                    crate::reference::printable(&files.profile)
                )))
            }
            (None, None) => {}
        }
    }
    Ok(None)
}

type Section = BTreeMap<String, Zeroizing<String>>;

/// One profile's sections of the shared credentials and config files.
struct ProfileFiles {
    profile: String,
    credentials: Option<Section>,
    config: Option<Section>,
}

impl ProfileFiles {
    fn load(env: &Env, profile: &str) -> Result<ProfileFiles> {
        let home = env.get("HOME").map(PathBuf::from).or_else(dirs::home_dir);
        let path = |var: &str, name: &str| {
            env.get(var)
                .map(PathBuf::from)
                .or_else(|| home.as_ref().map(|h| h.join(".aws").join(name)))
        };
        let creds = read_optional(path("AWS_SHARED_CREDENTIALS_FILE", "credentials"))?;
        let conf = read_optional(path("AWS_CONFIG_FILE", "config"))?;
        // In the config file every profile but `default` is `[profile x]`.
        let conf_header = format!("profile {profile}");
        Ok(ProfileFiles {
            profile: profile.to_owned(),
            credentials: creds.and_then(|t| ini_section(&t, &[profile])),
            config: conf.and_then(|t| {
                if profile == "default" {
                    ini_section(&t, &["default", "profile default"])
                } else {
                    ini_section(&t, &[conf_header.as_str()])
                }
            }),
        })
    }

    fn config_value(&self, key: &str) -> Option<&str> {
        self.config
            .as_ref()?
            .get(key)
            .map(|v| v.as_str())
            .filter(|v| !v.is_empty())
    }
}

fn read_optional(path: Option<PathBuf>) -> Result<Option<Zeroizing<String>>> {
    let Some(path) = path else { return Ok(None) };
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(Some(Zeroizing::new(text))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::new(
            ErrorCode::Io,
            format!("cannot read {}: {}", path.display(), e.kind()),
        )),
    }
}

/// The keys of the first section whose header is one of `names`, in the
/// AWS shared-file dialect: `#`/`;` comments, `key = value`, indented
/// sub-property lines ignored. Hand-written (30 lines) rather than a generic
/// INI crate so that the values stay in zeroizing buffers.
fn ini_section(text: &str, names: &[&str]) -> Option<Section> {
    let mut out: Option<Section> = None;
    let mut inside = false;
    for line in text.lines() {
        if line.starts_with([' ', '\t']) && inside {
            continue; // a sub-property of the previous key
        }
        let line = line.trim();
        if line.is_empty() || line.starts_with(['#', ';']) {
            continue;
        }
        if let Some(header) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            let header = header.split_whitespace().collect::<Vec<_>>().join(" ");
            inside = names.contains(&header.as_str());
            if inside {
                out.get_or_insert_with(Section::new);
            }
            continue;
        }
        if let (true, Some((k, v))) = (inside, line.split_once('=')) {
            if let Some(sec) = out.as_mut() {
                sec.insert(
                    k.trim().to_ascii_lowercase(),
                    Zeroizing::new(v.trim().to_owned()),
                );
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

/// An AWS JSON 1.1 error body. `message` is not copied into errors: only
/// the error type and the request id.
#[derive(Deserialize)]
struct ErrorBody {
    #[serde(rename = "__type")]
    kind: Option<String>,
}

/// Maps an AWS error answer to an [`Error`].
pub(crate) fn error_answer(reply: &http::Response, operation: &str) -> Error {
    let header = |name: &str| reply.headers.get(name).and_then(|v| v.to_str().ok());
    let raw = serde_json::from_slice::<ErrorBody>(&reply.body)
        .ok()
        .and_then(|b| b.kind)
        .or_else(|| header("x-amzn-errortype").map(str::to_owned));
    // `com.amazonaws.x#Name` and `Name:http://…` both mean `Name`.
    let kind = raw
        .as_deref()
        .map(|t| t.rsplit('#').next().unwrap_or(t))
        .map(|t| t.split(':').next().unwrap_or(t))
        .filter(|t| is_safe_label(t));
    let mut e = match kind {
        Some(k) => error_code(k, operation),
        None => reply.status_error(
            "aws",
            format!("AWS answered {} to {operation}", reply.status),
        ),
    };
    if let Some(k) = kind {
        e = e.with_remote_code(k);
    }
    if let Some(id) = header("x-amzn-requestid").filter(|s| is_safe_label(s)) {
        e = e.with_request_id(id);
    }
    e
}

/// Maps an AWS error type (`ResourceNotFoundException`, …). Also used for
/// the per-secret `ErrorCode` of `BatchGetSecretValue`.
pub(crate) fn error_code(kind: &str, operation: &str) -> Error {
    let (code, text) = match kind {
        "ResourceNotFoundException" | "ParameterNotFound" => {
            (ErrorCode::NotFound, "AWS has no such secret or parameter")
        }
        "ParameterVersionNotFound" | "ParameterVersionLabelNotFound" => (
            ErrorCode::NotFound,
            "AWS has no such version of the parameter",
        ),
        "InvalidRequestException" => (
            ErrorCode::NotFound,
            "AWS refused the read: the secret is marked for deletion or otherwise not readable",
        ),
        "AccessDeniedException" | "AccessDenied" | "UnauthorizedOperation" => {
            (ErrorCode::PermissionDenied, "AWS denied access")
        }
        "DecryptionFailure"
        | "InvalidKeyId"
        | "KMSAccessDeniedException"
        | "KMSDisabledException"
        | "KMSInvalidStateException"
        | "KMSNotFoundException" => (
            ErrorCode::PermissionDenied,
            "AWS could not decrypt the value with its KMS key",
        ),
        "UnrecognizedClientException"
        | "InvalidClientTokenId"
        | "InvalidSignatureException"
        | "SignatureDoesNotMatch"
        | "IncompleteSignature"
        | "MissingAuthenticationToken"
        | "ExpiredTokenException"
        | "ExpiredToken" => (ErrorCode::Unauthenticated, "AWS refused the credentials"),
        "ThrottlingException"
        | "Throttling"
        | "TooManyRequestsException"
        | "RequestLimitExceeded"
        | "ThrottledException" => (ErrorCode::RateLimited, "AWS asked to slow down"),
        "InternalServiceError"
        | "InternalServerError"
        | "InternalFailure"
        | "ServiceUnavailable" => (ErrorCode::BackendUnavailable, "AWS failed"),
        "InvalidParameterException" | "ValidationException" | "InvalidParameterValue" => (
            ErrorCode::InvalidReference,
            "AWS rejected the reference's name or version",
        ),
        _ => (
            ErrorCode::InvalidResponse,
            "AWS answered with an unexpected error",
        ),
    };
    Error::new(code, format!("{text} ({kind} to {operation})"))
}

/// Request ids and error types are short identifiers; anything else is
/// dropped rather than echoed.
fn is_safe_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Whether an error concerns the whole request (the backend could not be
/// asked, or refused the caller) rather than one secret: such errors fail
/// the batch, so the resolver may serve a stale value within its grace.
pub(crate) fn is_request_level(e: &Error) -> bool {
    e.retryable()
        || matches!(
            e.code(),
            ErrorCode::Unauthenticated | ErrorCode::Config | ErrorCode::RedirectRefused
        )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::Response;

    #[test]
    fn error_types_map_to_codes() {
        let cases = [
            ("ResourceNotFoundException", ErrorCode::NotFound, false),
            ("ParameterNotFound", ErrorCode::NotFound, false),
            ("AccessDeniedException", ErrorCode::PermissionDenied, false),
            ("DecryptionFailure", ErrorCode::PermissionDenied, false),
            ("ThrottlingException", ErrorCode::RateLimited, true),
            (
                "UnrecognizedClientException",
                ErrorCode::Unauthenticated,
                false,
            ),
            ("InternalServiceError", ErrorCode::BackendUnavailable, true),
        ];
        for (kind, code, retryable) in cases {
            let body = format!(r#"{{"__type":"{kind}","message":"s3cr3t-in-message"}}"#);
            let e = error_answer(&Response::new(400, body.as_bytes()), "GetSecretValue");
            assert_eq!(e.code(), code, "{kind}");
            assert_eq!(e.retryable(), retryable, "{kind}");
            assert_eq!(e.remote_code(), Some(kind));
            assert!(
                !format!("{e:?} {e}").contains("s3cr3t"),
                "the message is never copied"
            );
        }
        let mut throttled = Response::new(400, b"");
        throttled.headers.insert(
            "x-amzn-errortype",
            HeaderValue::from_static("ThrottlingException:http://internal"),
        );
        throttled
            .headers
            .insert("x-amzn-requestid", HeaderValue::from_static("req-7"));
        let e = error_answer(&throttled, "x");
        assert_eq!(e.code(), ErrorCode::RateLimited);
        assert_eq!(e.request_id(), Some("req-7"));
        let e = error_answer(
            &Response::new(
                400,
                br#"{"__type":"com.amazonaws.secretsmanager#AccessDeniedException"}"#,
            ),
            "x",
        );
        assert_eq!(e.code(), ErrorCode::PermissionDenied);
        assert_eq!(
            error_answer(&Response::new(503, b"<html>"), "x").code(),
            ErrorCode::BackendUnavailable
        );
    }

    #[test]
    fn profiles_are_read_in_the_aws_dialect() {
        let text = "# c\n[default]\nregion = us-east-1\n[profile ci]\nregion=eu-west-1\ns3 =\n  max_concurrent_requests = 5\n[ci]\nregion = wrong\n";
        let ci = ini_section(text, &["profile ci"]).unwrap();
        assert_eq!(ci.get("region").map(|v| v.as_str()), Some("eu-west-1"));
        assert!(!ci.contains_key("max_concurrent_requests"));
        assert!(ini_section(text, &["profile nope"]).is_none());
    }

    fn target(env: Env, service: &Service) -> Result<Target> {
        let cfg = Config {
            env,
            ..Config::default()
        };
        resolve_target(&Table::default(), &cfg, service, &default_chain())
    }

    /// A user's link inserted between the environment and the profile is
    /// used when the environment has no keys, and never before it.
    #[test]
    fn a_user_link_goes_where_it_is_inserted() {
        struct Mine;
        impl CredentialSource<Credentials> for Mine {
            fn name(&self) -> &str {
                "mine"
            }
            fn credentials(&self, _cfg: &Config) -> Result<Option<Credentials>> {
                Ok(Some(Credentials {
                    access_key_id: Secret::from("AKIDMINE"),
                    secret_access_key: Secret::from("mine-secret"),
                    session_token: None,
                }))
            }
        }
        assert_eq!(default_chain().names(), ["environment", "profile"]);
        let mut chain = default_chain();
        chain.insert(1, Mine);
        assert_eq!(chain.names(), ["environment", "mine", "profile"]);
        let cfg = |pairs: Vec<(&str, &str)>| Config {
            env: Env::from_pairs(pairs),
            ..Config::default()
        };
        let base = vec![("AWS_REGION", "us-east-1"), ("HOME", "/nonexistent")];
        let t = resolve_target(&Table::default(), &cfg(base.clone()), &SSM, &chain).unwrap();
        assert_eq!(t.credentials.access_key_id.as_text().unwrap(), "AKIDMINE");
        let mut with_env = base.clone();
        with_env.extend([("AWS_ACCESS_KEY_ID", "AKIDENV"), ("AWS_SECRET_ACCESS_KEY", "s")]);
        let t = resolve_target(&Table::default(), &cfg(with_env), &SSM, &chain).unwrap();
        assert_eq!(t.credentials.access_key_id.as_text().unwrap(), "AKIDENV");
        let e = resolve_target(&Table::default(), &cfg(base), &SSM, &default_chain()).unwrap_err();
        assert_eq!(e.code(), ErrorCode::Unauthenticated);
    }

    #[test]
    fn credentials_never_show_in_debug() {
        let env = Env::from_pairs([
            ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"),
            ("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI-canary"),
            ("AWS_SESSION_TOKEN", "token-canary"),
            ("AWS_REGION", "us-east-1"),
            ("HOME", "/nonexistent"),
        ]);
        let t = target(env, &SECRETS_MANAGER).unwrap();
        let dbg = format!("{t:?}");
        assert!(
            !dbg.contains("canary") && !dbg.contains("AKIDEXAMPLE"),
            "{dbg}"
        );
        assert_eq!(
            t.endpoint.as_str(),
            "https://secretsmanager.us-east-1.amazonaws.com/"
        );
        let headers = sign(
            &t,
            &SECRETS_MANAGER,
            "secretsmanager.GetSecretValue",
            "application/x-amz-json-1.1",
            b"{}",
        )
        .unwrap();
        let auth = headers.iter().find(|(n, _)| n == "authorization").unwrap();
        assert!(auth.1.is_sensitive());
        let auth = auth.1.to_str().unwrap();
        assert!(auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/"));
        assert!(auth.contains("/us-east-1/secretsmanager/aws4_request"));
        assert!(!auth.contains("canary"));
        assert!(headers.iter().any(|(n, _)| n == "x-amz-security-token"));
    }

    #[test]
    fn plain_http_endpoints_only_on_loopback() {
        let base = [
            ("AWS_ACCESS_KEY_ID", "a"),
            ("AWS_SECRET_ACCESS_KEY", "b"),
            ("AWS_REGION", "us-east-1"),
            ("HOME", "/nonexistent"),
        ];
        let with = |k: &'static str, v: &'static str| {
            let mut pairs = base.to_vec();
            pairs.push((k, v));
            target(Env::from_pairs(pairs), &SSM)
        };
        let e = with("AWS_ENDPOINT_URL", "http://moto.example:5000").unwrap_err();
        assert_eq!(e.code(), ErrorCode::Config);
        let t = with("AWS_ENDPOINT_URL", "http://127.0.0.1:5000").unwrap();
        assert_eq!(t.endpoint.as_str(), "http://127.0.0.1:5000/");
        // The service-specific variable wins over the global one.
        let mut pairs = base.to_vec();
        pairs.push(("AWS_ENDPOINT_URL", "http://127.0.0.1:1"));
        pairs.push(("AWS_ENDPOINT_URL_SSM", "http://127.0.0.1:2"));
        let t = target(Env::from_pairs(pairs), &SSM).unwrap();
        assert_eq!(t.endpoint.port(), Some(2));
    }
}
