-- Coordination re-authorizes every connection of a replica in one sweep.
-- These triggers announce, on the `coordination_authz` channel, each change
-- that can take a right away, so replicas sweep at once instead of waiting
-- for the next periodic sweep (which still catches keys that simply expire).
-- Row triggers filter on the columns that matter: api_keys' expires_at is
-- also pushed forward on use, and that revokes nothing. NOTIFY is sent at
-- commit, and identical notifications of one transaction fold into one.
CREATE FUNCTION coordination_authz_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('coordination_authz', TG_TABLE_NAME);
    RETURN NULL;
END
$$;

CREATE TRIGGER api_keys_deleted_coordination AFTER DELETE ON api_keys
    FOR EACH STATEMENT EXECUTE FUNCTION coordination_authz_notify();
CREATE TRIGGER api_keys_shortened_coordination AFTER UPDATE OF expires_at ON api_keys
    FOR EACH ROW WHEN (NEW.expires_at < OLD.expires_at)
    EXECUTE FUNCTION coordination_authz_notify();

CREATE TRIGGER users_deleted_coordination AFTER DELETE ON users
    FOR EACH STATEMENT EXECUTE FUNCTION coordination_authz_notify();
CREATE TRIGGER users_changed_coordination AFTER UPDATE OF deleted, status, roles ON users
    FOR EACH ROW WHEN (OLD.deleted IS DISTINCT FROM NEW.deleted
                       OR OLD.status IS DISTINCT FROM NEW.status
                       OR OLD.roles IS DISTINCT FROM NEW.roles)
    EXECUTE FUNCTION coordination_authz_notify();

CREATE TRIGGER workspaces_deleted_coordination AFTER DELETE ON workspaces
    FOR EACH STATEMENT EXECUTE FUNCTION coordination_authz_notify();
CREATE TRIGGER workspaces_changed_coordination AFTER UPDATE OF deleted, owner_id ON workspaces
    FOR EACH ROW WHEN (OLD.deleted IS DISTINCT FROM NEW.deleted
                       OR OLD.owner_id IS DISTINCT FROM NEW.owner_id)
    EXECUTE FUNCTION coordination_authz_notify();

-- A new build retires the previous build's agents.
CREATE TRIGGER workspace_builds_inserted_coordination AFTER INSERT ON workspace_builds
    FOR EACH STATEMENT EXECUTE FUNCTION coordination_authz_notify();
CREATE TRIGGER workspace_agents_deleted_coordination AFTER DELETE ON workspace_agents
    FOR EACH STATEMENT EXECUTE FUNCTION coordination_authz_notify();
