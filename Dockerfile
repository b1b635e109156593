# ICM - Intelligent Contact Manager.
#   docker build -t icm .
#   docker run --network host -v /etc/icm/icm.toml:/etc/icm/icm.toml:ro \
#       -v icm-data:/var/lib/icm -e ICM_AMI_SECRET=... icm
# The configuration and secrets come from mounts and the environment; nothing is baked in.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY icm ./icm
COPY connectors ./connectors
COPY config ./config
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
RUN useradd --system --uid 10001 --home-dir /var/lib/icm --shell /usr/sbin/nologin icm \
    && mkdir -p /var/lib/icm /etc/icm && chown icm:icm /var/lib/icm
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
COPY icm.toml.example /etc/icm/icm.toml.example
USER icm
WORKDIR /var/lib/icm
ENV ICM_CONFIG=/etc/icm/icm.toml PYTHONUNBUFFERED=1
EXPOSE 9180
HEALTHCHECK --interval=30s --timeout=3s CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9180/healthz', timeout=2)"
# umask 077: the database (it holds OAuth tokens) and anything else written stays private.
ENTRYPOINT ["/bin/sh", "-c", "umask 077 && exec icm \"$@\"", "icm"]
CMD ["run"]
