//! The Infisical CLI's login on disk: `~/.infisical/infisical-config.json`
//! names the user and the passphrase of the `file` vault; the token is in
//! `~/infisical-keyring/<email>`, a compact JWE (`PBES2-HS256+A128KW`,
//! `A256GCM`) whose plaintext is a JSON string holding a JSON object with
//! the token in `JTWToken` (sic, as the CLI writes it).
//!
//! The JWE is decrypted here with the RustCrypto primitives (RFC 7518
//! §4.8 and §5.3) rather than a JOSE crate: only this one algorithm pair is
//! needed, and the primitives are the well-kept crates the JOSE crates use.

use std::path::Path;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use serde::Deserialize;
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::error::{Error, ErrorCode, Result};
use crate::secret::Secret;

/// The only key-management algorithm the CLI's file vault uses.
const ALG: &str = "PBES2-HS256+A128KW";
/// The only content encryption it uses.
const ENC: &str = "A256GCM";
/// Upper bound on PBKDF2 iterations (a hostile file could ask for billions);
/// go-jose, which the CLI uses, defaults to 100 000.
const MAX_P2C: u32 = 1_000_000;

#[derive(Deserialize)]
struct CliConfig {
    #[serde(rename = "vaultBackendType")]
    vault_backend_type: Option<String>,
    #[serde(rename = "vaultBackendPassphrase")]
    vault_backend_passphrase: Option<String>,
    #[serde(rename = "loggedInUserEmail")]
    logged_in_user_email: Option<String>,
    #[serde(rename = "LoggedInUserDomain")]
    logged_in_user_domain: Option<String>,
}

#[derive(Deserialize)]
struct JweHeader {
    alg: String,
    enc: String,
    p2s: String,
    p2c: u32,
    #[serde(default)]
    zip: Option<String>,
}

fn cli_error(msg: impl Into<std::borrow::Cow<'static, str>>) -> Error {
    Error::new(ErrorCode::Unauthenticated, msg)
        .with_provider("infisical")
        .with_hint(
            "run `infisical login` again, or set INFISICAL_CLIENT_ID / INFISICAL_CLIENT_SECRET",
        )
}

/// The CLI's token and base URL, if `home` has a usable `file`-vault login.
/// A missing file or missing fields mean no login (`None`), as in the SDK;
/// a login that is present but unreadable is an `unauthenticated` error.
pub(super) fn load_cli_login(home: &Path) -> Result<Option<(Secret, String)>> {
    let path = home.join(".infisical").join("infisical-config.json");
    let text = match std::fs::read(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(cli_error(format!(
                "cannot read {}: {}",
                path.display(),
                e.kind()
            )))
        }
    };
    let cfg: CliConfig = serde_json::from_slice(&text)
        .map_err(|_| cli_error(format!("{} is not the expected JSON", path.display())))?;
    if cfg.vault_backend_type.as_deref() != Some("file") {
        tracing::warn!("Infisical CLI config: only the 'file' vault backend is supported");
        return Ok(None);
    }
    let (Some(passphrase), Some(email)) = (cfg.vault_backend_passphrase, cfg.logged_in_user_email)
    else {
        return Ok(None);
    };
    // The email becomes a file name: refuse anything that could leave the
    // keyring directory.
    if email.is_empty() || email.contains(['/', '\\', '\0']) || email == "." || email == ".." {
        return Err(cli_error(
            "the Infisical CLI config names an invalid loggedInUserEmail",
        ));
    }
    let keyring = home.join("infisical-keyring").join(&email);
    let jwe = match std::fs::read_to_string(&keyring) {
        Ok(t) => Zeroizing::new(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(cli_error(format!(
                "cannot read the Infisical keyring file: {}",
                e.kind()
            )))
        }
    };
    let password = Zeroizing::new(
        base64::engine::general_purpose::STANDARD
            .decode(passphrase.trim())
            .map_err(|_| cli_error("the Infisical CLI vault passphrase is not base64"))?,
    );
    let plaintext = decrypt_pbes2_jwe(jwe.trim(), &password)?;
    let token = token_from_plaintext(&plaintext)?;
    let domain = cfg
        .logged_in_user_domain
        .ok_or_else(|| cli_error("the Infisical CLI config has no LoggedInUserDomain"))?;
    let url = domain
        .strip_suffix("/api")
        .unwrap_or(&domain)
        .trim_end_matches('/')
        .to_string();
    Ok(Some((token, url)))
}

/// Decrypts a compact `PBES2-HS256+A128KW` / `A256GCM` JWE with `password`.
pub(super) fn decrypt_pbes2_jwe(compact: &str, password: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let bad = || cli_error("the Infisical keyring file is not a valid JWE");
    let parts: Vec<&str> = compact.split('.').collect();
    let [header_b64, wrapped_b64, iv_b64, ct_b64, tag_b64] = parts[..] else {
        return Err(bad());
    };
    let header: JweHeader =
        serde_json::from_slice(&b64.decode(header_b64).map_err(|_| bad())?).map_err(|_| bad())?;
    if header.alg != ALG || header.enc != ENC || header.zip.is_some() {
        return Err(cli_error(format!(
            "the Infisical keyring uses {}/{}; only {ALG}/{ENC} without compression is supported",
            header.alg, header.enc
        )));
    }
    if header.p2c == 0 || header.p2c > MAX_P2C {
        return Err(cli_error(format!(
            "the Infisical keyring asks for {} PBKDF2 iterations (1..={MAX_P2C} allowed)",
            header.p2c
        )));
    }
    let p2s = b64.decode(&header.p2s).map_err(|_| bad())?;
    // RFC 7518 §4.8.1.1: salt = UTF8(alg) || 0x00 || p2s.
    let mut salt = Vec::with_capacity(ALG.len() + 1 + p2s.len());
    salt.extend_from_slice(ALG.as_bytes());
    salt.push(0);
    salt.extend_from_slice(&p2s);
    let mut kek = Zeroizing::new([0u8; 16]);
    pbkdf2::pbkdf2_hmac::<Sha256>(password, &salt, header.p2c, kek.as_mut());
    let wrapped = b64.decode(wrapped_b64).map_err(|_| bad())?;
    let wrong =
        || cli_error("cannot decrypt the Infisical keyring: wrong passphrase or corrupt file");
    let cek = Zeroizing::new(
        aes_kw::KekAes128::new(kek.as_ref().into())
            .unwrap_vec(&wrapped)
            .map_err(|_| wrong())?,
    );
    let cipher = Aes256Gcm::new_from_slice(&cek).map_err(|_| wrong())?;
    let iv = b64.decode(iv_b64).map_err(|_| bad())?;
    if iv.len() != 12 {
        return Err(bad());
    }
    let mut msg = b64.decode(ct_b64).map_err(|_| bad())?;
    msg.extend_from_slice(&b64.decode(tag_b64).map_err(|_| bad())?);
    let plain = cipher
        .decrypt(
            Nonce::from_slice(&iv),
            Payload {
                msg: &msg,
                // The AAD is the protected header exactly as encoded.
                aad: header_b64.as_bytes(),
            },
        )
        .map_err(|_| wrong())?;
    Ok(Zeroizing::new(plain))
}

/// `"{\"JTWToken\":\"…\"}"` (a JSON string holding a JSON object), or the
/// object itself.
fn token_from_plaintext(plain: &[u8]) -> Result<Secret> {
    let missing = || cli_error("the Infisical keyring holds no JTWToken");
    let outer: serde_json::Value = serde_json::from_slice(plain).map_err(|_| missing())?;
    let mut inner = match outer {
        serde_json::Value::String(s) => {
            let s = Zeroizing::new(s);
            serde_json::from_str::<serde_json::Value>(&s).map_err(|_| missing())?
        }
        v => v,
    };
    match inner.get_mut("JTWToken").map(serde_json::Value::take) {
        Some(serde_json::Value::String(t)) if !t.is_empty() => Ok(Secret::from(t)),
        _ => Err(missing()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plaintext_shapes() {
        let double = br#""{\"JTWToken\":\"tok\",\"email\":\"a@b\"}""#;
        assert_eq!(
            token_from_plaintext(double).unwrap().as_text().unwrap(),
            "tok"
        );
        let single = br#"{"JTWToken":"tok"}"#;
        assert_eq!(
            token_from_plaintext(single).unwrap().as_text().unwrap(),
            "tok"
        );
        assert!(token_from_plaintext(br#"{"JWTToken":"x"}"#).is_err());
    }

    #[test]
    fn rejects_other_algorithms_and_huge_iterations() {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let h = b64.encode(br#"{"alg":"dir","enc":"A256GCM","p2s":"AA","p2c":1}"#);
        let e = decrypt_pbes2_jwe(&format!("{h}.a.b.c.d"), b"pw").unwrap_err();
        assert!(e.message().contains("only PBES2"));
        let h = b64
            .encode(br#"{"alg":"PBES2-HS256+A128KW","enc":"A256GCM","p2s":"AA","p2c":4000000000}"#);
        let e = decrypt_pbes2_jwe(&format!("{h}.a.b.c.d"), b"pw").unwrap_err();
        assert!(e.message().contains("iterations"));
        assert!(decrypt_pbes2_jwe("a.b", b"pw").is_err());
    }
}
