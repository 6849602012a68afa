-- Tables of the test-only pg_test service (tests/blackbox/services_pg/pg_test.lua).
CREATE TABLE pg_test_kv (
    id bigserial PRIMARY KEY,
    k text UNIQUE,
    v text,
    j jsonb,
    b bytea
);
CREATE TABLE pg_test_tx (
    id bigserial PRIMARY KEY,
    tag text NOT NULL,
    name text NOT NULL UNIQUE
);
