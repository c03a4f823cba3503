//! A SecFlow tree of plain files for in-process `secref_server::Server`
//! tests: the files, and the server config that maps `secret://` refs onto
//! them.

/// The variable the config's named token `ci` is read from.
pub const CI_TOKEN_ENV: &str = "CI_TOK";

/// A temp dir holding `files` as `s/dev/app/token/<name>` (what
/// `secret://dev/app/token/<name>` reads) and the server's TOML config:
/// `bind = 127.0.0.1:0`, the `file://` ref template, a token `ci` read from
/// [`CI_TOKEN_ENV`], then `extra`.
pub fn secflow_file_tree(files: &[(&str, &[u8])], extra: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("s/dev/app/token");
    std::fs::create_dir_all(&base).unwrap();
    for (name, value) in files {
        std::fs::write(base.join(name), value).unwrap();
    }
    let toml = format!(
        "bind = '127.0.0.1:0'\nsecflow_ref_template = 'file://{}/s/{{environment}}/{{service}}/{{kind}}/{{name}}'\n\
         [tokens.ci]\ntoken_env = '{CI_TOKEN_ENV}'\n{extra}",
        dir.path().display()
    );
    (dir, toml)
}
