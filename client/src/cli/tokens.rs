//! `coder tokens create|list|rm`.

use codersdk::CreateTokenRequest;

use super::output::{self, outln, OutputArgs, OutputFormat};
use super::Context_;

#[derive(clap::Subcommand, Debug)]
pub enum TokensCommand {
    /// Create a token; it is shown once.
    Create {
        /// Token name (default: generated).
        #[arg(long, short)]
        name: Option<String>,
        /// Lifetime, like `30d`, `12h`, `90m` (default: the deployment's).
        #[arg(long, value_parser = parse_lifetime)]
        lifetime: Option<i64>,
        #[command(flatten)]
        out: OutputArgs,
    },
    /// List your tokens.
    #[command(alias = "ls")]
    List(OutputArgs),
    /// Delete a token by name or id.
    #[command(alias = "delete", alias = "remove")]
    Rm { name_or_id: String },
}

/// Parses `90s`, `15m`, `12h`, `30d` into seconds.
fn parse_lifetime(s: &str) -> Result<i64, String> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: i64 =
        num.parse().map_err(|_| format!("{s:?} is not a duration like 30d, 12h or 90m"))?;
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" | "" => 3600,
        "d" => 86400,
        _ => return Err(format!("unknown unit {unit:?}; use s, m, h or d")),
    };
    n.checked_mul(mult).filter(|v| *v > 0).ok_or_else(|| format!("{s:?} is out of range"))
}

pub async fn run(ctx: &Context_, cmd: TokensCommand) -> anyhow::Result<()> {
    let client = ctx.client()?;
    match cmd {
        TokensCommand::Create { name, lifetime, out } => {
            let req = CreateTokenRequest {
                token_name: name.unwrap_or_default(),
                lifetime: lifetime.unwrap_or(0),
            };
            let resp = client.create_token(&req).await?;
            match out.output {
                OutputFormat::Json => outln!("{}", serde_json::to_string_pretty(&resp)?)?,
                OutputFormat::Table => outln!("{}", resp.key)?,
            }
        }
        TokensCommand::List(out) => {
            let tokens = client.tokens().await?;
            let rows = tokens
                .iter()
                .map(|t| {
                    vec![
                        t.id.clone(),
                        t.token_name.clone(),
                        t.last_used.format("%Y-%m-%d %H:%M").to_string(),
                        t.expires_at.format("%Y-%m-%d %H:%M").to_string(),
                    ]
                })
                .collect();
            output::print(out.output, &tokens, &["id", "name", "last used", "expires at"], rows)?;
        }
        TokensCommand::Rm { name_or_id } => {
            client.delete_token(&name_or_id).await?;
            outln!("Token {name_or_id:?} deleted.")?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_lifetime;

    #[test]
    fn lifetimes() {
        assert_eq!(parse_lifetime("30d"), Ok(30 * 86400));
        assert_eq!(parse_lifetime("90m"), Ok(5400));
        assert!(parse_lifetime("0h").is_err());
        assert!(parse_lifetime("5y").is_err());
        assert!(parse_lifetime("x").is_err());
    }
}
