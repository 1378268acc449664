# shellcheck shell=bash
# Sourced by .ci/run before `make test`: start a throw-away PostgreSQL server for the tuner's
# multi-worker tests and export ORDINALAGE_TEST_POSTGRES_URL (postgresql+psycopg2://...).
#
# Installs Debian's `postgresql` package with apt-get when no server binaries are found (root
# only), initialises a cluster in a temporary folder, starts it on 127.0.0.1 on a free port (as
# the `postgres` user when run as root), creates a user and a database, and stops the server and
# removes the folder when the calling shell exits. A URL already in ORDINALAGE_TEST_POSTGRES_URL
# is used as it is. If anything fails, the tests that need PostgreSQL skip, unless
# ORDINALAGE_REQUIRE_POSTGRES=1, which makes the failure fatal.

_oa_pg_log() { echo "postgres.sh: $*" >&2; }

_oa_pg_bindir() {
  local d
  if command -v pg_config >/dev/null 2>&1 && [[ -x "$(pg_config --bindir)/initdb" ]]; then
    pg_config --bindir
    return 0
  fi
  for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    if [[ -x "$d/initdb" && -x "$d/pg_ctl" ]]; then
      echo "$d"
      return 0
    fi
  done
  d="$(dirname "$(command -v initdb 2>/dev/null || echo /nonexistent/initdb)")"
  [[ -x "$d/initdb" && -x "$d/pg_ctl" ]] && echo "$d"
}

_oa_pg_install() {
  if [[ "$(id -u)" != 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
    _oa_pg_log "no PostgreSQL server binaries, and cannot install them (needs root and apt-get)"
    return 1
  fi
  _oa_pg_log "installing Debian's postgresql package"
  apt-get update -qq >/dev/null &&
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null
}

_oa_pg_free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

_oa_pg_setup() {
  local bindir dir port as_user=() user=ordinalage password=ordinalage db=ordinalage_test
  bindir="$(_oa_pg_bindir)"
  if [[ -z "$bindir" ]]; then
    _oa_pg_install || return 1
    bindir="$(_oa_pg_bindir)"
    [[ -n "$bindir" ]] || { _oa_pg_log "installed postgresql, but found no initdb"; return 1; }
  fi
  dir="$(mktemp -d "${TMPDIR:-/tmp}/ordinalage-pg.XXXXXX")" || return 1
  if [[ "$(id -u)" == 0 ]]; then  # initdb refuses to run as root
    id postgres >/dev/null 2>&1 || useradd --system --home-dir "$dir" --shell /bin/sh postgres || return 1
    chown postgres "$dir"
    as_user=(runuser -u postgres --)
  fi
  port="$(_oa_pg_free_port)" || return 1
  "${as_user[@]}" "$bindir/initdb" -D "$dir/data" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
    -E UTF8 --no-sync >"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log" >&2; return 1; }
  "${as_user[@]}" "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
    -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=100" start >/dev/null ||
    { cat "$dir/server.log" >&2; return 1; }
  # stop the server when the shell that sourced this file exits
  # shellcheck disable=SC2064
  trap "${as_user[*]} '$bindir/pg_ctl' -D '$dir/data' -m fast -w stop >/dev/null 2>&1; rm -rf '$dir'" EXIT
  "${as_user[@]}" "$bindir/psql" -h "$dir" -p "$port" -U postgres -d postgres -v ON_ERROR_STOP=1 -q \
    -c "CREATE USER $user PASSWORD '$password'" -c "CREATE DATABASE $db OWNER $user" >/dev/null || return 1
  export ORDINALAGE_TEST_POSTGRES_URL="postgresql+psycopg2://$user:$password@127.0.0.1:$port/$db"
  export ORDINALAGE_TEST_POSTGRES_DIR="$dir"
  _oa_pg_log "PostgreSQL running on 127.0.0.1:$port (database $db, folder $dir)"
}

if [[ -n "${ORDINALAGE_TEST_POSTGRES_URL:-}" ]]; then
  _oa_pg_log "using the given ORDINALAGE_TEST_POSTGRES_URL"
elif ! _oa_pg_setup; then
  if [[ "${ORDINALAGE_REQUIRE_POSTGRES:-0}" == 1 ]]; then
    _oa_pg_log "could not start PostgreSQL (ORDINALAGE_REQUIRE_POSTGRES=1)"
    return 1 2>/dev/null || exit 1
  fi
  _oa_pg_log "could not start PostgreSQL: the PostgreSQL tests will be skipped"
fi
