//! The lifecycle that every resource of this provider shares, written once.
//!
//! Coder's resources live only in Terraform state: nothing exists outside it to read,
//! update or delete. What differs between them is small, and is what [`CoderResource`]
//! asks for: the schema, validation, defaults, which attributes are computed, and what
//! to generate at plan and create time. [`Managed`] turns that into a
//! [`tf_provider::Resource`]:
//!
//! - plan (create): fill defaults, mark generated attributes unknown, compute plan-time
//!   attributes;
//! - plan (update): any change to a configured attribute forces replacement (Coder marks
//!   every attribute `ForceNew`); otherwise only plan-time attributes are recomputed, which
//!   may yield an in-place update;
//! - create: generate ids and secrets; read, update and delete keep or drop state as is.

use async_trait::async_trait;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tf_provider::schema::Schema;
use tf_provider::value::ValueEmpty;
use tf_provider::{AttributePath, Diagnostics, Resource};

use crate::schema_util::changed_attributes;

/// What a resource of this provider defines; see the module docs.
pub(crate) trait CoderResource: Send + Sync {
    /// The resource's state; serde field names are the schema's attribute names.
    type State: Serialize + DeserializeOwned + Send;

    /// Attributes the provider computes; their changes never force replacement.
    const COMPUTED: &'static [&'static str];

    fn schema(&self) -> Schema;

    /// Checks the configuration; values may still be unknown.
    fn validate(&self, diags: &mut Diagnostics, config: &Self::State);

    /// Replaces null optional attributes with their defaults.
    fn fill_defaults(&self, state: &mut Self::State);

    /// Marks the attributes generated at create time unknown.
    fn mark_generated_unknown(&self, state: &mut Self::State);

    /// Computes attributes that are known at plan time (after defaults).
    fn plan_computed(&self, _diags: &mut Diagnostics, _state: &mut Self::State) {}

    /// Generates ids and secrets for a new resource.
    fn generate(&self, diags: &mut Diagnostics, state: &mut Self::State);
}

/// Adapts a [`CoderResource`] to [`tf_provider::Resource`].
#[derive(Debug, Clone)]
pub(crate) struct Managed<R>(pub(crate) R);

#[async_trait]
impl<R: CoderResource> Resource for Managed<R> {
    type State<'a> = R::State;
    type PrivateState<'a> = ValueEmpty;
    type ProviderMetaState<'a> = ValueEmpty;

    fn schema(&self, _diags: &mut Diagnostics) -> Option<Schema> {
        Some(self.0.schema())
    }

    async fn validate<'a>(&self, diags: &mut Diagnostics, config: R::State) -> Option<()> {
        self.0.validate(diags, &config);
        Some(())
    }

    async fn read<'a>(
        &self,
        _diags: &mut Diagnostics,
        state: R::State,
        private: ValueEmpty,
        _meta: ValueEmpty,
    ) -> Option<(R::State, ValueEmpty)> {
        Some((state, private))
    }

    async fn plan_create<'a>(
        &self,
        diags: &mut Diagnostics,
        proposed: R::State,
        _config: R::State,
        _meta: ValueEmpty,
    ) -> Option<(R::State, ValueEmpty)> {
        let mut state = proposed;
        self.0.fill_defaults(&mut state);
        self.0.mark_generated_unknown(&mut state);
        self.0.plan_computed(diags, &mut state);
        Some((state, ValueEmpty::default()))
    }

    async fn plan_update<'a>(
        &self,
        diags: &mut Diagnostics,
        prior: R::State,
        proposed: R::State,
        _config: R::State,
        private: ValueEmpty,
        _meta: ValueEmpty,
    ) -> Option<(R::State, ValueEmpty, Vec<AttributePath>)> {
        let mut state = proposed;
        self.0.fill_defaults(&mut state);
        let replace = changed_attributes(diags, &prior, &state, R::COMPUTED);
        if !replace.is_empty() {
            self.0.mark_generated_unknown(&mut state);
        }
        self.0.plan_computed(diags, &mut state);
        Some((state, private, replace))
    }

    async fn plan_destroy<'a>(
        &self,
        _diags: &mut Diagnostics,
        _prior: R::State,
        private: ValueEmpty,
        _meta: ValueEmpty,
    ) -> Option<ValueEmpty> {
        Some(private)
    }

    async fn create<'a>(
        &self,
        diags: &mut Diagnostics,
        planned: R::State,
        _config: R::State,
        private: ValueEmpty,
        _meta: ValueEmpty,
    ) -> Option<(R::State, ValueEmpty)> {
        let mut state = planned;
        self.0.generate(diags, &mut state);
        Some((state, private))
    }

    async fn update<'a>(
        &self,
        _diags: &mut Diagnostics,
        _prior: R::State,
        planned: R::State,
        _config: R::State,
        private: ValueEmpty,
        _meta: ValueEmpty,
    ) -> Option<(R::State, ValueEmpty)> {
        Some((planned, private))
    }

    async fn destroy<'a>(
        &self,
        _diags: &mut Diagnostics,
        _state: R::State,
        _private: ValueEmpty,
        _meta: ValueEmpty,
    ) -> Option<()> {
        Some(())
    }
}
