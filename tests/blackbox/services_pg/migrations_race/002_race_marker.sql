-- Applied by two processes starting at once (postgres_migrations.test.mjs): not idempotent on
-- purpose, so a second application fails (the table exists) and leaves a second row otherwise.
-- The sleep widens the window in which the other process would race without the lock.
CREATE TABLE migration_race (id serial PRIMARY KEY, applied_by text DEFAULT current_setting('application_name'));
SELECT pg_sleep(1);
INSERT INTO migration_race DEFAULT VALUES;
