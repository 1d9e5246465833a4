//! The command line (clap): `serve`, `reload`, `check-config`, `hash-password`, `user …`,
//! `client …`.

pub mod accounts;
pub mod admin;

use std::io::Read as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::audit::Event;
use crate::config::{self, ConfigError, ConfigProblem, ConfigSource, DirectoryLocation, Settings};
use crate::crypto::{jwk, password, secret};
use crate::startup::{Application, StartOptions, StartupError};
use crate::store::model::{Role, User};
use crate::store::SubjectKind;
use accounts::Accounts;
use admin::AdminError;

#[derive(Debug, Parser)]
#[command(
    name = "tokengate",
    version,
    about = "A standalone OAuth 2.0 token server"
)]
pub struct Cli {
    /// Config file [default: config/identity.toml, relative to TOKENGATE_HOME or the current folder]
    #[arg(long, global = true, env = "TOKENGATE_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTPS token server
    Serve {
        /// Added to every listener's port (overrides [server] port_offset)
        #[arg(long, env = "TOKENGATE_PORT_OFFSET", value_name = "N")]
        port_offset: Option<i64>,
        /// In-place upgrade: start while the old server still runs (same ports through
        /// SO_REUSEPORT); once listening, take over its pid file and send it SIGTERM
        #[arg(long)]
        takeover: bool,
    },
    /// Tell the running server (named by [server] pid_file) to re-read its config and TLS files
    Reload,
    /// Validate the config, user and client files and the TLS files; print every problem
    CheckConfig,
    /// Apply the token database's pending schema migrations
    Migrate,
    /// Read a password from stdin and print its argon2id PHC string
    HashPassword,
    /// Manage users (the user store named by [stores] users)
    User {
        #[command(subcommand)]
        action: UserAction,
    },
    /// Manage clients (applications; the client store named by [stores] clients)
    Client {
        #[command(subcommand)]
        action: ClientAction,
    },
    /// Manage the JWT signing keys ([oauth] signing_keys)
    Keys {
        #[command(subcommand)]
        action: KeysAction,
    },
    /// Dynamic client registration (RFC 7591, [registration])
    Registration {
        #[command(subcommand)]
        action: RegistrationAction,
    },
}

#[derive(Debug, Subcommand)]
pub enum RegistrationAction {
    /// Initial access tokens, which `POST /register` asks for when [registration] mode =
    /// "initial_access_token"
    Token {
        #[command(subcommand)]
        action: RegistrationTokenAction,
    },
}

#[derive(Debug, Subcommand)]
pub enum RegistrationTokenAction {
    /// Create an initial access token and print it once (only its SHA-256 is stored)
    Create {
        /// Seconds until it expires (default: one day)
        #[arg(long, value_name = "SECONDS", default_value_t = 86_400,
              value_parser = clap::value_parser!(u32).range(1..=31_536_000))]
        expires: u32,
        /// Registrations it allows (default: one)
        #[arg(long, value_name = "N", default_value_t = 1,
              value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
        uses: u32,
    },
    /// List the initial access tokens still stored: id (the SHA-256 of the token, base64url),
    /// creation, expiry, uses left
    List,
    /// Delete an initial access token by the id `list` shows: it registers nothing more
    Revoke { id: String },
}

#[derive(Debug, Subcommand)]
pub enum KeysAction {
    /// Add a new signing key of [oauth] jwt_algorithm; it signs once servers see it (in a
    /// cluster, after every node publishes it), and older keys
    /// stay published until the tokens they signed have expired
    Rotate,
    /// List the keys: id, algorithm, activation time, file
    List,
}

#[derive(Debug, Subcommand)]
pub enum UserAction {
    /// Add a user, reading the password from stdin
    Add {
        name: String,
        /// Read the password from stdin (required: passwords never go on the command line)
        #[arg(long, required = true)]
        password_stdin: bool,
        /// A developer-portal role (repeat for several): developer (manages their own
        /// applications) or admin (manages every application)
        #[arg(long = "role", value_name = "ROLE")]
        roles: Vec<String>,
    },
    /// Replace a user's developer-portal roles (none: no portal access)
    SetRoles {
        name: String,
        /// developer, admin
        #[arg(value_name = "ROLE")]
        roles: Vec<String>,
    },
    /// Set a user's password, reading it from stdin; ends the user's tokens unless
    /// --keep-sessions
    SetPassword {
        name: String,
        /// Read the password from stdin (required: passwords never go on the command line)
        #[arg(long, required = true)]
        password_stdin: bool,
        /// Keep the tokens issued so far (by default every token of the user is ended)
        #[arg(long)]
        keep_sessions: bool,
    },
    /// End every token of the user (all clients) on every node, keeping the account
    RevokeTokens { name: String },
    /// Remove a user and end its tokens for good
    Remove { name: String },
    /// List users
    List,
    /// Lift an account lock and forget the user's failed logins
    Unlock { name: String },
    /// Refuse the user's logins and end its tokens, keeping the account
    Disable { name: String },
    /// Allow a disabled user again
    Enable { name: String },
    /// Copy every user of a users file (e.g. config/users.toml) into [stores] users
    Import {
        /// A users file: [users.NAME] password_hash = ...
        file: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum ClientAction {
    /// Add a client; without --secret-stdin or --public a 256-bit secret is generated and
    /// printed once
    Add {
        id: String,
        /// Read the secret from stdin instead of generating one (stored as argon2id)
        #[arg(long, conflicts_with = "public")]
        secret_stdin: bool,
        /// A public client (a native or browser app): no secret, authenticated by its id alone,
        /// grant types authorization_code and refresh_token only
        #[arg(long)]
        public: bool,
        /// A redirect URI for the authorization code grant (repeat for several): https, a
        /// loopback http://127.0.0.1/… or http://[::1]/… (any port), or a private-use scheme
        /// such as com.example.app:/callback
        #[arg(long = "redirect-uri", value_name = "URI")]
        redirect_uris: Vec<String>,
        /// A third-party app: the login page asks each user to allow it the requested
        /// scopes (remembered until `user revoke-tokens`)
        #[arg(long)]
        require_consent: bool,
        /// What the login page calls the app (default: its id)
        #[arg(long)]
        name: Option<String>,
        /// Space-separated scopes the client may request besides "default"
        #[arg(long, default_value = "")]
        scopes: String,
        /// Space-separated grant types the client may use (default: password refresh_token;
        /// with --public: authorization_code refresh_token)
        #[arg(long)]
        grant_types: Option<String>,
        /// Access token validity in seconds for this client (overrides the server default)
        #[arg(long, value_name = "SECONDS")]
        access_token_validity: Option<i64>,
        /// Refresh token validity in seconds for this client
        #[arg(long, value_name = "SECONDS")]
        refresh_token_validity: Option<i64>,
        /// Application token (client_credentials) validity in seconds for this client
        #[arg(long, value_name = "SECONDS")]
        application_token_validity: Option<i64>,
        /// The client is a resource server allowed to call /introspect
        #[arg(long)]
        introspect: bool,
        /// Access token format for this client: opaque or jwt (default: [oauth] token_format)
        #[arg(long, value_name = "FORMAT")]
        token_format: Option<String>,
        /// `aud` of this client's JWT access tokens (default: [oauth] default_audience)
        #[arg(long)]
        audience: Option<String>,
    },
    /// End every token issued to the client (all users) on every node, keeping the client
    RevokeTokens { id: String },
    /// Remove a client and end its tokens for good
    Remove { id: String },
    /// List clients
    List,
    /// Refuse the client and end its tokens, keeping its registration
    Disable { id: String },
    /// Allow a disabled client again
    Enable { id: String },
    /// Copy every client of a clients file (e.g. config/clients.toml) into [stores] clients
    Import {
        /// A clients file: [clients.ID] secret_hash = ...
        file: PathBuf,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Startup(#[from] StartupError),
    #[error("{0}")]
    Admin(#[from] AdminError),
    #[error("{0}")]
    Hash(#[from] password::HashError),
    #[error("{0}")]
    Keys(#[from] jwk::KeyError),
    #[error("{0}")]
    Store(#[from] crate::store::StoreError),
    #[error("{0}")]
    PidFile(#[from] crate::pid_file::PidFileError),
    #[error("{0}")]
    Input(String),
}

/// Runs a parsed command line. `Ok` carries the process exit code.
pub fn run(cli: Cli) -> Result<ExitCode, CliError> {
    let port_offset = match &cli.command {
        Command::Serve { port_offset, .. } => *port_offset,
        _ => None,
    };
    let source = ConfigSource::from_env(cli.config.clone(), port_offset);
    match cli.command {
        Command::Serve { takeover, .. } => serve(&source, takeover),
        Command::Reload => reload(&source),
        Command::CheckConfig => Ok(check_config(&source)),
        Command::Migrate => {
            let settings = load(&source)?;
            block_on(async { Ok(crate::store::migrate(&settings.stores.tokens).await?) })?;
            eprintln!("the token database is up to date");
            Ok(ExitCode::SUCCESS)
        }
        Command::HashPassword => {
            let settings = load(&source)?;
            let password = read_stdin_secret("password")?;
            println!(
                "{}",
                password::hash_password(&password, &settings.password_hashing)?
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::User { action } => user(&load(&source)?, action),
        Command::Client { action } => client(&load(&source)?, action),
        Command::Keys { action } => keys(&load(&source)?, action),
        Command::Registration { action } => registration(&load(&source)?, action),
    }
}

/// Reads the config and applies its `[logging]` to this process.
fn load(source: &ConfigSource) -> Result<Settings, CliError> {
    let settings = config::load(source)?;
    if let Err(err) = crate::telemetry::reconfigure(&settings.logging) {
        tracing::warn!(error = %err, "[logging] could not be applied; logging as before");
    }
    Ok(settings)
}

/// Appends the CLI's event to the audit trail. The change is made by then: a trail that
/// cannot be written is a warning, not a failed command.
fn audit(settings: &Settings, client_id: Option<&str>, subject: Option<&str>, event: Event) {
    if let Err(err) = crate::audit::append_cli_event(
        &settings.audit,
        &crate::clock::SystemClock,
        client_id,
        subject,
        &event,
    ) {
        eprintln!("warning: the change was made, but its audit event was not written: {err}");
    }
}

fn serve(source: &ConfigSource, takeover: bool) -> Result<ExitCode, CliError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|err| CliError::Input(format!("cannot start the async runtime: {err}")))?;
    // SIGHUP's default action ends the process: caught from here on, so a reload sent while
    // the server starts (migrations can take a while) is not fatal, and handed to the server,
    // which applies it once it serves.
    let (hangups, _reopens_while_starting) = {
        let _runtime = runtime.enter();
        // SIGUSR1 (logrotate's reopen) ends the process by default too: caught from here on
        // (tokio keeps the handler for the process's life); one sent before serving has
        // nothing to reopen yet, the trail is opened afresh at start.
        (
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()),
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1()),
        )
    };
    let settings = load(source)?;
    // After `[logging]` applies, so that the warnings come in its format.
    crate::telemetry::warn_unknown_env_vars();
    let pid_path = settings.server.pid_file.clone();
    // Before anything is built: a second server on the same config stops here, saying so. The
    // file itself is written only once this server listens (below): a start that fails leaves
    // the running server's file, or a stale one, as it was.
    if let Some(path) = &pid_path {
        crate::pid_file::check(path, takeover)?;
    }
    runtime.block_on(async {
        let mut app = Application::build_with_options(settings, StartOptions { takeover }).await?;
        // Listening from here on (build's last step).
        let pid_file = pid_path
            .as_deref()
            .map(|path| crate::pid_file::PidFile::create(path, takeover))
            .transpose()?;
        match pid_file.as_ref().and_then(|file| file.previous()) {
            Some(previous) => stop_the_server_taken_over(previous),
            None if takeover => tracing::warn!(
                "--takeover: no server held the pid file's lock, so none was stopped; a server \
                 still sharing the port (an older one, or one with another pid_file) must be \
                 stopped by hand"
            ),
            None => {}
        }
        match hangups {
            Ok(hangups) => app.reload_on_hangups(hangups),
            Err(err) => tracing::warn!(error = %err, "cannot catch SIGHUP before serving"),
        }
        let served = app.run_until_stopped().await;
        // Removed at a clean exit (unless a newer server has put its own in place).
        drop(pid_file);
        Ok::<(), CliError>(served?)
    })?;
    Ok(ExitCode::SUCCESS)
}

/// `serve --takeover`, now listening beside the server it replaces: SIGTERM to that one (the
/// process the kernel named as the pid file's lock holder), which stops taking connections,
/// answers those it holds and exits.
fn stop_the_server_taken_over(pid: i32) {
    let Some(target) = rustix::process::Pid::from_raw(pid) else {
        return;
    };
    match rustix::process::kill_process(target, rustix::process::Signal::TERM) {
        Ok(()) => tracing::info!(
            pid,
            "listening: sent SIGTERM to the server taken over; it drains and exits"
        ),
        Err(err) => tracing::warn!(
            pid,
            error = %std::io::Error::from(err),
            "cannot send SIGTERM to the server taken over; stop it by hand"
        ),
    }
}

/// `tokengate reload`: SIGHUP to the server named by the pid file. The server logs what it
/// applied, refused or needs a restart for.
fn reload(source: &ConfigSource) -> Result<ExitCode, CliError> {
    // Only the pid file's path is needed: a config with problems elsewhere must not stop the
    // reload, which will report them itself.
    let (settings, _) = config::load_with_fallbacks(source);
    let path = settings
        .server
        .pid_file
        .ok_or(crate::pid_file::PidFileError::NotConfigured)?;
    let pid = crate::pid_file::signal_reload(&path)?;
    eprintln!(
        "sent SIGHUP to tokengate (pid {pid}, from {}); its log says what was applied",
        path.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Reads one secret from stdin; a single trailing newline (from `echo`) is not part of it.
fn read_stdin_secret(what: &str) -> Result<String, CliError> {
    let mut input = String::new();
    std::io::stdin()
        .read_to_string(&mut input)
        .map_err(|err| CliError::Input(format!("cannot read the {what} from stdin: {err}")))?;
    let trimmed = input
        .strip_suffix("\r\n")
        .or_else(|| input.strip_suffix('\n'))
        .unwrap_or(&input);
    if trimmed.is_empty() {
        return Err(CliError::Input(format!(
            "the {what} read from stdin is empty"
        )));
    }
    Ok(trimmed.to_owned())
}

/// Every problem in every file in one run: the config file's own problems, then (with what
/// could not be read at its default) the users and clients files, the TLS files and the keys.
/// Secret files that others can read are warnings, not problems.
fn check_config(source: &ConfigSource) -> ExitCode {
    let file = source.config_file();
    let (settings, mut problems) = config::load_with_fallbacks(source);
    if let DirectoryLocation::File(path) = &settings.stores.users {
        if let Err(err) = crate::store::toml_file::load_users(path) {
            problems.extend(ConfigError::from(err).problems);
        }
    }
    if let DirectoryLocation::File(path) = &settings.stores.clients {
        if let Err(err) = crate::store::toml_file::load_clients(path) {
            problems.extend(ConfigError::from(err).problems);
        }
    }
    // The TLS files are checked only against what identity.toml says: with the file or its
    // [tls] unreadable, the built-in defaults would report files the operator never named.
    let tls_unknown = problems.iter().any(|problem| {
        problem.file == file && (problem.key.is_empty() || problem.key.starts_with("tls."))
    });
    if tls_unknown {
        eprintln!("note: the TLS files were not checked, since [tls] could not be read");
    } else {
        problems.extend(check_tls(&settings));
        problems.extend(check_management_tls(&settings));
    }
    if settings.oauth.signing_keys_dir.exists() {
        if let Err(err) = jwk::KeySet::load(&settings.oauth.signing_keys_dir) {
            problems.push(ConfigProblem {
                file: settings.config_file.clone(),
                key: "oauth.signing_keys".into(),
                message: err.to_string(),
            });
        }
    }
    for (path, mode) in crate::secret_files::exposed(&settings) {
        eprintln!("warning: {}", crate::secret_files::warning(&path, mode));
    }
    if problems.is_empty() {
        println!("{}: ok", file.display());
        ExitCode::SUCCESS
    } else {
        for problem in &problems {
            eprintln!("{problem}");
        }
        eprintln!("{} problem(s) found", problems.len());
        ExitCode::FAILURE
    }
}

fn check_tls(settings: &Settings) -> Vec<ConfigProblem> {
    let tls = &settings.tls;
    let problem = |key: &str, message: String| ConfigProblem {
        file: settings.config_file.clone(),
        key: key.to_owned(),
        message,
    };
    match (tls.cert.exists(), tls.key.exists()) {
        (false, false) if tls.generate_self_signed => Vec::new(),
        (false, false) => vec![problem(
            "tls.cert",
            format!(
                "{} and {} are missing and generate_self_signed is false",
                tls.cert.display(),
                tls.key.display()
            ),
        )],
        _ => match crate::tls::server_config(tls) {
            Ok(_) => Vec::new(),
            Err(err) => vec![problem("tls", err.to_string())],
        },
    }
}

/// `[management] cert` and `key`, loaded as the server would (no generation for these).
fn check_management_tls(settings: &Settings) -> Vec<ConfigProblem> {
    let Some(files) = settings
        .management
        .tls
        .as_ref()
        .filter(|_| settings.management.enabled)
    else {
        return Vec::new();
    };
    let now = crate::clock::Clock::now_secs(&crate::clock::SystemClock);
    match crate::tls::load_pair(&files.cert, &files.key, now) {
        Ok(_) => Vec::new(),
        Err(err) => vec![ConfigProblem {
            file: settings.config_file.clone(),
            key: "management".into(),
            message: err.to_string(),
        }],
    }
}

/// Runs `work` on a single-threaded runtime (the CLI's database calls).
fn block_on<T>(
    work: impl std::future::Future<Output = Result<T, CliError>>,
) -> Result<T, CliError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|err| CliError::Input(format!("cannot start the async runtime: {err}")))?
        .block_on(work)
}

/// Runs `work` on the user and client stores (and the token database when `with_database`),
/// closing them afterwards whatever the outcome.
fn with_accounts(
    settings: &Settings,
    with_database: bool,
    work: impl AsyncFnOnce(&Accounts<'_>) -> Result<ExitCode, CliError>,
) -> Result<ExitCode, CliError> {
    block_on(async {
        let accounts = Accounts::open(settings, with_database).await?;
        let result = work(&accounts).await;
        accounts.close().await;
        result
    })
}

fn registration(settings: &Settings, action: RegistrationAction) -> Result<ExitCode, CliError> {
    let RegistrationAction::Token { action } = action;
    let (expires, uses) = match action {
        RegistrationTokenAction::Create { expires, uses } => (expires, uses),
        RegistrationTokenAction::List => return list_initial_tokens(settings),
        RegistrationTokenAction::Revoke { id } => return revoke_initial_token(settings, &id),
    };
    if settings.registration.mode != config::RegistrationMode::InitialAccessToken {
        eprintln!(
            "warning: [registration] mode is \"{}\": POST /register asks for this token only \
             with mode = \"initial_access_token\"",
            settings.registration.mode.as_str()
        );
    }
    let token = crate::crypto::secret::generate_secret();
    let now = crate::clock::Clock::now_secs(&crate::clock::SystemClock);
    let record = crate::store::model::InitialAccessTokenRecord {
        digest: crate::crypto::token::SecretDigest::of(token.as_bytes()),
        expires_at: now.saturating_add(i64::from(expires)),
        uses,
    };
    with_accounts(settings, true, async |accounts| {
        accounts
            .database()?
            .registrations
            .create_initial_token(&record, now)
            .await?;
        Ok(ExitCode::SUCCESS)
    })?;
    audit(
        settings,
        None,
        None,
        Event::InitialAccessTokenCreated {
            expires_at: crate::audit::rfc3339_secs(record.expires_at),
            uses,
        },
    );
    // Shown once: only its digest is stored.
    println!("{token}");
    eprintln!(
        "initial access token created: {uses} registration(s), expires {}",
        crate::audit::rfc3339_secs(record.expires_at)
    );
    Ok(ExitCode::SUCCESS)
}

/// The id `registration token list` shows for a token: its digest, base64url.
fn initial_token_id(digest: &crate::crypto::token::SecretDigest) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest.0)
}

fn list_initial_tokens(settings: &Settings) -> Result<ExitCode, CliError> {
    let now = crate::clock::Clock::now_secs(&crate::clock::SystemClock);
    with_accounts(settings, true, async |accounts| {
        let tokens = accounts
            .database()?
            .registrations
            .list_initial_tokens()
            .await?;
        for token in tokens {
            let state = if token.uses_left <= 0 {
                "\tused up"
            } else if token.expires_at <= now {
                "\texpired"
            } else {
                ""
            };
            println!(
                "{}\tcreated={}\texpires={}\tuses_left={}{state}",
                initial_token_id(&token.digest),
                crate::audit::rfc3339_secs(token.created_at),
                crate::audit::rfc3339_secs(token.expires_at),
                token.uses_left,
            );
        }
        Ok(ExitCode::SUCCESS)
    })
}

fn revoke_initial_token(settings: &Settings, id: &str) -> Result<ExitCode, CliError> {
    use base64::Engine as _;
    let digest = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(id)
        .ok()
        .and_then(|bytes| crate::crypto::token::SecretDigest::from_slice(&bytes))
        .ok_or_else(|| {
            CliError::Input(format!(
                "`{id}` is not an initial access token id (see `registration token list`)"
            ))
        })?;
    with_accounts(settings, true, async |accounts| {
        let revoked = accounts
            .database()?
            .registrations
            .revoke_initial_token(&digest)
            .await?;
        if !revoked {
            return Err(CliError::Input(format!(
                "no initial access token has the id `{id}`"
            )));
        }
        Ok(ExitCode::SUCCESS)
    })?;
    audit(
        settings,
        None,
        None,
        Event::InitialAccessTokenRevoked {
            token_id: id.to_owned(),
        },
    );
    eprintln!("revoked initial access token `{id}`: it registers no more clients");
    Ok(ExitCode::SUCCESS)
}

fn user(settings: &Settings, action: UserAction) -> Result<ExitCode, CliError> {
    // Unlocks and the not-before marks that end tokens live in the token database.
    let with_database = matches!(
        action,
        UserAction::Unlock { .. }
            | UserAction::SetPassword { .. }
            | UserAction::RevokeTokens { .. }
            | UserAction::Remove { .. }
    );
    with_accounts(settings, with_database, async |accounts| {
        user_action(settings, accounts, action).await
    })
}

async fn user_action(
    settings: &Settings,
    accounts: &Accounts<'_>,
    action: UserAction,
) -> Result<ExitCode, CliError> {
    let place = accounts.users_place();
    match action {
        UserAction::Add { name, roles, .. } => {
            admin::check_user_name(&name)?;
            let roles = admin::parse_roles(&roles)?;
            refuse_shared_subject(&name, "client", accounts.client_exists(&name).await?)?;
            let password = read_stdin_secret("password")?;
            let hash = password::hash_password(&password, &settings.password_hashing)?;
            let user = User {
                name: name.clone(),
                password_hash: hash,
                disabled: false,
                roles,
            };
            accounts.add_user(&user).await?;
            audit(settings, None, Some(&name), Event::UserAdded {});
            eprintln!("added user `{name}` to {place}");
        }
        UserAction::SetPassword {
            name,
            keep_sessions,
            ..
        } => {
            if !accounts.user_exists(&name).await? {
                return Err(not_found_in(&place, "user", &name));
            }
            let password = read_stdin_secret("password")?;
            // Hash before anything changes: a slow or failed hash leaves the user as it was.
            let hash = password::hash_password(&password, &settings.password_hashing)?;
            accounts.set_user_password(&name, &hash).await?;
            audit(
                settings,
                None,
                Some(&name),
                Event::PasswordSet {
                    tokens_revoked: !keep_sessions,
                },
            );
            if keep_sessions {
                eprintln!("set the password of `{name}` in {place}; its tokens are kept");
            } else {
                // After the new hash: a mark set before it would miss logins with the old
                // password in between.
                accounts
                    .end_tokens(SubjectKind::User, &name, true)
                    .await
                    .map_err(|err| {
                        tokens_not_ended("user", &name, "the password was changed", err)
                    })?;
                eprintln!(
                    "set the password of `{name}` in {place} and ended its tokens{}",
                    file_note(accounts.users_in_file(), settings)
                );
            }
        }
        UserAction::RevokeTokens { name } => {
            // A name that is gone (removed by hand from a file, say) may still have tokens.
            if !accounts.user_exists(&name).await? {
                eprintln!("warning: {place} has no user `{name}`; ending its tokens anyway");
            }
            accounts.end_tokens(SubjectKind::User, &name, false).await?;
            audit(settings, None, Some(&name), Event::TokensRevoked {});
            eprintln!("ended every token of user `{name}`");
        }
        UserAction::Remove { name } => {
            if !accounts.user_exists(&name).await? {
                return Err(not_found_in(&place, "user", &name));
            }
            // For good: a user added later under the same name starts with no tokens. Marked
            // before the removal too, so an unreachable database changes nothing.
            accounts.end_tokens(SubjectKind::User, &name, false).await?;
            accounts.remove_user(&name).await?;
            audit(settings, None, Some(&name), Event::UserRemoved {});
            accounts
                .end_tokens(SubjectKind::User, &name, true)
                .await
                .map_err(|err| tokens_not_ended("user", &name, "the user was removed", err))?;
            eprintln!("removed user `{name}` from {place} and ended its tokens");
        }
        UserAction::SetRoles { name, roles } => {
            let roles = admin::parse_roles(&roles)?;
            accounts.set_user_roles(&name, &roles).await?;
            let roles: Vec<String> = roles.iter().map(|role| role.as_str().to_owned()).collect();
            eprintln!(
                "set the roles of `{name}` in {place}: {}",
                if roles.is_empty() {
                    "none".to_owned()
                } else {
                    roles.join(", ")
                }
            );
            audit(settings, None, Some(&name), Event::RolesSet { roles });
        }
        UserAction::List => {
            for user in accounts.list_users().await? {
                let mut line = user.name.clone();
                if !user.roles.is_empty() {
                    line.push_str(&format!(
                        "\troles={}",
                        Role::join(&user.roles).replace(' ', ",")
                    ));
                }
                if user.disabled {
                    line.push_str("\tdisabled");
                }
                println!("{line}");
            }
        }
        UserAction::Unlock { name } => {
            let lockouts = &accounts.database()?.lockouts;
            let cleared = lockouts.clear_failures(&name).await?;
            audit(settings, None, Some(&name), Event::UserUnlocked {});
            if cleared {
                eprintln!("unlocked `{name}`: its failed logins and any lock are forgotten");
            } else {
                eprintln!("`{name}` had no failed logins and no lock");
            }
        }
        UserAction::Disable { name } => {
            accounts.set_user_disabled(&name, true).await?;
            audit(settings, None, Some(&name), Event::UserDisabled {});
            eprintln!("disabled user `{name}` in {place}");
        }
        UserAction::Enable { name } => {
            accounts.set_user_disabled(&name, false).await?;
            audit(settings, None, Some(&name), Event::UserEnabled {});
            eprintln!("enabled user `{name}` in {place}");
        }
        UserAction::Import { file } => {
            let mut added = 0;
            for user in accounts::users_in_file(&file)? {
                if accounts.user_exists(&user.name).await? {
                    eprintln!("skipped user `{}`: already in {place}", user.name);
                    continue;
                }
                refuse_shared_subject(
                    &user.name,
                    "client",
                    accounts.client_exists(&user.name).await?,
                )?;
                accounts.add_user(&user).await?;
                audit(settings, None, Some(&user.name), Event::UserAdded {});
                added += 1;
            }
            eprintln!(
                "imported {added} user(s) from {} into {place}",
                file.display()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A token's `sub` is the user for user tokens and the client for application tokens
/// (RFC 9068 §5), so no user may be named like a client.
fn refuse_shared_subject(name: &str, other_kind: &str, taken: bool) -> Result<(), CliError> {
    if taken {
        return Err(CliError::Input(format!(
            "`{name}` is already a {other_kind}; users and clients need different names, since \
             either can be a token's subject"
        )));
    }
    Ok(())
}

fn words(list: &str) -> Vec<String> {
    list.split_whitespace().map(str::to_owned).collect()
}

/// `no {what} named {name}` in `place`.
/// The account was changed but the mark that ends its tokens could not be written: say what
/// happened and what to run.
fn tokens_not_ended(what: &str, name: &str, done: &str, err: CliError) -> CliError {
    CliError::Input(format!(
        "{done}, but its tokens could not be ended ({err}); when the token database answers, \
         run `tokengate {what} revoke-tokens {name}`"
    ))
}

fn not_found_in(place: &str, what: &'static str, name: &str) -> CliError {
    CliError::Admin(AdminError::NotFound {
        place: place.to_owned(),
        what,
        name: name.to_owned(),
    })
}

/// With users in a file, running servers take the new password within `reload_interval`; the
/// tokens of logins until then are ended too.
fn file_note(in_file: bool, settings: &Settings) -> String {
    if in_file {
        format!(
            " (running servers take the change within {} s; logins until then are ended too \
             and must be repeated)",
            settings.stores.reload_interval.as_secs() + 1
        )
    } else {
        String::new()
    }
}

fn client(settings: &Settings, action: ClientAction) -> Result<ExitCode, CliError> {
    let with_database = matches!(
        action,
        ClientAction::RevokeTokens { .. } | ClientAction::Remove { .. }
    );
    with_accounts(settings, with_database, async |accounts| {
        client_action(settings, accounts, action).await
    })
}

async fn client_action(
    settings: &Settings,
    accounts: &Accounts<'_>,
    action: ClientAction,
) -> Result<ExitCode, CliError> {
    let place = accounts.clients_place();
    match action {
        ClientAction::Add {
            id,
            secret_stdin,
            public,
            redirect_uris,
            require_consent,
            name,
            scopes,
            grant_types,
            access_token_validity,
            refresh_token_validity,
            application_token_validity,
            introspect,
            token_format,
            audience,
        } => {
            admin::check_client_id(&id)?;
            refuse_shared_subject(&id, "user", accounts.user_exists(&id).await?)?;
            let grant_types = grant_types.unwrap_or_else(|| {
                if public {
                    "authorization_code refresh_token".to_owned()
                } else {
                    "password refresh_token".to_owned()
                }
            });
            let (secret_hash, generated) = if public {
                (String::new(), None)
            } else if secret_stdin {
                let chosen = read_stdin_secret("client secret")?;
                (
                    password::hash_password(&chosen, &settings.password_hashing)?,
                    None,
                )
            } else {
                let generated = secret::generate_secret();
                (secret::hash_sha256(&generated), Some(generated))
            };
            accounts
                .add_client(&admin::NewClient {
                    id: &id,
                    secret_hash: &secret_hash,
                    public,
                    redirect_uris: &redirect_uris,
                    require_consent,
                    name: name.as_deref(),
                    grant_types: &words(&grant_types),
                    scopes: &words(&scopes),
                    access_token_validity_period: access_token_validity,
                    application_access_token_validity_period: application_token_validity,
                    refresh_token_validity_period: refresh_token_validity,
                    introspect,
                    token_format: token_format.as_deref(),
                    audience: audience.as_deref(),
                    disabled: false,
                })
                .await?;
            audit(
                settings,
                Some(&id),
                None,
                Event::ClientAdded {
                    grant_types: words(&grant_types),
                    scopes: words(&scopes),
                    secret: if public {
                        "none"
                    } else if secret_stdin {
                        "chosen"
                    } else {
                        "generated"
                    },
                },
            );
            eprintln!("added client `{id}` to {place}");
            if let Some(generated) = generated {
                eprintln!("client secret (shown once; only its hash is stored):");
                println!("{generated}");
            }
        }
        ClientAction::RevokeTokens { id } => {
            if !accounts.client_exists(&id).await? {
                eprintln!("warning: {place} has no client `{id}`; ending its tokens anyway");
            }
            accounts.end_tokens(SubjectKind::Client, &id, false).await?;
            audit(settings, Some(&id), None, Event::TokensRevoked {});
            eprintln!("ended every token of client `{id}`");
        }
        ClientAction::Remove { id } => {
            if !accounts.client_exists(&id).await? {
                return Err(not_found_in(&place, "client", &id));
            }
            // For good: a client added later under the same id starts with no tokens (marked
            // before the removal too, so an unreachable database changes nothing).
            accounts.end_tokens(SubjectKind::Client, &id, false).await?;
            accounts.remove_client(&id).await?;
            audit(settings, Some(&id), None, Event::ClientRemoved {});
            accounts
                .end_tokens(SubjectKind::Client, &id, true)
                .await
                .map_err(|err| tokens_not_ended("client", &id, "the client was removed", err))?;
            eprintln!("removed client `{id}` from {place} and ended its tokens");
        }
        ClientAction::List => {
            for line in accounts.list_clients().await? {
                println!("{line}");
            }
        }
        ClientAction::Disable { id } => {
            accounts.set_client_disabled(&id, true).await?;
            audit(settings, Some(&id), None, Event::ClientDisabled {});
            eprintln!("disabled client `{id}` in {place}");
        }
        ClientAction::Enable { id } => {
            accounts.set_client_disabled(&id, false).await?;
            audit(settings, Some(&id), None, Event::ClientEnabled {});
            eprintln!("enabled client `{id}` in {place}");
        }
        ClientAction::Import { file } => {
            let mut added = 0;
            for client in accounts::clients_in_file(&file)? {
                if accounts.client_exists(&client.id).await? {
                    eprintln!("skipped client `{}`: already in {place}", client.id);
                    continue;
                }
                refuse_shared_subject(&client.id, "user", accounts.user_exists(&client.id).await?)?;
                accounts.add_existing_client(&client).await?;
                audit(
                    settings,
                    Some(&client.id),
                    None,
                    Event::ClientAdded {
                        grant_types: client
                            .grant_types
                            .iter()
                            .map(|grant| grant.as_str().to_owned())
                            .collect(),
                        scopes: client.scopes.iter().cloned().collect(),
                        secret: match secret::kind_of(&client.secret_hash) {
                            _ if client.public => "none",
                            Some(secret::SecretHashKind::Sha256) => "generated",
                            _ => "chosen",
                        },
                    },
                );
                added += 1;
            }
            eprintln!(
                "imported {added} client(s) from {} into {place}",
                file.display()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn keys(settings: &Settings, action: KeysAction) -> Result<ExitCode, CliError> {
    use crate::clock::Clock as _;
    let dir = &settings.oauth.signing_keys_dir;
    match action {
        KeysAction::Rotate => {
            let algorithm = settings.oauth.jwt_algorithm;
            let path = jwk::generate_key(dir, algorithm, crate::clock::SystemClock.now_ms())?;
            let kid = jwk::KeySet::load(dir)?
                .all()
                .iter()
                .find(|key| key.path == path)
                .map(|key| key.kid.clone())
                .unwrap_or_default();
            audit(
                settings,
                None,
                None,
                Event::KeyRotated {
                    kid,
                    algorithm: algorithm.as_str(),
                    file: path.display().to_string(),
                },
            );
            eprintln!(
                "added {} signing key {}; running servers sign with it within {} s (in a cluster, once every node publishes it)",
                algorithm.as_str(),
                path.display(),
                settings.stores.reload_interval.as_secs()
            );
        }
        KeysAction::List => {
            for key in jwk::KeySet::load(dir)?.all() {
                println!(
                    "{}\t{}\tactivated={}\t{}",
                    key.kid,
                    key.algorithm.as_str(),
                    key.activated_at,
                    key.path.display()
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
