-- A node's keys belong to one peer (docs/protocols/coordination.md, "Key
-- binding"): no two peers' rows announce the same node, disco or QUIC key.
-- Each replica refuses such a node from its own view first; these indexes
-- decide when two replicas race, and the loser's peer is refused.

-- Rows written before this rule: the most recently updated keeps its node;
-- the others lose theirs until their replica rewrites them (and is refused).
UPDATE peers SET node = NULL WHERE id IN (
    SELECT id FROM (
        SELECT id, row_number() OVER (PARTITION BY node->>'key' ORDER BY updated_at DESC, id) AS n
        FROM peers WHERE node IS NOT NULL) d
    WHERE n > 1);
UPDATE peers SET node = NULL WHERE id IN (
    SELECT id FROM (
        SELECT id, row_number() OVER (PARTITION BY node->>'disco_key' ORDER BY updated_at DESC, id) AS n
        FROM peers WHERE node IS NOT NULL) d
    WHERE n > 1);
UPDATE peers SET node = NULL WHERE id IN (
    SELECT id FROM (
        SELECT id, row_number() OVER (PARTITION BY node->>'quic_key' ORDER BY updated_at DESC, id) AS n
        FROM peers WHERE node IS NOT NULL) d
    WHERE n > 1);

CREATE UNIQUE INDEX peers_node_key ON peers ((node->>'key'));
CREATE UNIQUE INDEX peers_disco_key ON peers ((node->>'disco_key'));
CREATE UNIQUE INDEX peers_quic_key ON peers ((node->>'quic_key'));
