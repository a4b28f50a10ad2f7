#!/bin/sh
# Kintsugi container entry point (also run as-is by tests/ops/test_image_steps.py).
#   web          migrate the database to head, then serve with gunicorn (docker/gunicorn.conf.py)
#   worker       reconcile submissions in a loop (kintsugi reconcile every KINTSUGI_RECONCILE_INTERVAL s)
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
    while :; do
      kintsugi reconcile || echo '{"level":"ERROR","logger":"worker","message":"reconcile run failed"}' >&2
      sleep "${KINTSUGI_RECONCILE_INTERVAL:-30}"
    done
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
