//! The first path, end to end on real parts: `coderd server` (embedded
//! Postgres, relay, STUN, provisioners) → `coder login` → `coder templates
//! push` of `examples/templates/local` → `coder create` (terraform starts a
//! real `coder-agent` that joins the mesh) → `coder ssh` → OpenSSH through
//! `coder config-ssh` (ssh, scp, sftp).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

use sha2::{Digest, Sha256};
use tests::{login_first_user, require_programs, run_ok, stop_embedded_postgres, tempdir, Coderd};

fn sha256_file(p: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(p).unwrap()))
}

#[test]
fn push_create_ssh_and_openssh_over_the_mesh() {
    if !require_programs(&["terraform", "ssh", "scp", "sftp", "curl"]) {
        return;
    }
    let tmp = tempdir().unwrap();
    let data = tmp.path().join("data");
    let cfg = tmp.path().join("config");
    let srv = Coderd::spawn(&data, &[]).unwrap();
    let coder = |args: &[&str]| {
        let mut c = srv.coder(&cfg).unwrap();
        c.args(args);
        c
    };
    login_first_user(&srv, &cfg).unwrap();
    let tpl = tmp.path().join("tpl");
    run_ok(&mut coder(&["templates", "init", tpl.to_str().unwrap(), "--id", "local"])).unwrap();
    let out =
        run_ok(&mut coder(&["templates", "push", "local", "-d", tpl.to_str().unwrap(), "--yes"]))
            .unwrap();
    assert!(out.contains("Template \"local\" created"), "{out}");
    let out = run_ok(&mut coder(&["create", "ws1", "-t", "local", "--yes"])).unwrap();
    assert!(out.contains("is running"), "{out}");

    // The agent reports its metadata scripts (the template's "load" block).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let show = run_ok(&mut coder(&["show", "ws1"])).unwrap();
        if show.contains("connected / ready") && show.contains("load") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no metadata: {show}");
        std::thread::sleep(std::time::Duration::from_millis(300));
    }

    // `coder list | head` closing the pipe first: a quiet SIGPIPE-style end, no panic.
    let mut list = coder(&["list"]);
    list.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
    let mut child = list.spawn().unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.code(), Some(141), "{stderr}");

    // coder ssh: exec with the remote exit code, stdout and stderr apart.
    let out = coder(&["ssh", "ws1", "--", "echo out; echo err >&2; exit 7"]).output().unwrap();
    assert_eq!(out.status.code(), Some(7), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out\n");
    assert!(String::from_utf8_lossy(&out.stderr).contains("err"));

    // OpenSSH through the managed config block.
    let ssh_config = tmp.path().join("ssh_config");
    std::fs::write(&ssh_config, "Host unrelated\n  User nobody\n").unwrap();
    run_ok(&mut coder(&["config-ssh", "--ssh-config-file", ssh_config.to_str().unwrap(), "--yes"]))
        .unwrap();
    let written = std::fs::read_to_string(&ssh_config).unwrap();
    assert!(written.starts_with("Host unrelated\n  User nobody\n"), "{written}");
    let ssh = |args: &[&str]| {
        let mut c = Command::new("ssh");
        c.arg("-F").arg(&ssh_config).args(args);
        c
    };
    let out = run_ok(&mut ssh(&["coder.ws1", "echo", "ok"])).unwrap();
    assert_eq!(out, "ok\n");

    // 64 MiB both ways with scp, and sftp, checksummed.
    let blob = tmp.path().join("blob");
    let data_bytes: Vec<u8> =
        (0..64u32 << 20).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    std::fs::write(&blob, &data_bytes).unwrap();
    let remote = tmp.path().join("remote-copy");
    let back = tmp.path().join("back");
    let scp = |from: &str, to: &str| {
        let mut c = Command::new("scp");
        c.arg("-F").arg(&ssh_config).args(["-q", from, to]);
        run_ok(&mut c).unwrap();
    };
    scp(blob.to_str().unwrap(), &format!("coder.ws1:{}", remote.display()));
    assert_eq!(sha256_file(&remote), sha256_file(&blob));
    scp(&format!("coder.ws1:{}", remote.display()), back.to_str().unwrap());
    assert_eq!(sha256_file(&back), sha256_file(&blob));
    let batch = tmp.path().join("sftp-batch");
    let via_sftp = tmp.path().join("via-sftp");
    std::fs::write(&batch, format!("get {} {}\n", remote.display(), via_sftp.display())).unwrap();
    let mut sftp = Command::new("sftp");
    sftp.arg("-F").arg(&ssh_config).arg("-b").arg(&batch).arg("coder.ws1");
    run_ok(&mut sftp).unwrap();
    assert_eq!(sha256_file(&via_sftp), sha256_file(&blob));

    // Clear one-line errors for bad names and stopped workspaces.
    let out = coder(&["ssh", "nope", "--", "true"]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("No workspace named \"nope\"") && err.lines().count() == 1, "{err}");
    run_ok(&mut coder(&["stop", "ws1", "--yes"])).unwrap();
    let out = coder(&["ssh", "ws1", "--", "true"]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is stopped") && err.contains("coder start ws1"), "{err}");

    run_ok(&mut coder(&["delete", "ws1", "--yes"])).unwrap();
    let list = run_ok(&mut coder(&["list", "--output", "json"])).unwrap();
    assert_eq!(serde_json::from_str::<serde_json::Value>(&list).unwrap(), serde_json::json!([]));
    let status = srv.terminate().unwrap();
    assert!(status.success());
    stop_embedded_postgres(&data);
}
