-- Latest result of each agent metadata script (coder_agent metadata blocks).
CREATE TABLE workspace_agent_metadata (
    agent_id     uuid NOT NULL REFERENCES workspace_agents (id) ON DELETE CASCADE,
    key          text NOT NULL,
    value        text NOT NULL DEFAULT '',
    error        text NOT NULL DEFAULT '',
    collected_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (agent_id, key)
);
