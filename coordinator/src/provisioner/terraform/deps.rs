//! What depends on what in a template: the `references` of each resource's
//! expressions in plan JSON `configuration`, and the edges of `terraform graph`, by
//! configuration address (instance keys stripped). [`super::parse`] uses them to tie
//! agents to the resources that run them, and apps and metadata to their targets.

use std::collections::HashMap;

use serde_json::Value;

use super::parse::{array, s};

/// `address` without its `[...]` instance keys (which may be quoted strings holding
/// brackets or dots).
pub(super) fn strip_indices(address: &str) -> String {
    let mut out = String::with_capacity(address.len());
    let mut depth = 0u32;
    let mut in_string = false;
    let mut escaped = false;
    for c in address.chars() {
        if in_string {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            '[' => depth += 1,
            ']' => depth = depth.saturating_sub(1),
            '"' if depth > 0 => in_string = true,
            _ if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out
}

/// References between configuration blocks, by address without instance keys.
#[derive(Debug, Default)]
pub(super) struct Config {
    /// Everything a resource's expressions, provisioners and `depends_on` reference.
    pub(super) refs: HashMap<String, Vec<String>>,
    /// What one top-level attribute's expression references: `(resource, attribute)`.
    pub(super) attr_refs: HashMap<(String, String), Vec<String>>,
}

const NOT_RESOURCES: &[&str] =
    &["var", "local", "count", "each", "path", "terraform", "self", "module"];

/// The resource a reference names, e.g. `coder_agent.main` for
/// `coder_agent.main[0].id`; `None` for variables, locals and module outputs.
fn referenced_resource(reference: &str, prefix: &str) -> Option<String> {
    let plain = strip_indices(reference);
    let mut parts = plain.split('.');
    let first = parts.next()?;
    if NOT_RESOURCES.contains(&first) {
        return None;
    }
    let second = parts.next()?;
    if first == "data" {
        let third = parts.next()?;
        return Some(format!("{prefix}data.{second}.{third}"));
    }
    Some(format!("{prefix}{first}.{second}"))
}

/// A `terraform graph` node name as a configuration address: `[root] ` and ` (expand)`
/// decorations (older versions) and instance keys removed.
fn graph_node(name: &str) -> String {
    let name = name.strip_prefix("[root] ").unwrap_or(name);
    let name = match name.rfind(" (") {
        Some(at) if name.ends_with(')') => &name[..at],
        _ => name,
    };
    strip_indices(name)
}

/// The `"from" -> "to"` edges of `terraform graph` DOT output: `from` depends on `to`.
/// Since terraform 1.7 the graph holds only resources, with edges through locals and
/// variables already resolved, which expressions' `references` cannot see.
pub fn graph_edges(dot: &str) -> Vec<(String, String)> {
    #[derive(PartialEq)]
    enum Token {
        Id(String),
        Arrow,
        Other,
    }
    let mut tokens = Vec::new();
    let mut chars = dot.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                let mut id = String::new();
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => id.extend(chars.next()),
                        '"' => break,
                        c => id.push(c),
                    }
                }
                tokens.push(Token::Id(id));
            }
            '-' if chars.peek() == Some(&'>') => {
                chars.next();
                tokens.push(Token::Arrow);
            }
            c if c.is_whitespace() => {}
            _ => tokens.push(Token::Other),
        }
    }
    tokens
        .windows(3)
        .filter_map(|w| match w {
            [Token::Id(from), Token::Arrow, Token::Id(to)] => {
                Some((graph_node(from), graph_node(to)))
            }
            _ => None,
        })
        .filter(|(from, to)| from != to && !from.is_empty() && !to.is_empty())
        .collect()
}

/// Every `references` list anywhere under `v`.
fn references_in(v: &Value, prefix: &str, out: &mut Vec<String>, depth: usize) {
    if depth > 64 {
        return;
    }
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                if k == "references" {
                    let refs = child.as_array().map_or(&[][..], Vec::as_slice);
                    for r in refs.iter().filter_map(Value::as_str) {
                        if let Some(target) = referenced_resource(r, prefix) {
                            if !out.contains(&target) {
                                out.push(target);
                            }
                        }
                    }
                } else {
                    references_in(child, prefix, out, depth + 1);
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                references_in(item, prefix, out, depth + 1);
            }
        }
        _ => {}
    }
}

impl Config {
    pub(super) fn read(configuration: Option<&Value>, graph_dot: Option<&str>) -> Self {
        let mut config = Self::default();
        if let Some(root) = configuration.and_then(|c| c.get("root_module")) {
            config.read_module(root, "", 0);
        }
        for (from, to) in graph_dot.map(graph_edges).unwrap_or_default() {
            let refs = config.refs.entry(from).or_default();
            if !refs.contains(&to) {
                refs.push(to);
            }
        }
        config
    }

    fn read_module(&mut self, module: &Value, prefix: &str, depth: usize) {
        if depth > 64 {
            return;
        }
        for r in array(module, "resources") {
            let address = s(r, "address");
            if address.is_empty() {
                continue;
            }
            let key = format!("{prefix}{address}");
            let mut refs = Vec::new();
            if let Some(exprs) = r.get("expressions") {
                references_in(exprs, prefix, &mut refs, 0);
                if let Some(map) = exprs.as_object() {
                    for (attr, expr) in map {
                        let mut attr_refs = Vec::new();
                        references_in(expr, prefix, &mut attr_refs, 0);
                        self.attr_refs.insert((key.clone(), attr.clone()), attr_refs);
                    }
                }
            }
            for p in array(r, "provisioners") {
                references_in(p, prefix, &mut refs, 0);
            }
            for dep in array(r, "depends_on").iter().filter_map(Value::as_str) {
                if let Some(target) = referenced_resource(dep, prefix) {
                    refs.push(target);
                }
            }
            self.refs.insert(key, refs);
        }
        if let Some(calls) = module.get("module_calls").and_then(Value::as_object) {
            for (name, call) in calls {
                if let Some(child) = call.get("module") {
                    self.read_module(child, &format!("{prefix}module.{name}."), depth + 1);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_instance_keys() {
        assert_eq!(strip_indices("a.b[0]"), "a.b");
        assert_eq!(strip_indices(r#"module.m["x.]\"y"].t.n[3]"#), "module.m.t.n");
        assert_eq!(
            referenced_resource("coder_agent.main[0].id", ""),
            Some("coder_agent.main".into())
        );
        assert_eq!(
            referenced_resource("data.coder_workspace.me.id", "module.a."),
            Some("module.a.data.coder_workspace.me".into())
        );
        assert_eq!(referenced_resource("var.x", ""), None);
        assert_eq!(referenced_resource("module.m.out", ""), None);
        assert_eq!(referenced_resource("lonely", ""), None);
    }

    #[test]
    fn graph_edges_old_and_new_formats() {
        let new = "digraph G {\n  \"terraform_data.vm\" [label=\"terraform_data.vm\"];\n  \
                   \"terraform_data.vm\" -> \"coder_agent.dev\";\n}\n";
        assert_eq!(graph_edges(new), [("terraform_data.vm".into(), "coder_agent.dev".into())]);
        let old = r#"  "[root] module.m.vm.v[\"a\"] (expand)" -> "[root] coder_agent.a (expand)""#;
        assert_eq!(graph_edges(old), [("module.m.vm.v".into(), "coder_agent.a".into())]);
    }
}
