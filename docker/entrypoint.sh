#!/bin/sh
# Kintsugi container entry point (also run as-is by tests/ops/test_image_steps.py).
#   web          migrate the database to head, then serve with gunicorn (docker/gunicorn.conf.py)
#   worker       kintsugi reconcile as a long-running worker for KINTSUGI_RECONCILE_PROJECT, unlocking
#                with the passphrase in KINTSUGI_PASSPHRASE_FILE (a docker secret), polling every
#                KINTSUGI_RECONCILE_INTERVAL seconds
#   migrate      kintsugi db upgrade, then exit
#   healthcheck  exit 0 when /readyz answers 200 on KINTSUGI_HEALTH_URL
#   anything else is run as a command (e.g. "kintsugi backup --out /backups/x.tar")
set -eu
here=$(dirname "$0")
conf="${KINTSUGI_GUNICORN_CONF:-$here/gunicorn.conf.py}"
case "${1:-web}" in
  web)
    kintsugi db upgrade
    exec gunicorn --config "$conf"
    ;;
  worker)
    kintsugi db upgrade
    exec kintsugi reconcile \
      --project "${KINTSUGI_RECONCILE_PROJECT:?set KINTSUGI_RECONCILE_PROJECT (project id)}" \
      --passphrase-file "${KINTSUGI_PASSPHRASE_FILE:-/run/secrets/kintsugi_passphrase}" \
      --interval "${KINTSUGI_RECONCILE_INTERVAL:-30}"
    ;;
  migrate)
    exec kintsugi db upgrade
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
