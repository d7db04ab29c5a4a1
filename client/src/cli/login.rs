//! `coder login`, `coder logout`, `coder whoami`.

use std::io::{BufRead, IsTerminal};

use anyhow::{bail, Context};
use url::Url;

use super::output::{self, out, outln, OutputArgs};
use super::Context_;
use codersdk::{Client, CreateFirstUserRequest, LoginWithPasswordRequest};

#[derive(clap::Args, Debug)]
pub struct LoginArgs {
    /// Deployment URL (default: CODER_URL or the stored one).
    pub url: Option<Url>,
    /// For a fresh deployment: the first user's username.
    #[arg(long, env = "CODER_FIRST_USER_USERNAME")]
    pub first_user_username: Option<String>,
    /// For a fresh deployment: the first user's email.
    #[arg(long, env = "CODER_FIRST_USER_EMAIL")]
    pub first_user_email: Option<String>,
    /// For a fresh deployment: the first user's password.
    #[arg(long, env = "CODER_FIRST_USER_PASSWORD", hide_env_values = true)]
    pub first_user_password: Option<String>,
    /// Log in with this username or email.
    #[arg(long)]
    pub username: Option<String>,
    /// Log in with this password.
    #[arg(long, env = "CODER_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
    /// Log in with an existing session or API token (e.g. the one /cli-auth shows).
    #[arg(long = "use-token", env = "CODER_LOGIN_TOKEN", hide_env_values = true)]
    pub use_token: Option<String>,
    /// Log in through the browser (OpenID Connect): open /cli-auth, paste the token it shows.
    /// The default when the deployment offers it and no --username/--password is given.
    #[arg(long)]
    pub oidc: bool,
}

fn prompt(question: &str, secret: bool) -> anyhow::Result<String> {
    if !std::io::stdin().is_terminal() {
        bail!("{question} is needed but stdin is not a terminal; pass it as a flag (see `coder login --help`)");
    }
    if secret {
        return rpassword::prompt_password(format!("{question}: ")).context("read password");
    }
    out!("{question}: ")?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(line.trim().to_owned())
}

pub async fn login(ctx: &Context_, args: LoginArgs) -> anyhow::Result<()> {
    let Some(url) = args.url.clone().or_else(|| ctx.url.clone()) else {
        bail!("Which deployment? Run `coder login <url>`.");
    };
    let anon = Client::new(url.clone());
    anon.build_info()
        .await
        .with_context(|| format!("{url} does not answer like a coderd deployment"))?;

    let token = if let Some(token) = args.use_token.clone() {
        token
    } else if !anon.has_first_user().await? {
        let username = match args.first_user_username.clone() {
            Some(u) => u,
            None => prompt("This deployment has no users yet. First user's username", false)?,
        };
        let email = match args.first_user_email.clone() {
            Some(e) => e,
            None => prompt("Email", false)?,
        };
        let password = match args.first_user_password.clone() {
            Some(p) => p,
            None => prompt("Password", true)?,
        };
        anon.create_first_user(&CreateFirstUserRequest {
            email: email.clone(),
            username: username.clone(),
            password: password.clone(),
        })
        .await
        .context("create the first user")?;
        outln!("Created the first user {username:?} (owner).")?;
        anon.login_with_password(&LoginWithPasswordRequest {
            email,
            password,
            ..Default::default()
        })
        .await?
        .session_token
    } else if args.oidc || (no_password_given(&args) && offers_browser_login(&anon).await) {
        browser_login(&url)?
    } else {
        let login = match args.username.clone().or(args.first_user_email.clone()) {
            Some(u) => u,
            None => prompt("Username or email", false)?,
        };
        let password = match args.password.clone().or(args.first_user_password.clone()) {
            Some(p) => p,
            None => prompt("Password", true)?,
        };
        let req = if login.contains('@') {
            LoginWithPasswordRequest { email: login, password, ..Default::default() }
        } else {
            LoginWithPasswordRequest { username: login, password, ..Default::default() }
        };
        anon.login_with_password(&req).await?.session_token
    };
    let client = anon.with_token(token.clone());
    let me = client.me().await.context("the token was not accepted")?;
    ctx.config
        .save_login(url.as_str(), &token)
        .with_context(|| format!("save login in {}", ctx.config.path().display()))?;
    outln!("Welcome, {}! You are logged in to {url}.", me.username)?;
    Ok(())
}

fn no_password_given(args: &LoginArgs) -> bool {
    args.username.is_none() && args.password.is_none() && args.first_user_password.is_none()
}

/// Whether the deployment logs users in through the browser (OpenID
/// Connect); an older one without `authmethods` does not.
async fn offers_browser_login(anon: &Client) -> bool {
    anon.auth_methods().await.is_ok_and(|m| m.oidc.enabled)
}

/// Coder's browser login: the user logs in on `/cli-auth`, which shows a
/// session token, and pastes it here (or pipes it to stdin).
fn browser_login(url: &Url) -> anyhow::Result<String> {
    let page = url.join("/cli-auth").context("the deployment URL cannot be a base")?;
    outln!("Open {page} in your browser to log in, then paste the session token it shows.")?;
    let interactive = std::io::stdin().is_terminal();
    if interactive {
        open_browser(page.as_str());
        return Ok(rpassword::prompt_password("Paste your token here: ")
            .context("read the token")?
            .trim()
            .to_owned());
    }
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).context("read the token from stdin")?;
    let token = line.trim().to_owned();
    if token.is_empty() {
        bail!("no token on stdin: paste the one {page} shows (or pass --use-token)");
    }
    Ok(token)
}

/// Tries `xdg-open` on a desktop; never fails (the URL is printed anyway).
fn open_browser(url: &str) {
    let desktop =
        std::env::var_os("DISPLAY").is_some() || std::env::var_os("WAYLAND_DISPLAY").is_some();
    if !desktop {
        return;
    }
    let opened = std::process::Command::new("xdg-open")
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    if opened.is_err() {
        tracing::debug!("xdg-open is not available");
    }
}

pub async fn logout(ctx: &Context_) -> anyhow::Result<()> {
    if let Ok(client) = ctx.client() {
        if let Err(e) = client.logout().await {
            eprintln!("warning: the server did not revoke the session: {e}");
        }
    }
    ctx.config.clear_session()?;
    outln!("You are logged out.")?;
    Ok(())
}

pub async fn whoami(ctx: &Context_, out: OutputArgs) -> anyhow::Result<()> {
    let client = ctx.client()?;
    let me = client.me().await?;
    let roles: Vec<&str> = me.roles.iter().map(|r| r.as_str()).collect();
    output::print(
        out.output,
        &me,
        &["username", "email", "roles", "url"],
        vec![vec![
            me.username.clone(),
            me.email.clone(),
            roles.join(","),
            client.url().to_string(),
        ]],
    )
}
