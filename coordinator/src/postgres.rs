//! Embedded Postgres: a real cluster spawned from the machine's binaries.
//!
//! `coderd server` without `--postgres-url` keeps its state in a cluster under
//! `<data-dir>/postgres`. The cluster is created once (`initdb`), started with
//! `pg_ctl` on a Unix socket inside that directory (no TCP listener, so it is
//! private to this machine's users who can reach the directory), reused when it
//! is already running (for example after `coderd` was killed with `kill -9`),
//! and stopped with a fast shutdown when `coderd` exits.
//!
//! Postgres refuses to run as root, so when `coderd` is root the cluster runs
//! as the `postgres` OS user.

use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sqlx::postgres::PgConnectOptions;

/// The Unix-socket "port": postgres names its socket `.s.PGSQL.<port>`.
const SOCKET_PORT: u16 = 5432;
/// The superuser role `initdb` creates.
pub const SUPERUSER: &str = "coder";
/// The database `coderd` keeps its state in.
pub const DATABASE: &str = "coder";
/// A Unix socket path must fit in `sun_path` (108 bytes with the NUL).
const MAX_SOCKET_PATH: usize = 107;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PostgresError {
    #[error(
        "no Postgres binaries found (looked for `{0}` on PATH and in /usr/lib/postgresql/*/bin); \
         install them (Debian/Ubuntu: `apt-get install postgresql`) or pass --postgres-url"
    )]
    BinariesMissing(&'static str),
    #[error(
        "coderd runs as root and Postgres refuses to; an OS user `postgres` is needed to run it \
         (create one, e.g. `useradd --system postgres`, or pass --postgres-url)"
    )]
    NoPostgresUser,
    #[error(
        "the `postgres` OS user cannot write to {0}; choose a --data-dir that user can reach \
         (e.g. /var/lib/coderd) or pass --postgres-url"
    )]
    Unreachable(PathBuf),
    #[error("the socket path {0} is longer than 107 bytes; choose a shorter --data-dir")]
    SocketPathTooLong(PathBuf),
    #[error("`{command}` failed: {output}")]
    Command { command: String, output: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> PostgresError {
    let context = context.into();
    move |source| PostgresError::Io { context, source }
}

/// Where to find `initdb`, `pg_ctl` and `postgres`.
#[derive(Debug, Clone)]
pub struct Binaries {
    pub bin_dir: PathBuf,
}

impl Binaries {
    /// Finds the binaries on `PATH`, then in the newest `/usr/lib/postgresql/*/bin`.
    pub fn find() -> Result<Self, PostgresError> {
        if let Some(path) = std::env::var_os("PATH") {
            for dir in std::env::split_paths(&path) {
                if dir.join("pg_ctl").is_file() && dir.join("initdb").is_file() {
                    // Resolve symlinks so `postgres` is found beside them.
                    let real = std::fs::canonicalize(dir.join("pg_ctl"))
                        .ok()
                        .and_then(|p| p.parent().map(Path::to_path_buf))
                        .unwrap_or(dir);
                    if real.join("postgres").is_file() {
                        return Ok(Binaries { bin_dir: real });
                    }
                }
            }
        }
        let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let v = e.file_name().to_str()?.parse::<u32>().ok()?;
                Some((v, e.path().join("bin")))
            })
            .filter(|(_, bin)| bin.join("pg_ctl").is_file())
            .collect();
        versions.sort();
        match versions.pop() {
            Some((_, bin_dir)) => Ok(Binaries { bin_dir }),
            None => Err(PostgresError::BinariesMissing("pg_ctl")),
        }
    }

    fn tool(&self, name: &str) -> PathBuf {
        self.bin_dir.join(name)
    }
}

/// The OS identity the cluster runs as.
#[derive(Debug, Clone, Copy)]
struct RunAs {
    uid: u32,
    gid: u32,
}

fn run_as() -> Result<Option<RunAs>, PostgresError> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(None);
    }
    let user = nix::unistd::User::from_name("postgres")
        .ok()
        .flatten()
        .ok_or(PostgresError::NoPostgresUser)?;
    Ok(Some(RunAs { uid: user.uid.as_raw(), gid: user.gid.as_raw() }))
}

/// Options for one cluster.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// The directory that holds `data/`, `run/` and `postgres.log`.
    pub dir: PathBuf,
    /// Skip fsync (test clusters only: a crash may lose data).
    pub unsafe_no_fsync: bool,
}

/// A cluster this process started or found running. It is stopped only by
/// [`Cluster::stop`]; dropping the handle leaves it running.
#[derive(Debug, Clone)]
pub struct Cluster {
    bins: Binaries,
    dir: PathBuf,
    run_as: Option<RunAs>,
}

impl Cluster {
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    pub fn socket_dir(&self) -> PathBuf {
        self.dir.join("run")
    }

    /// Connection options for `database` as the superuser.
    pub fn connect_options(&self, database: &str) -> PgConnectOptions {
        PgConnectOptions::new()
            .socket(self.socket_dir())
            .port(SOCKET_PORT)
            .username(SUPERUSER)
            .database(database)
    }

    /// A `postgres://` URL for the same, for tools like `psql`.
    pub fn url(&self, database: &str) -> String {
        format!(
            "postgres://{SUPERUSER}@localhost:{SOCKET_PORT}/{database}?host={}",
            self.socket_dir().display()
        )
    }

    /// Creates the cluster if needed and starts it unless it is already
    /// running. Blocking: call from `spawn_blocking`.
    pub fn start(config: &ClusterConfig) -> Result<Cluster, PostgresError> {
        let bins = Binaries::find()?;
        let run_as = run_as()?;
        let dir = config.dir.clone();
        let cluster = Cluster { bins, dir, run_as };
        let socket = cluster.socket_dir().join(format!(".s.PGSQL.{SOCKET_PORT}"));
        if socket.as_os_str().len() > MAX_SOCKET_PATH {
            return Err(PostgresError::SocketPathTooLong(socket));
        }
        cluster.prepare_dirs()?;
        if !cluster.data_dir().join("PG_VERSION").is_file() {
            cluster.initdb(config.unsafe_no_fsync)?;
        }
        if cluster.is_running() {
            tracing::info!(dir = %cluster.dir.display(), "reusing running embedded postgres");
        } else {
            cluster.pg_ctl_start()?;
        }
        Ok(cluster)
    }

    fn prepare_dirs(&self) -> Result<(), PostgresError> {
        for d in [self.dir.clone(), self.data_dir(), self.socket_dir()] {
            std::fs::create_dir_all(&d).map_err(io(format!("create {}", d.display())))?;
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700))
                .map_err(io(format!("chmod {}", d.display())))?;
            if let Some(ra) = self.run_as {
                nix::unistd::chown(
                    &d,
                    Some(nix::unistd::Uid::from_raw(ra.uid)),
                    Some(nix::unistd::Gid::from_raw(ra.gid)),
                )
                .map_err(|e| PostgresError::Io {
                    context: format!("chown {} to postgres", d.display()),
                    source: e.into(),
                })?;
            }
        }
        if self.run_as.is_some() {
            // Every ancestor must be traversable by the postgres user.
            let ok = self
                .command("test")
                .arg("-w")
                .arg(self.socket_dir())
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if !ok {
                return Err(PostgresError::Unreachable(self.dir.clone()));
            }
        }
        Ok(())
    }

    fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new(program);
        cmd.env_remove("PGDATA").env("LC_ALL", "C").current_dir("/");
        if let Some(ra) = self.run_as {
            cmd.uid(ra.uid).gid(ra.gid).env("HOME", &self.dir);
        }
        cmd
    }

    fn run(&self, mut cmd: Command) -> Result<Output, PostgresError> {
        let command = format!("{cmd:?}");
        let out = cmd.output().map_err(io(format!("run {command}")))?;
        if !out.status.success() {
            let mut output = String::from_utf8_lossy(&out.stderr).into_owned();
            output.push_str(&String::from_utf8_lossy(&out.stdout));
            return Err(PostgresError::Command { command, output: output.trim().to_owned() });
        }
        Ok(out)
    }

    fn initdb(&self, no_sync: bool) -> Result<(), PostgresError> {
        tracing::info!(dir = %self.data_dir().display(), "initializing embedded postgres");
        let mut cmd = self.command(self.bins.tool("initdb"));
        cmd.arg("-D").arg(self.data_dir()).args([
            "-U",
            SUPERUSER,
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C",
        ]);
        if no_sync {
            cmd.arg("--no-sync");
        }
        self.run(cmd)?;
        let mut conf = String::from("\n# written by coderd\nlisten_addresses = ''\n");
        conf.push_str(&format!(
            "unix_socket_directories = '{}'\nport = {SOCKET_PORT}\nmax_connections = 300\n",
            self.socket_dir().display()
        ));
        if no_sync {
            conf.push_str("fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n");
        }
        let path = self.data_dir().join("postgresql.conf");
        let mut existing =
            std::fs::read_to_string(&path).map_err(io(format!("read {}", path.display())))?;
        existing.push_str(&conf);
        std::fs::write(&path, existing).map_err(io(format!("write {}", path.display())))?;
        Ok(())
    }

    /// Whether a postmaster is running on this data directory.
    pub fn is_running(&self) -> bool {
        let mut cmd = self.command(self.bins.tool("pg_ctl"));
        cmd.arg("status").arg("-D").arg(self.data_dir());
        matches!(cmd.output(), Ok(o) if o.status.success())
    }

    fn pg_ctl_start(&self) -> Result<(), PostgresError> {
        tracing::info!(dir = %self.data_dir().display(), "starting embedded postgres");
        let mut cmd = self.command(self.bins.tool("pg_ctl"));
        cmd.arg("start")
            .arg("-w")
            .args(["-t", "60"])
            .arg("-D")
            .arg(self.data_dir())
            .arg("-l")
            .arg(self.dir.join("postgres.log"))
            // pg_ctl's own stdout would keep our pipe open: it is not needed.
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        let command = format!("{cmd:?}");
        let out = cmd.output().map_err(io(format!("run {command}")))?;
        if !out.status.success() {
            let log = std::fs::read_to_string(self.dir.join("postgres.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(10).collect();
            let mut output = String::from_utf8_lossy(&out.stderr).trim().to_owned();
            for line in tail.into_iter().rev() {
                output.push('\n');
                output.push_str(line);
            }
            return Err(PostgresError::Command { command, output });
        }
        Ok(())
    }

    /// Stops the cluster with a fast shutdown (active sessions are closed,
    /// committed data is kept). Blocking.
    pub fn stop(&self) -> Result<(), PostgresError> {
        let mut cmd = self.command(self.bins.tool("pg_ctl"));
        cmd.arg("stop").args(["-m", "fast", "-w"]).arg("-D").arg(self.data_dir());
        cmd.stdout(std::process::Stdio::null());
        self.run(cmd).map(|_| ())
    }
}

/// Creates `database` if it does not exist yet.
pub async fn ensure_database(cluster: &Cluster, database: &str) -> Result<(), sqlx::Error> {
    use sqlx::{Connection, Executor};
    let mut conn = sqlx::PgConnection::connect_with(&cluster.connect_options("postgres")).await?;
    let exists: Option<i32> = sqlx::query_scalar("SELECT 1 FROM pg_database WHERE datname = $1")
        .bind(database)
        .fetch_optional(&mut conn)
        .await?;
    if exists.is_none() {
        conn.execute(format!("CREATE DATABASE \"{database}\"").as_str()).await?;
    }
    conn.close().await
}
