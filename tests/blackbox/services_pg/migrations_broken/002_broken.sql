-- A migration that fails: startup must stop with this file's name and the database's message.
CREATE TABLE broken_case_partial (id int);
INSERT INTO no_such_table_for_migration VALUES (1);
