#!/usr/bin/env bash
# Runs a command with a throwaway PostgreSQL server, then removes the server:
#
#   bash scripts/with-postgres.sh swift test --skip-build --filter GatewayStoreTests
#
# What it does: initdb in a new temporary directory (run as the `postgres` user when started as
# root — PostgreSQL refuses to run as root), password authentication for the user `swarm`, the
# server on 127.0.0.1 on a free port (no Unix socket outside the directory), then
#   SWARM_TEST_POSTGRES_URL=postgresql://swarm:PASSWORD@127.0.0.1:PORT/postgres
# exported to the command. On exit — the command's end, an error, Ctrl-C — the server is stopped
# (immediate mode) and the directory removed. The command's exit status is this script's.
#
# Needs Debian's `postgresql` (scripts/install-deps.sh installs it). Its own service is never
# used or started.
set -euo pipefail

if [[ $# -eq 0 ]]; then
    echo "usage: $0 COMMAND [ARGUMENT...]" >&2
    exit 2
fi

bin=""
for candidate in /usr/lib/postgresql/*/bin; do
    [[ -x "$candidate/initdb" && -x "$candidate/pg_ctl" ]] && bin="$candidate"
done
if [[ -z "$bin" ]]; then
    echo "with-postgres: PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb); run bash scripts/install-deps.sh" >&2
    exit 1
fi

run_as=()
owner="$(id -un)"
if [[ $(id -u) -eq 0 ]]; then
    if ! id postgres >/dev/null 2>&1; then
        echo "with-postgres: running as root but there is no postgres user to run the server as" >&2
        exit 1
    fi
    run_as=(runuser -u postgres --)
    owner=postgres
fi

directory="$(mktemp -d /tmp/swarm-postgres.XXXXXX)"
chmod 700 "$directory"
chown "$owner" "$directory"
started=0
cleanup() {
    local status=$?
    if [[ $started -eq 1 ]]; then
        "${run_as[@]}" "$bin/pg_ctl" -D "$directory/data" -m immediate -w stop >/dev/null 2>&1 || true
    fi
    rm -rf "$directory"
    exit $status
}
trap cleanup EXIT
trap 'exit 130' INT TERM

password="$(head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n')"
printf '%s\n' "$password" > "$directory/password"
chown "$owner" "$directory/password"
"${run_as[@]}" "$bin/initdb" -D "$directory/data" -U swarm --pwfile="$directory/password" -A scram-sha-256 \
    --no-sync --encoding=UTF8 --locale=C >"$directory/initdb.log" 2>&1 || {
    cat "$directory/initdb.log" >&2
    exit 1
}
rm -f "$directory/password"

# A free loopback port: the first of a random range nothing listens on.
port=""
for _ in $(seq 1 50); do
    candidate=$(( 20000 + RANDOM % 30000 ))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$candidate") 2>/dev/null; then
        port=$candidate
        break
    fi
done
if [[ -z "$port" ]]; then
    echo "with-postgres: no free port found" >&2
    exit 1
fi

"${run_as[@]}" "$bin/pg_ctl" -D "$directory/data" -l "$directory/server.log" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories=$directory -c max_connections=300" start >/dev/null || {
    cat "$directory/server.log" >&2
    exit 1
}
started=1
export SWARM_TEST_POSTGRES_URL="postgresql://swarm:$password@127.0.0.1:$port/postgres"
echo "with-postgres: throwaway PostgreSQL $("$bin/postgres" --version | awk '{print $3}') on 127.0.0.1:$port (data in $directory)"

set +e
"$@"
status=$?
set -e
exit $status
