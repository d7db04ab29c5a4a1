//! Test support: a real Postgres for every test.
//!
//! One throwaway cluster serves a whole test run, shared across test
//! processes (nextest runs each test in its own process): the first process
//! to take the file lock creates and starts it under
//! `$CODER_TEST_PG_DIR` (default `/tmp/coder-test-pg-<uid>`), migrates a
//! template database named after the migrations' fingerprint, and every test
//! gets its own `CREATE DATABASE … TEMPLATE` copy, as Coder's `dbtestutil`
//! does. The cluster runs without fsync; `.ci/run` removes it at the end.

use std::net::SocketAddr;
use std::path::PathBuf;

use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, Executor, PgConnection, PgPool};
use tokio::net::TcpListener;
use url::Url;

use crate::database as db;
use crate::postgres::{Cluster, ClusterConfig};
use crate::{api, ApiConfig, AppState};

/// Whether this run is CI's (`CI` set, as CI services do, and not `false`/`0`).
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// Says why a test skips. On a developer's machine it prints the reason and
/// the caller returns early; under CI a missing program, service or root is a
/// failure that names what is missing, so CI never passes a test it did not run.
pub fn skip(reason: &str) {
    assert!(!in_ci(), "CI must run this test, but {reason}");
    eprintln!("skipping: {reason}");
}

fn cluster_dir() -> PathBuf {
    std::env::var_os("CODER_TEST_PG_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(format!("/tmp/coder-test-pg-{}", nix::unistd::geteuid())))
}

/// A database of its own for one test.
#[derive(Debug)]
pub struct TestDb {
    pub pool: PgPool,
    pub name: String,
    pub options: PgConnectOptions,
}

fn with_lock<T>(f: impl FnOnce() -> anyhow::Result<T>) -> anyhow::Result<T> {
    use fs2::FileExt;
    let lock_path = PathBuf::from(format!("{}.lock", cluster_dir().display()));
    let file =
        std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&lock_path)?;
    file.lock_exclusive()?;
    let out = f();
    let _ = FileExt::unlock(&file);
    out
}

/// A fresh, migrated database.
pub async fn database() -> anyhow::Result<TestDb> {
    let cluster = tokio::task::spawn_blocking(|| {
        with_lock(|| {
            Ok(Cluster::start(&ClusterConfig { dir: cluster_dir(), unsafe_no_fsync: true })?)
        })
    })
    .await??;
    let template = format!("tmpl_{}", db::migrations_fingerprint());
    ensure_template(&cluster, &template).await?;
    let name = format!("test_{}", uuid::Uuid::new_v4().simple());
    let mut admin = PgConnection::connect_with(&cluster.connect_options("postgres")).await?;
    admin.execute(format!("CREATE DATABASE \"{name}\" TEMPLATE \"{template}\"").as_str()).await?;
    admin.close().await?;
    let options = cluster.connect_options(&name);
    let pool = db::connect(options.clone(), 10).await?;
    Ok(TestDb { pool, name, options })
}

async fn ensure_template(cluster: &Cluster, template: &str) -> anyhow::Result<()> {
    let mut admin = PgConnection::connect_with(&cluster.connect_options("postgres")).await?;
    // An advisory lock serializes template creation across test processes.
    admin.execute("SELECT pg_advisory_lock(4242)").await?;
    let exists: Option<i32> = sqlx::query_scalar("SELECT 1 FROM pg_database WHERE datname = $1")
        .bind(template)
        .fetch_optional(&mut admin)
        .await?;
    let result = async {
        if exists.is_none() {
            let building = format!("{template}_building");
            admin.execute(format!("DROP DATABASE IF EXISTS \"{building}\"").as_str()).await?;
            admin.execute(format!("CREATE DATABASE \"{building}\"").as_str()).await?;
            let pool = db::connect(cluster.connect_options(&building), 2).await?;
            db::migrate(&pool).await?;
            pool.close().await;
            admin
                .execute(format!("ALTER DATABASE \"{building}\" RENAME TO \"{template}\"").as_str())
                .await?;
        }
        anyhow::Ok(())
    }
    .await;
    admin.execute("SELECT pg_advisory_unlock(4242)").await?;
    admin.close().await?;
    result
}

/// A Postgres cluster of one test's own, for tests that stop and start it
/// (the shared cluster of [`database`] must never go away under other
/// tests). It lives in a temporary directory and is stopped on drop.
pub struct DedicatedCluster {
    cluster: Cluster,
    config: ClusterConfig,
    _dir: tempfile::TempDir,
}

impl DedicatedCluster {
    /// Creates and starts a cluster (a few seconds: `initdb`).
    pub async fn start() -> anyhow::Result<DedicatedCluster> {
        use std::os::unix::fs::PermissionsExt;
        // Short (the socket path has a length limit) and enterable by the
        // `postgres` user the cluster runs as when tests run as root.
        let dir = tempfile::Builder::new().prefix("pg-").tempdir_in("/tmp")?;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
        let config = ClusterConfig { dir: dir.path().join("c"), unsafe_no_fsync: true };
        let c = config.clone();
        let cluster = tokio::task::spawn_blocking(move || Cluster::start(&c)).await??;
        Ok(DedicatedCluster { cluster, config, _dir: dir })
    }

    /// A new migrated database on this cluster.
    pub async fn database(&self, name: &str) -> anyhow::Result<TestDb> {
        crate::postgres::ensure_database(&self.cluster, name).await?;
        let options = self.cluster.connect_options(name);
        let pool = db::connect(options.clone(), 10).await?;
        db::migrate(&pool).await?;
        Ok(TestDb { pool, name: name.to_owned(), options })
    }

    /// `pg_ctl stop -m fast`: every session is closed, committed data kept.
    pub async fn stop(&self) -> anyhow::Result<()> {
        let cluster = self.cluster.clone();
        tokio::task::spawn_blocking(move || cluster.stop()).await??;
        Ok(())
    }

    /// Starts the cluster again after [`Self::stop`].
    pub async fn restart(&self) -> anyhow::Result<()> {
        let c = self.config.clone();
        tokio::task::spawn_blocking(move || Cluster::start(&c)).await??;
        Ok(())
    }
}

impl Drop for DedicatedCluster {
    fn drop(&mut self) {
        let _ = self.cluster.stop();
    }
}

/// A valid node for `id` with keys seeded by the id and one endpoint on
/// `192.0.2.1:endpoint` (so a changed node is easy to tell apart).
pub fn node(id: mesh::NodeId, endpoint: u16) -> mesh::Node {
    use rand::SeedableRng;
    let mut rng = rand::rngs::StdRng::seed_from_u64(id.0);
    mesh::Node {
        id,
        key: mesh::NodeSecret::generate(&mut rng).public(),
        disco_key: mesh::DiscoSecret::generate(&mut rng).public(),
        quic_key: mesh::QuicSecret::generate(&mut rng).public(),
        preferred_relay: Some(1),
        relay_latency_ms: Default::default(),
        port_mapped: Vec::new(),
        endpoints: vec![SocketAddr::from(([192, 0, 2, 1], endpoint))],
        addresses: mesh::mesh_addresses(id),
        version: mesh::PROTOCOL_VERSION,
    }
}

/// An agent seeded straight into the database, with its secret token.
#[derive(Debug, Clone)]
pub struct SeededAgent {
    pub id: uuid::Uuid,
    pub token: String,
    pub workspace: uuid::Uuid,
}

/// Inserts `n` workspaces owned by `owner`, each with one build whose one
/// agent has a fresh token (in one transaction; no terraform involved).
/// For tests and benchmarks of coordination, which need agents, not builds.
pub async fn seed_agents(
    db: &PgPool,
    owner: uuid::Uuid,
    n: usize,
) -> anyhow::Result<Vec<SeededAgent>> {
    use sha2::{Digest, Sha256};
    use uuid::Uuid;
    let mut tx = db.begin().await?;
    let mut agents = Vec::with_capacity(n);
    for _ in 0..n {
        let [file, job, tpl, tv, ws, build, res, agent] = [(); 8].map(|_| Uuid::new_v4());
        let token = Uuid::new_v4().to_string();
        sqlx::query("INSERT INTO files (id, hash, mimetype, data, created_by) VALUES ($1, $2, 'application/x-tar', '', $3)")
            .bind(file).bind(file.simple().to_string()).bind(owner).execute(&mut *tx).await?;
        sqlx::query("INSERT INTO provisioner_jobs (id, type, input, file_id, initiator_id, started_at, completed_at)
                     VALUES ($1, 'workspace_build', '{}', $2, $3, now(), now())")
            .bind(job).bind(file).bind(owner).execute(&mut *tx).await?;
        sqlx::query("INSERT INTO templates (id, name, active_version_id, created_by) VALUES ($1, $2, $3, $4)")
            .bind(tpl).bind(format!("t-{}", tpl.simple())).bind(tv).bind(owner).execute(&mut *tx).await?;
        sqlx::query("INSERT INTO template_versions (id, template_id, name, job_id, created_by) VALUES ($1, $2, 'v1', $3, $4)")
            .bind(tv).bind(tpl).bind(job).bind(owner).execute(&mut *tx).await?;
        sqlx::query(
            "INSERT INTO workspaces (id, owner_id, template_id, name) VALUES ($1, $2, $3, $4)",
        )
        .bind(ws)
        .bind(owner)
        .bind(tpl)
        .bind(format!("w-{}", ws.simple()))
        .execute(&mut *tx)
        .await?;
        sqlx::query("INSERT INTO workspace_builds (id, workspace_id, template_version_id, build_number, transition, initiator_id, job_id)
                     VALUES ($1, $2, $3, 1, 'start', $4, $5)")
            .bind(build).bind(ws).bind(tv).bind(owner).bind(job).execute(&mut *tx).await?;
        sqlx::query("INSERT INTO workspace_resources (id, job_id, transition, type, name) VALUES ($1, $2, 'start', 'null_resource', 'dev')")
            .bind(res).bind(job).execute(&mut *tx).await?;
        sqlx::query("INSERT INTO workspace_agents (id, resource_id, name, auth_token_hash) VALUES ($1, $2, 'main', $3)")
            .bind(agent).bind(res).bind(Sha256::digest(token.as_bytes()).to_vec()).execute(&mut *tx).await?;
        agents.push(SeededAgent { id: agent, token, workspace: ws });
    }
    tx.commit().await?;
    Ok(agents)
}

/// An empty template archive created by `owner`, for jobs that never unpack it.
pub async fn empty_file(db: &PgPool, owner: uuid::Uuid) -> anyhow::Result<uuid::Uuid> {
    let id = uuid::Uuid::new_v4();
    sqlx::query("INSERT INTO files (id, hash, mimetype, data, created_by) VALUES ($1, $2, 'application/x-tar', '', $3)")
        .bind(id)
        .bind(id.to_string())
        .bind(owner)
        .execute(db)
        .await?;
    Ok(id)
}

/// Enqueues a template import of `file` together with its version row, as
/// pushing a template does (one transaction); returns the job's id.
pub async fn enqueue_import(
    db: &PgPool,
    file: uuid::Uuid,
    owner: uuid::Uuid,
    tags: crate::provisionerd::Tags,
) -> anyhow::Result<uuid::Uuid> {
    use crate::provisionerd::{queue, JobInput, NewJob};
    let mut tx = db.begin().await?;
    let version = uuid::Uuid::new_v4();
    let input = JobInput::TemplateVersionImport { template_version_id: version };
    let job = queue::enqueue(&mut tx, &NewJob { input, file_id: file, initiator_id: owner, tags })
        .await?;
    sqlx::query(
        "INSERT INTO template_versions (id, name, job_id, created_by) VALUES ($1, $2, $3, $4)",
    )
    .bind(version)
    .bind(version.to_string())
    .bind(job)
    .bind(owner)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(job)
}

/// A coordinator API served in process on `127.0.0.1:0`.
pub struct TestServer {
    pub url: Url,
    pub db: TestDb,
    pub state: AppState,
    /// Keeps the work directory of in-process provisioners alive.
    pub work_dir: Option<tempfile::TempDir>,
    provisioners: Option<crate::provisionerd::Provisioners>,
    detector: Option<crate::provisionerd::StaleJobDetector>,
    pub relay: crate::relay::EmbeddedRelay,
    _task: tokio_util::task::AbortOnDropHandle<()>,
}

impl TestServer {
    pub async fn start() -> anyhow::Result<TestServer> {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut ApiConfig)) -> anyhow::Result<TestServer> {
        Self::start_inner(tweak, None, None).await
    }

    /// A server that accepts external provisioners presenting `key` (and
    /// runs no in-process ones until [`Self::start_provisioners`]).
    pub async fn start_with_provisioner_key(key: &str) -> anyhow::Result<TestServer> {
        let key = crate::provisionerd::ProvisionerKey::new(key)?;
        Self::start_inner(|_| {}, Some(key), None).await
    }

    /// A server on a database the caller made (say, on a [`DedicatedCluster`]).
    pub async fn start_on(db: TestDb) -> anyhow::Result<TestServer> {
        Self::start_inner(|_| {}, None, Some(db)).await
    }

    async fn start_inner(
        tweak: impl FnOnce(&mut ApiConfig),
        key: Option<crate::provisionerd::ProvisionerKey>,
        db: Option<TestDb>,
    ) -> anyhow::Result<TestServer> {
        let db = match db {
            Some(db) => db,
            None => database().await?,
        };
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let url = Url::parse(&format!("http://{addr}"))?;
        let mut config = ApiConfig::new(url.clone());
        tweak(&mut config);
        let state = AppState::new(db.pool.clone(), config);
        let verifier = crate::relay::PeerKeys::verifier(state.db.clone(), state.pubsub.clone());
        let relay = crate::relay::EmbeddedRelay::spawn(None, Some(verifier)).await?;
        let map = crate::relay::relay_map(&url, Some(&relay), None)?;
        let state = state.with_relay(Some(relay.server.clone()), map);
        let mut app = api::app(state.clone());
        if let Some(key) = key {
            app = app.layer(axum::Extension(key));
        }
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
                .await;
        });
        Ok(TestServer {
            url,
            db,
            state,
            work_dir: None,
            provisioners: None,
            detector: None,
            relay,
            _task: tokio_util::task::AbortOnDropHandle::new(task),
        })
    }

    /// Starts `n` in-process provisioners running real terraform with the
    /// provider built beside the test binary. `None` (with the reason printed)
    /// when terraform or the provider is missing: the caller skips. Jobs whose
    /// worker is silent for `stale_after` fail; workers heartbeat ten times in it.
    pub fn start_provisioners(&mut self, n: usize, stale_after: std::time::Duration) -> Option<()> {
        let Some(terraform) = crate::provisionerd::find_terraform() else {
            skip("terraform is not on PATH");
            return None;
        };
        let Some(provider) = crate::provisionerd::find_provider() else {
            skip("terraform-provider-coder is not built (run with --workspace)");
            return None;
        };
        let dir = tempfile::tempdir().ok()?;
        let exec =
            crate::provisionerd::ExecutorConfig::new(terraform, provider, dir.path().to_path_buf());
        let backend =
            crate::provisionerd::PgBackend::new(self.state.queue.clone(), self.url.to_string());
        // Heartbeats well inside the stale timeout, so a loaded machine's
        // scheduling delays never pass for a dead worker.
        let heartbeat = (stale_after / 10).max(std::time::Duration::from_millis(100));
        self.provisioners = Some(crate::provisionerd::Provisioners::spawn_with_heartbeat(
            backend, exec, n, heartbeat,
        ));
        self.start_stale_job_detector(stale_after);
        self.work_dir = Some(dir);
        Some(())
    }

    /// Fails jobs whose worker has been silent for `stale_after`, as
    /// `coderd server` does.
    pub fn start_stale_job_detector(&mut self, stale_after: std::time::Duration) {
        self.detector = Some(crate::provisionerd::StaleJobDetector::spawn(
            self.state.queue.clone(),
            stale_after,
            (stale_after / 4).max(std::time::Duration::from_millis(100)),
        ));
    }

    /// Stops the in-process provisioners (as if their process died).
    pub fn kill_provisioners(&mut self) {
        if let Some(p) = self.provisioners.as_mut() {
            p.stop_workers();
        }
    }

    /// An unauthenticated SDK client.
    pub fn client(&self) -> codersdk::Client {
        codersdk::Client::new(self.url.clone())
    }

    /// Creates the first user (an owner) and returns a client logged in as it.
    pub async fn owner(&self) -> anyhow::Result<codersdk::Client> {
        let c = self.client();
        c.create_first_user(&codersdk::CreateFirstUserRequest {
            email: "owner@example.com".into(),
            username: "owner".into(),
            password: "owner-password".into(),
        })
        .await?;
        let t = c
            .login_with_password(&codersdk::LoginWithPasswordRequest {
                email: "owner@example.com".into(),
                password: "owner-password".into(),
                ..Default::default()
            })
            .await?;
        Ok(c.with_token(t.session_token))
    }
}
