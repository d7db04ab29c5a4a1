//! `coder update WS`: rebuilds a workspace on its template's active version,
//! carrying the parameter values of its latest build. A parameter the new
//! version adds without a default comes from `--parameter`, or a prompt on a
//! terminal; an immutable one cannot change (coderd refuses such a build
//! with 400, and this command checks first, so a refused update builds
//! nothing — not even the stop). A running workspace is stopped, then
//! started on the new version, as Coder's `coder update` does.

use anyhow::bail;

use super::build::{api_message, ask_missing, build, finish_build, parse_params, resolve};
use super::output::outln;
use super::Context_;
use codersdk::{
    CreateWorkspaceBuildRequest, TemplateVersionParameter, Transition, WorkspaceBuildParameter,
};

#[derive(clap::Args, Debug)]
pub struct UpdateArgs {
    /// Workspace, `[OWNER/]NAME`.
    pub workspace: String,
    /// Parameter values, `name=value` (repeatable): new ones, or changes to
    /// mutable ones.
    #[arg(long = "parameter", value_name = "NAME=VALUE")]
    pub parameters: Vec<String>,
}

/// The first given value that changes an immutable parameter's carried one.
fn immutable_change<'a>(
    declared: &'a [TemplateVersionParameter],
    given: &[WorkspaceBuildParameter],
    carried: &'a [WorkspaceBuildParameter],
) -> Option<(&'a str, &'a str)> {
    given.iter().find_map(|g| {
        let p = declared.iter().find(|p| p.name == g.name && !p.mutable)?;
        let old = carried.iter().find(|c| c.name == g.name && c.value != g.value)?;
        Some((p.name.as_str(), old.value.as_str()))
    })
}

pub async fn run(ctx: &Context_, args: UpdateArgs) -> anyhow::Result<()> {
    let client = ctx.client()?;
    let ws = resolve(&client, &args.workspace).await?;
    let mut given = parse_params(&args.parameters)?;
    if !ws.outdated && given.is_empty() {
        outln!("Workspace {:?} is up to date.", ws.name)?;
        return Ok(());
    }
    let template = client.template(&ws.template_id.to_string()).await?;
    let active = template.active_version_id;
    let declared = client.template_version_parameters(active).await?;
    let carried = client.workspace_build_parameters(ws.latest_build.id).await?;
    if let Some((name, old)) = immutable_change(&declared, &given, &carried) {
        bail!("Parameter {name:?} is immutable; it stays {old:?}.");
    }
    ask_missing(&declared, &mut given, &carried, false)?;
    if ws.latest_build.transition == Transition::Start {
        build(&client, &ws, Transition::Stop, &[]).await?;
    }
    let b = client
        .create_workspace_build(
            ws.id,
            &CreateWorkspaceBuildRequest {
                transition: Transition::Start,
                template_version_id: Some(active),
                rich_parameter_values: given,
            },
        )
        .await
        .map_err(api_message)?;
    outln!(
        "Starting workspace {:?} on template {:?}'s active version (build #{})…",
        ws.name,
        template.name,
        b.build_number
    )?;
    finish_build(&client, b.id, &ws.name, Transition::Start).await
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn param(name: &str, mutable: bool) -> TemplateVersionParameter {
        TemplateVersionParameter {
            name: name.into(),
            display_name: String::new(),
            description: String::new(),
            type_: "string".into(),
            mutable,
            default_value: None,
            required: true,
            options: vec![],
            validation: None,
        }
    }

    fn value(name: &str, value: &str) -> WorkspaceBuildParameter {
        WorkspaceBuildParameter { name: name.into(), value: value.into() }
    }

    #[test]
    fn only_a_changed_immutable_value_is_refused() {
        let declared = [param("region", true), param("disk", false)];
        let carried = [value("region", "eu"), value("disk", "10")];
        let refused = immutable_change(&declared, &[value("disk", "20")], &carried);
        assert_eq!(refused, Some(("disk", "10")));
        for ok in [vec![value("disk", "10")], vec![value("region", "us")], vec![]] {
            assert_eq!(immutable_change(&declared, &ok, &carried), None, "{ok:?}");
        }
        // A new immutable parameter has no old value to keep.
        assert_eq!(immutable_change(&declared, &[value("disk", "20")], &[]), None);
    }
}
