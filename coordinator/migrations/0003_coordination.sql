-- Peer coordination state shared by every coderd replica.

-- Replicas that coordinate peers; each heartbeats. A replica whose heartbeat
-- is stale is deleted by another, which marks its peers lost.
CREATE TABLE coordinators (
    id           uuid PRIMARY KEY,
    heartbeat_at timestamptz NOT NULL DEFAULT now(),
    created_at   timestamptz NOT NULL DEFAULT now()
);

-- Connected peers: agents (id = agent id) and clients (id = connection id).
-- No foreign key to coordinators: a dead replica's peers outlive its row.
CREATE TABLE peers (
    id             uuid PRIMARY KEY,
    coordinator_id uuid NOT NULL,
    kind           text NOT NULL,               -- 'agent' | 'client'
    owner_id       uuid,                        -- the user, for clients
    node           jsonb,                       -- mesh::Node, once published
    status         text NOT NULL DEFAULT 'ok',  -- 'ok' | 'lost'
    updated_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX peers_coordinator ON peers (coordinator_id);

-- Tunnels a client opened to an agent. The agent may have no row yet.
CREATE TABLE tunnels (
    src            uuid NOT NULL REFERENCES peers (id) ON DELETE CASCADE,
    dst            uuid NOT NULL,
    coordinator_id uuid NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (src, dst)
);
CREATE INDEX tunnels_dst ON tunnels (dst);
