//! The `docker` example template end to end, on real parts: `dockerd` (started here if
//! it is not running), the workspace image from `build-image.sh` (debootstrap, cached),
//! `coderd server` listening on the Docker bridge's gateway, two users with a workspace
//! each. Checks: each container runs the agent as its owner with only its own home,
//! passwordless sudo and the CPU/memory parameters; a file in the home survives stop
//! (container removed, volume kept) and start; `coder ssh`, OpenSSH `scp` through
//! `coder config-ssh`, `coder tunnel` to a git daemon in the container, `coder ping`'s
//! path; delete leaves no container and no volume (found by the template's labels).
//!
//! Needs root, docker (daemon and CLI), terraform, ssh, scp, git; and debootstrap when
//! the image is not cached yet. Skips without them, fails under `CI`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;
use sha2::{Digest, Sha256};
use tests::{has_program, login_first_user, run_ok, stop_embedded_postgres, tempdir, Coderd};

const IMAGE: &str = "coder-workspace:latest";
const LABEL_ID: &str = "org.coder.workspace.id";

fn template_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/templates/docker")
}

fn docker(args: &[&str]) -> anyhow::Result<String> {
    run_ok(Command::new("docker").args(args))
}

/// Whether dockerd answers; starts it (detached, it outlives the test) if it does not
/// and waits for `docker info` with a deadline. `Err` says why docker is unusable.
fn ensure_dockerd() -> Result<(), String> {
    let answers = || {
        Command::new("docker")
            .arg("info")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if answers() {
        return Ok(());
    }
    if !has_program("dockerd") {
        return Err("dockerd is not installed (apt-get install docker.io)".into());
    }
    let log = std::env::temp_dir().join("dockerd-coder-tests.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .map_err(|e| format!("open {}: {e}", log.display()))?;
    let status = Command::new("setsid")
        .args(["-f", "dockerd"])
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log)
        .status()
        .map_err(|e| format!("start dockerd: {e}"))?;
    if !status.success() {
        return Err(format!("setsid -f dockerd: {status}"));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while !answers() {
        if Instant::now() > deadline {
            return Err("dockerd did not answer `docker info` within 60 s".into());
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    eprintln!("started dockerd");
    Ok(())
}

/// Removes whatever the template left of the workspaces named here, pass or fail.
#[derive(Default)]
struct Leftovers(Mutex<Vec<String>>);

impl Leftovers {
    fn add(&self, id: &str) {
        self.0.lock().unwrap().push(id.to_owned());
    }

    /// Ids of containers (`ps -a`) or volumes carrying the workspace's label.
    fn of(kind: &str, id: &str) -> Vec<String> {
        let filter = format!("label={LABEL_ID}={id}");
        let args: &[&str] = match kind {
            "container" => &["ps", "-a", "-q", "--filter", &filter],
            _ => &["volume", "ls", "-q", "--filter", &filter],
        };
        docker(args).unwrap().split_whitespace().map(str::to_owned).collect()
    }
}

impl Drop for Leftovers {
    fn drop(&mut self) {
        for id in self.0.lock().unwrap().iter() {
            for c in Self::of("container", id) {
                let _ = docker(&["rm", "-f", &c]);
            }
            for v in Self::of("volume", id) {
                let _ = docker(&["volume", "rm", "-f", &v]);
            }
        }
    }
}

/// A user of the deployment: a `coder` config dir logged in as them.
struct User<'a> {
    srv: &'a Coderd,
    cfg: PathBuf,
}

impl User<'_> {
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = self.srv.coder(&self.cfg).unwrap();
        c.args(args);
        c
    }

    fn ok(&self, args: &[&str]) -> String {
        run_ok(&mut self.cmd(args)).unwrap()
    }

    /// `coder ssh WS -- SCRIPT`, its stdout.
    fn sh(&self, ws: &str, script: &str) -> String {
        self.ok(&["ssh", ws, "--", script])
    }

    fn workspace_id(&self, ws: &str) -> String {
        let v: Value = serde_json::from_str(&self.ok(&["show", ws, "--output", "json"])).unwrap();
        v["workspace"]["id"].as_str().unwrap().to_owned()
    }

    /// Waits for the agent to connect and run its startup script.
    fn wait_ready(&self, ws: &str) {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let show = self.ok(&["show", ws]);
            if show.contains("connected / ready") {
                return;
            }
            assert!(Instant::now() < deadline, "agent of {ws} not ready: {show}");
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

/// The address of Docker's default bridge on this host (its containers' gateway).
/// Docker 20.10 leaves `Gateway` empty for it, so the interface is asked too.
fn bridge_gateway() -> std::net::Ipv4Addr {
    let format = "{{range .IPAM.Config}}{{.Gateway}}{{end}} \
                  {{index .Options \"com.docker.network.bridge.name\"}}";
    let out = docker(&["network", "inspect", "bridge", "--format", format]).unwrap();
    let mut words = out.split_whitespace();
    let (first, second) = (words.next().unwrap_or(""), words.next());
    if let Ok(ip) = first.parse() {
        return ip;
    }
    let dev = second.unwrap_or(if first.is_empty() { "docker0" } else { first });
    let out = run_ok(Command::new("ip").args(["-4", "-o", "addr", "show", "dev", dev])).unwrap();
    // "19: docker0    inet 172.17.0.1/16 brd ..."
    let cidr = out.split_whitespace().skip_while(|w| *w != "inet").nth(1);
    cidr.and_then(|c| c.split('/').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no IPv4 address on the bridge {dev}: {out}"))
}

fn sha256_file(p: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(p).unwrap()))
}

#[test]
fn docker_template_two_users_persistence_ssh_scp_tunnel_ping_delete() {
    if !nix::unistd::geteuid().is_root() {
        coordinator::testutil::skip("the docker template test needs root (dockerd, debootstrap)");
        return;
    }
    if !tests::require_programs(&["docker", "terraform", "ssh", "scp", "git", "setsid", "ip"]) {
        return;
    }
    if let Err(why) = ensure_dockerd() {
        coordinator::testutil::skip(&why);
        return;
    }
    // The image: cached (label or tarball) or debootstrapped now.
    let started = Instant::now();
    let out = Command::new(template_dir().join("build-image.sh")).arg(IMAGE).output().unwrap();
    let log =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if !out.status.success() {
        if !has_program("debootstrap") {
            coordinator::testutil::skip(&format!("no cached workspace image: {log}"));
            return;
        }
        panic!("build-image.sh failed: {log}");
    }
    eprintln!("image ready in {:?}: {log}", started.elapsed());

    // coderd where containers reach it: the bridge's gateway is this host.
    let gateway = bridge_gateway();
    let tmp = tempdir().unwrap();
    let data = tmp.path().join("data");
    let srv = Coderd::spawn_on(&data, &format!("{gateway}:0"), &[]).unwrap();
    let leftovers = Leftovers::default();

    let dev = User { srv: &srv, cfg: tmp.path().join("dev") };
    login_first_user(&srv, &dev.cfg).unwrap();
    dev.ok(&[
        "users",
        "create",
        "--username",
        "bob",
        "--email",
        "bob@example.com",
        "--password",
        "bobs-password",
    ]);
    let bob = User { srv: &srv, cfg: tmp.path().join("bob") };
    bob.ok(&["login", srv.url.as_str(), "--username", "bob", "--password", "bobs-password"]);

    // `coder templates init` writes the template and its image script.
    let tpl = tmp.path().join("tpl");
    let tpl_s = tpl.to_str().unwrap();
    let out = dev.ok(&["templates", "init", tpl_s, "--id", "docker"]);
    assert!(out.contains("build-image.sh"), "{out}");
    let script = std::fs::metadata(tpl.join("build-image.sh")).unwrap();
    assert!(std::os::unix::fs::PermissionsExt::mode(&script.permissions()) & 0o111 != 0);
    let out = dev.ok(&["templates", "push", "docker", "-d", tpl_s, "--yes"]);
    assert!(out.contains("Template \"docker\" created"), "{out}");

    // Out-of-range limits are refused before anything runs.
    let out =
        dev.cmd(&["create", "big", "-t", "docker", "--yes", "--parameter", "cpus=64"]).output();
    assert!(!out.unwrap().status.success(), "cpus=64 was accepted");

    let out = dev.ok(&[
        "create",
        "ws1",
        "-t",
        "docker",
        "--yes",
        "--parameter",
        "cpus=1",
        "--parameter",
        "memory=1",
    ]);
    assert!(out.contains("is running"), "{out}");
    let id1 = dev.workspace_id("ws1");
    leftovers.add(&id1);
    let out = bob.ok(&["create", "ws2", "-t", "docker", "--yes"]);
    assert!(out.contains("is running"), "{out}");
    let id2 = bob.workspace_id("ws2");
    leftovers.add(&id2);
    dev.wait_ready("ws1");
    bob.wait_ready("ws2");

    // One container per workspace, with the parameters' limits.
    let c1 = Leftovers::of("container", &id1);
    assert_eq!(c1.len(), 1, "containers of ws1: {c1:?}");
    let limits =
        docker(&["inspect", "--format", "{{.HostConfig.NanoCpus}} {{.HostConfig.Memory}}", &c1[0]])
            .unwrap();
    assert_eq!(limits.trim(), format!("1000000000 {}", 1u64 << 30));

    // Each runs as its owner, sees only its own home, and may sudo.
    for (user, ws, name) in [(&dev, "ws1", "dev"), (&bob, "ws2", "bob")] {
        let out = user
            .sh(ws, "id -un; echo $HOME; ls /home; pwd; sudo -n id -u; ps -o user= -C coder-agent");
        assert_eq!(out, format!("{name}\n/home/{name}\n{name}\n/home/{name}\n0\n{name}\n"), "{ws}");
    }
    // A workspace of one user is not another's.
    let out = bob.cmd(&["ssh", "ws1", "--", "true"]).output().unwrap();
    assert!(!out.status.success(), "bob reached dev's ws1");

    // A file in the home survives stop (container gone, volume kept) and start.
    dev.sh("ws1", "echo kept-across-restart > ~/note");
    bob.sh("ws2", "echo bobs > ~/note");
    dev.ok(&["stop", "ws1", "--yes"]);
    assert!(Leftovers::of("container", &id1).is_empty(), "stopped ws1 keeps its container");
    assert_eq!(Leftovers::of("volume", &id1).len(), 1, "stopped ws1 lost its volume");
    dev.ok(&["start", "ws1", "--yes"]);
    dev.wait_ready("ws1");
    assert_eq!(dev.sh("ws1", "cat ~/note"), "kept-across-restart\n");
    assert_eq!(bob.sh("ws2", "cat ~/note"), "bobs\n");

    // OpenSSH through `coder config-ssh`: ssh and scp both ways.
    let ssh_config = tmp.path().join("ssh_config");
    dev.ok(&["config-ssh", "--ssh-config-file", ssh_config.to_str().unwrap(), "--yes"]);
    let out = run_ok(Command::new("ssh").arg("-F").arg(&ssh_config).args(["coder.ws1", "whoami"]))
        .unwrap();
    assert_eq!(out, "dev\n");
    let blob = tmp.path().join("blob");
    std::fs::write(
        &blob,
        (0..4u32 << 20).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect::<Vec<_>>(),
    )
    .unwrap();
    let back = tmp.path().join("back");
    let scp = |from: &str, to: &str| {
        run_ok(Command::new("scp").arg("-F").arg(&ssh_config).args(["-q", from, to])).unwrap();
    };
    scp(blob.to_str().unwrap(), "coder.ws1:blob");
    scp("coder.ws1:blob", back.to_str().unwrap());
    assert_eq!(sha256_file(&back), sha256_file(&blob));
    let remote_sum = dev.sh("ws1", "sha256sum ~/blob | cut -d' ' -f1");
    assert_eq!(remote_sum.trim(), sha256_file(&blob));

    // coder tunnel to a git daemon inside the container.
    let head = dev.sh(
        "ws1",
        "set -e; git init -q ~/repo; cd ~/repo; \
         git -c user.name=t -c user.email=t@example.com commit -q --allow-empty -m first; \
         git rev-parse HEAD; \
         setsid git daemon --reuseaddr --export-all --base-path=$HOME --listen=127.0.0.1 \
           --port=9418 >/tmp/git-daemon.log 2>&1 </dev/null &",
    );
    let local = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    // Its forward is up once a clone listing goes through; until then, retry.
    let tunnel_log = tmp.path().join("tunnel.log");
    let mut tunnel = dev
        .cmd(&["tunnel", "ws1", "--tcp", &format!("{local}:9418")])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&tunnel_log).unwrap())
        .spawn()
        .unwrap();
    let url = format!("git://127.0.0.1:{local}/repo");
    let deadline = Instant::now() + Duration::from_secs(60);
    let listed = loop {
        let out = Command::new("git").args(["ls-remote", &url]).output().unwrap();
        if out.status.success() {
            break String::from_utf8_lossy(&out.stdout).into_owned();
        }
        if Instant::now() > deadline || tunnel.try_wait().unwrap().is_some() {
            let _ = tunnel.kill();
            panic!(
                "git ls-remote {url}: {}\ncoder tunnel: {}",
                String::from_utf8_lossy(&out.stderr),
                std::fs::read_to_string(&tunnel_log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    assert!(listed.contains(head.trim()), "{listed} lacks {head}");
    tunnel.kill().unwrap();
    let _ = tunnel.wait();

    // coder ping reports the path; the container is on this host's bridge, so direct.
    let out = dev.ok(&["ping", "ws1", "--interval", "200ms", "--output", "json"]);
    eprintln!("coder ping ws1: {out}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["path"]["kind"], "direct", "{out}");
    let addr: std::net::SocketAddr = v["path"]["addr"].as_str().unwrap().parse().unwrap();
    let c1 = Leftovers::of("container", &id1);
    let ip = docker(&["inspect", "--format", "{{.NetworkSettings.IPAddress}}", &c1[0]]).unwrap();
    assert_eq!(addr.ip().to_string(), ip.trim(), "direct, but not to the container: {out}");

    // Delete both: no container, no volume left.
    dev.ok(&["delete", "ws1", "--yes"]);
    bob.ok(&["delete", "ws2", "--yes"]);
    for id in [&id1, &id2] {
        assert!(Leftovers::of("container", id).is_empty(), "container of {id} left");
        assert!(Leftovers::of("volume", id).is_empty(), "volume of {id} left");
    }
    drop(leftovers);
    let status = srv.terminate().unwrap();
    assert!(status.success());
    stop_embedded_postgres(&data);
}
