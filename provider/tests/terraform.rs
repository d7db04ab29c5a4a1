//! End-to-end tests: the real `terraform` drives the provider binary through init,
//! plan, apply and destroy, offline, with the provider installed from a filesystem
//! mirror exactly as the provisioner worker installs it. Skipped (with a message) when
//! terraform is not installed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use anyhow::Result;
use common::{assert_no_crash, resource, resources};
use serde_json::Value;

const PROVIDER_BLOCK: &str = r#"
terraform {
  required_providers {
    coder = {
      source  = "coder/coder"
      version = "~> 2.0"
    }
  }
}
"#;

fn template(body: &str) -> String {
    format!("{PROVIDER_BLOCK}\n{body}")
}

fn is_uuid(v: &Value) -> bool {
    v.as_str().is_some_and(|s| uuid::Uuid::parse_str(s).is_ok())
}

#[test]
fn agent_computes_id_token_and_init_script() -> Result<()> {
    let mut w = workdir_or_skip!(&template(
        r#"
resource "coder_agent" "main" {
  os             = "linux"
  arch           = "arm64"
  dir            = "/home/coder"
  env            = { EDITOR = "vim" }
  startup_script = "echo ready"
  metadata {
    key          = "load"
    display_name = "Load"
    script       = "cat /proc/loadavg"
    interval     = 10
    timeout      = 1
  }
}
"#
    ));
    w.env("CODER_AGENT_URL", "http://coder.test:7080/");
    w.init()?;

    // Before apply: id and token unknown, init_script already known.
    let run = w.run(&["plan", "-out=tfplan", "-input=false", "-no-color"])?.ok()?;
    assert_no_crash(&run);
    let plan = w.show_json(Some("tfplan"))?;
    let planned = resources(&plan["planned_values"]);
    let agent = resource(&planned, "coder_agent.main");
    assert!(agent["values"]["init_script"]
        .as_str()
        .unwrap()
        .contains("http://coder.test:7080/bin/coder-agent-linux-arm64"));
    let change = &plan["resource_changes"][0]["change"];
    assert_eq!(change["after_unknown"]["id"], true);
    assert_eq!(change["after_unknown"]["token"], true);

    w.apply()?;
    let state = w.show_json(None)?;
    let agents = resources(&state["values"]);
    let agent = resource(&agents, "coder_agent.main");
    let values = &agent["values"];
    assert!(is_uuid(&values["id"]), "{values}");
    let token = values["token"].as_str().unwrap().to_owned();
    assert_eq!(token.len(), 64, "token {token:?}");
    assert_eq!(agent["sensitive_values"]["token"], true);
    let script = values["init_script"].as_str().unwrap();
    assert!(script.starts_with("#!/bin/sh"));
    assert!(script.contains("ACCESS_URL='http://coder.test:7080'"));
    assert!(script.contains("curl") && script.contains("wget"));
    assert!(!script.contains(&token), "the token must not be in the init script");
    assert_eq!(values["connection_timeout"], 120);
    assert_eq!(values["auth"], "token");
    assert_eq!(values["env"]["EDITOR"], "vim");
    assert_eq!(values["metadata"][0]["key"], "load");
    assert_eq!(values["metadata"][0]["interval"], 10);

    // Stable: a second plan is empty, and a refreshing apply keeps id and token.
    assert!(!w.plan_has_changes()?);
    w.apply()?;
    let again = w.show_json(None)?;
    let again = resource(&resources(&again["values"]), "coder_agent.main").clone();
    assert_eq!(again["values"]["token"], token.as_str());
    assert_eq!(again["values"]["id"], values["id"]);

    // A new access URL updates the init script in place; the token survives.
    w.env("CODER_AGENT_URL", "https://elsewhere.test");
    let run = w.apply()?;
    assert!(run.stdout.contains("0 added, 1 changed, 0 destroyed"), "{}", run.stdout);
    let moved = w.show_json(None)?;
    let moved = resource(&resources(&moved["values"]), "coder_agent.main").clone();
    assert_eq!(moved["values"]["token"], token.as_str());
    assert!(moved["values"]["init_script"]
        .as_str()
        .unwrap()
        .contains("ACCESS_URL='https://elsewhere.test'"));

    // Changing configuration replaces the agent: new id, new token.
    let main_tf = std::fs::read_to_string(w.dir.join("main.tf"))?;
    std::fs::write(w.dir.join("main.tf"), main_tf.replace("echo ready", "echo go"))?;
    let run = w.apply()?;
    assert!(run.stdout.contains("1 added, 0 changed, 1 destroyed"), "{}", run.stdout);
    let replaced = w.show_json(None)?;
    let replaced = resource(&resources(&replaced["values"]), "coder_agent.main").clone();
    assert_ne!(replaced["values"]["token"], token.as_str());
    assert_ne!(replaced["values"]["id"], values["id"]);

    w.destroy()?;
    Ok(())
}

#[test]
fn data_sources_read_the_build_environment() -> Result<()> {
    let mut w = workdir_or_skip!(&template(
        r#"
data "coder_workspace" "me" {}
data "coder_workspace_owner" "me" {}
output "workspace" { value = data.coder_workspace.me }
output "owner_name" { value = data.coder_workspace_owner.me.name }
output "owner_email" { value = data.coder_workspace_owner.me.email }
"#
    ));
    let id = "6b1d1fd4-3f43-4f7b-9a7c-8d5e2f0a1b2c";
    w.env("CODER_WORKSPACE_ID", id)
        .env("CODER_WORKSPACE_NAME", "dev")
        .env("CODER_WORKSPACE_TRANSITION", "start")
        .env("CODER_WORKSPACE_OWNER", "alice")
        .env("CODER_WORKSPACE_OWNER_EMAIL", "alice@example.com")
        .env("CODER_AGENT_URL", "http://127.0.0.1:3000");
    w.init()?;
    w.apply()?;
    let out = w.outputs()?;
    let ws = &out["workspace"];
    assert_eq!(ws["id"], id);
    assert_eq!(ws["name"], "dev");
    assert_eq!(ws["transition"], "start");
    assert_eq!(ws["start_count"], 1);
    assert_eq!(ws["access_url"], "http://127.0.0.1:3000");
    assert_eq!(ws["access_port"], 3000);
    assert_eq!(out["owner_name"], "alice");
    assert_eq!(out["owner_email"], "alice@example.com");

    for (transition, count) in [("stop", 0), ("delete", 0), ("start", 1)] {
        w.env("CODER_WORKSPACE_TRANSITION", transition);
        w.apply()?;
        let out = w.outputs()?;
        assert_eq!(out["workspace"]["transition"], transition);
        assert_eq!(out["workspace"]["start_count"], count, "{transition}");
    }

    // Unset variables fall back to defaults, so a template plans outside a build.
    for key in [
        "CODER_WORKSPACE_ID",
        "CODER_WORKSPACE_NAME",
        "CODER_WORKSPACE_TRANSITION",
        "CODER_WORKSPACE_OWNER",
    ] {
        w.unset(key);
    }
    w.apply()?;
    let out = w.outputs()?;
    assert_eq!(out["workspace"]["name"], "default");
    assert_eq!(out["workspace"]["transition"], "start");
    assert_eq!(out["owner_name"], "default");
    assert!(is_uuid(&out["workspace"]["id"]));

    // A bogus transition is an error, not a guess.
    w.env("CODER_WORKSPACE_TRANSITION", "pause");
    let run = w.run(&["plan", "-input=false", "-no-color"])?;
    assert!(!run.success);
    assert!(run.stderr.contains("Invalid workspace transition"), "{}", run.stderr);
    assert_no_crash(&run);
    Ok(())
}

const PARAMETERS: &str = r#"
data "coder_parameter" "region" {
  name         = "region"
  display_name = "Region"
  default      = "eu"
  mutable      = false
  option {
    name  = "Europe"
    value = "eu"
  }
  option {
    name  = "United States"
    value = "us"
  }
}
data "coder_parameter" "cpus" {
  name        = "CPU count"
  description = "Cores"
  type        = "number"
  default     = "2"
  mutable     = true
  validation {
    min = 1
    max = 8
  }
}
data "coder_parameter" "name" {
  name = "project name"
  type = "string"
  validation {
    regex = "^[a-z]+$"
    error = "Lowercase letters only"
  }
}
output "region" { value = data.coder_parameter.region.value }
output "cpus" { value = data.coder_parameter.cpus.value }
output "name" { value = data.coder_parameter.name.value }
output "name_optional" { value = data.coder_parameter.name.optional }
"#;

#[test]
fn parameters_take_build_values_or_defaults() -> Result<()> {
    let mut w = workdir_or_skip!(&template(PARAMETERS));
    w.init()?;
    w.apply()?;
    let out = w.outputs()?;
    assert_eq!(out["region"], "eu");
    assert_eq!(out["cpus"], "2");
    // Required and not supplied: empty, not validated (the coordinator supplies it).
    assert_eq!(out["name"], "");
    assert_eq!(out["name_optional"], false);

    w.env(&provider::parameter_env_var("region"), "us")
        .env(&provider::parameter_env_var("CPU count"), "8")
        .env(&provider::parameter_env_var("project name"), "hello");
    w.apply()?;
    let out = w.outputs()?;
    assert_eq!(out["region"], "us");
    assert_eq!(out["cpus"], "8");
    assert_eq!(out["name"], "hello");

    let state = w.show_json(None)?;
    let all = resources(&state["values"]);
    let cpus = resource(&all, "data.coder_parameter.cpus");
    assert_eq!(cpus["values"]["type"], "number");
    assert_eq!(cpus["values"]["mutable"], true);
    assert_eq!(cpus["values"]["validation"][0]["max"], 8);
    let region = resource(&all, "data.coder_parameter.region");
    assert_eq!(region["values"]["option"][1]["value"], "us");
    assert_eq!(region["values"]["type"], "string");
    Ok(())
}

#[test]
fn invalid_parameter_values_are_diagnostics() -> Result<()> {
    let mut w = workdir_or_skip!(&template(PARAMETERS));
    w.init()?;
    for (name, value, message) in [
        ("CPU count", "9", "value 9 is more than the maximum 8"),
        ("CPU count", "0", "value 0 is less than the minimum 1"),
        ("CPU count", "many", "is not a valid number"),
        ("project name", "Hello", "Lowercase letters only"),
        ("region", "mars", "is not one of the options"),
    ] {
        let var = provider::parameter_env_var(name);
        w.env(&var, value);
        let run = w.run(&["plan", "-input=false", "-no-color"])?;
        assert!(!run.success, "{name}={value} should fail");
        assert!(run.stderr.contains(message), "{name}={value}: {}", run.stderr);
        assert!(run.stderr.contains("Invalid value for parameter"), "{}", run.stderr);
        assert_no_crash(&run);
        w.unset(&var);
    }
    Ok(())
}

#[test]
fn invalid_configuration_is_diagnostics() -> Result<()> {
    let w = workdir_or_skip!(&template(
        r#"
resource "coder_agent" "main" {
  os                 = "plan9"
  arch               = "amd64"
  connection_timeout = 1.5
}
resource "coder_app" "app" {
  # Not coder_agent.main.id: terraform skips validating dependents of a failed resource.
  agent_id = "6b1d1fd4-3f43-4f7b-9a7c-8d5e2f0a1b2c"
  slug     = "Not A Slug"
  share    = "everyone"
}
data "coder_parameter" "p" {
  name    = "p"
  type    = "float"
}
data "coder_parameter" "q" {
  name    = "q"
  type    = "number"
  default = "many"
}
"#
    ));
    w.init()?;
    let run = w.run(&["plan", "-input=false", "-no-color"])?;
    assert!(!run.success);
    for message in [
        "Invalid os \"plan9\"",
        "connection_timeout must be a whole number, got 1.5",
        "Invalid coder_app slug \"Not A Slug\"",
        "Invalid coder_app share \"everyone\"",
        "invalid parameter type \"float\"",
        "default value \"many\" is not a valid number",
    ] {
        assert!(run.stderr.contains(message), "missing {message:?} in:\n{}", run.stderr);
    }
    assert_no_crash(&run);

    // No access URL at all: the agent cannot render its init script, and says why.
    let mut w = common::Workdir::new(&template(
        "resource \"coder_agent\" \"main\" {\n  os = \"linux\"\n  arch = \"amd64\"\n}\n",
    ))?;
    w.unset("CODER_AGENT_URL");
    w.init()?;
    let run = w.run(&["plan", "-input=false", "-no-color"])?;
    assert!(!run.success);
    assert!(run.stderr.contains("CODER_AGENT_URL"), "{}", run.stderr);
    assert_no_crash(&run);
    Ok(())
}

#[test]
fn agents_and_apps_in_plan_and_state_json() -> Result<()> {
    let w = workdir_or_skip!(&template(
        r#"
resource "terraform_data" "arch" {
  input = "amd64"
}
resource "coder_agent" "dev" {
  os             = "linux"
  arch           = "amd64"
  startup_script = "echo dev"
}
resource "coder_agent" "db" {
  os   = "linux"
  # Unknown until apply: the init script is computed then.
  arch = terraform_data.arch.output
  display_apps {
    vscode = false
  }
}
resource "coder_app" "web" {
  agent_id     = coder_agent.dev.id
  slug         = "web"
  display_name = "Web"
  url          = "http://localhost:8080"
  subdomain    = true
  share        = "authenticated"
  healthcheck {
    url       = "http://localhost:8080/healthz"
    interval  = 5
    threshold = 3
  }
}
resource "coder_app" "psql" {
  agent_id = coder_agent.db.id
  slug     = "psql"
  command  = "psql"
}
resource "coder_metadata" "dev" {
  resource_id = coder_agent.dev.id
  daily_cost  = 5
  item {
    key   = "image"
    value = "debian:12"
  }
  item {
    key       = "secret"
    value     = "hunter2"
    sensitive = true
  }
}
"#
    ));
    w.init()?;
    w.run(&["plan", "-out=tfplan", "-input=false", "-no-color"])?.ok()?;
    let plan = w.show_json(Some("tfplan"))?;
    let planned = resources(&plan["planned_values"]);
    let count = |ty: &str| planned.iter().filter(|r| r["type"] == ty).count();
    assert_eq!(count("coder_agent"), 2);
    assert_eq!(count("coder_app"), 2);
    let web = resource(&planned, "coder_app.web");
    assert_eq!(web["values"]["slug"], "web");
    assert_eq!(web["values"]["subdomain"], true);
    assert_eq!(web["values"]["healthcheck"][0]["threshold"], 3);
    // In a plan, apps find their agent through the configuration's references.
    let config = plan["configuration"]["root_module"]["resources"].as_array().unwrap();
    let web_config = config.iter().find(|r| r["address"] == "coder_app.web").unwrap();
    let refs = &web_config["expressions"]["agent_id"]["references"];
    assert!(refs.as_array().unwrap().iter().any(|r| r == "coder_agent.dev.id"), "{refs}");
    let db_plan = plan["resource_changes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["address"] == "coder_agent.db")
        .unwrap();
    assert_eq!(db_plan["change"]["after_unknown"]["init_script"], true);

    w.apply()?;
    let state = w.show_json(None)?;
    let all = resources(&state["values"]);
    let dev = resource(&all, "coder_agent.dev");
    let db = resource(&all, "coder_agent.db");
    assert_ne!(dev["values"]["token"], db["values"]["token"]);
    assert!(db["values"]["init_script"].as_str().unwrap().contains("/bin/coder-agent-linux-amd64"));
    assert_eq!(db["values"]["display_apps"][0]["vscode"], false);
    assert_eq!(db["values"]["display_apps"][0]["web_terminal"], true);
    let web = resource(&all, "coder_app.web");
    assert_eq!(web["values"]["agent_id"], dev["values"]["id"]);
    assert_eq!(web["values"]["share"], "authenticated");
    assert!(is_uuid(&web["values"]["id"]));
    let psql = resource(&all, "coder_app.psql");
    assert_eq!(psql["values"]["agent_id"], db["values"]["id"]);
    assert_eq!(psql["values"]["command"], "psql");
    assert_eq!(psql["values"]["url"], Value::Null);
    let meta = resource(&all, "coder_metadata.dev");
    assert_eq!(meta["values"]["resource_id"], dev["values"]["id"]);
    assert_eq!(meta["values"]["daily_cost"], 5);
    assert_eq!(meta["values"]["item"][1]["sensitive"], true);
    assert_eq!(meta["values"]["item"][1]["is_null"], false);

    assert!(!w.plan_has_changes()?);
    w.destroy()?;
    Ok(())
}

#[test]
fn scripts_and_env_apply_with_defaults_and_refuse_bad_cron() -> Result<()> {
    let w = workdir_or_skip!(&template(
        r#"
resource "coder_agent" "dev" {
  os   = "linux"
  arch = "amd64"
}
resource "coder_script" "dotfiles" {
  agent_id     = coder_agent.dev.id
  display_name = "Dotfiles"
  script       = "echo hi"
  run_on_start = true
  timeout      = 30
}
resource "coder_script" "tick" {
  agent_id     = coder_agent.dev.id
  display_name = "Tick"
  script       = "date"
  cron         = "*/10 * * * * *"
  log_path     = "tick.log"
}
resource "coder_env" "editor" {
  agent_id = coder_agent.dev.id
  name     = "EDITOR"
  value    = "vi"
}
"#
    ));
    w.init()?;
    w.apply()?;
    let state = w.show_json(None)?;
    let all = resources(&state["values"]);
    let dev = resource(&all, "coder_agent.dev");
    let dotfiles = resource(&all, "coder_script.dotfiles");
    assert_eq!(dotfiles["values"]["agent_id"], dev["values"]["id"]);
    assert!(is_uuid(&dotfiles["values"]["id"]));
    assert_eq!(dotfiles["values"]["run_on_stop"], false);
    assert_eq!(dotfiles["values"]["start_blocks_login"], false);
    assert_eq!(dotfiles["values"]["timeout"], 30);
    let tick = resource(&all, "coder_script.tick");
    assert_eq!(tick["values"]["cron"], "*/10 * * * * *");
    assert_eq!(tick["values"]["timeout"], 0);
    let env = resource(&all, "coder_env.editor");
    assert_eq!((&env["values"]["name"], &env["values"]["value"]), (&"EDITOR".into(), &"vi".into()));
    assert!(!w.plan_has_changes()?);
    w.destroy()?;

    let w = workdir_or_skip!(&template(
        r#"
resource "coder_script" "bad" {
  agent_id     = "6b1d1fd4-3f43-4f7b-9a7c-8d5e2f0a1b2c"
  display_name = "Bad"
  script       = "true"
  cron         = "*/5 * * * *"
}
resource "coder_env" "bad" {
  agent_id = "6b1d1fd4-3f43-4f7b-9a7c-8d5e2f0a1b2c"
  name     = "1-BAD"
}
"#
    ));
    w.init()?;
    let run = w.run(&["plan", "-input=false", "-no-color"])?;
    assert!(!run.success);
    for message in ["Invalid coder_script cron \"*/5 * * * *\"", "Invalid coder_env name \"1-BAD\""]
    {
        assert!(run.stderr.contains(message), "missing {message:?} in:\n{}", run.stderr);
    }
    assert_no_crash(&run);
    Ok(())
}

#[test]
fn provider_binary_refuses_to_run_outside_terraform() -> Result<()> {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_terraform-provider-coder"))
        .env_remove("TF_PLUGIN_MAGIC_COOKIE")
        .output()?;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("Terraform plugin"));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_terraform-provider-coder"))
        .arg("--version")
        .output()?;
    assert!(String::from_utf8_lossy(&out.stdout).contains(provider::PROVIDER_VERSION));
    Ok(())
}
