-- docs/examples/services/migrations/001_create_note.sql: the table of notes.lua
CREATE TABLE note (
    id bigserial PRIMARY KEY,
    body text NOT NULL UNIQUE,
    tags jsonb NOT NULL DEFAULT '[]',
    created_at timestamptz NOT NULL DEFAULT now()
);
