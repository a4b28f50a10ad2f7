#!/bin/sh
# Kintsugi container entry point (also run as-is by tests/ops/test_image_steps.py).
#   web          migrate the database to head, then serve with gunicorn (docker/gunicorn.conf.py)
#   worker       kintsugi reconcile as a long-running worker for KINTSUGI_RECONCILE_PROJECT, unlocking
#                with the passphrase in KINTSUGI_PASSPHRASE_FILE (a docker secret), polling every
#                KINTSUGI_RECONCILE_INTERVAL seconds
#                (web and worker skip the migration with KINTSUGI_MIGRATE_ON_START=false: compose
#                runs them as a role without DDL rights, after the migrate service)
#   migrate      kintsugi db upgrade as the owner of the tables, then, when KINTSUGI_APP_ROLE is
#                set, kintsugi db grant-app-role for the role web and worker log in as; then exit
#   healthcheck  exit 0 when /readyz answers 200 on KINTSUGI_HEALTH_URL
#   anything else is run as a command (e.g. "kintsugi backup --out /backups/x.tar")
set -eu
here=$(dirname "$0")
conf="${KINTSUGI_GUNICORN_CONF:-$here/gunicorn.conf.py}"
migrate_on_start() {
  if [ "${KINTSUGI_MIGRATE_ON_START:-true}" != false ]; then
    kintsugi db upgrade
  fi
}
case "${1:-web}" in
  web)
    migrate_on_start
    exec gunicorn --config "$conf"
    ;;
  worker)
    migrate_on_start
    exec kintsugi reconcile \
      --project "${KINTSUGI_RECONCILE_PROJECT:?set KINTSUGI_RECONCILE_PROJECT (project id)}" \
      --passphrase-file "${KINTSUGI_PASSPHRASE_FILE:-/run/secrets/kintsugi_passphrase}" \
      --interval "${KINTSUGI_RECONCILE_INTERVAL:-30}"
    ;;
  migrate)
    kintsugi db upgrade
    if [ -n "${KINTSUGI_APP_ROLE:-}" ]; then
      exec kintsugi db grant-app-role "$KINTSUGI_APP_ROLE"
    fi
    ;;
  healthcheck)
    exec python -c 'import os, sys, urllib.request
url = os.environ.get("KINTSUGI_HEALTH_URL", "http://127.0.0.1:8080/readyz")
try:
    sys.exit(0 if urllib.request.urlopen(url, timeout=5).status == 200 else 1)
except Exception:
    sys.exit(1)'
    ;;
  *)
    exec "$@"
    ;;
esac
