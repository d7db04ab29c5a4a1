//! Reading a workspace's shape from `terraform show -json`: resources, the agents that
//! run on them, the agents' apps, resource metadata, and template parameters.
//!
//! Both plan JSON (`show -json <planfile>`) and state JSON (`show -json`) describe
//! resources as `values.root_module.resources[]` (plus `child_modules`), under
//! `planned_values` in a plan. Only a plan carries the `configuration`, whose
//! expressions list the `references` of each resource; that is how things are tied
//! together when the ids they would be matched by are not known yet:
//!
//! - an agent belongs to the resource whose configuration references `coder_agent.NAME`
//!   (e.g. a VM's `user_data = coder_agent.main.init_script`). Without configuration
//!   (state alone) the state's `depends_on` is used instead. When several resources
//!   qualify, the closest wins: one that does not itself depend on another candidate,
//!   then the lowest address;
//! - an app belongs to the agent whose `id` equals its `agent_id`, else the agent its
//!   `agent_id` expression references; `coder_script` and `coder_env` likewise, and
//!   `coder_metadata` by `resource_id`. The agent's own startup and shutdown scripts
//!   become two more scripts, as Coder makes them.
//!
//! A resource with agents is *computational*, the others *peripheral*. Resources are
//! the managed resources whose type does not start with `coder_`; `coder_parameter`
//! data sources become [`Parameter`]s. Odd JSON never panics: missing or mistyped
//! fields read as empty, and only bytes that are not a JSON object are an error.

use std::collections::HashMap;

use serde_json::Value;

pub use super::deps::graph_edges;
use super::deps::{strip_indices, Config};
use crate::provisioner::{
    Agent, AgentMetadata, App, Healthcheck, MetadataItem, Parameter, ParameterOption,
    ParameterValidation, Resource, Script,
};

/// What a plan says the workspace will look like.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PlanResult {
    pub resources: Vec<Resource>,
    pub parameters: Vec<Parameter>,
    /// Agents no resource runs (e.g. its resource has `count = 0` in this transition).
    pub detached_agents: Vec<Agent>,
}

/// The resources of a state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StateResources {
    pub resources: Vec<Resource>,
    /// Agents no resource runs.
    pub detached_agents: Vec<Agent>,
}

/// The bytes were not a JSON object.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    #[error("invalid JSON from terraform show")]
    Json(#[from] serde_json::Error),
    #[error("terraform show printed JSON that is not an object")]
    NotAnObject,
}

fn object(json: &[u8]) -> Result<Value, ParseError> {
    let value: Value = serde_json::from_slice(json)?;
    if value.is_object() {
        Ok(value)
    } else {
        Err(ParseError::NotAnObject)
    }
}

/// Reads `show -json <planfile>` output; `graph_dot`, the output of `terraform graph`
/// for the same configuration, ties agents to resources through locals.
pub fn parse_plan(plan_json: &[u8], graph_dot: Option<&str>) -> Result<PlanResult, ParseError> {
    let plan = object(plan_json)?;
    let config = Config::read(plan.get("configuration"), graph_dot);
    let planned = collect(plan.get("planned_values"));
    let StateResources { resources, detached_agents } = assemble(&planned, &config);
    // Data sources read during planning are in `prior_state`; also look in
    // `planned_values` in case a version puts them there.
    let mut raws = collect(plan.get("prior_state").and_then(|s| s.get("values")));
    raws.extend(planned);
    let mut parameters: Vec<Parameter> = Vec::new();
    for raw in raws.iter().filter(|r| r.mode == "data" && r.type_ == "coder_parameter") {
        let p = parameter(raw.values);
        if !parameters.iter().any(|q| q.name == p.name) {
            parameters.push(p);
        }
    }
    parameters.sort_by_key(|p| p.order);
    Ok(PlanResult { resources, parameters, detached_agents })
}

/// Reads `show -json` output of a state. `plan_json`, the plan that produced the state,
/// and `graph_dot` (`terraform graph`) supply the configuration for tying agents to
/// resources; the state's own `depends_on` is used too.
pub fn parse_state(
    state_json: &[u8],
    plan_json: Option<&[u8]>,
    graph_dot: Option<&str>,
) -> Result<StateResources, ParseError> {
    let state = object(state_json)?;
    let plan = plan_json.map(object).transpose()?;
    let config = Config::read(plan.as_ref().and_then(|p| p.get("configuration")), graph_dot);
    Ok(assemble(&collect(state.get("values")), &config))
}

/// Merges the plans of a template import: the resources of the `start` plan, each
/// marked persistent when the `stop` plan has it too, and computational when it runs
/// an agent.
pub fn merge_import(start: &[Resource], stop: &[Resource]) -> Vec<Resource> {
    start
        .iter()
        .map(|r| Resource {
            persistent: stop.iter().any(|s| s.address == r.address),
            computational: !r.agents.is_empty(),
            ..r.clone()
        })
        .collect()
}

/// A resource instance from a `values` object.
#[derive(Debug)]
struct Raw<'a> {
    address: String,
    /// The address without instance keys: what configuration references name.
    key: String,
    index: Option<&'a Value>,
    mode: &'a str,
    type_: &'a str,
    name: &'a str,
    values: &'a Value,
    depends_on: Vec<String>,
}

pub(super) fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

fn string(v: &Value, key: &str) -> String {
    s(v, key).to_owned()
}

fn opt_string(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(Value::as_str).map(str::to_owned)
}

fn boolean(v: &Value, key: &str) -> bool {
    v.get(key).and_then(Value::as_bool).unwrap_or(false)
}

fn opt_num(v: &Value, key: &str) -> Option<i64> {
    match v.get(key)? {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

fn num(v: &Value, key: &str) -> i64 {
    opt_num(v, key).unwrap_or(0)
}

pub(super) fn array<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.get(key).and_then(Value::as_array).map_or(&[], Vec::as_slice)
}

/// Flattens a `values` object (`{root_module: {resources, child_modules}}`).
fn collect(values: Option<&Value>) -> Vec<Raw<'_>> {
    let mut out = Vec::new();
    if let Some(root) = values.and_then(|v| v.get("root_module")) {
        collect_module(root, &mut out, 0);
    }
    out
}

fn collect_module<'a>(module: &'a Value, out: &mut Vec<Raw<'a>>, depth: usize) {
    if depth > 64 {
        return;
    }
    for r in array(module, "resources") {
        let address = string(r, "address");
        if address.is_empty() {
            continue;
        }
        out.push(Raw {
            key: strip_indices(&address),
            address,
            index: r.get("index"),
            mode: s(r, "mode"),
            type_: s(r, "type"),
            name: s(r, "name"),
            values: r.get("values").unwrap_or(&Value::Null),
            depends_on: array(r, "depends_on")
                .iter()
                .filter_map(Value::as_str)
                .map(strip_indices)
                .collect(),
        });
    }
    for child in array(module, "child_modules") {
        collect_module(child, out, depth + 1);
    }
}

/// What `raw` refers to: its configuration's references and graph edges, and its state
/// `depends_on`.
fn deps_of<'c>(raw: &'c Raw<'_>, config: &'c Config) -> impl Iterator<Item = &'c String> {
    config.refs.get(&raw.key).into_iter().flatten().chain(&raw.depends_on)
}

/// Whether `raw` depends on the configuration address `key`.
fn refers_to(raw: &Raw<'_>, key: &str, config: &Config) -> bool {
    deps_of(raw, config).any(|d| d == key)
}

/// Picks the instance of one of `candidates` (indices into `raws`) closest to
/// `target`: not depending on another candidate, preferably with the same instance
/// key, then lowest address.
fn closest(
    raws: &[Raw<'_>],
    candidates: &[usize],
    target: &Raw<'_>,
    config: &Config,
) -> Option<usize> {
    let keys: Vec<&str> = candidates.iter().map(|&i| raws[i].key.as_str()).collect();
    let nearest: Vec<usize> = candidates
        .iter()
        .copied()
        .filter(|&i| !keys.iter().any(|k| *k != raws[i].key && refers_to(&raws[i], k, config)))
        .collect();
    let pool = if nearest.is_empty() { candidates.to_vec() } else { nearest };
    pool.into_iter().min_by(|&a, &b| {
        let same = |i: usize| raws[i].index.is_some() && raws[i].index == target.index;
        same(b).cmp(&same(a)).then_with(|| raws[a].address.cmp(&raws[b].address))
    })
}

/// Index into `raws` of the instance of `key` best matching `from`'s instance key.
fn instance_of(raws: &[Raw<'_>], key: &str, from: &Raw<'_>) -> Option<usize> {
    let mut matches: Vec<usize> = (0..raws.len()).filter(|&i| raws[i].key == key).collect();
    matches.sort_by(|&a, &b| raws[a].address.cmp(&raws[b].address));
    matches
        .iter()
        .copied()
        .find(|&i| raws[i].index.is_some() && raws[i].index == from.index)
        .or_else(|| matches.first().copied())
}

/// The instance `raw` points at through attribute `attr`: by value (`id` equal to the
/// attribute), else by the attribute expression's references, else (the expression
/// went through a local) by anything acceptable `raw` depends on.
fn target_of(
    raws: &[Raw<'_>],
    raw: &Raw<'_>,
    attr: &str,
    accept: impl Fn(&Raw<'_>) -> bool,
    config: &Config,
) -> Option<usize> {
    let wanted = s(raw.values, attr);
    if !wanted.is_empty() {
        if let Some(i) = raws.iter().position(|r| accept(r) && s(r.values, "id") == wanted) {
            return Some(i);
        }
    }
    let by_attr = config.attr_refs.get(&(raw.key.clone(), attr.to_owned())).into_iter().flatten();
    by_attr
        .chain(deps_of(raw, config))
        .filter_map(|k| instance_of(raws, k, raw))
        .find(|&i| accept(&raws[i]))
}

fn is_resource(r: &Raw<'_>) -> bool {
    r.mode == "managed" && !r.type_.starts_with("coder_")
}

fn is_agent(r: &Raw<'_>) -> bool {
    r.mode == "managed" && r.type_ == "coder_agent"
}

fn assemble(raws: &[Raw<'_>], config: &Config) -> StateResources {
    let resource_ix: Vec<usize> = (0..raws.len()).filter(|&i| is_resource(&raws[i])).collect();
    let agent_ix: Vec<usize> = (0..raws.len()).filter(|&i| is_agent(&raws[i])).collect();

    let mut agents: HashMap<usize, Agent> =
        agent_ix.iter().map(|&i| (i, agent(&raws[i]))).collect();
    for raw in raws.iter().filter(|r| r.mode == "managed" && r.type_ == "coder_app") {
        if let Some(i) = target_of(raws, raw, "agent_id", is_agent, config) {
            if let Some(agent) = agents.get_mut(&i) {
                agent.apps.push(app(raw.values));
            }
        }
    }
    let mut envs: Vec<&Raw<'_>> =
        raws.iter().filter(|r| r.mode == "managed" && r.type_ == "coder_env").collect();
    envs.sort_by(|a, b| a.address.cmp(&b.address));
    for raw in envs {
        if let Some(i) = target_of(raws, raw, "agent_id", is_agent, config) {
            if let Some(agent) = agents.get_mut(&i) {
                agent.extra_envs.push((string(raw.values, "name"), string(raw.values, "value")));
            }
        }
    }
    let mut scripts: Vec<&Raw<'_>> =
        raws.iter().filter(|r| r.mode == "managed" && r.type_ == "coder_script").collect();
    scripts.sort_by(|a, b| a.address.cmp(&b.address));
    for raw in scripts {
        if let Some(i) = target_of(raws, raw, "agent_id", is_agent, config) {
            if let Some(agent) = agents.get_mut(&i) {
                agent.scripts.push(script(raw.values));
            }
        }
    }
    for a in agents.values_mut() {
        a.apps.sort_by_key(|app| app.order);
        a.scripts.extend(own_scripts(a));
    }

    let mut resources: HashMap<usize, Resource> =
        resource_ix.iter().map(|&i| (i, resource(&raws[i]))).collect();
    for raw in raws.iter().filter(|r| r.mode == "managed" && r.type_ == "coder_metadata") {
        if let Some(i) = target_of(raws, raw, "resource_id", is_resource, config) {
            if let Some(res) = resources.get_mut(&i) {
                apply_metadata(res, raw.values);
            }
        }
    }

    let mut detached_agents = Vec::new();
    for &a in &agent_ix {
        let candidates: Vec<usize> = resource_ix
            .iter()
            .copied()
            .filter(|&r| refers_to(&raws[r], &raws[a].key, config))
            .collect();
        let Some(agent) = agents.remove(&a) else { continue };
        match closest(raws, &candidates, &raws[a], config).and_then(|r| resources.get_mut(&r)) {
            Some(res) => res.agents.push(agent),
            None => detached_agents.push(agent),
        }
    }

    let mut resources: Vec<Resource> =
        resource_ix.iter().filter_map(|i| resources.remove(i)).collect();
    resources.sort_by(|a, b| a.address.cmp(&b.address));
    for r in &mut resources {
        r.computational = !r.agents.is_empty();
        r.agents.sort_by(|a, b| (a.order, &a.address).cmp(&(b.order, &b.address)));
    }
    StateResources { resources, detached_agents }
}

fn resource(raw: &Raw<'_>) -> Resource {
    Resource {
        name: raw.name.to_owned(),
        type_: raw.type_.to_owned(),
        address: raw.address.clone(),
        ..Resource::default()
    }
}

fn apply_metadata(res: &mut Resource, v: &Value) {
    res.hide |= boolean(v, "hide");
    if let Some(icon) = v.get("icon").and_then(Value::as_str) {
        res.icon = icon.to_owned();
    }
    res.daily_cost += num(v, "daily_cost");
    for item in array(v, "item") {
        res.metadata.push(MetadataItem {
            key: string(item, "key"),
            value: string(item, "value"),
            sensitive: boolean(item, "sensitive"),
        });
    }
}

fn agent(raw: &Raw<'_>) -> Agent {
    let v = raw.values;
    let env = v
        .get("env")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, val)| val.as_str().map(|s| (k.clone(), s.to_owned())))
                .collect()
        })
        .unwrap_or_default();
    let metadata = array(v, "metadata")
        .iter()
        .map(|m| AgentMetadata {
            key: string(m, "key"),
            display_name: string(m, "display_name"),
            script: string(m, "script"),
            interval: num(m, "interval"),
            timeout: num(m, "timeout"),
            order: num(m, "order"),
        })
        .collect();
    Agent {
        id: string(v, "id"),
        name: raw.name.to_owned(),
        address: raw.address.clone(),
        token: string(v, "token"),
        os: string(v, "os"),
        arch: string(v, "arch"),
        dir: string(v, "dir"),
        env,
        startup_script: string(v, "startup_script"),
        startup_script_behavior: string(v, "startup_script_behavior"),
        shutdown_script: string(v, "shutdown_script"),
        connection_timeout_seconds: num(v, "connection_timeout"),
        troubleshooting_url: string(v, "troubleshooting_url"),
        motd_file: string(v, "motd_file"),
        order: num(v, "order"),
        metadata,
        apps: Vec::new(),
        scripts: Vec::new(),
        extra_envs: Vec::new(),
    }
}

fn script(v: &Value) -> Script {
    Script {
        display_name: string(v, "display_name"),
        icon: string(v, "icon"),
        script: string(v, "script"),
        cron: string(v, "cron"),
        log_path: string(v, "log_path"),
        run_on_start: boolean(v, "run_on_start"),
        run_on_stop: boolean(v, "run_on_stop"),
        start_blocks_login: boolean(v, "start_blocks_login"),
        timeout_seconds: num(v, "timeout"),
    }
}

/// The agent's `startup_script` and `shutdown_script` as the scripts Coder makes of
/// them: "Startup Script" runs on start and blocks logins when
/// `startup_script_behavior = "blocking"`; "Shutdown Script" runs on stop.
fn own_scripts(a: &Agent) -> Vec<Script> {
    let mut out = Vec::new();
    if !a.startup_script.trim().is_empty() {
        out.push(Script {
            display_name: "Startup Script".to_owned(),
            icon: "/emojis/25b6-fe0f.png".to_owned(),
            script: a.startup_script.clone(),
            run_on_start: true,
            start_blocks_login: a.startup_script_behavior == "blocking",
            ..Script::default()
        });
    }
    if !a.shutdown_script.trim().is_empty() {
        out.push(Script {
            display_name: "Shutdown Script".to_owned(),
            icon: "/emojis/25c0.png".to_owned(),
            script: a.shutdown_script.clone(),
            run_on_stop: true,
            ..Script::default()
        });
    }
    out
}

fn app(v: &Value) -> App {
    let slug = string(v, "slug");
    let display_name = opt_string(v, "display_name").unwrap_or_else(|| slug.clone());
    App {
        id: string(v, "id"),
        display_name,
        slug,
        icon: string(v, "icon"),
        url: string(v, "url"),
        command: string(v, "command"),
        external: boolean(v, "external"),
        subdomain: boolean(v, "subdomain"),
        share: opt_string(v, "share").unwrap_or_else(|| "owner".to_owned()),
        hidden: boolean(v, "hidden"),
        order: num(v, "order"),
        healthcheck: array(v, "healthcheck").first().map(|h| Healthcheck {
            url: string(h, "url"),
            interval: num(h, "interval"),
            threshold: num(h, "threshold"),
        }),
    }
}

fn parameter(v: &Value) -> Parameter {
    let default = opt_string(v, "default");
    Parameter {
        name: string(v, "name"),
        type_: opt_string(v, "type").unwrap_or_else(|| "string".to_owned()),
        required: default.is_none(),
        default,
        mutable: boolean(v, "mutable"),
        description: string(v, "description"),
        display_name: string(v, "display_name"),
        icon: string(v, "icon"),
        order: num(v, "order"),
        options: array(v, "option")
            .iter()
            .map(|o| ParameterOption {
                name: string(o, "name"),
                value: string(o, "value"),
                description: string(o, "description"),
                icon: string(o, "icon"),
            })
            .collect(),
        validation: array(v, "validation").first().map(|val| ParameterValidation {
            min: opt_num(val, "min"),
            max: opt_num(val, "max"),
            monotonic: opt_string(val, "monotonic"),
            regex: opt_string(val, "regex"),
            error: opt_string(val, "error"),
        }),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn odd_json_never_panics() {
        for bad in ["", "[]", "3", "null", "{"] {
            assert!(parse_plan(bad.as_bytes(), None).is_err(), "{bad}");
        }
        let odd = [
            json!({}),
            json!({"planned_values": 1, "configuration": []}),
            json!({"planned_values": {"root_module": {"resources": [1, {"address": 2}, {"address": "x"}]}}}),
            json!({"planned_values": {"root_module": {"resources": [
                {"address": "coder_agent.a", "mode": "managed", "type": "coder_agent", "name": "a",
                 "values": {"env": [1], "metadata": {"k": 1}, "connection_timeout": "x"}},
                {"address": "coder_app.x", "mode": "managed", "type": "coder_app", "name": "x",
                 "values": {"agent_id": 5, "healthcheck": [null]}}
            ], "child_modules": [{"resources": null}]}},
             "configuration": {"root_module": {"resources": [{"address": "coder_app.x",
                 "expressions": {"agent_id": {"references": [1, "coder_agent.a.id"]}}}],
                 "module_calls": {"m": 1}}}}),
        ];
        for v in odd {
            let bytes = serde_json::to_vec(&v).unwrap();
            parse_plan(&bytes, Some("digraph { \"a\" -> ; -> \"b\" \"\" -> \"\" }")).unwrap();
            parse_state(&bytes, Some(&bytes), Some("")).unwrap();
        }
    }

    fn managed(address: &str, values: Value, depends_on: &[&str]) -> Value {
        let plain = strip_indices(address);
        let mut parts = plain.rsplitn(2, '.');
        let name = parts.next().unwrap();
        let type_ = parts.next().unwrap().rsplit('.').next().unwrap();
        json!({"address": address, "mode": "managed", "type": type_, "name": name,
               "values": values, "depends_on": depends_on})
    }

    #[test]
    fn state_without_configuration_uses_the_closest_dependent() {
        let state = json!({"values": {"root_module": {"resources": [
            managed("coder_agent.main", json!({"id": "A", "token": "t"}), &[]),
            managed("coder_app.web", json!({"agent_id": "A", "slug": "web"}), &["coder_agent.main"]),
            managed("vm.box", json!({"id": "V"}), &["coder_agent.main", "disk.d"]),
            // Depends on the agent only through the VM: not the agent's resource.
            managed("attach.a", json!({"id": "T"}), &["coder_agent.main", "vm.box"]),
            managed("disk.d", json!({"id": "D"}), &[]),
            managed("coder_metadata.m", json!({"resource_id": "D", "hide": true,
                "item": [{"key": "k", "value": null}]}), &["disk.d"]),
        ]}}});
        let parsed = parse_state(&serde_json::to_vec(&state).unwrap(), None, None).unwrap();
        let addrs: Vec<_> = parsed.resources.iter().map(|r| r.address.as_str()).collect();
        assert_eq!(addrs, ["attach.a", "disk.d", "vm.box"]);
        assert!(parsed.resources[0].agents.is_empty());
        let vm = &parsed.resources[2];
        assert_eq!(vm.agents.len(), 1);
        assert_eq!((vm.agents[0].id.as_str(), vm.agents[0].token.as_str()), ("A", "t"));
        assert_eq!(vm.agents[0].apps[0].slug, "web");
        assert_eq!(vm.agents[0].apps[0].display_name, "web");
        assert_eq!(vm.agents[0].apps[0].share, "owner");
        let disk = &parsed.resources[1];
        assert!(disk.hide);
        assert_eq!(disk.metadata, [MetadataItem { key: "k".into(), ..Default::default() }]);
        assert!(parsed.detached_agents.is_empty());
    }

    #[test]
    fn scripts_and_envs_attach_to_their_agent() {
        let state = json!({"values": {"root_module": {"resources": [
            managed("coder_agent.main", json!({"id": "A", "startup_script": "echo up",
                "startup_script_behavior": "blocking", "shutdown_script": "echo down",
                "env": {"EDITOR": "nano"}}), &[]),
            managed("coder_agent.other", json!({"id": "B"}), &[]),
            managed("vm.box", json!({}), &["coder_agent.main", "coder_agent.other"]),
            managed("coder_script.z", json!({"agent_id": "A", "display_name": "Z",
                "script": "z", "run_on_stop": true, "timeout": 5}), &["coder_agent.main"]),
            managed("coder_script.a", json!({"agent_id": "A", "display_name": "A",
                "script": "a", "cron": "0 * * * * *", "log_path": "a.log"}), &["coder_agent.main"]),
            managed("coder_env.e", json!({"agent_id": "A", "name": "EDITOR", "value": "vi"}), &[]),
            managed("coder_env.p", json!({"agent_id": "B", "name": "P", "value": "1"}), &[]),
        ]}}});
        let parsed = parse_state(&serde_json::to_vec(&state).unwrap(), None, None).unwrap();
        let agents = &parsed.resources[0].agents;
        let main = agents.iter().find(|a| a.name == "main").unwrap();
        let names: Vec<_> = main.scripts.iter().map(|s| s.display_name.as_str()).collect();
        assert_eq!(names, ["A", "Z", "Startup Script", "Shutdown Script"]);
        assert_eq!(
            (main.scripts[0].cron.as_str(), main.scripts[0].log_path.as_str()),
            ("0 * * * * *", "a.log")
        );
        assert!(main.scripts[1].run_on_stop && main.scripts[1].timeout_seconds == 5);
        assert!(main.scripts[2].run_on_start && main.scripts[2].start_blocks_login);
        assert!(main.scripts[3].run_on_stop && !main.scripts[3].run_on_start);
        assert_eq!(main.extra_envs, [("EDITOR".to_owned(), "vi".to_owned())]);
        let other = agents.iter().find(|a| a.name == "other").unwrap();
        assert!(other.scripts.is_empty());
        assert_eq!(other.extra_envs, [("P".to_owned(), "1".to_owned())]);
    }

    #[test]
    fn counted_agents_pair_with_same_index() {
        let state = json!({"values": {"root_module": {"resources": [
            {"address": "coder_agent.a[0]", "index": 0, "mode": "managed", "type": "coder_agent",
             "name": "a", "values": {"id": "A0"}},
            {"address": "coder_agent.a[1]", "index": 1, "mode": "managed", "type": "coder_agent",
             "name": "a", "values": {"id": "A1"}},
            {"address": "vm.v[0]", "index": 0, "mode": "managed", "type": "vm", "name": "v",
             "values": {}, "depends_on": ["coder_agent.a"]},
            {"address": "vm.v[1]", "index": 1, "mode": "managed", "type": "vm", "name": "v",
             "values": {}, "depends_on": ["coder_agent.a"]},
        ]}}});
        let parsed = parse_state(&serde_json::to_vec(&state).unwrap(), None, None).unwrap();
        let ids: Vec<_> = parsed.resources.iter().map(|r| r.agents[0].id.as_str()).collect();
        assert_eq!(ids, ["A0", "A1"]);
    }

    #[test]
    fn graph_ties_an_agent_reached_through_a_local() {
        let plan = json!({"planned_values": {"root_module": {"resources": [
            managed("coder_agent.main", json!({}), &[]),
            managed("vm.box", json!({}), &[]),
            managed("disk.d", json!({}), &[]),
        ]}}, "configuration": {"root_module": {"resources": [
            {"address": "vm.box", "expressions": {"user_data": {"references": ["local.script"]}}},
        ]}}});
        let bytes = serde_json::to_vec(&plan).unwrap();
        let without = parse_plan(&bytes, None).unwrap();
        assert_eq!(without.detached_agents.len(), 1);
        let dot = "digraph { \"vm.box\" -> \"coder_agent.main\"; }";
        let with = parse_plan(&bytes, Some(dot)).unwrap();
        assert!(with.detached_agents.is_empty());
        let vm = with.resources.iter().find(|r| r.address == "vm.box").unwrap();
        assert_eq!(vm.agents[0].name, "main");
    }

    #[test]
    fn merge_marks_persistent_and_computational() {
        let vm = Resource {
            address: "vm.v".into(),
            agents: vec![Agent::default()],
            ..Default::default()
        };
        let disk = Resource { address: "disk.d".into(), ..Default::default() };
        let merged = merge_import(&[vm, disk.clone()], &[disk]);
        let flags: Vec<_> = merged.iter().map(|r| (r.computational, r.persistent)).collect();
        assert_eq!(flags, [(true, false), (false, true)]);
    }
}
