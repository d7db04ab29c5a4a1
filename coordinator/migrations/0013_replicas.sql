-- The replica registry: every coderd process sharing this database records
-- itself here and heartbeats; a replica whose heartbeat is older than a few
-- beats is deleted by any other (coordinator/src/replicas/). Apart from
-- `coordinators` (0003): that table is per coordination run loop and drives
-- peer state; this one is per process and drives the relay mesh and
-- `GET /api/v2/replicas`.
CREATE TABLE replicas (
    id           uuid PRIMARY KEY,
    hostname     text NOT NULL,
    -- Where the other replicas reach this one's relay ('' without a relay).
    relay_url    text NOT NULL,
    region_id    integer NOT NULL,
    version      text NOT NULL,
    started_at   timestamptz NOT NULL,
    heartbeat_at timestamptz NOT NULL
);

-- The relay mesh key of this deployment, generated once by the first replica
-- (one row). Every replica must present it to the others' relays, so it is
-- kept as the secret itself, not a hash: whoever reads this table already
-- reads every other table. It is never logged nor returned by the API.
CREATE TABLE relay_mesh_key (
    singleton  boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    mesh_key   text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
