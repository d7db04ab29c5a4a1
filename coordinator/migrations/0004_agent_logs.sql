-- Agent output (startup script logs) and agent stats, streamed by agents.
CREATE TABLE workspace_agent_logs (
    id         bigserial PRIMARY KEY,
    agent_id   uuid NOT NULL REFERENCES workspace_agents (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now(),
    source     text NOT NULL DEFAULT 'startup_script',
    level      text NOT NULL DEFAULT 'info',
    output     text NOT NULL
);
CREATE INDEX workspace_agent_logs_agent ON workspace_agent_logs (agent_id, id);

ALTER TABLE workspace_agents
    ADD COLUMN startup_script_exit_code int,
    ADD COLUMN started_at timestamptz,
    ADD COLUMN ready_at timestamptz,
    ADD COLUMN stats jsonb NOT NULL DEFAULT '{}',
    ADD COLUMN version text NOT NULL DEFAULT '';
