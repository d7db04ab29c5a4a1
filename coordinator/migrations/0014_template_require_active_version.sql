-- `coder update` and outdated workspaces (docs/lifecycle.md). A template that
-- requires its active version moves every start a non-admin asks for, and
-- every autostart, to the template's active version (as Coder does).
ALTER TABLE templates
    ADD COLUMN require_active_version boolean NOT NULL DEFAULT false;
