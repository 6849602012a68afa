-- thing_service's table, as in the original example (SQLAlchemy model Thing).
CREATE TABLE IF NOT EXISTS thing (
    uuid uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name text NOT NULL,
    is_created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS thing_is_created_at ON thing (is_created_at, uuid);
