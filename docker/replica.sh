#!/bin/sh
# Entry of a search replica in docker/compose.yaml: refuses to start while a key is unset or
# blank (compose passes each through only when set, never a default), hands the database password
# to libpq as PGPASSWORD (not in the store's URL: a URL on a command line shows in the process
# list), then runs `shopsearch` with the service's arguments.
set -eu
missing=""
for name in SHOPSEARCH_API_KEY SHOPSEARCH_ADMIN_KEY SHOPSEARCH_PSEUDONYM_KEY POSTGRES_PASSWORD; do
    eval "value=\${$name:-}"
    if [ -z "$(printf '%s' "$value" | tr -d '[:space:]')" ]; then
        missing="$missing $name"
    fi
done
if [ -n "$missing" ]; then
    echo "search replica: set$missing in the environment before 'docker compose up' (docker/README.md)" >&2
    exit 2
fi
export PGPASSWORD="$POSTGRES_PASSWORD"
unset POSTGRES_PASSWORD
if [ -n "${QDRANT_API_KEY:-}" ]; then
    export SHOPSEARCH_QDRANT_API_KEY="$QDRANT_API_KEY"
fi
unset QDRANT_API_KEY
exec shopsearch "$@"
