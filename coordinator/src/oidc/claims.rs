//! What a verified login's claims decide, free of I/O: may this person log
//! in (verified email, allowed domain), which username a new account gets,
//! and which roles their groups map to.

use std::collections::BTreeMap;

use codersdk::Role;
use serde_json::{Map, Value};

use super::OidcConfig;

/// The identity a login proved, from the ID token and the userinfo
/// endpoint (the signed ID token wins where both speak).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub subject: String,
    pub email: String,
    /// The username a new account would get, before collisions.
    pub username: String,
    /// The group claim's values (empty without `--oidc-group-field`).
    pub groups: Vec<String>,
}

/// Why a login is refused; the message tells the user what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    #[error("Your identity provider sent no email address; an account needs one (ask for the `email` scope).")]
    NoEmail,
    #[error("Verify the email address {0:?} with your identity provider, then log in again.")]
    EmailNotVerified(String),
    #[error("Your email domain is not allowed to log in to this deployment (allowed: {allowed}).")]
    DomainNotAllowed { allowed: String },
}

/// Group name → roles (`--oidc-user-role-mapping`).
pub type RoleMapping = BTreeMap<String, Vec<Role>>;

/// Reads the identity out of merged claims and checks who may log in.
pub fn identity(config: &OidcConfig, claims: &Map<String, Value>) -> Result<Identity, Refusal> {
    let subject = claims.get("sub").and_then(Value::as_str).unwrap_or_default().to_owned();
    let email = claims.get("email").and_then(Value::as_str).map(str::trim).unwrap_or_default();
    let valid_email = matches!(email.rsplit_once('@'), Some((l, d)) if !l.is_empty() && d.contains('.'))
        && email.len() <= 254;
    if !valid_email {
        return Err(Refusal::NoEmail);
    }
    // Absent counts as verified (many providers only vouch for verified
    // addresses and do not say so); an explicit false never logs in.
    if is_false(claims.get("email_verified")) {
        return Err(Refusal::EmailNotVerified(email.to_owned()));
    }
    if !config.email_domains.is_empty() {
        let domain = email.rsplit_once('@').map(|(_, d)| d).unwrap_or_default();
        if !config.email_domains.iter().any(|d| d.eq_ignore_ascii_case(domain)) {
            return Err(Refusal::DomainNotAllowed { allowed: config.email_domains.join(", ") });
        }
    }
    let from_claim = claims.get(&config.username_field).and_then(Value::as_str);
    let local_part = email.split('@').next().unwrap_or_default();
    let username =
        sanitize_username(from_claim.filter(|s| !s.trim().is_empty()).unwrap_or(local_part));
    let groups = match &config.group_field {
        Some(field) => groups(claims.get(field)),
        None => Vec::new(),
    };
    Ok(Identity { subject, email: email.to_owned(), username, groups })
}

/// `false` or `"false"` (some providers send strings).
fn is_false(v: Option<&Value>) -> bool {
    matches!(v, Some(Value::Bool(false)))
        || matches!(v, Some(Value::String(s)) if s.eq_ignore_ascii_case("false"))
}

/// A group claim: a list of strings, or one string.
fn groups(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
        Some(Value::String(s)) => vec![s.clone()],
        _ => Vec::new(),
    }
}

/// A valid username (1-32 of `[a-z0-9_-]`, not starting with `-`, not `me`)
/// made from whatever the provider calls the user: other characters become
/// `-`, runs of `-` collapse, and the result is lower case.
pub fn sanitize_username(raw: &str) -> String {
    let mut out = String::new();
    for c in raw.trim().chars() {
        let c = c.to_ascii_lowercase();
        let c = if c.is_ascii_alphanumeric() || c == '_' { c } else { '-' };
        if !(c == '-' && (out.is_empty() || out.ends_with('-'))) {
            out.push(c);
        }
    }
    out.truncate(32);
    let out = out.trim_end_matches('-').to_owned();
    if out.is_empty() || out == "me" {
        format!("user{}", if out.is_empty() { "" } else { "-me" })
    } else {
        out
    }
}

/// The `n`th alternative to a taken username: `name-2`, `name-3`, … within
/// 32 characters.
pub fn username_candidate(base: &str, n: u32) -> String {
    if n <= 1 {
        return base.to_owned();
    }
    let suffix = format!("-{n}");
    let keep = 32usize.saturating_sub(suffix.len()).min(base.len());
    format!("{}{suffix}", base[..keep].trim_end_matches('-'))
}

/// The roles a user with `groups` gets: member, plus what the mapping gives
/// their groups (owner only where the mapping names it).
pub fn roles_for(mapping: &RoleMapping, groups: &[String]) -> Vec<Role> {
    let mut roles = vec![Role::Member];
    for g in groups {
        for r in mapping.get(g).into_iter().flatten() {
            if !roles.contains(r) {
                roles.push(*r);
            }
        }
    }
    roles
}

/// Parses `--oidc-user-role-mapping`: `{"group": ["role", …]}`.
pub fn parse_role_mapping(json: &str) -> Result<RoleMapping, String> {
    let raw: BTreeMap<String, Vec<String>> = serde_json::from_str(json)
        .map_err(|e| format!("not a JSON object of group → list of roles: {e}"))?;
    raw.into_iter()
        .map(|(group, roles)| {
            let roles = roles
                .iter()
                .map(|r| {
                    r.parse::<Role>().map_err(|_| format!("group {group:?}: unknown role {r:?}"))
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok((group, roles))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn config() -> OidcConfig {
        let mut c = OidcConfig::new(
            "https://idp.example.com".parse().unwrap(),
            "coder".into(),
            "secret".into(),
        );
        c.email_domains = vec!["example.com".into()];
        c.group_field = Some("groups".into());
        c
    }

    fn claims(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn email_must_be_verified_and_in_an_allowed_domain() {
        let c = config();
        let ok = identity(&c, &claims(json!({"sub": "1", "email": "a@Example.COM"}))).unwrap();
        assert_eq!(ok.username, "a");
        assert_eq!(
            identity(
                &c,
                &claims(json!({"sub": "1", "email": "a@example.com", "email_verified": false}))
            ),
            Err(Refusal::EmailNotVerified("a@example.com".into()))
        );
        assert!(matches!(
            identity(
                &c,
                &claims(json!({"sub": "1", "email": "a@example.com", "email_verified": "false"}))
            ),
            Err(Refusal::EmailNotVerified(_))
        ));
        for outside in
            ["a@evil.test", "a@example.com.evil.test", "a@sub.example.com", "a@evilexample.com"]
        {
            assert!(
                matches!(
                    identity(&c, &claims(json!({"sub": "1", "email": outside}))),
                    Err(Refusal::DomainNotAllowed { .. })
                ),
                "{outside}"
            );
        }
        assert_eq!(identity(&c, &claims(json!({"sub": "1"}))), Err(Refusal::NoEmail));
        let mut open = config();
        open.email_domains.clear();
        assert!(identity(&open, &claims(json!({"sub": "1", "email": "a@anything.test"}))).is_ok());
    }

    #[test]
    fn username_comes_from_the_claim_or_the_email() {
        let c = config();
        let id = identity(
            &c,
            &claims(json!({"sub": "1", "email": "bob@example.com", "preferred_username": "Bob.Smith", "groups": "admins"})),
        )
        .unwrap();
        assert_eq!(id.username, "bob-smith");
        assert_eq!(id.groups, vec!["admins".to_owned()]);
        let id =
            identity(&c, &claims(json!({"sub": "1", "email": "carol.x@example.com"}))).unwrap();
        assert_eq!(id.username, "carol-x");
        assert_eq!(id.groups, Vec::<String>::new());
    }

    #[test]
    fn sanitized_usernames_are_valid() {
        for (raw, want) in [
            ("Alice", "alice"),
            ("--a  b--", "a-b"),
            ("ünïcode", "n-code"),
            ("", "user"),
            ("!!!", "user"),
            ("me", "user-me"),
            ("a_b-c", "a_b-c"),
            (&"x".repeat(40), &"x".repeat(32)),
        ] {
            assert_eq!(sanitize_username(raw), want, "{raw:?}");
        }
        assert_eq!(username_candidate("alice", 1), "alice");
        assert_eq!(username_candidate("alice", 2), "alice-2");
        assert_eq!(username_candidate(&"x".repeat(32), 12).len(), 32);
    }

    #[test]
    fn roles_follow_the_mapping_and_owner_only_when_named() {
        let mapping =
            parse_role_mapping(r#"{"admins": ["template-admin"], "root": ["owner"]}"#).unwrap();
        assert_eq!(roles_for(&mapping, &[]), vec![Role::Member]);
        assert_eq!(
            roles_for(&mapping, &["admins".into()]),
            vec![Role::Member, Role::TemplateAdmin]
        );
        assert_eq!(roles_for(&mapping, &["Admins".into(), "owners".into()]), vec![Role::Member]);
        assert_eq!(roles_for(&mapping, &["root".into()]), vec![Role::Member, Role::Owner]);
        assert!(parse_role_mapping(r#"{"admins": ["superuser"]}"#).is_err());
        assert!(parse_role_mapping(r#"["admins"]"#).is_err());
    }
}
