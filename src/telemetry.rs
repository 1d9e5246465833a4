//! Logging setup. Secrets never reach a log: they are `SecretString`s or redacted types, and
//! request spans record only named, non-secret fields.

use tracing_subscriber::EnvFilter;

/// Logs to stderr; the filter comes from `TOKENGATE_LOG` (e.g. `debug`), default `info`.
pub fn init() {
    let filter =
        EnvFilter::try_from_env("TOKENGATE_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// Warns about `TOKENGATE_*` variables that tokengate does not read (likely typos).
pub fn warn_unknown_env_vars() {
    for (name, _) in std::env::vars_os() {
        let Some(name) = name.to_str() else { continue };
        if name.starts_with("TOKENGATE_") && !crate::config::KNOWN_ENV_VARS.contains(&name) {
            tracing::warn!(
                variable = name,
                "unknown TOKENGATE_ environment variable is ignored"
            );
        }
    }
}
