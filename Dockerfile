# Kintsugi sync server. Build:  docker build -t kintsugi .
# Run with PostgreSQL, the web tier and a reconciliation worker:  docker compose up -d
# The steps below are mirrored by tests/ops/test_image_steps.py (same install, same entry points).

# ---- build stage: compile wheels for the project and its dependencies ----
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY server ./server
COPY form_compiler ./form_compiler
COPY sync_protocol ./sync_protocol
COPY instruments ./instruments
RUN python -m venv /opt/kintsugi
RUN /opt/kintsugi/bin/pip install --no-compile .

# ---- runtime stage: the venv only, a non-root user, no compilers ----
FROM python:3.11-slim AS runtime
ENV PATH=/opt/kintsugi/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    KINTSUGI_ENV=production \
    KINTSUGI_VAR_DIR=/var/lib/kintsugi \
    KINTSUGI_DATA_DIR=/var/lib/kintsugi/data \
    KINTSUGI_INSTRUMENTS_DIR=/opt/kintsugi/instruments
RUN groupadd --system --gid 10001 kintsugi \
 && useradd --system --uid 10001 --gid kintsugi --home-dir /var/lib/kintsugi --shell /usr/sbin/nologin kintsugi \
 && mkdir -p /var/lib/kintsugi/data /backups && chown -R kintsugi:kintsugi /var/lib/kintsugi /backups
COPY --from=build /opt/kintsugi /opt/kintsugi
COPY instruments /opt/kintsugi/instruments
COPY docker/entrypoint.sh docker/gunicorn.conf.py /opt/kintsugi/docker/
USER kintsugi:kintsugi
WORKDIR /var/lib/kintsugi
VOLUME ["/var/lib/kintsugi"]
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=6s --start-period=30s --retries=3 CMD ["/opt/kintsugi/docker/entrypoint.sh", "healthcheck"]
ENTRYPOINT ["/opt/kintsugi/docker/entrypoint.sh"]
CMD ["web"]
