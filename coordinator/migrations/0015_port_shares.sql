-- Sharing level per dev-URL port (Coder's workspace_agent_port_share): who
-- besides the workspace's owner may open PORT of agent AGENT_NAME. Read
-- capped by the deployment's --max-port-share-level, so lowering it takes
-- effect at once. A port with no row is the owner's only.
CREATE TABLE workspace_agent_port_shares (
    workspace_id uuid    NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    agent_name   text    NOT NULL,
    port         integer NOT NULL CHECK (port BETWEEN 1 AND 65535),
    share_level  text    NOT NULL CHECK (share_level IN ('owner', 'authenticated', 'public')),
    PRIMARY KEY (workspace_id, agent_name, port)
);

-- A template's icon: a `/`-relative or https URL shown beside its name.
ALTER TABLE templates ADD COLUMN icon text NOT NULL DEFAULT '';
