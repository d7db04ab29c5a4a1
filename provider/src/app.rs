//! Resource `coder_app`: a shortcut to an application inside a workspace, attached to
//! an agent by `agent_id`.
//!
//! Either `url` (proxied through the agent, optionally on its own `subdomain`) or
//! `command` (run in a terminal) is given. Create assigns a UUID `id`; every attribute
//! forces replacement, as in Coder.

use regex::Regex;
use serde::{Deserialize, Serialize};
use tf_provider::schema::{AttributeType, NestedBlock, Schema};
use tf_provider::value::Value;
use tf_provider::{AttributePath, Diagnostics};

use crate::managed::CoderResource;
use crate::schema_util::{
    block, check_int, computed, defaulted, known_str, optional, or_default, required, Bool, Num,
    Str,
};

/// Hostname-friendly: alphanumerics and single hyphens, not at either end.
const SLUG_PATTERN: &str = "^[a-z0-9](-?[a-z0-9])*$";
const DISPLAY_NAME_MAX: usize = 64;
const SHARE_LEVELS: &[&str] = &["owner", "authenticated", "public"];
const OPEN_IN: &[&str] = &["slim-window", "tab"];

/// The `healthcheck` block.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Healthcheck {
    pub url: Str,
    pub interval: Num,
    pub threshold: Num,
}

/// State of a `coder_app`; field names are the schema's attribute names.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AppState {
    pub id: Str,
    pub agent_id: Str,
    pub slug: Str,
    pub display_name: Str,
    pub icon: Str,
    pub url: Str,
    pub command: Str,
    pub external: Bool,
    pub subdomain: Bool,
    pub share: Str,
    pub order: Num,
    pub group: Str,
    pub hidden: Bool,
    pub open_in: Str,
    pub healthcheck: Value<Vec<Value<Healthcheck>>>,
}

impl AppState {
    fn fill_defaults(&mut self) {
        or_default(&mut self.external, false);
        or_default(&mut self.subdomain, false);
        or_default(&mut self.share, "owner".to_owned());
        or_default(&mut self.hidden, false);
        or_default(&mut self.open_in, "slim-window".to_owned());
    }
}

/// The `coder_app` resource.
#[derive(Debug, Clone, Copy, Default)]
pub struct AppResource;

fn validate_app(diags: &mut Diagnostics, config: &AppState) {
    check_int(diags, &config.order, None, AttributePath::new("order"));
    if let Some(slug) = known_str(&config.slug) {
        let valid = Regex::new(SLUG_PATTERN).is_ok_and(|re| re.is_match(slug));
        if !valid {
            diags.error(
                format!("Invalid coder_app slug {slug:?}"),
                format!(
                    "The slug must be a valid hostname label ({SLUG_PATTERN}): lowercase \
                     letters, digits and single hyphens, not starting or ending with a hyphen."
                ),
                AttributePath::new("slug"),
            );
        }
    }
    if let Some(name) = known_str(&config.display_name) {
        if name.chars().count() > DISPLAY_NAME_MAX {
            diags.error_short(
                format!("display name is too long (max {DISPLAY_NAME_MAX} characters)"),
                AttributePath::new("display_name"),
            );
        }
    }
    for (name, value, allowed) in
        [("share", &config.share, SHARE_LEVELS), ("open_in", &config.open_in, OPEN_IN)]
    {
        if let Some(v) = known_str(value) {
            if !allowed.contains(&v) {
                diags.error(
                    format!("Invalid coder_app {name} {v:?}"),
                    format!("`{name}` must be one of: {}", allowed.join(", ")),
                    AttributePath::new(name),
                );
            }
        }
    }
    let has_command = config.command.is_value();
    if has_command && config.url.is_value() {
        diags.error_short("`command` and `url` cannot both be set", AttributePath::new("command"));
    }
    if has_command && config.subdomain == Value::Value(true) {
        diags.error_short(
            "`subdomain` cannot be true when `command` is set",
            AttributePath::new("subdomain"),
        );
    }
    let has_healthcheck = matches!(&config.healthcheck, Value::Value(items) if !items.is_empty());
    if has_command && has_healthcheck {
        diags.error_short(
            "`healthcheck` cannot be set together with `command`",
            AttributePath::new("healthcheck"),
        );
    }
    if let Value::Value(items) = &config.healthcheck {
        for (i, item) in items.iter().enumerate() {
            let Value::Value(hc) = item else { continue };
            for (name, value) in [("interval", &hc.interval), ("threshold", &hc.threshold)] {
                let path = AttributePath::new("healthcheck").index(i as i64).attribute(name);
                check_int(diags, value, Some(1), path);
            }
        }
    }
}

impl CoderResource for AppResource {
    type State = AppState;
    const COMPUTED: &'static [&'static str] = &["id"];

    fn schema(&self) -> Schema {
        use AttributeType::{Bool as B, Number as N, String as S};
        let healthcheck = block(
            "HTTP health checking to determine the application readiness.",
            vec![
                ("url", required(S, "HTTP address checked; a 2xx or 3xx status is healthy.")),
                ("interval", required(N, "Seconds between two checks.")),
                ("threshold", required(N, "Consecutive failures before the app is unhealthy.")),
            ],
            vec![],
        );
        Schema {
            version: 1,
            block: block(
                "Use this resource to define shortcuts to access applications in a workspace.",
                vec![
                    ("id", computed(S, "The app's UUID.")),
                    ("agent_id", required(S, "The `id` of the `coder_agent` serving this app.")),
                    ("slug", required(S, "Hostname-friendly name used in URLs.")),
                    ("display_name", optional(S, "Name shown in the UI. Defaults to the slug.")),
                    ("icon", optional(S, "URL of an icon.")),
                    ("url", optional(S, "URL to proxy to from inside the workspace, e.g. `http://localhost:8080`.")),
                    ("command", optional(S, "A command to run in a terminal instead of proxying a URL.")),
                    ("external", defaulted(B, "Open `url` on the client instead of proxying it. Default `false`.")),
                    ("subdomain", defaulted(B, "Serve the app on its own subdomain. Default `false`.")),
                    ("share", defaulted(S, "`owner` (default), `authenticated` or `public`.")),
                    ("order", optional(N, "Position in the UI; lowest first.")),
                    ("group", optional(S, "Name of a group of apps.")),
                    ("hidden", defaulted(B, "Hide the app in the UI. Default `false`.")),
                    ("open_in", defaulted(S, "`slim-window` (default) or `tab`.")),
                ],
                vec![("healthcheck", NestedBlock::Optional(healthcheck))],
            ),
        }
    }

    fn validate(&self, diags: &mut Diagnostics, config: &AppState) {
        validate_app(diags, config);
    }

    fn fill_defaults(&self, state: &mut AppState) {
        state.fill_defaults();
    }

    fn mark_generated_unknown(&self, state: &mut AppState) {
        state.id = Value::Unknown;
    }

    fn generate(&self, _diags: &mut Diagnostics, state: &mut AppState) {
        state.id = Value::Value(uuid::Uuid::new_v4().to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(config: &AppState) -> Vec<String> {
        let mut diags = Diagnostics::default();
        validate_app(&mut diags, config);
        diags.errors.iter().map(|d| d.summary.to_string()).collect()
    }

    #[test]
    fn slugs() {
        for (slug, ok) in [
            ("code-server", true),
            ("a", true),
            ("a1-b2", true),
            ("-a", false),
            ("a-", false),
            ("a--b", false),
            ("Code", false),
            ("a_b", false),
        ] {
            let config = AppState { slug: Value::Value(slug.into()), ..Default::default() };
            assert_eq!(errors(&config).is_empty(), ok, "{slug}");
        }
    }

    #[test]
    fn command_conflicts_with_url_and_subdomain() {
        let config = AppState {
            slug: Value::Value("x".into()),
            command: Value::Value("htop".into()),
            url: Value::Value("http://localhost:1".into()),
            subdomain: Value::Value(true),
            ..Default::default()
        };
        assert_eq!(errors(&config).len(), 2);
    }

    #[test]
    fn share_must_be_known_level() {
        let config = AppState {
            slug: Value::Value("x".into()),
            share: Value::Value("everyone".into()),
            ..Default::default()
        };
        assert_eq!(errors(&config).len(), 1);
    }
}
