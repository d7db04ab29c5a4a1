//! `coderd`: parse flags, set up logging, run the server.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

/// mimalloc: with glibc's malloc, the buffers of a bulk QUIC transfer go back
/// to the kernel and fault in again; mimalloc keeps them, and a mesh stream
/// moves about a third more bytes on 2 cores (`bench quic`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "coderd", version, about = "The coordinator of a mesh workspace platform")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once at startup: the size of a variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Run the coordinator: API, embedded Postgres (unless --postgres-url), relay, provisioners.
    Server(ServerArgs),
    /// Provisioner daemons that run terraform on another machine.
    #[command(subcommand)]
    Provisioner(ProvisionerCommand),
}

#[derive(Subcommand)]
enum ProvisionerCommand {
    /// Run a provisioner daemon that takes jobs from coderd over its HTTP API.
    Start(ProvisionerStartArgs),
}

#[derive(clap::Args)]
struct ProvisionerStartArgs {
    /// URL of coderd.
    #[arg(long, env = "CODER_URL")]
    url: url::Url,
    /// File holding the pre-shared key (the same as coderd's --provisioner-psk-file).
    #[arg(long, env = "CODER_PROVISIONER_PSK_FILE")]
    psk_file: PathBuf,
    /// A tag of this daemon, key=value (repeatable); it runs jobs whose tags are a subset of its own.
    #[arg(long = "tag", env = "CODER_PROVISIONER_TAGS", value_delimiter = ',', value_parser = parse_tag)]
    tags: Vec<(String, String)>,
    /// Path to terraform (default: found on PATH).
    #[arg(long, env = "CODER_TERRAFORM_PATH")]
    terraform_path: Option<PathBuf>,
    /// Path to terraform-provider-coder (default: beside coderd).
    #[arg(long, env = "CODER_PROVIDER_PATH")]
    provider_path: Option<PathBuf>,
    /// Where job directories and the plugin cache live.
    #[arg(long, env = "CODER_PROVISIONER_WORK_DIR")]
    work_dir: Option<PathBuf>,
    /// Name of this daemon in job rows and logs (default: the host name).
    #[arg(long, env = "CODER_PROVISIONER_NAME")]
    name: Option<String>,
    /// Log filter (tracing EnvFilter syntax).
    #[arg(long, env = "CODER_LOG_FILTER", default_value = "info")]
    log_filter: String,
}

fn parse_tag(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.trim().to_owned())),
        _ => Err(format!("{s:?} is not key=value")),
    }
}

#[derive(clap::Args)]
struct ServerArgs {
    /// Address the HTTP API listens on.
    #[arg(long, env = "CODER_HTTP_ADDRESS", default_value = "127.0.0.1:3000")]
    http_address: SocketAddr,
    /// URL users and workspaces reach this deployment at (default: http://<http-address>).
    #[arg(long, env = "CODER_ACCESS_URL")]
    access_url: Option<url::Url>,
    /// External Postgres URL; without it an embedded Postgres is run under --data-dir.
    #[arg(long, env = "CODER_PG_CONNECTION_URL", hide_env_values = true)]
    postgres_url: Option<String>,
    /// Where coderd keeps its state (the embedded Postgres cluster, caches).
    #[arg(long, env = "CODER_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Provisioner workers run inside coderd.
    #[arg(long, env = "CODER_PROVISIONER_DAEMONS", default_value_t = 3)]
    provisioner_daemons: usize,
    /// Path to terraform (default: found on PATH).
    #[arg(long, env = "CODER_TERRAFORM_PATH")]
    terraform_path: Option<PathBuf>,
    /// Path to terraform-provider-coder (default: beside coderd).
    #[arg(long, env = "CODER_PROVIDER_PATH")]
    provider_path: Option<PathBuf>,
    /// How often the autostart/autostop scheduler looks for due workspaces, in milliseconds.
    #[arg(long, env = "CODER_AUTOBUILD_POLL_INTERVAL_MS", default_value_t = 2000)]
    autobuild_poll_interval_ms: u64,
    /// Fail a running job whose provisioner has not heartbeated for this many seconds.
    #[arg(long, env = "CODER_JOB_STALE_AFTER_SECONDS", default_value_t = 90)]
    job_stale_after_seconds: u64,
    /// Run the embedded relay at /derp.
    #[arg(long, env = "CODER_DERP_SERVER_ENABLE", default_value_t = true, action = clap::ArgAction::Set)]
    derp_server_enable: bool,
    /// UDP address of the embedded STUN server (default: port 3478 on the
    /// --http-address host); empty disables it. `0.0.0.0` answers over IPv6
    /// too; the relay map names it by the access URL's host, so peers ask
    /// over IPv6 where that name has an AAAA record.
    #[arg(long, env = "CODER_DERP_SERVER_STUN_ADDRESSES")]
    stun_address: Option<String>,
    /// An HTTP URL of this replica that the other replicas reach, for their
    /// relays to mesh with this one's (default: the --http-address, when it
    /// is not a wildcard address).
    #[arg(long, env = "CODER_DERP_SERVER_RELAY_URL")]
    derp_server_relay_url: Option<url::Url>,
    /// JSON file with extra relay regions (self-hosted derpers), in the format of GET /api/v2/derp-map.
    #[arg(long, env = "CODER_DERP_CONFIG_PATH")]
    derp_config_path: Option<PathBuf>,
    /// Subdomain apps and dev URLs: `*.apps.example.com` (DNS for it must reach coderd).
    #[arg(long, env = "CODER_WILDCARD_ACCESS_URL")]
    wildcard_access_url: Option<String>,
    /// File holding the pre-shared key external provisioners authenticate with; without it they are refused.
    #[arg(long, env = "CODER_PROVISIONER_PSK_FILE")]
    provisioner_psk_file: Option<PathBuf>,
    /// Log filter (tracing EnvFilter syntax).
    #[arg(long, env = "CODER_LOG_FILTER", default_value = "info")]
    log_filter: String,
    /// Let shared (authenticated, public) path apps open for other users: their scripts then run on the dashboard's origin as the visitor. Prefer --wildcard-access-url.
    #[arg(long, env = "CODER_DANGEROUS_ALLOW_PATH_APP_SHARING")]
    dangerous_allow_path_app_sharing: bool,
    /// The widest sharing level of a workspace's ports and apps: owner, authenticated (any logged-in user) or public (anyone, without logging in). Lowering it applies at once to existing shares.
    #[arg(long, env = "CODER_MAX_PORT_SHARE_LEVEL", default_value = "authenticated", value_parser = parse_share_level)]
    max_port_share_level: coordinator::authz::Share,
    /// Let site owners open other users' path apps (the app's scripts then run on the dashboard's origin as the site owner).
    #[arg(long, env = "CODER_DANGEROUS_ALLOW_PATH_APP_SITE_OWNER_ACCESS")]
    dangerous_allow_path_app_site_owner_access: bool,
    /// Serve path apps without `Content-Security-Policy: sandbox` (apps that need their own origin's cookies or storage; their scripts can then read the dashboard).
    #[arg(long, env = "CODER_DANGEROUS_DISABLE_PATH_APP_CSP_SANDBOX")]
    dangerous_disable_path_app_csp_sandbox: bool,
    /// Serve HTTPS (also implied by --tls-address); needs --tls-cert-file and --tls-key-file.
    #[arg(long, env = "CODER_TLS_ENABLE", default_value_t = false, action = clap::ArgAction::Set)]
    tls_enable: bool,
    /// Address HTTPS listens on (default with --tls-enable: 127.0.0.1:3443).
    #[arg(long, env = "CODER_TLS_ADDRESS")]
    tls_address: Option<SocketAddr>,
    /// PEM certificate chain for HTTPS, leaf first.
    #[arg(long, env = "CODER_TLS_CERT_FILE")]
    tls_cert_file: Option<PathBuf>,
    /// PEM private key for HTTPS.
    #[arg(long, env = "CODER_TLS_KEY_FILE")]
    tls_key_file: Option<PathBuf>,
    /// With TLS on, redirect plain-HTTP requests (except from loopback) to the https access URL.
    #[arg(long, env = "CODER_TLS_REDIRECT_HTTP_TO_HTTPS", default_value_t = true, action = clap::ArgAction::Set)]
    tls_redirect_http_to_https: bool,
    /// Seconds of Strict-Transport-Security sent on HTTPS responses; 0 sends none.
    #[arg(long, env = "CODER_STRICT_TRANSPORT_SECURITY", default_value_t = 0)]
    strict_transport_security: u64,
    /// Strict-Transport-Security directives besides max-age: includeSubDomains, preload.
    #[arg(long, env = "CODER_STRICT_TRANSPORT_SECURITY_OPTIONS", value_delimiter = ',')]
    strict_transport_security_options: Vec<String>,
    /// Serve Prometheus metrics at /metrics on --prometheus-address (never on the API).
    #[arg(long, env = "CODER_PROMETHEUS_ENABLE")]
    prometheus_enable: bool,
    /// Address of the Prometheus listener.
    #[arg(long, env = "CODER_PROMETHEUS_ADDRESS", default_value = "127.0.0.1:2112")]
    prometheus_address: SocketAddr,
    /// File holding the secret derpers started with --verify-clients present to
    /// POST /api/v2/derp/verify-client; without it that route does not exist.
    #[arg(long, env = "CODER_DERP_VERIFY_CLIENTS_PSK_FILE")]
    derp_verify_clients_psk_file: Option<PathBuf>,
    #[command(flatten)]
    oidc: OidcArgs,
    /// Refuse password logins (owners excepted, so a deployment whose
    /// identity provider is down can still be administered).
    #[arg(long, env = "CODER_DISABLE_PASSWORD_AUTH")]
    disable_password_auth: bool,
}

/// OpenID Connect login. The client secret comes from
/// --oidc-client-secret-file or from CODER_OIDC_CLIENT_SECRET (the secret
/// itself; never a command-line flag, which `ps` would show).
#[derive(clap::Args)]
struct OidcArgs {
    /// Issuer URL of the OpenID provider; turns on "Log in with OpenID Connect".
    #[arg(long, env = "CODER_OIDC_ISSUER_URL")]
    oidc_issuer_url: Option<url::Url>,
    /// Client id registered at the provider.
    #[arg(long, env = "CODER_OIDC_CLIENT_ID")]
    oidc_client_id: Option<String>,
    /// File holding the client secret (else CODER_OIDC_CLIENT_SECRET).
    #[arg(long, env = "CODER_OIDC_CLIENT_SECRET_FILE")]
    oidc_client_secret_file: Option<PathBuf>,
    /// Only these email domains may log in or sign up (repeatable or comma-separated; default: any).
    #[arg(long = "oidc-email-domain", env = "CODER_OIDC_EMAIL_DOMAIN", value_delimiter = ',')]
    oidc_email_domains: Vec<String>,
    /// Whether a first OpenID Connect login creates an account.
    #[arg(long, env = "CODER_OIDC_ALLOW_SIGNUPS", default_value_t = true, action = clap::ArgAction::Set)]
    oidc_allow_signups: bool,
    /// Claim that names the username (else the email's local part).
    #[arg(long, env = "CODER_OIDC_USERNAME_FIELD", default_value = "preferred_username")]
    oidc_username_field: String,
    /// Claim that lists the user's groups (for --oidc-user-role-mapping).
    #[arg(long, env = "CODER_OIDC_GROUP_FIELD")]
    oidc_group_field: Option<String>,
    /// JSON: group → roles, e.g. '{"admins":["template-admin"]}'; roles then follow groups on every login.
    #[arg(long, env = "CODER_OIDC_USER_ROLE_MAPPING")]
    oidc_user_role_mapping: Option<String>,
    /// Scopes asked for (comma-separated).
    #[arg(
        long,
        env = "CODER_OIDC_SCOPES",
        value_delimiter = ',',
        default_value = "openid,email,profile"
    )]
    oidc_scopes: Vec<String>,
    /// Text of the login button (default: "OpenID Connect").
    #[arg(long, env = "CODER_OIDC_SIGN_IN_TEXT")]
    oidc_sign_in_text: Option<String>,
}

/// The OpenID Connect settings the flags ask for, `None` when off.
fn oidc_config(args: &OidcArgs) -> anyhow::Result<Option<coordinator::oidc::OidcConfig>> {
    let Some(issuer) = args.oidc_issuer_url.clone() else {
        anyhow::ensure!(
            args.oidc_client_id.is_none() && args.oidc_user_role_mapping.is_none(),
            "--oidc-* flags given without --oidc-issuer-url"
        );
        return Ok(None);
    };
    let client_id =
        args.oidc_client_id.clone().context("--oidc-issuer-url needs --oidc-client-id")?;
    let secret = match (&args.oidc_client_secret_file, std::env::var("CODER_OIDC_CLIENT_SECRET")) {
        (Some(path), _) => std::fs::read_to_string(path)
            .with_context(|| format!("read --oidc-client-secret-file {}", path.display()))?
            .trim()
            .to_owned(),
        (None, Ok(secret)) => secret.trim().to_owned(),
        (None, Err(_)) => anyhow::bail!(
            "--oidc-issuer-url needs the client secret: --oidc-client-secret-file or CODER_OIDC_CLIENT_SECRET"
        ),
    };
    anyhow::ensure!(!secret.is_empty(), "the OpenID client secret is empty");
    let mut config = coordinator::oidc::OidcConfig::new(issuer, client_id, secret);
    config.email_domains = args
        .oidc_email_domains
        .iter()
        .map(|d| d.trim().trim_start_matches('@').to_owned())
        .filter(|d| !d.is_empty())
        .collect();
    config.allow_signups = args.oidc_allow_signups;
    config.username_field = args.oidc_username_field.clone();
    config.group_field = args.oidc_group_field.clone().filter(|f| !f.is_empty());
    if let Some(json) = &args.oidc_user_role_mapping {
        let mapping = coordinator::oidc::claims::parse_role_mapping(json)
            .map_err(|e| anyhow::anyhow!("--oidc-user-role-mapping: {e}"))?;
        anyhow::ensure!(
            config.group_field.is_some(),
            "--oidc-user-role-mapping needs --oidc-group-field (the claim that lists groups)"
        );
        config.role_mapping = Some(mapping);
    }
    config.scopes =
        args.oidc_scopes.iter().map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect();
    anyhow::ensure!(
        config.scopes.iter().any(|s| s == "openid"),
        "--oidc-scopes must include openid"
    );
    config.sign_in_text = args.oidc_sign_in_text.clone().unwrap_or_default();
    Ok(Some(config))
}

/// The HTTPS settings the flags ask for, `None` when TLS is off.
fn tls_config(args: &ServerArgs) -> anyhow::Result<Option<coordinator::TlsConfig>> {
    if !args.tls_enable && args.tls_address.is_none() {
        anyhow::ensure!(
            args.tls_cert_file.is_none() && args.tls_key_file.is_none(),
            "--tls-cert-file/--tls-key-file given but TLS is off: pass --tls-address (or --tls-enable)"
        );
        anyhow::ensure!(
            args.strict_transport_security == 0,
            "--strict-transport-security needs TLS (--tls-address); behind a TLS-terminating proxy, set the header there"
        );
        return Ok(None);
    }
    let (Some(cert), Some(key)) = (&args.tls_cert_file, &args.tls_key_file) else {
        anyhow::bail!("TLS needs both --tls-cert-file and --tls-key-file");
    };
    let address = args.tls_address.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 3443)));
    let mut tls = coordinator::TlsConfig::new(address, cert.clone(), key.clone());
    tls.redirect_http = args.tls_redirect_http_to_https;
    tls.strict_transport_security = args.strict_transport_security;
    tls.strict_transport_security_options = args.strict_transport_security_options.clone();
    Ok(Some(tls))
}

/// `--stun-address`: given, empty (off), or port 3478 on the HTTP host.
fn stun_address(args: &ServerArgs) -> anyhow::Result<Option<SocketAddr>> {
    match args.stun_address.as_deref().map(str::trim) {
        None => Ok(Some(coordinator::ServerConfig::default_stun_address(args.http_address))),
        Some("") => Ok(None),
        Some(s) => {
            Ok(Some(s.parse().with_context(|| format!("--stun-address {s:?} is not host:port"))?))
        }
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Server(args) => server(args),
        Command::Provisioner(ProvisionerCommand::Start(args)) => provisioner_start(args),
    }
}

fn server(args: ServerArgs) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(&args.log_filter))
        .with_writer(std::io::stderr)
        .init();
    let mut config = coordinator::ServerConfig::default();
    config.tls = tls_config(&args)?;
    config.stun_address = stun_address(&args)?;
    config.http_address = args.http_address;
    config.access_url = args.access_url;
    config.postgres_url = args.postgres_url;
    config.provisioner_daemons = args.provisioner_daemons;
    config.terraform_path = args.terraform_path;
    config.provider_path = args.provider_path;
    config.job_stale_after = std::time::Duration::from_secs(args.job_stale_after_seconds.max(1));
    config.autobuild_poll_interval =
        std::time::Duration::from_millis(args.autobuild_poll_interval_ms.max(100));
    config.relay_enabled = args.derp_server_enable;
    config.derp_config_path = args.derp_config_path;
    config.derp_server_relay_url = args.derp_server_relay_url;
    if let Some(w) = &args.wildcard_access_url {
        config.wildcard = Some(coordinator::Wildcard::parse(w).with_context(|| {
            format!("--wildcard-access-url {w:?} must look like *.apps.example.com")
        })?);
    }
    if let Some(path) = &args.provisioner_psk_file {
        config.provisioner_key = Some(coordinator::provisionerd::ProvisionerKey::from_file(path)?);
    }
    config.path_apps.allow_sharing = args.dangerous_allow_path_app_sharing;
    config.max_port_share = args.max_port_share_level;
    config.path_apps.allow_site_owner_access = args.dangerous_allow_path_app_site_owner_access;
    config.path_apps.disable_csp_sandbox = args.dangerous_disable_path_app_csp_sandbox;
    if let Some(dir) = args.data_dir {
        config.data_dir = dir;
    }
    if args.prometheus_enable {
        config.prometheus_address = Some(args.prometheus_address);
    }
    if let Some(path) = &args.derp_verify_clients_psk_file {
        config.derp_verify_key = Some(coordinator::relay::RelayVerifyKey::from_file(path)?);
    }
    config.oidc = oidc_config(&args.oidc)?;
    config.disable_password_auth = args.disable_password_auth;
    let rt = tokio::runtime::Runtime::new().context("start tokio runtime")?;
    rt.block_on(async move {
        coordinator::run(config, shutdown_signal()).await.context("coderd server")
    })
}

fn provisioner_start(args: ProvisionerStartArgs) -> anyhow::Result<()> {
    use coordinator::provisionerd::{self as p, ExecutorConfig, ExternalConfig, ProvisionerKey};
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(&args.log_filter))
        .with_writer(std::io::stderr)
        .init();
    let key = ProvisionerKey::from_file(&args.psk_file)?;
    let terraform = args
        .terraform_path
        .or_else(p::find_terraform)
        .context("terraform is not on PATH: install it or pass --terraform-path")?;
    let provider = args
        .provider_path
        .or_else(p::find_provider)
        .context("terraform-provider-coder is not beside coderd: pass --provider-path")?;
    let work_dir = args.work_dir.unwrap_or_else(p::default_external_work_dir);
    std::fs::create_dir_all(&work_dir)
        .with_context(|| format!("create work dir {}", work_dir.display()))?;
    let mut config = ExternalConfig::new(
        args.url.clone(),
        key,
        ExecutorConfig::new(terraform, provider, work_dir),
    );
    config.tags = args.tags.into_iter().map(|(k, v)| (k, serde_json::Value::String(v))).collect();
    config.name = args.name;
    let tags = serde_json::Value::Object(config.tags.clone());
    let rt = tokio::runtime::Runtime::new().context("start tokio runtime")?;
    rt.block_on(async move {
        let daemon = p::ExternalProvisioner::start(config)
            .await
            .with_context(|| format!("connect to coderd at {}", args.url))?;
        println!("provisioner {} is taking jobs from {} (tags {tags})", daemon.worker_id, args.url);
        shutdown_signal().await;
        drop(daemon);
        anyhow::Ok(())
    })
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) =
        (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
    else {
        tracing::warn!("cannot install signal handlers; stop coderd with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
    tracing::info!("shutting down");
}

fn parse_share_level(s: &str) -> Result<coordinator::authz::Share, String> {
    coordinator::authz::Share::from_name(s)
        .ok_or_else(|| format!("{s:?} is not a share level: owner, authenticated or public"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn server_args(argv: &[&str]) -> ServerArgs {
        let cli = Cli::try_parse_from([&["coderd", "server"], argv].concat()).unwrap();
        match cli.command {
            Command::Server(args) => args,
            Command::Provisioner(_) => unreachable!(),
        }
    }

    #[test]
    fn stun_binds_where_the_api_does_unless_told() {
        // Whatever the environment of the test run says.
        std::env::remove_var("CODER_DERP_SERVER_STUN_ADDRESSES");
        let loopback = server_args(&["--http-address", "127.0.0.1:3000"]);
        assert_eq!(stun_address(&loopback).unwrap(), Some("127.0.0.1:3478".parse().unwrap()));
        let public = server_args(&["--http-address", "0.0.0.0:3000"]);
        assert_eq!(stun_address(&public).unwrap(), Some("0.0.0.0:3478".parse().unwrap()));
        let given = server_args(&["--stun-address", "0.0.0.0:3479"]);
        assert_eq!(stun_address(&given).unwrap(), Some("0.0.0.0:3479".parse().unwrap()));
        let off = server_args(&["--stun-address", ""]);
        assert_eq!(stun_address(&off).unwrap(), None);
    }

    #[test]
    fn oidc_flags_make_a_config() {
        for var in ["CODER_OIDC_ISSUER_URL", "CODER_OIDC_CLIENT_ID", "CODER_OIDC_EMAIL_DOMAIN"] {
            std::env::remove_var(var);
        }
        assert!(oidc_config(&server_args(&[]).oidc).unwrap().is_none());
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "s3cret\n").unwrap();
        let args = server_args(&[
            "--oidc-issuer-url",
            "https://idp.example.com",
            "--oidc-client-id",
            "coder",
            "--oidc-client-secret-file",
            secret.to_str().unwrap(),
            "--oidc-email-domain",
            "example.com,@corp.example",
            "--oidc-email-domain",
            "third.example",
            "--oidc-allow-signups",
            "false",
            "--oidc-group-field",
            "groups",
            "--oidc-user-role-mapping",
            r#"{"admins":["template-admin"]}"#,
        ]);
        let c = oidc_config(&args.oidc).unwrap().unwrap();
        assert_eq!(c.client_secret, "s3cret");
        assert_eq!(c.email_domains, ["example.com", "corp.example", "third.example"]);
        assert!(!c.allow_signups);
        assert_eq!(c.username_field, "preferred_username");
        assert_eq!(c.role_mapping.unwrap()["admins"], [codersdk::Role::TemplateAdmin]);
        // A role mapping with no group claim, or an unknown role, stops the start.
        let bad = server_args(&[
            "--oidc-issuer-url",
            "https://idp.example.com",
            "--oidc-client-id",
            "coder",
            "--oidc-client-secret-file",
            secret.to_str().unwrap(),
            "--oidc-user-role-mapping",
            r#"{"admins":["template-admin"]}"#,
        ]);
        assert!(oidc_config(&bad.oidc).is_err());
        let bad = server_args(&[
            "--oidc-issuer-url",
            "https://idp.example.com",
            "--oidc-client-id",
            "coder",
            "--oidc-client-secret-file",
            secret.to_str().unwrap(),
            "--oidc-group-field",
            "groups",
            "--oidc-user-role-mapping",
            r#"{"admins":["root"]}"#,
        ]);
        assert!(oidc_config(&bad.oidc).is_err());
    }

    #[test]
    fn prometheus_is_off_by_default_and_on_loopback() {
        std::env::remove_var("CODER_PROMETHEUS_ENABLE");
        std::env::remove_var("CODER_PROMETHEUS_ADDRESS");
        let args = server_args(&[]);
        assert!(!args.prometheus_enable);
        assert_eq!(args.prometheus_address, "127.0.0.1:2112".parse().unwrap());
    }
}
