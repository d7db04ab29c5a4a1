//! The summary at the top of `benchmarks.md`: every figure that has a goal,
//! the goal, its latest value and whether it is met. Built from the rendered
//! sections' text (this run's and the ones kept from the previous file), so
//! that after a run of some groups it still agrees with the sections below it.
//! A goal is written in a row's note column as `goal: ≥ 0.9×` (on the ratio)
//! or `goal: ≤ 50 ms` (on our figure, in its unit); see [`crate::report::Goal`].

use std::fmt::Write as _;

/// The heading of the summary; not a group's heading, so
/// [`crate::report::previous_sections`] never takes it for a section.
pub const HEADING: &str = "## Goals";

/// One goal found in a section's table.
#[derive(Debug, Clone, PartialEq)]
pub struct GoalRow {
    pub group: String,
    /// When the section was measured, from its stamp line.
    pub measured: String,
    /// The metric, and for a goal on the ratio `÷ baseline`.
    pub figure: String,
    /// As written, e.g. `≥ 0.9×`.
    pub goal: String,
    /// The figure the goal is about, as the table shows it.
    pub latest: String,
    /// `None` when the figure was not measured (the baseline was skipped).
    pub met: Option<bool>,
}

/// A table cell's leading number: `757` of `757 MiB/s`, `1.01` of `1.01×`.
fn number(cell: &str) -> Option<f64> {
    let cell = cell.trim().trim_end_matches('×');
    cell.split_whitespace().next()?.parse().ok()
}

/// The unit after a table cell's number (`MiB/s` of `757 MiB/s`; empty for none).
fn unit(cell: &str) -> &str {
    cell.trim().split_once(' ').map_or("", |(_, u)| u.trim())
}

/// The goals in one section's markdown.
pub fn goals_in(group: &str, text: &str) -> Vec<GoalRow> {
    let measured = text
        .lines()
        .find_map(|l| l.strip_prefix("_Measured ")?.split_once(" by ").map(|(d, _)| d.to_owned()))
        .unwrap_or_else(|| "—".to_owned());
    let mut out = Vec::new();
    for line in text.lines().filter(|l| l.starts_with("| ")) {
        let cells: Vec<&str> = line.trim().trim_matches('|').split(" | ").map(str::trim).collect();
        let [metric, ours, baseline, base_value, ratio, note] = cells[..] else { continue };
        // `goal: ≥ 0.9×`; files from before goals were typed also wrote
        // `goal ≥ 2×` and `goal: p99 ≤ 50 ms`.
        let Some(goal) = note.split("; ").find_map(|n| {
            let rest = n.strip_prefix("goal")?;
            rest.find(['≥', '≤']).map(|at| &rest[at..])
        }) else {
            continue;
        };
        let metric = metric.trim_end_matches(['↑', '↓']).trim_end();
        let (at_least, rest) = match goal.chars().next() {
            Some('≥') => (true, &goal['≥'.len_utf8()..]),
            Some('≤') => (false, &goal['≤'.len_utf8()..]),
            _ => continue,
        };
        let Some(bound) = number(rest) else { continue };
        let compare = |v: f64| if at_least { v >= bound } else { v <= bound };
        let row = if rest.trim_end().ends_with('×') {
            let measured_ratio = number(ratio);
            GoalRow {
                group: group.to_owned(),
                measured: measured.clone(),
                figure: if baseline == "—" {
                    metric.to_owned()
                } else {
                    format!("{metric} ÷ {baseline}")
                },
                goal: goal.to_owned(),
                latest: match measured_ratio {
                    Some(_) => format!("{ratio} ({ours} ÷ {base_value})"),
                    None => format!("{ours}; baseline not measured"),
                },
                met: measured_ratio.map(compare),
            }
        } else {
            let same_unit = unit(ours) == unit(rest);
            GoalRow {
                group: group.to_owned(),
                measured: measured.clone(),
                figure: metric.to_owned(),
                goal: goal.to_owned(),
                latest: ours.to_owned(),
                met: number(ours).filter(|_| same_unit).map(compare),
            }
        };
        out.push(row);
    }
    out
}

/// The summary's markdown for `sections` (group name, rendered text) in report order.
pub fn render(sections: &[(String, String)]) -> String {
    let goals: Vec<GoalRow> = sections.iter().flat_map(|(g, t)| goals_in(g, t)).collect();
    let mut md = String::new();
    let _ = writeln!(md, "{HEADING}\n");
    let met = goals.iter().filter(|g| g.met == Some(true)).count();
    let _ = writeln!(
        md,
        "Every figure below that has a goal, from the sections of this file (each \
         measured when its section says): {met} of {} met.\n",
        goals.len()
    );
    if goals.is_empty() {
        return md;
    }
    let _ = writeln!(md, "| figure | goal | latest | met | group, measured |");
    let _ = writeln!(md, "|---|---|---|---|---|");
    for g in &goals {
        let met = match g.met {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "not measured",
        };
        let _ = writeln!(
            md,
            "| {} | {} | {} | {met} | `{}`, {} |",
            g.figure, g.goal, g.latest, g.group, g.measured
        );
    }
    md.push('\n');
    md
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{Better, Goal, Row};

    fn table(rows: &[Row]) -> String {
        let mut s = crate::report::Section::new("Relay (`bench relay`)", "how");
        s.rows = rows.to_vec();
        crate::report::render_section(&s, "_Measured 2026-01-02 03:04 UTC by `bench relay`._\n")
    }

    #[test]
    fn goals_on_ratios_and_on_figures_are_read_back_from_the_table() {
        let text = table(&[
            Row::new("relayed", 223.0, "MiB/s", Better::Higher)
                .baseline("direct", 800.0)
                .goal(Goal::RatioAtLeast(0.5))
                .note("queue full twice"),
            Row::new("p99, 10000 peers", 0.74, "ms", Better::Lower).goal(Goal::AtMost(50.0)),
            Row::new("Jain's index", 0.91, "", Better::Higher)
                .baseline("perfectly fair", 1.0)
                .goal(Goal::AtLeast(0.9)),
            Row::new("per peer", 17.5, "KiB", Better::Lower).goal(Goal::AtMost(16.0)),
            Row::new("no goal", 1.0, "ms", Better::Lower),
            Row::new("tunnel", 3206.0, "Mbit/s", Better::Higher)
                .goal(Goal::RatioAtLeast(2.0))
                .note("boringtun-cli not installed"),
        ]);
        let goals = goals_in("relay", &text);
        let got: Vec<(&str, &str, Option<bool>)> =
            goals.iter().map(|g| (g.figure.as_str(), g.goal.as_str(), g.met)).collect();
        assert_eq!(
            got,
            [
                ("relayed ÷ direct", "≥ 0.5×", Some(false)),
                ("p99, 10000 peers", "≤ 50 ms", Some(true)),
                ("Jain's index", "≥ 0.9", Some(true)),
                ("per peer", "≤ 16 KiB", Some(false)),
                ("tunnel", "≥ 2.0×", None),
            ]
        );
        assert_eq!(goals[0].latest, "0.28× (223 MiB/s ÷ 800 MiB/s)");
        assert_eq!(goals[0].measured, "2026-01-02 03:04 UTC");
        assert_eq!(goals[1].latest, "0.74 ms");
    }

    #[test]
    fn goals_in_the_older_wording_are_read_too() {
        let text = "| tunnel ↑ | 3206 Mbit/s | boringtun | 560 Mbit/s | 5.72× | goal ≥ 2× |\n\
                    | p99 ↓ | 0.74 ms | — | — | — | goal: p99 ≤ 50 ms |\n";
        let got: Vec<(String, Option<bool>)> =
            goals_in("x", text).into_iter().map(|g| (g.goal, g.met)).collect();
        assert_eq!(got, [("≥ 2×".to_owned(), Some(true)), ("≤ 50 ms".to_owned(), Some(true))]);
    }

    #[test]
    fn the_summary_counts_what_is_met() {
        let text = table(&[
            Row::new("a", 2.0, "MiB/s", Better::Higher)
                .baseline("b", 1.0)
                .goal(Goal::RatioAtLeast(0.9)),
            Row::new("c", 60.0, "ms", Better::Lower).goal(Goal::AtMost(50.0)),
        ]);
        let md = render(&[("relay".into(), text)]);
        assert!(md.starts_with(HEADING), "{md}");
        assert!(md.contains("1 of 2 met"), "{md}");
        assert!(md.contains("| a ÷ b | ≥ 0.9× | 2.00× (2.00 MiB/s ÷ 1.00 MiB/s) | yes |"), "{md}");
        assert!(md.contains("| c | ≤ 50 ms | 60.0 ms | **no** | `relay`, 2026-01-02"), "{md}");
    }
}
