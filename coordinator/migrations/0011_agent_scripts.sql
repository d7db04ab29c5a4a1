-- Scripts an agent runs (coder_script, and the agent's own startup and shutdown
-- scripts), each with the log source its output is attributed to; coder_env
-- values are merged into workspace_agents.env when the build is recorded.
CREATE TABLE workspace_agent_log_sources (
    id           uuid PRIMARY KEY,
    agent_id     uuid NOT NULL REFERENCES workspace_agents (id) ON DELETE CASCADE,
    display_name text NOT NULL,
    icon         text NOT NULL DEFAULT '',
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX workspace_agent_log_sources_agent ON workspace_agent_log_sources (agent_id);

CREATE TABLE workspace_agent_scripts (
    log_source_id      uuid PRIMARY KEY REFERENCES workspace_agent_log_sources (id) ON DELETE CASCADE,
    agent_id           uuid NOT NULL REFERENCES workspace_agents (id) ON DELETE CASCADE,
    ordinal            int NOT NULL,
    script             text NOT NULL,
    cron               text NOT NULL DEFAULT '',
    log_path           text NOT NULL DEFAULT '',
    run_on_start       boolean NOT NULL DEFAULT false,
    run_on_stop        boolean NOT NULL DEFAULT false,
    start_blocks_login boolean NOT NULL DEFAULT false,
    timeout_seconds    int NOT NULL DEFAULT 0
);
CREATE INDEX workspace_agent_scripts_agent ON workspace_agent_scripts (agent_id, ordinal);

ALTER TABLE workspace_agent_logs
    ADD COLUMN log_source_id uuid REFERENCES workspace_agent_log_sources (id) ON DELETE SET NULL;

-- Set when a stop or delete build asks the agent to run its shutdown scripts
-- before terraform destroys anything; the agent long-polls for it.
ALTER TABLE workspace_agents
    ADD COLUMN shutdown_requested_at timestamptz;
