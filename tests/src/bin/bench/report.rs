//! The benchmark report: each group adds a [`Section`] of [`Row`]s (our figure,
//! the baseline measured in the same run, their ratio) and plots; [`Report::render`]
//! turns it into `benchmarks.md`, keeping the sections of groups this run did
//! not measure from the previous file (each section starts with a
//! `<!-- bench:GROUP -->` marker and says when and how it was measured).

use std::fmt::Write as _;

/// Whether a larger figure is better (throughput) or a smaller one (latency, size).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Better {
    Higher,
    Lower,
}

/// One figure: ours, and what it is compared with.
#[derive(Debug, Clone)]
pub struct Row {
    pub metric: String,
    pub ours: f64,
    pub unit: &'static str,
    /// The baseline's name and value, measured in the same run.
    pub baseline: Option<(String, f64)>,
    pub better: Better,
    pub note: String,
    /// What this figure should reach; the report's summary lists every goal.
    pub goal: Option<Goal>,
}

/// A figure's goal: a bound on ours ÷ baseline, or on our figure itself (in
/// the row's unit). Met when equal.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Goal {
    RatioAtLeast(f64),
    RatioAtMost(f64),
    AtLeast(f64),
    AtMost(f64),
}

impl Goal {
    /// How the report's note column writes it: `≥ 0.9×`, `≤ 50 ms`.
    pub fn text(&self, unit: &str) -> String {
        let with_unit = |v: f64| format!("{v} {unit}").trim_end().to_owned();
        match *self {
            Goal::RatioAtLeast(v) => format!("≥ {v:?}×"),
            Goal::RatioAtMost(v) => format!("≤ {v:?}×"),
            Goal::AtLeast(v) => format!("≥ {}", with_unit(v)),
            Goal::AtMost(v) => format!("≤ {}", with_unit(v)),
        }
    }
}

impl Row {
    pub fn new(metric: impl Into<String>, ours: f64, unit: &'static str, better: Better) -> Self {
        Self {
            metric: metric.into(),
            ours,
            unit,
            baseline: None,
            better,
            note: String::new(),
            goal: None,
        }
    }

    pub fn goal(mut self, goal: Goal) -> Self {
        self.goal = Some(goal);
        self
    }

    /// The note column: the goal first, then the note.
    pub fn note_cell(&self) -> String {
        let goal = self.goal.map(|g| format!("goal: {}", g.text(self.unit)));
        goal.into_iter()
            .chain((!self.note.is_empty()).then(|| self.note.clone()))
            .collect::<Vec<_>>()
            .join("; ")
    }

    pub fn baseline(mut self, name: impl Into<String>, value: f64) -> Self {
        self.baseline = Some((name.into(), value));
        self
    }

    pub fn note(mut self, note: impl Into<String>) -> Self {
        self.note = note.into();
        self
    }

    /// ours / baseline.
    pub fn ratio(&self) -> Option<f64> {
        match self.baseline {
            Some((_, b)) if b != 0.0 => Some(self.ours / b),
            _ => None,
        }
    }
}

/// A plot file (relative to the report) and its caption.
#[derive(Debug, Clone)]
pub struct Plot {
    pub file: String,
    pub caption: String,
}

/// One benchmark group's results.
#[derive(Debug, Clone, Default)]
pub struct Section {
    pub title: String,
    /// What was measured and how, in a few sentences.
    pub method: String,
    pub rows: Vec<Row>,
    pub plots: Vec<Plot>,
    /// Skipped baselines, failures, caveats.
    pub notes: Vec<String>,
    /// How long the group took, its builds included.
    pub elapsed_s: Option<f64>,
}

impl Section {
    pub fn new(title: &str, method: &str) -> Self {
        Self { title: title.to_owned(), method: method.to_owned(), ..Self::default() }
    }
}

/// The machine the run happened on.
#[derive(Debug, Clone)]
pub struct Machine {
    pub nproc: usize,
    pub cpu: String,
    pub kernel: String,
    pub memory: String,
}

impl Machine {
    pub fn probe() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name").and_then(|r| r.split_once(':')))
            .map(|(_, v)| v.trim().to_owned())
            .unwrap_or_else(|| "unknown".to_owned());
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|_| "unknown".to_owned());
        let memory = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                m.lines().find_map(|l| l.strip_prefix("MemTotal:").map(|v| v.trim().to_owned()))
            })
            .unwrap_or_else(|| "unknown".to_owned());
        let nproc = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        Self { nproc, cpu, kernel, memory }
    }
}

/// Everything one `bench` invocation measured.
#[derive(Debug, Clone)]
pub struct Report {
    pub date: String,
    pub machine: Machine,
    pub command: String,
    pub quick: bool,
    /// Each group's name (as on the command line) and section, in report order.
    pub sections: Vec<(String, Section)>,
    pub elapsed_s: f64,
    /// Seconds since `scripts/bench` started, its builds included, when it ran us.
    pub command_s: Option<f64>,
}

/// The sections of a previous `benchmarks.md`, by group name, in file order.
/// Files written before sections had markers are recognized by the
/// "(`bench GROUP`)" in their headings.
pub fn previous_sections(md: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut current: Option<(String, String)> = None;
    let mut marker: Option<String> = None;
    for line in md.lines() {
        let group = if let Some(g) =
            line.strip_prefix("<!-- bench:").and_then(|r| r.strip_suffix(" -->"))
        {
            marker = Some(g.to_owned());
            None
        } else if line.starts_with("## ") {
            marker.take().or_else(|| {
                let (_, rest) = line.split_once("(`bench ")?;
                Some(rest.split_once('`')?.0.to_owned())
            })
        } else {
            None
        };
        if let Some(g) = group {
            out.extend(current.take());
            current = Some((g, String::new()));
        }
        if let Some((_, text)) = current.as_mut() {
            if !line.starts_with("<!-- bench:") {
                text.push_str(line);
                text.push('\n');
            }
        }
    }
    out.extend(current);
    out
}

/// A figure with a sensible number of digits.
pub fn fmt_value(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 {
        "0".to_owned()
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 0.1 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

impl Report {
    /// The whole file: the header, then for each known group in order either
    /// this run's section or the one from `previous` (the old file's text).
    pub fn render(&self, order: &[String], previous: Option<&str>) -> String {
        let mut md = String::new();
        let m = &self.machine;
        let old = previous.map(previous_sections).unwrap_or_default();
        let stamp = |s: &Section| {
            let group = s.elapsed_s.map(|g| format!("this group: {g:.0} s; ")).unwrap_or_default();
            let command = self
                .command_s
                .map(|c| format!("; the command, builds included: {c:.0} s"))
                .unwrap_or_default();
            format!(
                "_Measured {} by `{}` ({group}whole run: {:.0} s{command})._\n",
                self.date, self.command, self.elapsed_s
            )
        };
        // Each group's text, this run's or kept from the previous file; the
        // summary is read from these, so it matches what follows it.
        let mut texts: Vec<(String, String)> = Vec::new();
        for group in order {
            if let Some((_, s)) = self.sections.iter().find(|(g, _)| g == group) {
                texts.push((group.clone(), render_section(s, &stamp(s))));
            } else if let Some((_, text)) = old.iter().find(|(g, _)| g == group) {
                texts.push((group.clone(), format!("{}\n\n", text.trim_end())));
            }
        }
        let _ = writeln!(md, "# Benchmarks\n");
        let _ = writeln!(
            md,
            "Generated by the `bench` binary of the `tests` crate \
             (`tests/src/bin/bench/`). Do not edit by hand: rerun it. Each section says \
             when and with which command it was last measured; a run of some groups \
             replaces only their sections.\n"
        );
        md.push_str(&crate::summary::render(&texts));
        let _ = writeln!(
            md,
            "How to run: `./scripts/bench` (installs the baselines' packages, builds in \
             release, runs every group: under 20 minutes on 2 cores from a cold target \
             directory), or name groups, `./scripts/bench quic relay`: `quic`, \
             `relay`, `path`, `ssh`, `cli`, `jobs`, `agent`, `wireguard`, `coord`, `sched` (a run of \
             some groups replaces only their sections). `path` and `wireguard` need root \
             for their network-namespace figures; `wireguard`'s baselines are \
             `boringtun-cli`, installed with cargo into `target/bench-tools` (or set \
             `BORINGTUN_CLI`), and Debian's `wireguard-go` (`apt-get install wireguard-go`, \
             or set `WIREGUARD_GO`). \
             `--quick` runs each group for a fraction of a second and `--out DIR` writes \
             the report elsewhere; `tests/tests/bench_smoke.rs` does both on every test run. \
             Groups `ssh` and `agent` compare with OpenSSH's `sshd` \
             (`apt-get install openssh-server`; skipped with a note if missing).\n"
        );
        if self.quick {
            let _ = writeln!(
                md,
                "> **Quick (smoke) run**: every group ran for a fraction of a second; \
                 the figures are not meaningful.\n"
            );
        }
        let _ = writeln!(md, "| | |\n|---|---|");
        let _ = writeln!(md, "| machine | {} × {} ({} RAM) |", m.nproc, m.cpu, m.memory);
        let _ = writeln!(md, "| kernel | {} |\n", m.kernel);
        let _ = writeln!(
            md,
            "Everything runs on one machine, over loopback or between network \
             namespaces as each section says, ours and the baseline in the same invocation, one after the other; compare figures within one run only. \
             Each figure is the median of several repetitions unless the metric says \
             otherwise. *ratio* is ours ÷ baseline; for throughput higher is better, \
             for times and sizes lower is better.\n"
        );
        for (group, text) in &texts {
            let _ = writeln!(md, "<!-- bench:{group} -->");
            md.push_str(text);
        }
        md
    }
}

pub fn render_section(s: &Section, stamp: &str) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "## {}\n\n{stamp}\n{}\n", s.title, s.method);
    if !s.rows.is_empty() {
        let _ = writeln!(md, "| metric | ours | baseline | baseline value | ratio | note |");
        let _ = writeln!(md, "|---|---:|---|---:|---:|---|");
        for r in &s.rows {
            let (bname, bval) = match &r.baseline {
                Some((n, v)) => (n.clone(), format!("{} {}", fmt_value(*v), r.unit)),
                None => ("—".to_owned(), "—".to_owned()),
            };
            let ratio = r.ratio().map_or("—".to_owned(), |x| format!("{x:.2}×"));
            let better = match r.better {
                Better::Higher => "↑",
                Better::Lower => "↓",
            };
            let _ = writeln!(
                md,
                "| {} {better} | {} {} | {bname} | {bval} | {ratio} | {} |",
                r.metric,
                fmt_value(r.ours),
                r.unit,
                r.note_cell()
            );
        }
        md.push('\n');
    }
    for p in &s.plots {
        let _ = writeln!(md, "![{}]({})\n\n*{}*\n", p.caption, p.file, p.caption);
    }
    for n in &s.notes {
        let _ = writeln!(md, "- {n}");
    }
    if !s.notes.is_empty() {
        md.push('\n');
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partial_run_keeps_the_other_sections() {
        let old = "# Benchmarks\n\nheader\n\n## QUIC direct path (`bench quic`)\n\nold quic\n\n\
                   ## Relay (`bench relay`)\n\nold relay\n";
        let prev = previous_sections(old);
        assert_eq!(prev.len(), 2);
        assert_eq!(prev[0].0, "quic");
        let report = Report {
            date: "today".into(),
            machine: Machine { nproc: 2, cpu: "c".into(), kernel: "k".into(), memory: "m".into() },
            command: "bench relay".into(),
            quick: false,
            sections: vec![("relay".into(), Section::new("Relay (`bench relay`)", "new relay"))],
            elapsed_s: 1.0,
            command_s: None,
        };
        let order: Vec<String> = ["quic", "relay", "coord"].map(String::from).to_vec();
        let md = report.render(&order, Some(old));
        assert!(md.contains("old quic") && md.contains("new relay"), "{md}");
        assert!(!md.contains("old relay"), "{md}");
        // Rendered again from its own output: stable, markers and all.
        let again = report.render(&order, Some(&md));
        assert_eq!(again, md);
        assert_eq!(previous_sections(&md).len(), 2);
    }

    /// Issue #20: the summary lists the goals of every section in the file,
    /// the ones this run measured and the ones kept from the previous file.
    #[test]
    fn a_partial_run_rebuilds_the_goal_summary_from_every_section() {
        let report = |group: &str, title: &str, row: Row| Report {
            date: format!("{group} day"),
            machine: Machine { nproc: 2, cpu: "c".into(), kernel: "k".into(), memory: "m".into() },
            command: format!("bench {group}"),
            quick: false,
            sections: vec![(group.into(), {
                let mut s = Section::new(title, "how");
                s.rows.push(row);
                s
            })],
            elapsed_s: 1.0,
            command_s: None,
        };
        let order: Vec<String> = ["quic", "relay"].map(String::from).to_vec();
        let quic = report(
            "quic",
            "QUIC direct path (`bench quic`)",
            Row::new("mesh QUIC", 757.0, "MiB/s", Better::Higher)
                .baseline("plain quinn", 751.0)
                .goal(Goal::RatioAtLeast(0.9)),
        );
        let first = quic.render(&order, None);
        assert!(first.contains("1 of 1 met"), "{first}");
        let relay = report(
            "relay",
            "Relay (`bench relay`)",
            Row::new("relayed", 223.0, "MiB/s", Better::Higher)
                .baseline("direct", 800.0)
                .goal(Goal::RatioAtLeast(0.5)),
        );
        let md = relay.render(&order, Some(&first));
        assert!(md.contains("1 of 2 met"), "{md}");
        assert!(md.contains("| mesh QUIC ÷ plain quinn | ≥ 0.9× | 1.01× "), "{md}");
        assert!(md.contains("| yes | `quic`, quic day |"), "{md}");
        assert!(md.contains("| relayed ÷ direct | ≥ 0.5× | 0.28× "), "{md}");
        assert!(md.contains("| **no** | `relay`, relay day |"), "{md}");
        // Once, at the top, before the first section.
        assert_eq!(md.matches(crate::summary::HEADING).count(), 1);
        assert!(md.find(crate::summary::HEADING) < md.find("<!-- bench:"), "{md}");
        assert_eq!(relay.render(&order, Some(&md)), md);
    }
}
