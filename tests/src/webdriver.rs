//! A minimal W3C WebDriver client for browser tests: `chromedriver`
//! driving headless Debian `chromium`. Only what the dashboard test needs;
//! every wait polls a DOM condition up to a deadline.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use base64::Engine;
use serde_json::{json, Value};

/// A `chromedriver` process and one browser session. Both end on drop.
pub struct Browser {
    driver: Child,
    http: reqwest::Client,
    session: String,
    base: String,
}

/// The element reference key of the W3C protocol.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

impl Browser {
    /// `chromium` and `chromedriver` from PATH, or `None` (with the reason
    /// printed) when they are not installed.
    pub fn available() -> bool {
        crate::require_programs(&["chromium", "chromedriver"])
    }

    /// Starts chromedriver on a free port and a headless session.
    pub async fn start() -> anyhow::Result<Browser> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("spawn chromedriver")?;
        let http = reqwest::Client::new();
        let base = format!("http://127.0.0.1:{port}");
        let mut b = Browser { driver, http, session: String::new(), base };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = b.http.get(format!("{}/status", b.base)).send().await;
            if let Ok(r) = ready {
                let v: Value = r.json().await.unwrap_or_default();
                if v["value"]["ready"] == json!(true) {
                    break;
                }
            }
            if Instant::now() > deadline {
                bail!("chromedriver did not become ready within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": which("chromium").unwrap_or_else(|| PathBuf::from("/usr/bin/chromium")),
                "args": ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                         "--disable-gpu", "--window-size=1280,900", "--no-first-run"]
            }
        }}});
        let v = b.call("POST", "/session", caps).await?;
        b.session = v["sessionId"].as_str().context("no session id")?.to_owned();
        Ok(b)
    }

    async fn call(&self, method: &str, path: &str, body: Value) -> anyhow::Result<Value> {
        let url = if path == "/session" {
            format!("{}/session", self.base)
        } else {
            format!("{}/session/{}{}", self.base, self.session, path)
        };
        let req = match method {
            "GET" => self.http.get(&url),
            "DELETE" => self.http.delete(&url),
            _ => self.http.post(&url).json(&body),
        };
        let v: Value = req.send().await?.json().await.context("webdriver answer")?;
        if let Some(err) = v["value"]["error"].as_str() {
            bail!("webdriver {path}: {err}: {}", v["value"]["message"]);
        }
        Ok(v["value"].clone())
    }

    pub async fn goto(&self, url: &str) -> anyhow::Result<()> {
        self.call("POST", "/url", json!({ "url": url })).await.map(drop)
    }

    pub async fn url(&self) -> anyhow::Result<String> {
        Ok(self.call("GET", "/url", Value::Null).await?.as_str().unwrap_or_default().to_owned())
    }

    pub async fn refresh(&self) -> anyhow::Result<()> {
        self.call("POST", "/refresh", json!({})).await.map(drop)
    }

    /// Runs `script` (a function body; `arguments` as given) and returns its value.
    pub async fn eval(&self, script: &str, args: Value) -> anyhow::Result<Value> {
        self.call("POST", "/execute/sync", json!({ "script": script, "args": args })).await
    }

    async fn element(&self, css: &str) -> anyhow::Result<String> {
        let v =
            self.call("POST", "/element", json!({"using": "css selector", "value": css})).await?;
        Ok(v[ELEMENT].as_str().with_context(|| format!("no element {css:?}: {v}"))?.to_owned())
    }

    pub async fn click(&self, css: &str) -> anyhow::Result<()> {
        let id = self.element(css).await?;
        self.call("POST", &format!("/element/{id}/click"), json!({})).await.map(drop)
    }

    pub async fn fill(&self, css: &str, text: &str) -> anyhow::Result<()> {
        let id = self.element(css).await?;
        self.call("POST", &format!("/element/{id}/value"), json!({ "text": text })).await.map(drop)
    }

    /// Types `text` with real key events into whatever has focus (`\n` is Enter).
    pub async fn type_keys(&self, text: &str) -> anyhow::Result<()> {
        let mut actions = Vec::new();
        for c in text.chars() {
            let key = if c == '\n' { "\u{E007}".to_owned() } else { c.to_string() };
            actions.push(json!({"type": "keyDown", "value": key}));
            actions.push(json!({"type": "keyUp", "value": key}));
        }
        let body = json!({"actions": [{"type": "key", "id": "keyboard", "actions": actions}]});
        self.call("POST", "/actions", body).await.map(drop)
    }

    /// Waits until `predicate` (a JS expression) is truthy; returns the
    /// value of `result` (a JS expression) then.
    pub async fn wait_for(
        &self,
        what: &str,
        predicate: &str,
        result: &str,
        limit: Duration,
    ) -> anyhow::Result<Value> {
        let script = format!("try {{ return ({predicate}) ? {{ok: true, v: ({result})}} : {{ok: false, v: ({result})}}; }} catch (e) {{ return {{ok: false, v: String(e)}}; }}");
        let deadline = Instant::now() + limit;
        loop {
            let last = match self.eval(&script, json!([])).await {
                Ok(v) if v["ok"] == json!(true) => return Ok(v["v"].clone()),
                Ok(v) => v["v"].to_string(),
                // Navigations in flight answer errors for a moment.
                Err(e) => e.to_string(),
            };
            if Instant::now() > deadline {
                bail!("timed out after {limit:?} waiting for {what}; last: {last}");
            }
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    }

    /// Resizes the browser window (CSS pixels).
    pub async fn set_window_size(&self, width: u32, height: u32) -> anyhow::Result<()> {
        self.call("POST", "/window/rect", json!({ "width": width, "height": height }))
            .await
            .map(drop)
    }

    /// Closes the browser, then stops chromedriver.
    pub async fn quit(self) {
        let _ = self.call("DELETE", "", Value::Null).await;
    }

    /// Saves a PNG screenshot.
    pub async fn screenshot(&self, path: &Path) -> anyhow::Result<()> {
        let v = self.call("GET", "/screenshot", Value::Null).await?;
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().context("no screenshot data")?)?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, png)?;
        Ok(())
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The session's browser exits with chromedriver's children.
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

/// `$CODER_SCREENSHOT_DIR`, else `target/screenshots` beside the binaries
/// of this test run.
pub fn screenshot_dir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("CODER_SCREENSHOT_DIR").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    let bin = crate::binary("coderd")?;
    let profile = bin.parent().context("no profile dir")?;
    Ok(profile.parent().context("no target dir")?.join("screenshots"))
}
