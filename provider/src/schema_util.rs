//! Small builders for Terraform schemas and the value helpers every resource shares.
//!
//! Terraform sends configuration and state as msgpack objects whose keys are exactly the
//! attributes and blocks of the schema. Each resource therefore declares one `State`
//! struct whose serde field names match its schema one to one; the helpers here keep the
//! schema declarations short and make "changed attribute ⇒ replace" (Coder marks every
//! attribute `ForceNew`) one call.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;
use tf_provider::schema::{Attribute, AttributeConstraint, AttributeType, Block, Description};
use tf_provider::value::Value;
use tf_provider::{AttributePath, Diagnostics};

/// A string attribute value: known, null or unknown.
pub(crate) type Str = Value<String>;
/// A number attribute value. Coder's numbers are all integers, but Terraform sends
/// whatever number the template wrote: [`check_int`] refuses fractions with a
/// diagnostic instead of a decoding error.
pub(crate) type Num = Value<f64>;
/// A bool attribute value.
pub(crate) type Bool = Value<bool>;
/// A `map(string)` attribute value.
pub(crate) type StrMap = Value<BTreeMap<String, Str>>;

/// Builds an attribute of the given type and constraint.
pub(crate) fn attr(
    attr_type: AttributeType,
    constraint: AttributeConstraint,
    description: &str,
) -> Attribute {
    Attribute {
        attr_type,
        description: Description::markdown(description),
        constraint,
        sensitive: false,
        deprecated: false,
    }
}

pub(crate) fn required(attr_type: AttributeType, description: &str) -> Attribute {
    attr(attr_type, AttributeConstraint::Required, description)
}

pub(crate) fn optional(attr_type: AttributeType, description: &str) -> Attribute {
    attr(attr_type, AttributeConstraint::Optional, description)
}

/// Optional in the configuration; the provider fills in a default when it is null.
pub(crate) fn defaulted(attr_type: AttributeType, description: &str) -> Attribute {
    attr(attr_type, AttributeConstraint::OptionalComputed, description)
}

pub(crate) fn computed(attr_type: AttributeType, description: &str) -> Attribute {
    attr(attr_type, AttributeConstraint::Computed, description)
}

/// Builds a block from `(name, attribute)` pairs and nested blocks.
pub(crate) fn block(
    description: &str,
    attributes: Vec<(&str, Attribute)>,
    blocks: Vec<(&str, tf_provider::schema::NestedBlock)>,
) -> Block {
    Block {
        version: 1,
        attributes: attributes
            .into_iter()
            .map(|(name, attribute)| (name.to_owned(), attribute))
            .collect::<HashMap<_, _>>(),
        blocks: blocks.into_iter().map(|(name, nested)| (name.to_owned(), nested)).collect(),
        description: Description::markdown(description),
        deprecated: false,
    }
}

/// Reports a known `value` that is not a whole number of at least `min`.
pub(crate) fn check_int(
    diags: &mut Diagnostics,
    value: &Num,
    min: Option<i64>,
    path: AttributePath,
) {
    let Value::Value(n) = *value else { return };
    let name = path_name(&path);
    if n.fract() != 0.0 || !n.is_finite() {
        diags.error_short(format!("{name} must be a whole number, got {n}"), path);
    } else if let Some(min) = min.filter(|&min| n < min as f64) {
        diags.error_short(format!("{name} must be at least {min}, got {n}"), path);
    }
}

/// The known integer in `value`, if it is one.
pub(crate) fn known_int(value: &Num) -> Option<i64> {
    match *value {
        Value::Value(n) if n.fract() == 0.0 && n.is_finite() => Some(n as i64),
        _ => None,
    }
}

/// A readable name for an attribute path in messages, e.g. `metadata.0.interval`.
fn path_name(path: &AttributePath) -> String {
    use tf_provider::AttributePathStep as Step;
    path.steps
        .iter()
        .map(|step| match step {
            Step::Attribute(name) | Step::Key(name) => name.to_string(),
            Step::Index(i) => i.to_string(),
        })
        .collect::<Vec<_>>()
        .join(".")
}

/// Replaces a null value by `default`; known and unknown values are kept.
pub(crate) fn or_default<T>(value: &mut Value<T>, default: T) {
    if value.is_null() {
        *value = Value::Value(default);
    }
}

/// The known string in `value`, or `None` when it is null or unknown.
pub(crate) fn known_str(value: &Str) -> Option<&str> {
    match value {
        Value::Value(s) => Some(s.as_str()),
        _ => None,
    }
}

/// Top-level attributes whose value differs between `prior` and `proposed`, skipping
/// `computed` ones. Every Coder attribute forces replacement, so these are the
/// `requires_replace` paths of an update plan.
pub(crate) fn changed_attributes<T: Serialize>(
    diags: &mut Diagnostics,
    prior: &T,
    proposed: &T,
    computed: &[&str],
) -> Vec<AttributePath> {
    let (prior, proposed) = match (serde_json::to_value(prior), serde_json::to_value(proposed)) {
        (Ok(serde_json::Value::Object(prior)), Ok(serde_json::Value::Object(proposed))) => {
            (prior, proposed)
        }
        _ => {
            diags.root_error_short("internal error: could not compare prior and planned state");
            return Vec::new();
        }
    };
    proposed
        .iter()
        .filter(|(name, _)| !computed.contains(&name.as_str()))
        .filter(|(name, value)| prior.get(name.as_str()) != Some(value))
        .map(|(name, _)| AttributePath::new(name.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[derive(Serialize)]
    struct S {
        id: Str,
        name: Str,
        size: Num,
    }

    #[test]
    fn changed_attributes_ignores_computed() {
        let mut diags = Diagnostics::default();
        let prior = S {
            id: Value::Value("a".into()),
            name: Value::Value("x".into()),
            size: Value::Value(1.0),
        };
        let proposed =
            S { id: Value::Unknown, name: Value::Value("x".into()), size: Value::Value(2.0) };
        let changed = changed_attributes(&mut diags, &prior, &proposed, &["id"]);
        assert_eq!(changed, vec![AttributePath::new("size")]);
        assert!(diags.errors.is_empty());
    }

    #[test]
    fn or_default_keeps_unknown() {
        let mut v: Num = Value::Unknown;
        or_default(&mut v, 3.0);
        assert!(v.is_unknown());
        let mut v: Num = Value::Null;
        or_default(&mut v, 3.0);
        assert_eq!(v, Value::Value(3.0));
    }

    #[test]
    fn fractions_are_not_integers() {
        let mut diags = Diagnostics::default();
        check_int(&mut diags, &Value::Value(1.5), None, AttributePath::new("n"));
        check_int(&mut diags, &Value::Value(-1.0), Some(0), AttributePath::new("m").index(2));
        check_int(&mut diags, &Value::Value(4.0), Some(0), AttributePath::new("ok"));
        let summaries: Vec<_> = diags.errors.iter().map(|d| d.summary.to_string()).collect();
        assert_eq!(
            summaries,
            ["n must be a whole number, got 1.5", "m.2 must be at least 0, got -1"]
        );
        assert_eq!(known_int(&Value::Value(7.0)), Some(7));
        assert_eq!(known_int(&Value::Value(7.5)), None);
    }
}
