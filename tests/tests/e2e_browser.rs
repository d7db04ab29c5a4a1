//! The dashboard in a real browser: headless Debian `chromium` driven by
//! `chromedriver` (W3C WebDriver). Log in, create a workspace from the
//! `local` template and watch its build logs, open the web terminal and run
//! a command, reload and find the same shell, open an app. Screenshots go to
//! `target/screenshots/`. Skips (saying why) without chromium.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use serde_json::json;
use tests::webdriver::{screenshot_dir, Browser};
use tests::{login_first_user, require_programs, run_ok, tempdir, Coderd};

const LONG: Duration = Duration::from_secs(120);
const SHORT: Duration = Duration::from_secs(30);

#[test]
fn dashboard_login_create_logs_terminal_and_app_in_chromium() {
    if !require_programs(&["terraform", "python3"]) || !Browser::available() {
        return;
    }
    let tmp = tempdir().unwrap();
    let cfg = tmp.path().join("config");
    let srv = Coderd::spawn(&tmp.path().join("data"), &[]).unwrap();
    login_first_user(&srv, &cfg).unwrap();
    let tpl = tmp.path().join("tpl");
    let coder = |args: &[&str]| {
        let mut c = srv.coder(&cfg).unwrap();
        c.args(args);
        run_ok(&mut c).unwrap()
    };
    coder(&["templates", "init", tpl.to_str().unwrap(), "--id", "local"]);
    // A free port for the template's file server, so parallel tests don't meet.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let main_tf = std::fs::read_to_string(tpl.join("main.tf"))
        .unwrap()
        .replace(r#"default      = "8000""#, &format!(r#"default      = "{port}""#));
    std::fs::write(tpl.join("main.tf"), main_tf).unwrap();
    coder(&["templates", "push", "local", "-d", tpl.to_str().unwrap(), "--yes"]);
    let shots = screenshot_dir().unwrap();
    let base = srv.url.as_str().trim_end_matches('/').to_owned();

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let b = Browser::start().await.unwrap();
        let run = async {
            // Logged out: the dashboard sends us to the login page.
            b.goto(&format!("{base}/workspaces")).await?;
            b.wait_for("the login form", "document.getElementById('login')", "location.href", SHORT).await?;
            b.fill("#login-name", "dev@example.com").await?;
            b.fill("#login-password", "wrong-password").await?;
            b.click("#login-submit").await?;
            b.wait_for(
                "the login error",
                "!document.getElementById('login-error').hidden",
                "document.getElementById('login-error').textContent",
                SHORT,
            )
            .await?;
            b.eval("document.getElementById('login-password').value = ''", json!([])).await?;
            b.fill("#login-password", "dev-password").await?;
            b.click("#login-submit").await?;
            b.wait_for("the workspaces page", "document.getElementById('create')", "location.href", SHORT).await?;
            // The session cookie is HttpOnly: scripts cannot read it.
            let cookies = b.eval("return document.cookie", json!([])).await?;
            anyhow::ensure!(!cookies.to_string().contains("coder_session_token"), "{cookies}");
            b.screenshot(&shots.join("dashboard-1-workspaces.png")).await?;

            // Create a workspace and watch its build logs stream in.
            b.fill("#create-name", "web1").await?;
            b.click("#create-submit").await?;
            b.wait_for(
                "build logs",
                "document.getElementById('build-logs') && document.getElementById('build-logs').textContent.includes('Apply complete')",
                "document.getElementById('build-logs') && document.getElementById('build-logs').textContent",
                LONG,
            )
            .await?;
            b.wait_for(
                "the agent to be ready",
                "document.querySelector('[data-lifecycle=\"ready\"]') && document.getElementById('ws-status').dataset.status === 'running' && document.getElementById('build-logs').dataset.done === 'succeeded' && document.getElementById('build-logs').textContent.includes('Apply complete')",
                "document.querySelector('main').innerText",
                LONG,
            )
            .await?;
            b.screenshot(&shots.join("dashboard-2-workspace.png")).await?;
            let app_href = b
                .wait_for("the app link", "document.querySelector('a.app')", "document.querySelector('a.app').href", SHORT)
                .await?;

            // The web terminal: run a command.
            b.click("a.terminal").await?;
            b.wait_for(
                "the terminal to connect",
                "document.getElementById('term-status') && document.getElementById('term-status').dataset.state === 'connected'",
                "document.getElementById('term-status') && document.getElementById('term-status').textContent",
                SHORT,
            )
            .await?;
            b.click("#terminal").await?;
            b.type_keys("echo from-the-browser-$((6*7))\n").await?;
            b.wait_for(
                "the command's output",
                "document.getElementById('terminal').textContent.includes('from-the-browser-42')",
                "document.getElementById('terminal').textContent",
                SHORT,
            )
            .await?;
            b.screenshot(&shots.join("dashboard-3-terminal.png")).await?;
            // A reload re-attaches to the same shell (the id is in the URL).
            let term_url = b.url().await?;
            anyhow::ensure!(term_url.contains("reconnect="), "{term_url}");
            b.type_keys("MARK=still-$((7*6))\n").await?;
            b.refresh().await?;
            b.wait_for(
                "the terminal to reconnect",
                "document.getElementById('term-status').dataset.state === 'connected' && document.getElementById('terminal').textContent.includes('from-the-browser-42')",
                "document.getElementById('terminal').textContent",
                SHORT,
            )
            .await?;
            b.click("#terminal").await?;
            b.type_keys("echo \"$MARK-here\"\n").await?;
            b.wait_for(
                "the same shell after a reload",
                "document.getElementById('terminal').textContent.includes('still-42-here')",
                "document.getElementById('terminal').textContent",
                SHORT,
            )
            .await?;

            // The app, proxied through coderd over the mesh.
            b.goto(app_href.as_str().unwrap_or_default()).await?;
            b.wait_for(
                "the file server app",
                "document.body && document.body.innerText.includes('Directory listing')",
                "document.body && document.body.innerText",
                LONG,
            )
            .await?;
            b.screenshot(&shots.join("dashboard-4-app.png")).await?;
            anyhow::Ok(())
        };
        let result = run.await;
        if result.is_err() {
            let _ = b.screenshot(&shots.join("dashboard-failure.png")).await;
        }
        b.quit().await;
        result.unwrap();
    });
    eprintln!("screenshots in {}", shots.display());
}
