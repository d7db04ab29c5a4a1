//! `coder users create|list`.

use codersdk::{CreateUserRequest, Role};

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
        #[command(flatten)]
        out: OutputArgs,
    },
    /// List users.
    #[command(alias = "ls")]
    List(OutputArgs),
}

pub async fn run(ctx: &Context_, cmd: UsersCommand) -> anyhow::Result<()> {
    let client = ctx.client()?;
    match cmd {
        UsersCommand::Create { username, email, password, owner, out } => {
            let roles = if owner { vec![Role::Owner] } else { vec![Role::Member] };
            let user =
                client.create_user(&CreateUserRequest { email, username, password, roles }).await?;
            if out.output == output::OutputFormat::Json {
                outln!("{}", serde_json::to_string_pretty(&user)?)?;
            } else {
                outln!("Created user {} ({}).", user.username, user.id)?;
            }
        }
        UsersCommand::List(out) => {
            let users = client.users().await?;
            let rows = users
                .iter()
                .map(|u| {
                    let roles: Vec<&str> = u.roles.iter().map(|r| r.as_str()).collect();
                    vec![
                        u.username.clone(),
                        u.email.clone(),
                        roles.join(","),
                        u.status.to_string(),
                        u.created_at.format("%Y-%m-%d").to_string(),
                    ]
                })
                .collect();
            output::print(
                out.output,
                &users,
                &["username", "email", "roles", "status", "created"],
                rows,
            )?;
        }
    }
    Ok(())
}
