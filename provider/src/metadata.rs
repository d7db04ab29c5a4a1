//! Resource `coder_metadata`: extra key/value items, an icon and a daily cost shown
//! next to another resource of the template (`resource_id`) in the dashboard.
//!
//! Items marked `sensitive` are stored like the others; hiding their value is the
//! dashboard's job. `is_null` records whether an item's value was left null, so the
//! dashboard can tell "empty" from "not set".

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use tf_provider::schema::{AttributeType, NestedBlock, Schema};
use tf_provider::value::Value;
use tf_provider::{AttributePath, Diagnostics};

use crate::managed::CoderResource;
use crate::schema_util::{
    block, check_int, computed, defaulted, known_str, optional, or_default, required, Bool, Num,
    Str,
};

/// One `item` block.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MetadataItem {
    pub key: Str,
    pub value: Str,
    pub sensitive: Bool,
    pub is_null: Bool,
}

/// State of a `coder_metadata`; field names are the schema's attribute names.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MetadataState {
    pub id: Str,
    pub resource_id: Str,
    pub hide: Bool,
    pub icon: Str,
    pub daily_cost: Num,
    pub item: Value<Vec<Value<MetadataItem>>>,
}

impl MetadataState {
    fn fill_defaults(&mut self) {
        or_default(&mut self.hide, false);
        or_default(&mut self.daily_cost, 0.0);
        if let Value::Value(items) = &mut self.item {
            for item in items.iter_mut() {
                if let Value::Value(item) = item {
                    or_default(&mut item.sensitive, false);
                    // `value` is unknown until apply when it comes from another resource.
                    item.is_null = match item.value {
                        Value::Null => Value::Value(true),
                        Value::Value(_) => Value::Value(false),
                        Value::Unknown => Value::Unknown,
                    };
                }
            }
        }
    }
}

/// The `coder_metadata` resource.
#[derive(Debug, Clone, Copy, Default)]
pub struct MetadataResource;

fn validate_metadata(diags: &mut Diagnostics, config: &MetadataState) {
    check_int(diags, &config.daily_cost, Some(0), AttributePath::new("daily_cost"));
    if let Value::Value(items) = &config.item {
        let mut keys = BTreeSet::new();
        for (i, item) in items.iter().enumerate() {
            let Value::Value(item) = item else { continue };
            if let Some(key) = known_str(&item.key) {
                if !keys.insert(key.to_owned()) {
                    diags.error_short(
                        format!("duplicate metadata item key {key:?}"),
                        AttributePath::new("item").index(i as i64).attribute("key"),
                    );
                }
            }
        }
    }
}

impl CoderResource for MetadataResource {
    type State = MetadataState;
    const COMPUTED: &'static [&'static str] = &["id"];

    fn schema(&self) -> Schema {
        use AttributeType::{Bool as B, Number as N, String as S};
        let item = block(
            "A key/value pair shown with the resource.",
            vec![
                ("key", required(S, "The key of this item.")),
                ("value", optional(S, "The value of this item.")),
                ("sensitive", defaulted(B, "Hide the value in the UI. Default `false`.")),
                ("is_null", computed(B, "Whether `value` was null.")),
            ],
            vec![],
        );
        Schema {
            version: 1,
            block: block(
                "Use this resource to attach metadata to a resource shown in the dashboard.",
                vec![
                    ("id", computed(S, "The metadata's UUID.")),
                    ("resource_id", required(S, "The `id` of the resource to describe.")),
                    ("hide", defaulted(B, "Hide the resource in the UI. Default `false`.")),
                    ("icon", optional(S, "URL of an icon.")),
                    (
                        "daily_cost",
                        defaulted(N, "Cost of the resource per day, in credits. Default 0."),
                    ),
                ],
                vec![("item", NestedBlock::List(item))],
            ),
        }
    }

    fn validate(&self, diags: &mut Diagnostics, config: &MetadataState) {
        validate_metadata(diags, config);
    }

    fn fill_defaults(&self, state: &mut MetadataState) {
        state.fill_defaults();
    }

    fn mark_generated_unknown(&self, state: &mut MetadataState) {
        state.id = Value::Unknown;
    }

    fn generate(&self, _diags: &mut Diagnostics, state: &mut MetadataState) {
        state.id = Value::Value(uuid::Uuid::new_v4().to_string());
        // Values that were unknown at plan time are known now.
        state.fill_defaults();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_null_follows_value() {
        let mut state = MetadataState {
            item: Value::Value(vec![
                Value::Value(MetadataItem { key: Value::Value("a".into()), ..Default::default() }),
                Value::Value(MetadataItem {
                    key: Value::Value("b".into()),
                    value: Value::Value("1".into()),
                    ..Default::default()
                }),
            ]),
            ..Default::default()
        };
        state.fill_defaults();
        let Value::Value(items) = &state.item else { panic!("items") };
        let flags: Vec<_> =
            items.iter().filter_map(|i| i.as_ref_option().map(|i| i.is_null)).collect();
        assert_eq!(flags, vec![Value::Value(true), Value::Value(false)]);
        assert_eq!(state.daily_cost, Value::Value(0.0));
    }

    #[test]
    fn duplicate_keys_are_an_error() {
        let item =
            Value::Value(MetadataItem { key: Value::Value("a".into()), ..Default::default() });
        let config =
            MetadataState { item: Value::Value(vec![item.clone(), item]), ..Default::default() };
        let mut diags = Diagnostics::default();
        validate_metadata(&mut diags, &config);
        assert_eq!(diags.errors.len(), 1);
    }
}
