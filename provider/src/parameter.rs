//! Data source `coder_parameter`: a value the workspace owner chooses for a build.
//!
//! The provisioner passes each value in the environment variable named by
//! [`parameter_env_var`]: `CODER_PARAMETER_` followed by the lowercase hex SHA-256 of
//! the parameter's `name` (names may contain spaces and punctuation that variable
//! names cannot), exactly as Coder's provider does. `value` is that variable when set,
//! else `default`, else `""`. Values are strings whatever the `type`: numbers and bools
//! in their decimal/`true`/`false` spelling, `list(string)` as a JSON array.
//!
//! [`resolve`] is the pure core: it checks the declaration (type, options, validation)
//! and the value, and returns the value or a [`ParameterError`] that the data source
//! turns into a Terraform diagnostic.

use std::collections::BTreeSet;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tf_provider::schema::{AttributeType, NestedBlock, Schema};
use tf_provider::value::{Value, ValueEmpty};
use tf_provider::{AttributePath, DataSource, Diagnostics};

use crate::schema_util::{
    block, check_int, computed, defaulted, known_int, known_str, optional, required, Bool, Num, Str,
};

/// Parameter types, as spelled in `coder_parameter.type`.
pub const PARAMETER_TYPES: &[&str] = &["string", "number", "bool", "list(string)"];

/// The environment variable that carries the value of the parameter named `name`.
pub fn parameter_env_var(name: &str) -> String {
    format!("CODER_PARAMETER_{}", hex::encode(Sha256::digest(name.as_bytes())))
}

/// Why a parameter declaration or value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParameterError {
    #[error("invalid parameter type {0:?}; must be one of: string, number, bool, list(string)")]
    InvalidType(String),
    #[error("{what} {value:?} is not a valid {ty}")]
    WrongType { what: &'static str, value: String, ty: String },
    #[error("multiple options cannot have the same {field} {value:?}")]
    DuplicateOption { field: &'static str, value: String },
    #[error("default value {0:?} must be one of the options")]
    DefaultNotAnOption(String),
    #[error("value {0:?} is not one of the options")]
    ValueNotAnOption(String),
    #[error("options and validation cannot both be set")]
    OptionsWithValidation,
    #[error("a {bound} cannot be specified for a {ty} parameter")]
    BoundOnNonNumber { bound: &'static str, ty: String },
    #[error("a regex cannot be specified for a {0} parameter")]
    RegexOnNonString(String),
    #[error("invalid regex {regex:?}: {reason}")]
    InvalidRegex { regex: String, reason: String },
    #[error("an error message must be specified with a regex validation")]
    RegexWithoutError,
    #[error("{message} (value {value:?} does not match {regex:?})")]
    RegexMismatch { message: String, value: String, regex: String },
    #[error("value {value} is less than the minimum {min}")]
    BelowMin { value: String, min: i64 },
    #[error("value {value} is more than the maximum {max}")]
    AboveMax { value: String, max: i64 },
    #[error("number monotonicity can be either \"increasing\" or \"decreasing\", not {0:?}")]
    InvalidMonotonic(String),
}

/// An `option` of a parameter.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ParameterOption {
    pub name: Str,
    pub value: Str,
    pub description: Str,
    pub icon: Str,
}

/// The `validation` block of a parameter.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ParameterValidation {
    pub min: Num,
    pub max: Num,
    pub min_disabled: Bool,
    pub max_disabled: Bool,
    pub monotonic: Str,
    pub regex: Str,
    pub error: Str,
}

/// State of `data.coder_parameter`; field names are the schema's attribute names.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ParameterState {
    pub id: Str,
    pub value: Str,
    pub name: Str,
    pub display_name: Str,
    pub description: Str,
    pub r#type: Str,
    pub mutable: Bool,
    pub default: Str,
    pub icon: Str,
    pub order: Num,
    pub optional: Bool,
    pub option: Value<Vec<Value<ParameterOption>>>,
    pub validation: Value<Vec<Value<ParameterValidation>>>,
}

/// A parameter declaration with every value known, as [`resolve`] checks it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParameterSpec {
    pub ty: String,
    pub default: Option<String>,
    /// `(name, value)` of each option.
    pub options: Vec<(String, String)>,
    pub validation: Option<ValidationSpec>,
}

/// A `validation` block with every value known.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ValidationSpec {
    pub min: Option<i64>,
    pub max: Option<i64>,
    pub monotonic: Option<String>,
    pub regex: Option<String>,
    pub error: Option<String>,
}

fn check_type(what: &'static str, ty: &str, value: &str) -> Result<(), ParameterError> {
    let ok = match ty {
        "string" => true,
        "number" => value.trim().parse::<f64>().is_ok_and(f64::is_finite),
        "bool" => matches!(value, "true" | "false"),
        "list(string)" => serde_json::from_str::<Vec<String>>(value).is_ok(),
        other => return Err(ParameterError::InvalidType(other.to_owned())),
    };
    if ok {
        Ok(())
    } else {
        Err(ParameterError::WrongType { what, value: value.to_owned(), ty: ty.to_owned() })
    }
}

/// Checks the options (unique names and values, of the parameter's type, default among
/// them) and returns the set of option values.
fn option_values(spec: &ParameterSpec) -> Result<BTreeSet<&str>, ParameterError> {
    let mut names = BTreeSet::new();
    let mut values = BTreeSet::new();
    // Options of a list(string) parameter (a multi-select) are its elements.
    let option_ty = if spec.ty == "list(string)" { "string" } else { spec.ty.as_str() };
    for (name, option_value) in &spec.options {
        if !names.insert(name.as_str()) {
            return Err(ParameterError::DuplicateOption { field: "name", value: name.clone() });
        }
        if !values.insert(option_value.as_str()) {
            return Err(ParameterError::DuplicateOption {
                field: "value",
                value: option_value.clone(),
            });
        }
        check_type("option value", option_ty, option_value)?;
    }
    let default = spec.default.as_deref().filter(|d| !d.is_empty());
    if let Some(default) = default.filter(|_| !spec.options.is_empty()) {
        check_chosen(&spec.ty, &values, default).map_err(|e| match e {
            ParameterError::ValueNotAnOption(_) => {
                ParameterError::DefaultNotAnOption(default.to_owned())
            }
            other => other,
        })?;
    }
    Ok(values)
}

/// Checks that `value` (every element, for a multi-select) is among `options`.
fn check_chosen(ty: &str, options: &BTreeSet<&str>, value: &str) -> Result<(), ParameterError> {
    let chosen: Vec<String> = if ty == "list(string)" {
        serde_json::from_str(value).map_err(|_| ParameterError::WrongType {
            what: "value",
            value: value.to_owned(),
            ty: ty.to_owned(),
        })?
    } else {
        vec![value.to_owned()]
    };
    match chosen.iter().find(|v| !options.contains(v.as_str())) {
        Some(bad) => Err(ParameterError::ValueNotAnOption(bad.clone())),
        None => Ok(()),
    }
}

/// Checks the rules of a `validation` block themselves, whatever the value.
fn check_validation_rules(ty: &str, v: &ValidationSpec) -> Result<(), ParameterError> {
    if ty != "number" {
        let bound = if v.min.is_some() {
            Some("min")
        } else if v.max.is_some() {
            Some("max")
        } else {
            None
        };
        if let Some(bound) = bound {
            return Err(ParameterError::BoundOnNonNumber { bound, ty: ty.to_owned() });
        }
    }
    if let Some(m) = v.monotonic.as_deref().filter(|m| !m.is_empty()) {
        if ty != "number" || !matches!(m, "increasing" | "decreasing") {
            return Err(ParameterError::InvalidMonotonic(m.to_owned()));
        }
    }
    if let Some(pattern) = v.regex.as_deref().filter(|r| !r.is_empty()) {
        if ty != "string" {
            return Err(ParameterError::RegexOnNonString(ty.to_owned()));
        }
        regex::Regex::new(pattern).map_err(|e| ParameterError::InvalidRegex {
            regex: pattern.to_owned(),
            reason: e.to_string(),
        })?;
        if v.error.as_deref().is_none_or(str::is_empty) {
            return Err(ParameterError::RegexWithoutError);
        }
    }
    Ok(())
}

/// Checks `value` against rules that passed [`check_validation_rules`].
fn check_validation(ty: &str, v: &ValidationSpec, value: &str) -> Result<(), ParameterError> {
    match ty {
        "string" => {
            let Some(pattern) = v.regex.as_deref().filter(|r| !r.is_empty()) else {
                return Ok(());
            };
            let re = regex::Regex::new(pattern).map_err(|e| ParameterError::InvalidRegex {
                regex: pattern.to_owned(),
                reason: e.to_string(),
            })?;
            if !re.is_match(value) {
                return Err(ParameterError::RegexMismatch {
                    message: v.error.clone().unwrap_or_default(),
                    value: value.to_owned(),
                    regex: pattern.to_owned(),
                });
            }
        }
        "number" => {
            let n: f64 = value.trim().parse().map_err(|_| ParameterError::WrongType {
                what: "value",
                value: value.to_owned(),
                ty: ty.to_owned(),
            })?;
            if let Some(min) = v.min.filter(|&min| n < min as f64) {
                return Err(ParameterError::BelowMin { value: value.to_owned(), min });
            }
            if let Some(max) = v.max.filter(|&max| n > max as f64) {
                return Err(ParameterError::AboveMax { value: value.to_owned(), max });
            }
        }
        _ => {}
    }
    Ok(())
}

/// Checks a parameter declaration on its own: its type, default, options and
/// validation rules. Terraform reports these at `validate` time.
pub fn check_declaration(spec: &ParameterSpec) -> Result<(), ParameterError> {
    if !PARAMETER_TYPES.contains(&spec.ty.as_str()) {
        return Err(ParameterError::InvalidType(spec.ty.clone()));
    }
    if let Some(default) = spec.default.as_deref().filter(|d| !d.is_empty()) {
        check_type("default value", &spec.ty, default)?;
    }
    if !spec.options.is_empty() && spec.validation.is_some() {
        return Err(ParameterError::OptionsWithValidation);
    }
    option_values(spec)?;
    if let Some(validation) = &spec.validation {
        check_validation_rules(&spec.ty, validation)?;
    }
    Ok(())
}

/// Checks a parameter declaration and computes its value from `env_value` (the build's
/// value, if the provisioner passed one) or the default.
///
/// A parameter without default and without a build value resolves to `""` without
/// being validated: it is required, and supplying it is the coordinator's job (a
/// template import plans before any value exists).
pub fn resolve(spec: &ParameterSpec, env_value: Option<String>) -> Result<String, ParameterError> {
    check_declaration(spec)?;
    let value = env_value.or_else(|| spec.default.clone()).unwrap_or_default();
    if value.is_empty() && spec.default.is_none() {
        return Ok(value);
    }
    check_type("value", &spec.ty, &value)?;
    if !spec.options.is_empty() && !value.is_empty() {
        check_chosen(&spec.ty, &option_values(spec)?, &value)?;
    }
    if let Some(validation) = &spec.validation {
        check_validation(&spec.ty, validation, &value)?;
    }
    Ok(value)
}

/// A stable UUID for the parameter named `name`.
fn parameter_id(name: &str) -> String {
    let digest = Sha256::digest(format!("coder_parameter:{name}").as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_random_bytes(bytes).into_uuid().to_string()
}

/// Extracts a [`ParameterSpec`] from a read request; `None` if a value it needs is
/// unknown, which Terraform avoids by deferring the read to apply time.
fn spec_of(state: &ParameterState) -> Option<ParameterSpec> {
    let ty = match &state.r#type {
        Value::Value(t) => t.clone(),
        Value::Null => "string".to_owned(),
        Value::Unknown => return None,
    };
    let default = match &state.default {
        Value::Value(d) => Some(d.clone()),
        Value::Null => None,
        Value::Unknown => return None,
    };
    let mut options = Vec::new();
    for option in state.option.iter().flatten() {
        let Value::Value(option) = option else {
            return None;
        };
        options.push((known_str(&option.name)?.to_owned(), known_str(&option.value)?.to_owned()));
    }
    let validation = match state.validation.iter().flatten().next() {
        None => None,
        Some(Value::Value(v)) => Some(ValidationSpec {
            min: known_int(&v.min),
            max: known_int(&v.max),
            monotonic: v.monotonic.as_ref_option().cloned(),
            regex: v.regex.as_ref_option().cloned(),
            error: v.error.as_ref_option().cloned(),
        }),
        Some(_) => return None,
    };
    Some(ParameterSpec { ty, default, options, validation })
}

/// Reports numbers of the declaration that are not whole (`order`, validation bounds).
fn check_numbers(diags: &mut Diagnostics, state: &ParameterState) {
    check_int(diags, &state.order, None, AttributePath::new("order"));
    for (i, item) in state.validation.iter().flatten().enumerate() {
        if let Value::Value(v) = item {
            let path = AttributePath::new("validation").index(i as i64);
            check_int(diags, &v.min, None, path.clone().attribute("min"));
            check_int(diags, &v.max, None, path.attribute("max"));
        }
    }
}

/// The attribute a [`ParameterError`] is about, for the diagnostic.
fn error_path(error: &ParameterError) -> AttributePath {
    use ParameterError as E;
    match error {
        E::InvalidType(_) => AttributePath::new("type"),
        E::DuplicateOption { .. } | E::ValueNotAnOption(_) | E::OptionsWithValidation => {
            AttributePath::new("option")
        }
        E::DefaultNotAnOption(_) => AttributePath::new("default"),
        E::WrongType { what, .. } if *what == "default value" => AttributePath::new("default"),
        E::BoundOnNonNumber { .. }
        | E::RegexOnNonString(_)
        | E::InvalidRegex { .. }
        | E::RegexWithoutError
        | E::RegexMismatch { .. }
        | E::BelowMin { .. }
        | E::AboveMax { .. }
        | E::InvalidMonotonic(_) => AttributePath::new("validation"),
        _ => AttributePath::root(),
    }
}

/// The `coder_parameter` data source.
#[derive(Debug, Clone, Copy, Default)]
pub struct ParameterDataSource;

#[async_trait]
impl DataSource for ParameterDataSource {
    type State<'a> = ParameterState;
    type ProviderMetaState<'a> = ValueEmpty;

    fn schema(&self, _diags: &mut Diagnostics) -> Option<Schema> {
        use AttributeType::{Bool as B, Number as N, String as S};
        let option = block(
            "A value for the user to choose from.",
            vec![
                ("name", required(S, "The name of this option in the UI.")),
                ("value", required(S, "The parameter's value when this option is chosen.")),
                ("description", optional(S, "What choosing this option does.")),
                ("icon", optional(S, "URL of an icon.")),
            ],
            vec![],
        );
        let validation = block(
            "Validate the value of the parameter.",
            vec![
                ("min", optional(N, "Minimum of a number parameter.")),
                ("max", optional(N, "Maximum of a number parameter.")),
                ("min_disabled", computed(B, "Whether `min` is unset.")),
                ("max_disabled", computed(B, "Whether `max` is unset.")),
                ("monotonic", optional(S, "`increasing` or `decreasing` (number parameters).")),
                ("regex", optional(S, "A regex the value of a string parameter must match.")),
                ("error", optional(S, "The message shown when `regex` does not match.")),
            ],
            vec![],
        );
        Some(Schema {
            version: 1,
            block: block(
                "Use this data source to configure editable options for workspaces.",
                vec![
                    ("id", computed(S, "A stable UUID derived from the name.")),
                    ("value", computed(S, "The value of the parameter for this build.")),
                    ("name", required(S, "The name of the parameter.")),
                    ("display_name", optional(S, "The name shown in the UI.")),
                    ("description", optional(S, "What this parameter does.")),
                    (
                        "type",
                        defaulted(S, "`string` (default), `number`, `bool` or `list(string)`."),
                    ),
                    (
                        "mutable",
                        defaulted(
                            B,
                            "Whether the value may change after creation. Default `false`.",
                        ),
                    ),
                    (
                        "default",
                        optional(S, "The default value; without one the parameter is required."),
                    ),
                    ("icon", optional(S, "URL of an icon.")),
                    ("order", optional(N, "Position in the UI; lowest first.")),
                    ("optional", computed(B, "Whether the parameter has a default.")),
                ],
                vec![
                    ("option", NestedBlock::List(option)),
                    ("validation", NestedBlock::Optional(validation)),
                ],
            ),
        })
    }

    async fn validate<'a>(&self, diags: &mut Diagnostics, config: ParameterState) -> Option<()> {
        if known_str(&config.name).is_some_and(str::is_empty) {
            diags.error_short("parameter name must not be empty", AttributePath::new("name"));
        }
        check_numbers(diags, &config);
        // Unknown parts (e.g. a default computed from a resource) wait for the read.
        if let Some(spec) = spec_of(&config) {
            if let Err(e) = check_declaration(&spec) {
                diags.error("Invalid parameter declaration", e.to_string(), error_path(&e));
            }
        }
        Some(())
    }

    async fn read<'a>(
        &self,
        diags: &mut Diagnostics,
        config: ParameterState,
        _meta: ValueEmpty,
    ) -> Option<ParameterState> {
        let Some(name) = known_str(&config.name).map(str::to_owned) else {
            diags.error_short("parameter name must be known", AttributePath::new("name"));
            return None;
        };
        let errors = diags.errors.len();
        check_numbers(diags, &config);
        if diags.errors.len() > errors {
            return None;
        }
        let Some(spec) = spec_of(&config) else {
            diags.root_error_short("parameter declaration has unknown values");
            return None;
        };
        let env_value = std::env::var(parameter_env_var(&name)).ok();
        let value = match resolve(&spec, env_value) {
            Ok(value) => value,
            Err(e) => {
                diags.error(
                    format!("Invalid value for parameter {name:?}"),
                    e.to_string(),
                    error_path(&e),
                );
                return None;
            }
        };
        let mut state = config;
        state.id = Value::Value(parameter_id(&name));
        state.value = Value::Value(value);
        state.r#type = Value::Value(spec.ty);
        if state.mutable.is_null() {
            state.mutable = Value::Value(false);
        }
        state.optional = Value::Value(spec.default.is_some());
        if let Value::Value(items) = &mut state.validation {
            for item in items.iter_mut() {
                if let Value::Value(v) = item {
                    v.min_disabled = Value::Value(v.min.is_null());
                    v.max_disabled = Value::Value(v.max.is_null());
                }
            }
        }
        Some(state)
    }
}

#[cfg(test)]
#[path = "parameter_tests.rs"]
mod tests;
