//! Keeps the benchmark runner from rotting: `bench all --quick` (each group
//! for a fraction of a second) writes its report and plots to a temp dir.
//! The deployment groups run when `cargo nextest run --workspace` built the
//! other binaries, and are skipped (with a note in the report) otherwise.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn bench_all_quick_writes_a_report() {
    let bench = tests::binary("bench").unwrap();
    let out = tempfile::tempdir().unwrap();
    let start = Instant::now();
    let mut child = Command::new(bench)
        .args(["all", "--quick", "--no-build", "--out"])
        .arg(out.path())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    // The quick run takes about two minutes on two busy cores (it starts
    // three `coderd`s and a deployment); a hang must not block the suite.
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > Duration::from_secs(300) {
            let _ = child.kill();
            panic!("bench --quick did not finish within 300 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "bench all --quick failed: {status}");
    eprintln!("bench all --quick took {:.1} s", start.elapsed().as_secs_f64());

    let report = std::fs::read_to_string(out.path().join("benchmarks.md")).unwrap();
    for heading in [
        "## QUIC direct path",
        "## Relay",
        "## SSH",
        "## Provisioner jobs",
        "## Agent",
        "## Coordinator",
        "## Scheduler lag",
    ] {
        assert!(report.contains(heading), "no {heading:?} in the report:\n{report}");
    }
    assert!(report.contains("Quick (smoke) run"), "{report}");
    like_with_like(&report);
    for plot in ["quic.svg", "relay.svg", "relay_pairs.svg", "relay_to_direct.svg"] {
        let svg = std::fs::read_to_string(out.path().join("benchmarks").join(plot)).unwrap();
        assert!(svg.trim_start().starts_with("<svg") && svg.contains("</svg>"), "{plot}: {svg}");
        assert!(svg.contains("<text"), "{plot} has no text: {svg}");
        assert!(report.contains(&format!("(benchmarks/{plot})")), "{plot} is not in the report");
    }
}

/// The text of group `group`'s section ("" if absent).
fn section<'a>(report: &'a str, group: &str) -> &'a str {
    let marker = format!("<!-- bench:{group} -->");
    let Some((_, rest)) = report.split_once(&marker) else { return "" };
    rest.split("<!-- bench:").next().unwrap_or_default()
}

/// Issue #20: every comparison is with a baseline doing the same work, and
/// the goals are summed up at the top.
fn like_with_like(report: &str) {
    let goals = report.find("## Goals").expect("no goal summary");
    assert!(goals < report.find("<!-- bench:").unwrap(), "the summary is not at the top");
    assert!(section(report, "quic").contains("256 KiB at a time"), "{report}");
    let coord = section(report, "coord");
    if !coord.contains("Skipped") {
        assert!(coord.contains("peers, `MIMALLOC_PURGE_DELAY=0` ↓ |"), "{coord}");
        assert!(coord.contains("peers, mimalloc's default purge delay ↓ |"), "{coord}");
    }
    let cli = section(report, "cli");
    if !cli.contains("Skipped") {
        assert!(cli.contains("| raw mesh QUIC, 2 processes"), "{cli}");
        assert!(cli.contains("| raw mesh QUIC, 1 stream, in-process |"), "{cli}");
    }
    let ssh = section(report, "ssh");
    if ssh.contains("(OpenSSH sshd)") {
        // Root makes a user without rc files; anyone else says whose rc files ran.
        assert!(
            ssh.contains("`ssh -l coder-bench-ssh 127.0.0.1 true`")
                || ssh.contains("so it could not make a user without rc files"),
            "{ssh}"
        );
        assert!(ssh.contains("authentication `publickey`"), "{ssh}");
    }
    let wg = section(report, "wireguard");
    if wg.contains("| single TCP stream") {
        assert!(
            wg.contains("| two wireguard-go devices |")
                || wg.contains("wireguard-go not installed"),
            "{wg}"
        );
    }
}
