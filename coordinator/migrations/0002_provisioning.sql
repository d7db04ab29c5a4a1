-- Files, templates, workspaces, builds and the provisioner job queue.

CREATE TABLE files (
    id         uuid PRIMARY KEY,
    hash       text NOT NULL,             -- hex SHA-256 of data
    mimetype   text NOT NULL,
    data       bytea NOT NULL,
    created_by uuid NOT NULL REFERENCES users (id),
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX files_hash_key ON files (hash);

CREATE TABLE provisioner_jobs (
    id           uuid PRIMARY KEY,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    started_at   timestamptz,
    canceled_at  timestamptz,
    completed_at timestamptz,
    heartbeat_at timestamptz,
    error        text,
    error_code   text,
    type         text NOT NULL,            -- 'template_version_import' | 'workspace_build'
    input        jsonb NOT NULL,
    file_id      uuid NOT NULL REFERENCES files (id),
    initiator_id uuid NOT NULL REFERENCES users (id),
    tags         jsonb NOT NULL DEFAULT '{}',
    worker_id    text
);
-- The acquire query scans pending jobs oldest first.
CREATE INDEX provisioner_jobs_pending ON provisioner_jobs (created_at) WHERE started_at IS NULL;

CREATE TABLE provisioner_job_logs (
    id         bigserial PRIMARY KEY,      -- the cursor clients resume from
    job_id     uuid NOT NULL REFERENCES provisioner_jobs (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now(),
    stage      text NOT NULL,
    level      text NOT NULL,
    output     text NOT NULL
);
CREATE INDEX provisioner_job_logs_job ON provisioner_job_logs (job_id, id);

CREATE TABLE templates (
    id                uuid PRIMARY KEY,
    name              text NOT NULL,
    display_name      text NOT NULL DEFAULT '',
    description       text NOT NULL DEFAULT '',
    active_version_id uuid NOT NULL,
    created_by        uuid NOT NULL REFERENCES users (id),
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    deleted           boolean NOT NULL DEFAULT false
);
CREATE UNIQUE INDEX templates_name_key ON templates (lower(name)) WHERE NOT deleted;

CREATE TABLE template_versions (
    id          uuid PRIMARY KEY,
    template_id uuid REFERENCES templates (id),
    name        text NOT NULL,
    message     text NOT NULL DEFAULT '',
    job_id      uuid NOT NULL REFERENCES provisioner_jobs (id),
    created_by  uuid NOT NULL REFERENCES users (id),
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX template_versions_template ON template_versions (template_id, created_at);

CREATE TABLE template_version_parameters (
    template_version_id uuid NOT NULL REFERENCES template_versions (id) ON DELETE CASCADE,
    name                text NOT NULL,
    display_name        text NOT NULL DEFAULT '',
    description         text NOT NULL DEFAULT '',
    type                text NOT NULL,
    mutable             boolean NOT NULL,
    default_value       text,
    required            boolean NOT NULL,
    options             jsonb NOT NULL DEFAULT '[]',
    validation          jsonb,
    ordinal             int NOT NULL,
    PRIMARY KEY (template_version_id, name)
);

CREATE TABLE workspaces (
    id          uuid PRIMARY KEY,
    owner_id    uuid NOT NULL REFERENCES users (id),
    template_id uuid NOT NULL REFERENCES templates (id),
    name        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    deleted     boolean NOT NULL DEFAULT false
);
CREATE UNIQUE INDEX workspaces_owner_name_key ON workspaces (owner_id, lower(name)) WHERE NOT deleted;

CREATE TABLE workspace_builds (
    id                  uuid PRIMARY KEY,
    workspace_id        uuid NOT NULL REFERENCES workspaces (id),
    template_version_id uuid NOT NULL REFERENCES template_versions (id),
    build_number        int NOT NULL,
    transition          text NOT NULL,     -- 'start' | 'stop' | 'delete'
    initiator_id        uuid NOT NULL REFERENCES users (id),
    job_id              uuid NOT NULL REFERENCES provisioner_jobs (id),
    -- terraform state after this build (input of the next one)
    provisioner_state   bytea,
    created_at          timestamptz NOT NULL DEFAULT now(),
    UNIQUE (workspace_id, build_number)
);

CREATE TABLE workspace_build_parameters (
    workspace_build_id uuid NOT NULL REFERENCES workspace_builds (id) ON DELETE CASCADE,
    name               text NOT NULL,
    value              text NOT NULL,
    PRIMARY KEY (workspace_build_id, name)
);

-- Resources recorded by a job: for an import, both transitions' plans; for a
-- build, the state it produced.
CREATE TABLE workspace_resources (
    id            uuid PRIMARY KEY,
    job_id        uuid NOT NULL REFERENCES provisioner_jobs (id) ON DELETE CASCADE,
    transition    text NOT NULL,
    type          text NOT NULL,
    name          text NOT NULL,
    address       text NOT NULL DEFAULT '',
    computational boolean NOT NULL DEFAULT false,
    persistent    boolean NOT NULL DEFAULT false,
    hide          boolean NOT NULL DEFAULT false,
    icon          text NOT NULL DEFAULT '',
    daily_cost    int NOT NULL DEFAULT 0,
    metadata      jsonb NOT NULL DEFAULT '[]',
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX workspace_resources_job ON workspace_resources (job_id);

CREATE TABLE workspace_agents (
    id                 uuid PRIMARY KEY,
    resource_id        uuid NOT NULL REFERENCES workspace_resources (id) ON DELETE CASCADE,
    name               text NOT NULL,
    -- SHA-256 of the agent token; the token itself is never stored here.
    auth_token_hash    bytea NOT NULL,
    os                 text NOT NULL DEFAULT 'linux',
    arch               text NOT NULL DEFAULT 'amd64',
    directory          text NOT NULL DEFAULT '',
    env                jsonb NOT NULL DEFAULT '{}',
    startup_script     text NOT NULL DEFAULT '',
    connection_timeout_seconds int NOT NULL DEFAULT 120,
    metadata           jsonb NOT NULL DEFAULT '[]',
    lifecycle_state    text NOT NULL DEFAULT 'created',
    first_connected_at timestamptz,
    last_connected_at  timestamptz,
    disconnected_at    timestamptz,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX workspace_agents_resource ON workspace_agents (resource_id);
CREATE INDEX workspace_agents_token ON workspace_agents (auth_token_hash);

CREATE TABLE workspace_apps (
    id           uuid PRIMARY KEY,
    agent_id     uuid NOT NULL REFERENCES workspace_agents (id) ON DELETE CASCADE,
    slug         text NOT NULL,
    display_name text NOT NULL DEFAULT '',
    url          text NOT NULL DEFAULT '',
    command      text NOT NULL DEFAULT '',
    subdomain    boolean NOT NULL DEFAULT false,
    share        text NOT NULL DEFAULT 'owner',
    healthcheck  jsonb,
    created_at   timestamptz NOT NULL DEFAULT now()
);
