-- A second test migration: it depends on 002 having run first (order by file name).
INSERT INTO migration_race DEFAULT VALUES;
CREATE TABLE migration_race_done (n int NOT NULL);
INSERT INTO migration_race_done SELECT count(*) FROM migration_race;
