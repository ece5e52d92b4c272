# syntax=docker/dockerfile:1
# Tessera container image: the build stage makes the Debian package with scripts/package.sh,
# the run stage installs that same .deb on slim Debian 12 (apt pulls exactly its Depends:).
# Build:                              docker build -t tessera .
# Run the API on a volume:            docker run -p 8080:8080 -v tessera-data:/var/lib/tessera tessera
# Another port:                       docker run -e TESSERA_PORT=9000 -p 9000:9000 ... tessera
# Any other subcommand:               docker run --rm -v "$PWD:/work" tessera run /work/slide.svs --out /work/out
# deploy/README.md says what of this file is checked by scripts/check-deploy.sh.

ARG SWIFT_VERSION=6.3.1

# ---- build stage --------------------------------------------------------------------------
FROM swift:${SWIFT_VERSION}-bookworm AS build
# The -dev packages scripts/setup.sh installs, plus dpkg-dev (dpkg-shlibdeps) for the package.
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
       pkg-config libvips-dev libopenblas-dev libsqlite3-dev libmicrohttpd-dev libpq-dev dpkg-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Dependencies first, so that a source change does not fetch them again.
COPY Package.* ./
RUN swift package resolve
COPY Sources Sources
COPY Tests Tests
COPY scripts scripts
COPY deploy deploy
COPY docs docs
COPY README.md ./
COPY models/README.md models/
# The shipped models (package.sh installs every folder with a card, and its INT8 calibration).
COPY models/densenet121-lc25000 models/densenet121-lc25000/
COPY models/tessera-lc25000-compact models/tessera-lc25000-compact/
COPY models/tessera-crc-compact models/tessera-crc-compact/
COPY models/densenet121-pathmnist models/densenet121-pathmnist/
# swift build -c release --product tessera --static-swift-stdlib, then dist/tessera_<version>_amd64.deb.
RUN scripts/package.sh && cp dist/tessera_*_amd64.deb /tessera.deb

# ---- run stage ----------------------------------------------------------------------------
FROM debian:bookworm-slim
COPY --from=build /tessera.deb /tmp/tessera.deb
# The user first, with a fixed numeric id (Kubernetes' runAsNonRoot checks it); the package's
# postinst then keeps it. apt-get installs the .deb and the runtime libraries it depends on.
RUN groupadd --system --gid 10001 tessera \
    && useradd --system --uid 10001 --gid tessera --home-dir /var/lib/tessera --no-create-home \
       --shell /usr/sbin/nologin tessera \
    && apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends /tmp/tessera.deb \
    && rm -rf /var/lib/apt/lists/* /tmp/tessera.deb \
    && install -d -o tessera -g tessera -m 0750 /var/lib/tessera
# The package's models are in /usr/share/tessera/models; mount another folder there to add models.
ENV TESSERA_DATA=/var/lib/tessera \
    TESSERA_MODELS=/usr/share/tessera/models \
    TESSERA_PORT=8080 \
    XDG_CACHE_HOME=/var/lib/tessera/cache \
    MALLOC_ARENA_MAX=2
# Job database (jobs.sqlite), stored slides, uploads and outputs.
VOLUME ["/var/lib/tessera"]
WORKDIR /var/lib/tessera
# Numeric, so that Kubernetes' runAsNonRoot can check it.
USER 10001:10001
EXPOSE 8080
# /healthz answers 200, or 503 while shutting down; on $TESSERA_PORT, the port serve listens on
# when no --port is given. Plain bash (no curl in the image).
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/${TESSERA_PORT:-8080} && printf 'GET /healthz HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n' >&3 && head -n 1 <&3 | grep -q ' 200 '"]
# SIGTERM: stop accepting work, return running jobs to the queue at their last checkpoint.
# SIGHUP (docker kill -s HUP): read TESSERA_API_TOKENS_FILE again.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/bin/tessera"]
CMD ["serve", "--host", "0.0.0.0"]
