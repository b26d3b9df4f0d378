#!/bin/sh
# First start: initdb as POSTGRES_USER with POSTGRES_PASSWORD, create POSTGRES_DB, accept password
# logins from the network. Then run the command as the postgres user.
set -eu
chown -R postgres:postgres "$PGDATA" /run/postgresql
chmod 700 "$PGDATA"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  user=${POSTGRES_USER:-postgres}
  pwfile=$(mktemp)
  printf '%s' "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD is required}" >"$pwfile"
  chown postgres "$pwfile"
  runuser -u postgres -- initdb -D "$PGDATA" -U "$user" --pwfile="$pwfile" --auth-local=trust --auth-host=scram-sha-256 >/dev/null
  rm -f "$pwfile"
  echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
  echo "listen_addresses = '*'" >>"$PGDATA/postgresql.conf"
  if [ "${POSTGRES_DB:-$user}" != "postgres" ]; then
    runuser -u postgres -- postgres --single -D "$PGDATA" postgres <<SQL >/dev/null
CREATE DATABASE "${POSTGRES_DB:-$user}" OWNER "$user";
SQL
  fi
fi
if [ "$1" = "postgres" ]; then
  shift
  exec runuser -u postgres -- postgres -D "$PGDATA" "$@"
fi
exec "$@"
