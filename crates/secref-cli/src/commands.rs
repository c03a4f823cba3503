//! One function per subcommand. Each returns the process exit code; errors
//! are printed here, in one place, by [`dispatch`].

use std::io::Write;
use std::sync::Arc;

use secref::{Config, Error, ErrorCode, Resolver, Secret, SecretRef};

use crate::cli::{Command, ExportFormat, VarArgs};
use crate::mask::{Patterns, MIN_SECRET_LEN};
use crate::report::{self, Failure, EXIT_OK};
use crate::vars::{self, VarValue};
use crate::{child, export, store_cmds};

/// Runs a subcommand and turns its outcome into an exit code.
pub async fn dispatch(command: Command) -> i32 {
    let result: secref::Result<i32> = match command {
        Command::Init => store_cmds::init(),
        Command::Set {
            reference,
            raw,
            cas,
        } => store_cmds::set(&reference, raw, cas),
        Command::Rm { reference, destroy } => store_cmds::rm(&reference, destroy),
        Command::Destroy {
            reference,
            versions,
        } => store_cmds::destroy(&reference, &versions),
        Command::Undelete {
            reference,
            versions,
        } => store_cmds::undelete(&reference, &versions),
        Command::History { reference, json } => store_cmds::history(&reference, json),
        Command::Ls => store_cmds::ls(),
        Command::Get {
            reference,
            no_newline,
        } => get(&reference, no_newline).await,
        Command::Run {
            vars,
            no_masking,
            pass_env,
            watch,
            command,
        } => return finish(run(&vars, no_masking, &pass_env, &watch, &command).await),
        Command::Export { vars, format } => export_vars(&vars, format).await,
        Command::Ref {
            json,
            schemes: true,
            ..
        } => Ok(list_schemes(json)),
        Command::Ref {
            json,
            tenant,
            allowed_mounts,
            references,
            schemes: false,
        } => Ok(parse_refs(
            &references,
            json,
            tenant.as_deref(),
            &allowed_mounts,
        )),
        Command::Check { vars } => check(&vars).await,
        Command::Import {
            file,
            ref_prefix,
            output,
            dry_run,
        } => crate::import::run(&file, ref_prefix.as_deref(), output.as_deref(), dry_run),
        Command::Completions { shell } => crate::completions::print(shell),
        Command::Serve(args) => crate::serve::run(args).await.map(|()| EXIT_OK),
        Command::Inject(args) => crate::inject::run(args).await,
        Command::Audit(args) => crate::audit_cmd::run(args),
    };
    finish(result.map_err(Failure::from))
}

/// Prints a failure; returns the exit code.
fn finish(result: Result<i32, Failure>) -> i32 {
    match result {
        Ok(code) => code,
        Err(f) => {
            report::print(&f.error);
            f.exit_code
        }
    }
}

/// The resolver every command uses, from `secref.toml` and the environment.
fn resolver(cfg: &Config) -> secref::Result<Resolver> {
    Resolver::from_config(cfg)
}

/// Writes to stdout; a closed pipe (`| head`) is not an error worth a
/// message, so it ends the command quietly.
pub fn write_stdout(bytes: &[u8]) -> secref::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(Error::new(
            ErrorCode::Io,
            format!("cannot write to stdout: {}", e.kind()),
        )),
    }
}

async fn get(reference: &str, no_newline: bool) -> secref::Result<i32> {
    let r = vars::parse_reference(reference)?;
    let cfg = Config::load()?;
    let secret = resolver(&cfg)?.resolve(&r).await?;
    let mut out = zeroize::Zeroizing::new(secret.expose_bytes().to_vec());
    // A panic with the value in memory, so the leak harness
    // (tests/leak_harness.rs) can prove the panic path prints none of it.
    // Debug builds only: a release binary has no such switch.
    #[cfg(debug_assertions)]
    if std::env::var_os("SECREF_TEST_PANIC").is_some() {
        panic!("SECREF_TEST_PANIC: forced panic in `get` after resolving {r}");
    }
    if !no_newline {
        out.push(b'\n');
    }
    write_stdout(&out)?;
    Ok(EXIT_OK)
}

async fn run(
    args: &VarArgs,
    no_masking: bool,
    pass_env: &[String],
    watch: &crate::rotate::RunWatchArgs,
    command: &[std::ffi::OsString],
) -> Result<i32, Failure> {
    let cfg = Config::load()?;
    let withhold = child::withheld(&cfg, pass_env)?;
    let resolver = resolver(&cfg)?;
    let vars = vars::collect(args, &cfg, &resolver, &withhold).await?;
    let resolved = vars::resolve_all(&resolver, &vars, "nothing was run").await?;
    let store = watch
        .watch
        .then(|| crate::deliver::store_path(&cfg))
        .flatten();
    // Its environment snapshot holds secref's credentials: wipe it (the
    // allocator zeroes freed memory) rather than keep it while the command
    // runs.
    drop(cfg);
    if watch.watch {
        let start = crate::rotate::Start {
            vars: &vars,
            values: resolved.values,
            secrets: resolved.secrets,
            masking: !no_masking,
            withhold: &withhold,
            command,
            store,
        };
        return crate::rotate::run(watch, resolver, start).await;
    }
    drop(resolver);
    let patterns = if no_masking {
        None
    } else {
        masking_patterns(&resolved.secrets)?
    };
    child::run(command, &resolved.values, &withhold, patterns).await
}

/// The masker's patterns for `secrets` (a warning names each value too
/// short to mask); `None` when nothing is long enough to mask.
pub fn masking_patterns(secrets: &[(String, Secret)]) -> Result<Option<Arc<Patterns>>, Failure> {
    for (name, value) in secrets {
        if value.len() < MIN_SECRET_LEN {
            eprintln!("warning: {name}: values shorter than {MIN_SECRET_LEN} bytes are not masked");
        }
    }
    let patterns = Patterns::new(secrets.iter().map(|(_, s)| s.expose_bytes()));
    if !patterns.is_usable() {
        return Err(Error::new(
            ErrorCode::Unsupported,
            "the secret values are too large to mask; nothing was run",
        )
        .with_hint("pass --no-masking if the command's output is safe")
        .into());
    }
    // Nothing long enough to mask: let the command write directly.
    Ok((!patterns.is_empty()).then(|| Arc::new(patterns)))
}

async fn export_vars(args: &VarArgs, format: ExportFormat) -> secref::Result<i32> {
    let cfg = Config::load()?;
    let resolver = resolver(&cfg)?;
    // What `run` would withhold from its command is not printed either.
    let withhold = child::withheld(&cfg, &[])?;
    let vars = vars::collect(args, &cfg, &resolver, &withhold).await?;
    let resolved = vars::resolve_all(&resolver, &vars, "nothing was exported").await?;
    let out = export::render(format, &resolved.values)?;
    write_stdout(&out)?;
    Ok(EXIT_OK)
}

async fn check(args: &VarArgs) -> secref::Result<i32> {
    let cfg = Config::load()?;
    let resolver = resolver(&cfg)?;
    // `check` shows no value: nothing to withhold.
    let vars = vars::collect(args, &cfg, &resolver, &[]).await?;
    let partial = resolver
        .read_many(vars::references(&vars))
        .partial()
        .await?;
    let mut rows = vec![[
        "NAME".to_string(),
        "REF".to_string(),
        "PROVIDER".to_string(),
        "STATUS".to_string(),
    ]];
    let mut failures = Vec::new();
    for v in &vars {
        let row = match &v.value {
            VarValue::Plain(_) => [
                v.name.clone(),
                "(plain value)".to_string(),
                "-".to_string(),
                "ok".to_string(),
            ],
            VarValue::Ref(r) => {
                let provider = resolver.provider_for(r).unwrap_or("-").to_string();
                let status = match partial.failures.get(r) {
                    Some(e) => {
                        failures.push((v.name.clone(), e.clone()));
                        e.code().as_str().to_string()
                    }
                    None => "ok".to_string(),
                };
                [v.name.clone(), r.to_string(), provider, status]
            }
        };
        rows.push(row);
    }
    write_stdout(table(&rows).as_bytes())?;
    for (name, e) in &failures {
        report::print(&report::prefixed(e, name));
    }
    Ok(failures
        .first()
        .map_or(EXIT_OK, |(_, e)| report::exit_code(e)))
}

/// Left-aligned columns separated by two spaces.
fn table(rows: &[[String; 4]]) -> String {
    let mut widths = [0usize; 4];
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}  ", w = widths[i]));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `secref ref --schemes`: every scheme of the provider registry, with its
/// provider and whether it is host-local; `--json` adds what the provider
/// can do, the environment variables it reads and which of them hold
/// credentials (names only).
fn list_schemes(json: bool) -> i32 {
    let rows = secref::registry::specs()
        .iter()
        .flat_map(|spec| spec.schemes.iter().map(move |scheme| (*scheme, spec)));
    let text = if json {
        let list: Vec<serde_json::Value> = rows
            .map(|(scheme, spec)| {
                let c = spec.capabilities;
                serde_json::json!({
                    "scheme": scheme,
                    "provider": spec.name,
                    "host_local": spec.host_local,
                    "capabilities": {
                        "wrap": c.wrap,
                        "versions": c.versions,
                        "leases": c.leases,
                        "list": c.list,
                        "write": c.write,
                    },
                    "env_vars": spec.env_vars,
                    "credential_env_vars": spec.credential_env_vars,
                })
            })
            .collect();
        format!(
            "{}\n",
            serde_json::to_string_pretty(&list).unwrap_or_default()
        )
    } else {
        rows.map(|(scheme, spec)| {
            let local = if spec.host_local { "\thost-local" } else { "" };
            format!("{scheme}\t{}{local}\n", spec.name)
        })
        .collect()
    };
    let _ = write_stdout(text.as_bytes());
    EXIT_OK
}

/// `secref ref`: parses each reference and prints it; returns the exit code.
fn parse_refs(
    references: &[String],
    json: bool,
    tenant: Option<&str>,
    allowed_mounts: &[String],
) -> i32 {
    let mut exit = EXIT_OK;
    let mut json_out = Vec::new();
    let mut text_out = String::new();
    for input in references {
        let parsed = vars::not_echoed(
            input,
            match tenant {
                Some(t) => SecretRef::parse_for_tenant(input, t, allowed_mounts),
                None => SecretRef::parse(input),
            },
        );
        match parsed {
            Ok(r) => {
                if json {
                    let mut obj = serde_json::Map::new();
                    obj.insert("input".into(), input.as_str().into());
                    obj.insert("ok".into(), true.into());
                    obj.insert("canonical".into(), r.to_canonical().into());
                    obj.insert("scheme".into(), r.scheme().into());
                    obj.insert("provider".into(), r.provider_family().into());
                    let parts: serde_json::Map<String, serde_json::Value> = r
                        .parts()
                        .into_iter()
                        .map(|(k, v)| (k.to_string(), v))
                        .collect();
                    obj.insert("parts".into(), parts.into());
                    json_out.push(serde_json::Value::Object(obj));
                } else {
                    text_out.push_str(&format!("{r}\n"));
                    text_out.push_str(&format!("  scheme: {}\n", r.scheme()));
                    text_out.push_str(&format!("  provider: {}\n", r.provider_family()));
                    for (k, v) in r.parts() {
                        let shown = match v {
                            serde_json::Value::String(s) => s,
                            other => other.to_string(),
                        };
                        text_out.push_str(&format!("  {k}: {shown}\n"));
                    }
                }
            }
            Err(e) => {
                if exit == EXIT_OK {
                    exit = report::exit_code(&e);
                }
                if json {
                    let mut err = serde_json::Map::new();
                    err.insert("code".into(), e.code().as_str().into());
                    err.insert("message".into(), e.message().into());
                    if let Some(h) = e.hint() {
                        err.insert("hint".into(), h.into());
                    }
                    let mut obj = serde_json::Map::new();
                    obj.insert("input".into(), input.as_str().into());
                    obj.insert("ok".into(), false.into());
                    obj.insert("error".into(), err.into());
                    json_out.push(serde_json::Value::Object(obj));
                } else {
                    // Flush what came before so stdout and stderr stay in order.
                    let _ = write_stdout(std::mem::take(&mut text_out).as_bytes());
                    report::print(&e);
                }
            }
        }
    }
    if json {
        let text = serde_json::to_string_pretty(&json_out).unwrap_or_default();
        let _ = write_stdout(format!("{text}\n").as_bytes());
    } else {
        let _ = write_stdout(text_out.as_bytes());
    }
    exit
}
