//! Resources `coder_script` and `coder_env`, attached to an agent by `agent_id`.
//!
//! A `coder_script` is a script the agent runs at start (`run_on_start`), at stop
//! (`run_on_stop`) or periodically (`cron`, six fields with seconds first, as in
//! Coder); its output is its own log source named `display_name`. A `coder_env` sets
//! one environment variable in every session of the agent. Both get a UUID `id` at
//! create time; every attribute forces replacement, as in Coder.

use serde::{Deserialize, Serialize};
use tf_provider::schema::{AttributeType, Schema};
use tf_provider::value::Value;
use tf_provider::{AttributePath, Diagnostics};

use crate::managed::CoderResource;
use crate::schema_util::{
    block, check_int, computed, defaulted, known_str, optional, or_default, required, Bool, Num,
    Str,
};

/// State of a `coder_script`; field names are the schema's attribute names.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ScriptState {
    pub id: Str,
    pub agent_id: Str,
    pub display_name: Str,
    pub icon: Str,
    pub script: Str,
    pub cron: Str,
    pub log_path: Str,
    pub run_on_start: Bool,
    pub run_on_stop: Bool,
    pub start_blocks_login: Bool,
    pub timeout: Num,
}

/// The `coder_script` resource.
#[derive(Debug, Clone, Copy, Default)]
pub struct ScriptResource;

/// Whether `cron` has the six fields (seconds first) Coder's schedules have, each
/// made of digits, `*`, `/`, `-`, `,` or month and weekday names.
fn cron_shape_ok(cron: &str) -> bool {
    let fields: Vec<&str> = cron.split_whitespace().collect();
    fields.len() == 6
        && fields
            .iter()
            .all(|f| f.chars().all(|c| c.is_ascii_alphanumeric() || "*/-,?".contains(c)))
}

fn validate_script(diags: &mut Diagnostics, config: &ScriptState) {
    check_int(diags, &config.timeout, Some(0), AttributePath::new("timeout"));
    if let Some(name) = known_str(&config.display_name) {
        if name.trim().is_empty() {
            diags.error_short("display_name must not be empty", AttributePath::new("display_name"));
        }
    }
    if let Some(cron) = known_str(&config.cron) {
        if !cron_shape_ok(cron) {
            diags.error(
                format!("Invalid coder_script cron {cron:?}"),
                "`cron` has six fields, seconds first: `second minute hour day-of-month month \
                 day-of-week`, e.g. `0 */5 * * * *` for every five minutes.",
                AttributePath::new("cron"),
            );
        }
        if config.run_on_stop == Value::Value(true) {
            diags.error_short(
                "`cron` and `run_on_stop` cannot both be set",
                AttributePath::new("run_on_stop"),
            );
        }
    }
    let runs = |b: &Bool| *b == Value::Value(true);
    let all_known = !config.run_on_start.is_unknown()
        && !config.run_on_stop.is_unknown()
        && !config.cron.is_unknown();
    if all_known
        && !runs(&config.run_on_start)
        && !runs(&config.run_on_stop)
        && config.cron.is_null()
    {
        diags.error_short(
            "a coder_script must set at least one of `run_on_start`, `run_on_stop` or `cron`",
            AttributePath::new("run_on_start"),
        );
    }
    if runs(&config.start_blocks_login) && config.run_on_start == Value::Value(false) {
        diags.error_short(
            "`start_blocks_login` needs `run_on_start = true`",
            AttributePath::new("start_blocks_login"),
        );
    }
}

impl CoderResource for ScriptResource {
    type State = ScriptState;
    const COMPUTED: &'static [&'static str] = &["id"];

    fn schema(&self) -> Schema {
        use AttributeType::{Bool as B, Number as N, String as S};
        Schema {
            version: 1,
            block: block(
                "Use this resource to run a script from an agent.",
                vec![
                    ("id", computed(S, "The script's UUID.")),
                    ("agent_id", required(S, "The `id` of the `coder_agent` that runs it.")),
                    ("display_name", required(S, "The name of the script's log source.")),
                    ("icon", optional(S, "URL of an icon for its log source.")),
                    ("script", required(S, "The script, run with `/bin/sh -c`.")),
                    ("cron", optional(S, "Run periodically: six cron fields, seconds first.")),
                    ("log_path", optional(S, "A file that also receives the script's output.")),
                    ("run_on_start", defaulted(B, "Run when the agent starts. Default `false`.")),
                    ("run_on_stop", defaulted(B, "Run when the workspace stops. Default `false`.")),
                    (
                        "start_blocks_login",
                        defaulted(B, "Logins wait for the script to end. Default `false`."),
                    ),
                    (
                        "timeout",
                        defaulted(N, "Seconds before the script is killed; 0 (default): none."),
                    ),
                ],
                vec![],
            ),
        }
    }

    fn validate(&self, diags: &mut Diagnostics, config: &ScriptState) {
        validate_script(diags, config);
    }

    fn fill_defaults(&self, state: &mut ScriptState) {
        or_default(&mut state.run_on_start, false);
        or_default(&mut state.run_on_stop, false);
        or_default(&mut state.start_blocks_login, false);
        or_default(&mut state.timeout, 0.0);
    }

    fn mark_generated_unknown(&self, state: &mut ScriptState) {
        state.id = Value::Unknown;
    }

    fn generate(&self, _diags: &mut Diagnostics, state: &mut ScriptState) {
        state.id = Value::Value(uuid::Uuid::new_v4().to_string());
    }
}

/// State of a `coder_env`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct EnvState {
    pub id: Str,
    pub agent_id: Str,
    pub name: Str,
    pub value: Str,
}

/// The `coder_env` resource.
#[derive(Debug, Clone, Copy, Default)]
pub struct EnvResource;

/// A POSIX-ish variable name: letters, digits and `_`, not starting with a digit.
fn env_name_ok(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl CoderResource for EnvResource {
    type State = EnvState;
    const COMPUTED: &'static [&'static str] = &["id"];

    fn schema(&self) -> Schema {
        use AttributeType::String as S;
        Schema {
            version: 1,
            block: block(
                "Use this resource to set an environment variable in every session of an agent.",
                vec![
                    ("id", computed(S, "The variable's UUID.")),
                    ("agent_id", required(S, "The `id` of the `coder_agent` it is set for.")),
                    ("name", required(S, "The variable's name.")),
                    ("value", optional(S, "The variable's value.")),
                ],
                vec![],
            ),
        }
    }

    fn validate(&self, diags: &mut Diagnostics, config: &EnvState) {
        if let Some(name) = known_str(&config.name) {
            if !env_name_ok(name) {
                diags.error(
                    format!("Invalid coder_env name {name:?}"),
                    "A name is letters, digits and `_`, not starting with a digit.",
                    AttributePath::new("name"),
                );
            }
        }
    }

    fn fill_defaults(&self, _state: &mut EnvState) {}

    fn mark_generated_unknown(&self, state: &mut EnvState) {
        state.id = Value::Unknown;
    }

    fn generate(&self, _diags: &mut Diagnostics, state: &mut EnvState) {
        state.id = Value::Value(uuid::Uuid::new_v4().to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(config: &ScriptState) -> Vec<String> {
        let mut diags = Diagnostics::default();
        validate_script(&mut diags, config);
        diags.errors.iter().map(|d| d.summary.to_string()).collect()
    }

    fn script() -> ScriptState {
        ScriptState {
            display_name: Value::Value("Dotfiles".into()),
            script: Value::Value("true".into()),
            run_on_start: Value::Value(true),
            run_on_stop: Value::Value(false),
            ..Default::default()
        }
    }

    #[test]
    fn a_script_must_run_some_time() {
        assert!(errors(&script()).is_empty());
        let never = ScriptState { run_on_start: Value::Value(false), ..script() };
        assert_eq!(errors(&never).len(), 1, "{:?}", errors(&never));
        let periodic = ScriptState { cron: Value::Value("0 * * * * *".into()), ..never };
        assert!(errors(&periodic).is_empty(), "{:?}", errors(&periodic));
    }

    #[test]
    fn cron_has_six_fields_and_no_stop() {
        let five = ScriptState { cron: Value::Value("*/5 * * * *".into()), ..script() };
        assert!(errors(&five)[0].contains("Invalid coder_script cron"));
        let stop = ScriptState {
            cron: Value::Value("*/5 * * * * *".into()),
            run_on_stop: Value::Value(true),
            ..script()
        };
        assert_eq!(errors(&stop), ["`cron` and `run_on_stop` cannot both be set"]);
        let bad_timeout = ScriptState { timeout: Value::Value(-1.0), ..script() };
        assert_eq!(errors(&bad_timeout).len(), 1);
    }

    #[test]
    fn env_names() {
        for (name, ok) in
            [("EDITOR", true), ("_x1", true), ("1X", false), ("A-B", false), ("", false)]
        {
            assert_eq!(env_name_ok(name), ok, "{name}");
        }
    }
}
