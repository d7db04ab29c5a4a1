-- Autostart and autostop (docs/lifecycle.md). A workspace has an optional
-- TTL and an optional autostart schedule; a start build that succeeded gets
-- a deadline (completion + TTL, pushed forward by activity, never past
-- max_deadline = completion + the template's max TTL). The scheduler fires a
-- transition by inserting the next build in the transaction that selected
-- the workspace, so the new latest build is itself the mark "fired".
ALTER TABLE workspaces
    ADD COLUMN ttl_ms             bigint,        -- NULL: no autostop
    ADD COLUMN autostart_schedule text,          -- NULL: no autostart
    ADD COLUMN next_start_at      timestamptz,   -- the schedule's next minute
    ADD COLUMN last_used_at       timestamptz;

ALTER TABLE workspace_builds
    ADD COLUMN deadline     timestamptz,
    ADD COLUMN max_deadline timestamptz,
    -- 'initiator' (a user asked), 'autostart', 'autostop'
    ADD COLUMN reason       text NOT NULL DEFAULT 'initiator';

ALTER TABLE templates
    ADD COLUMN default_ttl_ms bigint NOT NULL DEFAULT 0,  -- 0: no default autostop
    ADD COLUMN max_ttl_ms     bigint NOT NULL DEFAULT 0;  -- 0: no maximum

CREATE INDEX workspace_builds_deadline ON workspace_builds (deadline) WHERE deadline IS NOT NULL;
CREATE INDEX workspaces_next_start ON workspaces (next_start_at) WHERE next_start_at IS NOT NULL AND NOT deleted;
