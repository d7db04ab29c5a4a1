//! `coder users create|list|suspend|activate|delete|edit-roles|passwd`.

use anyhow::{bail, Context};
use codersdk::{CreateUserRequest, Role, Transition, UpdatePasswordRequest, User};

use super::confirm::confirm;
use super::output::{self, outln, OutputArgs};
use super::Context_;

#[derive(clap::Subcommand, Debug)]
pub enum UsersCommand {
    /// Create a user.
    Create {
        #[arg(long)]
        username: String,
        #[arg(long)]
        email: String,
        #[arg(long, env = "CODER_PASSWORD", hide_env_values = true)]
        password: String,
        /// Make the user an owner.
        #[arg(long)]
        owner: bool,
        /// Roles to grant (comma-separated: owner, template-admin,
        /// user-admin, auditor); every user is a member.
        #[arg(long, value_delimiter = ',')]
        roles: Vec<Role>,
        #[command(flatten)]
        out: OutputArgs,
    },
    /// List users with their status, login type and roles.
    #[command(alias = "ls")]
    List(OutputArgs),
    /// Suspend a user: their sessions, tokens and connections stop at once.
    Suspend {
        username: String,
        #[command(flatten)]
        out: OutputArgs,
    },
    /// Activate a suspended user.
    Activate {
        username: String,
        #[command(flatten)]
        out: OutputArgs,
    },
    /// Delete a user (who must have no workspaces, unless --force).
    #[command(alias = "rm")]
    Delete {
        username: String,
        /// Delete the user's workspaces first (delete builds, one at a time).
        #[arg(long)]
        force: bool,
        /// Don't ask for confirmation.
        #[arg(short, long)]
        yes: bool,
    },
    /// Set a user's roles (the list replaces the old one; empty: member only).
    EditRoles {
        username: String,
        #[arg(long, value_delimiter = ',', num_args = 0..)]
        roles: Vec<Role>,
        #[command(flatten)]
        out: OutputArgs,
    },
    /// Change your own password (the old one is required), or, as an owner
    /// or user admin, reset another user's with `--user NAME`.
    Passwd {
        /// Whose password to reset (default: your own).
        #[arg(long)]
        user: Option<String>,
        /// Your current password (for your own).
        #[arg(long, env = "CODER_OLD_PASSWORD", hide_env_values = true)]
        old_password: Option<String>,
        /// The new password (asked for on the terminal if absent).
        #[arg(long, env = "CODER_NEW_PASSWORD", hide_env_values = true)]
        password: Option<String>,
    },
}

fn roles_text(roles: &[Role]) -> String {
    roles.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(",")
}

fn print_user(out: &OutputArgs, user: &User, done: &str) -> anyhow::Result<()> {
    if out.output == output::OutputFormat::Json {
        outln!("{}", serde_json::to_string_pretty(user)?)?;
    } else {
        outln!(
            "{done} user {} ({}, roles {}).",
            user.username,
            user.status,
            roles_text(&user.roles)
        )?;
    }
    Ok(())
}

fn secret(flag: Option<String>, prompt: &str) -> anyhow::Result<String> {
    match flag {
        Some(s) => Ok(s),
        None => rpassword::prompt_password(prompt).context("cannot read the password"),
    }
}

pub async fn run(ctx: &Context_, cmd: UsersCommand) -> anyhow::Result<()> {
    let client = ctx.client()?;
    match cmd {
        UsersCommand::Create { username, email, password, owner, mut roles, out } => {
            if owner {
                roles.push(Role::Owner);
            }
            roles.push(Role::Member);
            let user =
                client.create_user(&CreateUserRequest { email, username, password, roles }).await?;
            print_user(&out, &user, "Created")?;
        }
        UsersCommand::List(out) => {
            let users = client.users().await?;
            let rows = users
                .iter()
                .map(|u| {
                    vec![
                        u.username.clone(),
                        u.email.clone(),
                        u.status.to_string(),
                        u.login_type.to_string(),
                        roles_text(&u.roles),
                        u.created_at.format("%Y-%m-%d").to_string(),
                    ]
                })
                .collect();
            output::print(
                out.output,
                &users,
                &["username", "email", "status", "login type", "roles", "created"],
                rows,
            )?;
        }
        UsersCommand::Suspend { username, out } => {
            print_user(&out, &client.suspend_user(&username).await?, "Suspended")?;
        }
        UsersCommand::Activate { username, out } => {
            print_user(&out, &client.activate_user(&username).await?, "Activated")?;
        }
        UsersCommand::EditRoles { username, roles, out } => {
            print_user(&out, &client.update_roles(&username, &roles).await?, "Updated")?;
        }
        UsersCommand::Delete { username, force, yes } => {
            let what =
                if force { "delete user {u} and all their workspaces" } else { "delete user {u}" };
            confirm(&what.replace("{u}", &username), yes)?;
            if force {
                delete_workspaces(&client, &username).await?;
            }
            client.delete_user(&username).await?;
            outln!("Deleted user {username}.")?;
        }
        UsersCommand::Passwd { user, old_password, password } => {
            let own = user.is_none();
            let old_password =
                if own { secret(old_password, "Current password: ")? } else { String::new() };
            let password = secret(password, "New password: ")?;
            let target = user.as_deref().unwrap_or("me");
            client
                .update_password(target, &UpdatePasswordRequest { old_password, password })
                .await?;
            outln!("Password changed.")?;
        }
    }
    Ok(())
}

/// Builds the `delete` transition of each of `username`'s workspaces and
/// waits for each to finish (progress on stderr).
async fn delete_workspaces(client: &codersdk::Client, username: &str) -> anyhow::Result<()> {
    let all = client.workspaces(true).await.context("cannot list the user's workspaces")?;
    for ws in all.iter().filter(|w| w.owner_name.eq_ignore_ascii_case(username)) {
        eprintln!("Deleting workspace {}/{}…", ws.owner_name, ws.name);
        super::build::transition_quiet(client, ws, Transition::Delete)
            .await
            .with_context(|| format!("cannot delete workspace {}/{}", ws.owner_name, ws.name))?;
    }
    if client.workspaces(true).await?.iter().any(|w| w.owner_name.eq_ignore_ascii_case(username)) {
        bail!("{username} still has workspaces; try again once their builds finish.");
    }
    Ok(())
}
