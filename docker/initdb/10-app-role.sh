#!/bin/sh
# Run once by the postgres image when its data volume is first created
# (/docker-entrypoint-initdb.d): the login role the web tier and the worker use. Its rights
# come from `kintsugi db grant-app-role` (the migrate service), after every upgrade.
# An existing volume skips this: create the role once by hand with the same statement.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  -v pw="$KINTSUGI_APP_DB_PASSWORD" <<'SQL'
CREATE ROLE kintsugi_app LOGIN PASSWORD :'pw';
SQL
