-- App health (Coder's workspace_apps.health): `disabled` without a
-- healthcheck, else `initializing` until the agent reports.
ALTER TABLE workspace_apps ADD COLUMN health text NOT NULL DEFAULT 'disabled'
    CHECK (health IN ('disabled', 'initializing', 'healthy', 'unhealthy'));
UPDATE workspace_apps SET health = 'initializing' WHERE healthcheck IS NOT NULL;
