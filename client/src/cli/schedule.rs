//! `coder schedule show|start|stop|extend` (a workspace's autostart and
//! autostop, as in Coder's CLI) and the durations they and
//! `coder templates edit` take: `8h`, `90s`, `1h30m`.

use anyhow::{bail, Context};
use chrono::{DateTime, Utc};
use codersdk::Workspace;

use super::build::resolve;
use super::output::{self, OutputArgs};
use super::Context_;

#[derive(clap::Subcommand, Debug)]
pub enum ScheduleCommand {
    /// Show a workspace's autostart schedule, TTL and deadline.
    Show {
        workspace: String,
        #[command(flatten)]
        out: OutputArgs,
    },
    /// Set the autostart schedule: "9:30 Mon-Fri Europe/Dublin", or `manual`.
    Start { workspace: String, schedule: String },
    /// Set the autostop TTL: `8h`, `90s`, `1h30m`, or `manual`.
    Stop { workspace: String, ttl: String },
    /// Move the running workspace's deadline to this long from now (`2h`).
    Extend { workspace: String, duration: String },
}

/// `8h`, `90s`, `1h30m`, `45m`, `1d` as milliseconds.
pub fn parse_duration_ms(s: &str) -> anyhow::Result<i64> {
    let bad = || format!("{s:?} is not a duration; write one like 8h, 90s or 1h30m");
    let mut total: i64 = 0;
    let mut num = String::new();
    let mut any = false;
    for c in s.trim().chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let unit: i64 = match c {
            'd' => 86_400_000,
            'h' => 3_600_000,
            'm' => 60_000,
            's' => 1_000,
            _ => bail!(bad()),
        };
        let n: i64 = num.parse().with_context(bad)?;
        total = n.checked_mul(unit).and_then(|v| total.checked_add(v)).with_context(bad)?;
        num.clear();
        any = true;
    }
    if !num.is_empty() || !any {
        bail!(bad());
    }
    Ok(total)
}

/// A TTL as the CLI writes it back (`8h`, `1m30s`).
pub fn format_ms(ms: i64) -> String {
    let s = ms / 1000;
    let (h, m, s) = (s / 3600, s % 3600 / 60, s % 60);
    let mut out = String::new();
    for (n, u) in [(h, "h"), (m, "m")] {
        if n > 0 {
            out += &format!("{n}{u}");
        }
    }
    if s > 0 || out.is_empty() {
        out += &format!("{s}s");
    }
    out
}

/// A deadline as `coder list` shows it: local-independent UTC, with how far off.
pub fn format_deadline(deadline: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let left = (deadline - now).num_seconds();
    let when = deadline.format("%Y-%m-%d %H:%M:%S UTC");
    if left >= 0 {
        format!("{when} (in {})", format_ms(left * 1000))
    } else {
        format!("{when} (due)")
    }
}

/// The running build's deadline, if the workspace is running with one.
pub fn deadline(w: &Workspace) -> Option<DateTime<Utc>> {
    (w.latest_build.status == codersdk::WorkspaceStatus::Running)
        .then_some(w.latest_build.deadline)
        .flatten()
}

pub async fn run(ctx: &Context_, cmd: ScheduleCommand) -> anyhow::Result<()> {
    let client = ctx.client()?;
    match cmd {
        ScheduleCommand::Show { workspace, out } => {
            let w = resolve(&client, &workspace).await?;
            show(&w, out)
        }
        ScheduleCommand::Start { workspace, schedule } => {
            let w = resolve(&client, &workspace).await?;
            let schedule = (!schedule.eq_ignore_ascii_case("manual")).then_some(schedule);
            let w = client.update_workspace_autostart(w.id, schedule).await?;
            show(&w, OutputArgs::default())
        }
        ScheduleCommand::Stop { workspace, ttl } => {
            let w = resolve(&client, &workspace).await?;
            let ttl = match ttl.as_str() {
                t if t.eq_ignore_ascii_case("manual") => None,
                t => Some(parse_duration_ms(t)?),
            };
            let w = client.update_workspace_ttl(w.id, ttl).await?;
            show(&w, OutputArgs::default())
        }
        ScheduleCommand::Extend { workspace, duration } => {
            let w = resolve(&client, &workspace).await?;
            let by = chrono::Duration::milliseconds(parse_duration_ms(&duration)?);
            let w = client.extend_workspace(w.id, Utc::now() + by).await?;
            show(&w, OutputArgs::default())
        }
    }
}

fn show(w: &Workspace, out: OutputArgs) -> anyhow::Result<()> {
    let now = Utc::now();
    let start = match (&w.autostart_schedule, w.next_start_at) {
        (Some(s), Some(next)) => format!("{s} (next {})", next.format("%Y-%m-%d %H:%M UTC")),
        (Some(s), None) => s.clone(),
        (None, _) => "manual".to_owned(),
    };
    let stop = w.ttl_ms.map_or_else(|| "manual".to_owned(), format_ms);
    let until = deadline(w).map_or_else(|| "-".to_owned(), |d| format_deadline(d, now));
    let rows = vec![vec![format!("{}/{}", w.owner_name, w.name), start, stop, until]];
    output::print(out.output, w, &["workspace", "starts at", "stops after", "stops at"], rows)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn durations_parse_like_coders() {
        assert_eq!(parse_duration_ms("8h").unwrap(), 8 * 3_600_000);
        assert_eq!(parse_duration_ms("90s").unwrap(), 90_000);
        assert_eq!(parse_duration_ms("1h30m").unwrap(), 5_400_000);
        assert_eq!(parse_duration_ms("1d").unwrap(), 86_400_000);
        for bad in ["", "8", "h", "8x", "-1h", "99999999999999999999h"] {
            assert!(parse_duration_ms(bad).is_err(), "{bad:?} parsed");
        }
        assert_eq!(format_ms(5_400_000), "1h30m");
        assert_eq!(format_ms(20_000), "20s");
    }
}
