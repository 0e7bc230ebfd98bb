# devdb in a container: the CLI (and later the Slack app and scheduler) as entrypoint.
# PostgreSQL's server programs are included because the local driver and the embedded
# control cluster run PostgreSQL clusters inside the container.
FROM python:3.11-slim-bookworm

RUN apt-get update \
    && apt-get install -y --no-install-recommends postgresql postgresql-client \
    && rm -rf /var/lib/apt/lists/*
ENV PATH="/usr/lib/postgresql/15/bin:${PATH}"

# PostgreSQL refuses to run as root; so does this image.
RUN useradd --create-home --uid 10001 devdb

WORKDIR /opt/devdb
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY provisioning ./provisioning
RUN pip install --no-cache-dir .

USER devdb
ENV DEVDB_HOME=/home/devdb/.local/share/devdb
VOLUME ["/home/devdb/.local/share/devdb"]
ENTRYPOINT ["devdb"]
CMD ["help"]
