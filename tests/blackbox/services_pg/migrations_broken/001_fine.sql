-- A migration that works (postgres_migrations.test.mjs, the failing-migration case).
CREATE TABLE broken_case_fine (id int);
