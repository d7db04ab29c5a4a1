-- An app's icon (`coder_app.icon`): a `/`-relative or https URL shown beside
-- its name on the dashboard. Anything else is dropped when the build records
-- its apps, so the column only ever holds what the dashboard may show.
ALTER TABLE workspace_apps ADD COLUMN icon text NOT NULL DEFAULT '';
