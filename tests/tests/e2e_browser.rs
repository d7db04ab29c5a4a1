//! The dashboard in a real browser: headless Debian `chromium` driven by
//! `chromedriver` (W3C WebDriver). Log in, create a workspace from the
//! `local` template and watch its build logs and agent live; stop it from
//! the page and start it from the CLI while the list page watches (no
//! reloads); read agent metadata as it changes and the startup script's
//! log; open a listening port from the ports panel; in the web terminal
//! (xterm.js) run a command and `vim`, resize the window and read the PTY's
//! size back, cut the WebSocket and reconnect with the output intact, reload
//! and find the same shell; run a terminal app; create a workspace through
//! the parameter form; open an app; update an outdated workspace, promote a
//! version, read its import logs and edit the template's settings; as the
//! owner, create a user on
//! `/users`, grant it a role and suspend it, and find all three in the
//! audit log. Screenshots of each page go to
//! `$CODER_SCREENSHOT_DIR` or `target/screenshots/`. Skips (saying why)
//! without chromium.

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
    // Also: a metadata item that changes every second, and a terminal app.
    let main_tf = std::fs::read_to_string(tpl.join("main.tf"))
        .unwrap()
        .replace(r#"default      = "8000""#, &format!(r#"default      = "{port}""#))
        .replacen(
            "  metadata {\n",
            "  metadata {\n    key          = \"tick\"\n    display_name = \"Clock\"\n    script       = \"date +%s\"\n    interval     = 1\n    timeout      = 1\n  }\n  metadata {\n",
            1,
        )
        + "\nresource \"coder_app\" \"hello\" {\n  agent_id     = coder_agent.main.id\n  slug         = \"hello\"\n  display_name = \"Hello\"\n  icon         = \"/icon/terminal.svg\"\n  command      = \"echo hello-from-the-app-$((3*4))\"\n}\n";
    assert!(main_tf.contains(r#"key          = "tick""#), "the template's metadata block moved");
    std::fs::write(tpl.join("main.tf"), main_tf).unwrap();
    coder(&[
        "templates",
        "push",
        "local",
        "-d",
        tpl.to_str().unwrap(),
        "--version-name",
        "v1",
        "--yes",
    ]);
    let shots = screenshot_dir().unwrap();
    let base = srv.url.as_str().trim_end_matches('/').to_owned();

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let b = Browser::start().await.unwrap();
        let run = async {
            // Logged out: the dashboard sends us to the login page.
            b.goto(&format!("{base}/workspaces")).await?;
            b.wait_for("the login form", "document.getElementById('login')", "location.href", SHORT).await?;
            b.screenshot(&shots.join("dashboard-0-login.png")).await?;
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
            // The page follows the build and the agent live, without a reload.
            b.eval("window.notReloaded = true", json!([])).await?;
            b.wait_for(
                "the agent to be ready",
                "window.notReloaded && document.querySelector('[data-lifecycle=\"ready\"]') && document.getElementById('ws-status').dataset.status === 'running' && document.getElementById('build-logs').dataset.done === 'succeeded' && document.getElementById('build-logs').textContent.includes('Apply complete')",
                "[window.notReloaded, document.querySelector('main').innerText]",
                LONG,
            )
            .await?;
            let app_href = b
                .wait_for("the app link", "document.querySelector('a.app[data-slug=\"files\"]')", "document.querySelector('a.app[data-slug=\"files\"]').href", SHORT)
                .await?;
            // Agent detail: metadata values as the agent reports them, live;
            // the startup script's log under its source; the mesh path.
            let tick = "document.querySelector('tr[data-key=\"tick\"] td.value')";
            let first = b
                .wait_for(
                    "the Clock metadata value",
                    &format!("{tick} && /^[0-9]+$/.test({tick}.dataset.value)"),
                    &format!("{tick} && {tick}.dataset.value"),
                    SHORT,
                )
                .await?;
            b.wait_for(
                "the Clock metadata value to change without a reload",
                &format!("window.notReloaded && /^[0-9]+$/.test({tick}.dataset.value) && {tick}.dataset.value !== {first}"),
                &format!("[window.notReloaded, {tick} && {tick}.dataset.value]"),
                SHORT,
            )
            .await?;
            let load = b.eval("return document.querySelector('tr[data-key=\"load\"] td.value').dataset.value", json!([])).await?;
            anyhow::ensure!(load.as_str().is_some_and(|l| l.split(' ').count() == 3), "load average: {load}");
            b.wait_for(
                "the startup script's log under its source",
                "[...document.querySelectorAll('details.log-source')].some((d) => d.dataset.source.includes('Startup') && d.textContent.includes('workspace web1 of'))",
                "document.querySelector('.agent-logs') && document.querySelector('.agent-logs').innerText",
                SHORT,
            )
            .await?;
            let path = b.eval("return document.querySelector('.mesh-path').textContent", json!([])).await?;
            eprintln!("mesh path from coderd: {path}");
            // VS Code Desktop opens Remote-SSH through `coder config-ssh`'s host.
            let vscode = b.eval("return document.querySelector('a.vscode').getAttribute('href')", json!([])).await?;
            let vscode = vscode.as_str().unwrap_or_default();
            anyhow::ensure!(vscode.starts_with("vscode://vscode-remote/ssh-remote+coder.web1/"), "{vscode}");

            // Stop from the page: it turns stopped live.
            b.click("#btn-stop").await?;
            b.wait_for(
                "the workspace to stop without a reload",
                "window.notReloaded && document.getElementById('ws-status').dataset.status === 'stopped' && !document.querySelector('section[data-agent]') && document.getElementById('btn-start')",
                "[window.notReloaded, document.querySelector('main').innerText]",
                LONG,
            )
            .await?;
            b.screenshot(&shots.join("dashboard-2-workspace-stopped.png")).await?;

            // Start from the CLI while the list page watches: stopped → running.
            b.goto(&format!("{base}/workspaces")).await?;
            let row = "document.querySelector('tr[data-workspace=\"web1\"]')";
            b.wait_for(
                "the list to show web1 stopped",
                &format!("{row}.querySelector('[data-status]').dataset.status === 'stopped'"),
                &format!("{row}.innerText"),
                SHORT,
            )
            .await?;
            b.eval("window.notReloaded = true", json!([])).await?;
            coder(&["start", "web1", "--yes"]);
            b.wait_for(
                "the list to show web1 running and its agent ready, without a reload",
                &format!("window.notReloaded && {row}.querySelector('[data-status]').dataset.status === 'running' && {row}.innerText.includes('connected / ready')"),
                &format!("[window.notReloaded, {row}.innerText]"),
                LONG,
            )
            .await?;
            b.screenshot(&shots.join("dashboard-1-workspaces-live.png")).await?;

            // The ports panel lists the file server's port; one click opens it as a dev URL.
            b.click("tr[data-workspace=\"web1\"] a").await?;
            let open = format!("a.port-open[data-port=\"{port}\"]");
            b.wait_for(
                "the ports panel to list the app's port",
                &format!("document.querySelector('[data-lifecycle=\"ready\"]') && document.querySelector('{open}')"),
                "document.querySelector('.ports') && document.querySelector('.ports').innerText",
                LONG,
            )
            .await?;
            b.eval("for (const d of document.querySelectorAll('details.log-source')) d.open = true", json!([])).await?;
            b.screenshot(&shots.join("dashboard-2-workspace.png")).await?;
            let workspace_url = b.url().await?;
            // In the browser it opens a new tab; here, the same one.
            b.eval(&format!("document.querySelector('{open}').removeAttribute('target')"), json!([])).await?;
            b.click(&open).await?;
            b.wait_for(
                "the port's dev URL",
                &format!("location.pathname.endsWith('/apps/{port}/') && document.body && document.body.innerText.includes('Directory listing')"),
                "[location.href, document.body && document.body.innerText]",
                LONG,
            )
            .await?;
            b.goto(&workspace_url).await?;

            // The web terminal (xterm.js): run a command.
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
            b.wait_for("the command's output", "terminalText().includes('from-the-browser-42')", "terminalText()", SHORT)
                .await?;

            // A full-screen program: vim draws on the alternate screen, its
            // status line (reverse video) on the second row from the bottom.
            b.type_keys("vim -u NONE -c 'set laststatus=2' dash-vim.txt\n").await?;
            b.wait_for(
                "vim's status line",
                "(() => { const buf = terminal.buffer.active; const l = buf.getLine(buf.viewportY + terminal.rows - 2); \
                 return buf.type === 'alternate' && l.translateToString(true).includes('dash-vim.txt') && l.getCell(0).isInverse() !== 0; })()",
                "terminalText()",
                SHORT,
            )
            .await?;
            b.type_keys("ihello from vim").await?;
            b.wait_for(
                "vim to show the typed text, modified",
                "terminalText().startsWith('hello from vim') && terminalText().includes('dash-vim.txt [+]')",
                "terminalText()",
                SHORT,
            )
            .await?;
            b.screenshot(&shots.join("dashboard-3-terminal-vim.png")).await?;
            b.type_keys("\u{E00C}:q!\n").await?;
            b.wait_for("vim to exit", "terminal.buffer.active.type === 'normal'", "terminalText()", SHORT).await?;

            // Resizing the window resizes the PTY.
            let before = b.eval("return [terminal.rows, terminal.cols]", json!([])).await?;
            b.set_window_size(900, 600).await?;
            b.wait_for(
                "the terminal to refit",
                &format!("JSON.stringify([terminal.rows, terminal.cols]) !== '{before}'"),
                "[terminal.rows, terminal.cols]",
                SHORT,
            )
            .await?;
            b.type_keys("echo size=$(stty size)=\n").await?;
            let size = b
                .wait_for(
                    "stty to report the new size",
                    "terminalText().includes('size=' + terminal.rows + ' ' + terminal.cols + '=')",
                    "terminalText()",
                    SHORT,
                )
                .await?;
            eprintln!("terminal resized from {before}; stty: {}", size.as_str().unwrap_or_default().lines().filter(|l| l.starts_with("size=")).collect::<Vec<_>>().join(" "));

            // The WebSocket drops: the page reconnects to the same shell and
            // the agent's replay brings the earlier output back.
            b.type_keys("echo before-the-cut-$((5*5))\n").await?;
            b.wait_for("output before the cut", "terminalText().includes('before-the-cut-25')", "terminalText()", SHORT).await?;
            let connects = b.eval("return document.getElementById('terminal').dataset.connects", json!([])).await?;
            b.eval("coderPtySocket.close()", json!([])).await?;
            b.wait_for(
                "the terminal to reconnect after the cut",
                &format!("document.getElementById('terminal').dataset.connects !== {connects} && document.getElementById('term-status').dataset.state === 'connected' && terminalText().includes('before-the-cut-25') && terminalText().includes('from-the-browser-42')"),
                "[document.getElementById('terminal').dataset.connects, terminalText()]",
                SHORT,
            )
            .await?;
            b.click("#terminal").await?;
            b.type_keys("echo after-the-cut-$((4*4))\n").await?;
            b.wait_for("input after the cut", "terminalText().includes('after-the-cut-16')", "terminalText()", SHORT).await?;
            b.set_window_size(1280, 900).await?;
            b.screenshot(&shots.join("dashboard-4-terminal.png")).await?;

            // A reload re-attaches to the same shell (the id is in the URL).
            let term_url = b.url().await?;
            anyhow::ensure!(term_url.contains("reconnect="), "{term_url}");
            b.type_keys("MARK=still-$((7*6))\n").await?;
            b.refresh().await?;
            b.wait_for(
                "the terminal to reconnect",
                "document.getElementById('term-status').dataset.state === 'connected' && terminalText().includes('from-the-browser-42')",
                "terminalText()",
                SHORT,
            )
            .await?;
            b.click("#terminal").await?;
            b.type_keys("echo \"$MARK-here\"\n").await?;
            b.wait_for("the same shell after a reload", "terminalText().includes('still-42-here')", "terminalText()", SHORT)
                .await?;

            // A terminal app runs its command in the web terminal; its
            // icon (one coderd ships) is drawn beside it.
            b.goto(&workspace_url).await?;
            b.wait_for(
                "the terminal app's icon",
                "(() => { const i = document.querySelector('a.terminal-app[data-slug=\"hello\"]').previousElementSibling; return i && i.tagName === 'IMG' && i.complete && i.naturalWidth > 0; })()",
                "document.querySelector('ul.apps').innerHTML",
                SHORT,
            )
            .await?;
            b.click("a.terminal-app[data-slug=\"hello\"]").await?;
            b.wait_for(
                "the terminal app's command",
                "document.getElementById('term-status').dataset.state === 'connected' && terminalText().includes('hello-from-the-app-12')",
                "terminalText()",
                SHORT,
            )
            .await?;

            // Create a workspace through the parameter form: the browser
            // refuses a port below the parameter's minimum; a valid one
            // reaches the workspace (its file server listens there).
            let port2 = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
            b.goto(&format!("{base}/templates")).await?;
            b.click("tr[data-template=\"local\"] a.create-ws").await?;
            b.wait_for("the parameter form", "document.getElementById('param-http_port')", "location.href", SHORT).await?;
            let form = b.eval("return [document.getElementById('param-http_port').type, document.getElementById('param-http_port').min, document.getElementById('param-http_port').max, document.getElementById('param-http_port').value]", json!([])).await?;
            anyhow::ensure!(form == json!(["number", "1024", "65535", port.to_string()]), "{form}");
            b.fill("#create-ws-name", "web2").await?;
            b.eval("document.getElementById('param-http_port').value = '80'", json!([])).await?;
            b.click("#create-ws-submit").await?;
            let invalid = b.eval("return [location.pathname, document.getElementById('param-http_port').checkValidity()]", json!([])).await?;
            anyhow::ensure!(invalid == json!(["/templates/local/workspace", false]), "{invalid}");
            b.eval(&format!("document.getElementById('param-http_port').value = '{port2}'"), json!([])).await?;
            b.screenshot(&shots.join("dashboard-7-create-form.png")).await?;
            b.click("#create-ws-submit").await?;
            b.wait_for(
                "web2's file server on the port from the form",
                &format!("location.pathname.endsWith('/web2') && document.querySelector('[data-lifecycle=\"ready\"]') && document.querySelector('a.port-open[data-port=\"{port2}\"]')"),
                "[location.href, document.querySelector('main').innerText]",
                LONG,
            )
            .await?;
            let web2_url = b.url().await?;

            // The app, proxied through coderd over the mesh.
            b.goto(app_href.as_str().unwrap_or_default()).await?;
            b.wait_for(
                "the file server app",
                "document.body && document.body.innerText.includes('Directory listing')",
                "document.body && document.body.innerText",
                LONG,
            )
            .await?;
            b.screenshot(&shots.join("dashboard-5-app.png")).await?;

            // Templates: a new push becomes active; promote the first version back.
            coder(&["templates", "push", "local", "-d", tpl.to_str().unwrap(), "--version-name", "v2", "--yes"]);
            // Both workspaces run v1: outdated. Update web2 from its page.
            b.goto(&format!("{base}/workspaces")).await?;
            b.wait_for(
                "both workspaces to be outdated",
                "document.querySelectorAll('tr[data-outdated=\"true\"] .outdated').length === 2",
                "document.querySelector('main').innerHTML",
                SHORT,
            )
            .await?;
            b.goto(&web2_url).await?;
            b.eval("window.notReloaded = true", json!([])).await?;
            b.click("button.update").await?;
            b.wait_for(
                "web2 to be updated and running, without a reload",
                "window.notReloaded && !document.querySelector('main .outdated') && document.getElementById('ws-status').dataset.status === 'running' && document.getElementById('build-logs').dataset.done === 'succeeded'",
                "[window.notReloaded, document.querySelector('main').innerText]",
                LONG,
            )
            .await?;
            b.goto(&format!("{base}/templates/local")).await?;
            let v1 = "document.querySelector('tr[data-version=\"v1\"]')";
            b.wait_for("v2 to be active", &format!("{v1}.dataset.active === 'false' && {v1}.querySelector('button.promote')"), "document.querySelector('main').innerText", SHORT)
                .await?;
            b.click("tr[data-version=\"v1\"] button.promote").await?;
            b.wait_for(
                "v1 to be active again",
                &format!("{v1}.dataset.active === 'true' && document.querySelector('tr[data-version=\"v2\"]').dataset.active === 'false'"),
                "document.querySelector('main').innerText",
                SHORT,
            )
            .await?;
            // A version's import logs, and the template's settings.
            b.click("details[id^=\"vlogs-\"] summary").await?;
            b.wait_for(
                "a version's import logs",
                "(() => { const p = document.querySelector('details[id^=\"vlogs-\"] pre'); return p.dataset.done === 'succeeded' && p.textContent.length > 0; })()",
                "document.querySelector('details[id^=\"vlogs-\"] pre').textContent",
                SHORT,
            )
            .await?;
            b.click("#template-settings summary").await?;
            b.eval("document.getElementById('tpl-display-name').value = ''; document.getElementById('tpl-default-ttl').value = ''", json!([])).await?;
            b.fill("#tpl-display-name", "Local dev").await?;
            b.fill("#tpl-default-ttl", "8h").await?;
            b.click("#tpl-save").await?;
            b.wait_for(
                "the template's new settings",
                "document.querySelector('h1').textContent === 'Local dev' && !document.getElementById('tpl-saved').hidden && document.getElementById('tpl-default-ttl').value === '8h'",
                "document.querySelector('main').innerText",
                SHORT,
            )
            .await?;
            b.screenshot(&shots.join("dashboard-6-template.png")).await?;
            let t: serde_json::Value = serde_json::from_str(&coder(&["templates", "list", "--output", "json"]))?;
            let local = t.as_array().and_then(|a| a.iter().find(|t| t["name"] == "local")).cloned().unwrap_or_default();
            anyhow::ensure!(local["display_name"] == "Local dev" && local["default_ttl_ms"] == 8 * 3_600_000, "{local}");

            // Users, as the owner: create one through the form (a duplicate
            // shows the API's refusal), grant template-admin, suspend.
            b.goto(&format!("{base}/users")).await?;
            b.wait_for("the create-user form", "document.getElementById('user-create')", "location.href", SHORT).await?;
            let create_user = async |name: &str| {
                for (field, value) in [("name", name.to_owned()), ("email", format!("{name}@example.com")), ("password", "carol-password".to_owned())] {
                    b.eval(&format!("document.getElementById('user-create-{field}').value = ''"), json!([])).await?;
                    b.fill(&format!("#user-create-{field}"), &value).await?;
                }
                b.click("#user-create-submit").await
            };
            create_user("carol").await?;
            let carol = "document.querySelector('tr[data-user=\"carol\"]')";
            b.wait_for("carol in the list", &format!("{carol} && {carol}.querySelector('button.user-status')"), "document.querySelector('main').innerText", SHORT)
                .await?;
            create_user("carol").await?;
            b.wait_for(
                "the API's refusal of a duplicate",
                "!document.getElementById('users-error').hidden && document.getElementById('users-error').textContent.includes('already exists')",
                "document.querySelector('main').innerText",
                SHORT,
            )
            .await?;
            b.click("tr[data-user=\"carol\"] details.roles-edit summary").await?;
            b.click("tr[data-user=\"carol\"] input[value=\"template-admin\"]").await?;
            b.click("tr[data-user=\"carol\"] button.roles-save").await?;
            b.wait_for(
                "carol to hold template-admin",
                &format!("{carol}.querySelector('td.roles').textContent.includes('template-admin') && document.getElementById('users-error').hidden"),
                "document.querySelector('main').innerText",
                SHORT,
            )
            .await?;
            b.click("tr[data-user=\"carol\"] button.user-status[data-action=\"suspend\"]").await?;
            b.wait_for(
                "carol to be suspended",
                &format!("{carol}.querySelector('[data-status]').dataset.status === 'suspended' && {carol}.querySelector('button.user-status[data-action=\"activate\"]')"),
                "document.querySelector('main').innerText",
                SHORT,
            )
            .await?;
            b.screenshot(&shots.join("dashboard-6-users-admin.png")).await?;
            // The audit page's filter finds the three changes to carol.
            b.goto(&format!("{base}/audit?q=resource_type:user")).await?;
            let rows = b
                .wait_for(
                    "the audit rows for carol",
                    "document.querySelector('#audit')",
                    "[...document.querySelectorAll('#audit tbody tr')].filter((r) => r.children[3].textContent.includes('carol')).map((r) => [r.dataset.action, r.children[4].textContent])",
                    SHORT,
                )
                .await?;
            let rows = rows.to_string();
            for (what, needle) in [("create", r#"["create","#), ("role change", "template-admin"), ("suspension", "suspended")] {
                anyhow::ensure!(rows.contains(needle), "no audit row for the {what} of carol: {rows}");
            }
            let users: serde_json::Value = serde_json::from_str(&coder(&["users", "list", "--output", "json"]))?;
            let carol = users.as_array().and_then(|a| a.iter().find(|u| u["username"] == "carol")).cloned().unwrap_or_default();
            anyhow::ensure!(carol["status"] == "suspended", "{carol}");
            anyhow::ensure!(carol["roles"].as_array().is_some_and(|r| r.contains(&json!("template-admin"))), "{carol}");

            // The other pages, for the record.
            for (page, sel) in [("templates", "[data-template]"), ("users", "#users"), ("audit", "#audit")] {
                b.goto(&format!("{base}/{page}")).await?;
                b.wait_for(&format!("the {page} page"), &format!("document.querySelector('{sel}')"), "location.href", SHORT)
                    .await?;
                b.screenshot(&shots.join(format!("dashboard-6-{page}.png"))).await?;
            }
            // A narrow window: the layout wraps, tables scroll on their own.
            b.set_window_size(420, 860).await?;
            b.goto(&web2_url).await?;
            let overflow = b
                .wait_for(
                    "the workspace page in a narrow window",
                    "document.getElementById('ws-status')",
                    "document.documentElement.scrollWidth - document.documentElement.clientWidth",
                    SHORT,
                )
                .await?;
            anyhow::ensure!(overflow.as_i64().is_some_and(|o| o <= 0), "the page scrolls sideways by {overflow}px");
            b.screenshot(&shots.join("dashboard-8-narrow.png")).await?;
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
