# syntax=docker/dockerfile:1
# Tessera container image: built with the Swift toolchain image, run on slim Debian 12 with
# only the runtime libraries. Build:   docker build -t tessera .
# Run the API on a volume:            docker run -p 8080:8080 -v tessera-data:/var/lib/tessera tessera
# Any other subcommand:               docker run --rm -v "$PWD:/work" tessera run /work/slide.svs --out /work/out
# deploy/README.md says what of this file is checked by scripts/check-deploy.sh.

ARG SWIFT_VERSION=6.3.1

# ---- build stage --------------------------------------------------------------------------
FROM swift:${SWIFT_VERSION}-bookworm AS build
# The -dev packages scripts/setup.sh installs, plus libpq-dev for the PostgreSQL job queue.
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
       pkg-config libvips-dev libopenblas-dev libsqlite3-dev libmicrohttpd-dev libpq-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Dependencies first, so that a source change does not fetch them again.
COPY Package.* ./
RUN swift package resolve
COPY Sources Sources
COPY Tests Tests
# Static Swift runtime: the run stage needs no Swift toolchain, only the C libraries.
RUN swift build -c release --product tessera --static-swift-stdlib \
    && install -D -m 0755 "$(swift build -c release --show-bin-path)/tessera" /out/usr/local/bin/tessera

# ---- run stage ----------------------------------------------------------------------------
FROM debian:bookworm-slim
# Runtime libraries only (libvips42 brings OpenSlide, libtiff, libjpeg, glib); libpq5 is the
# PostgreSQL client library of the shared job queue.
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
       libvips42 libopenblas0 libsqlite3-0 libmicrohttpd12 libpq5 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 tessera \
    && useradd --system --uid 10001 --gid tessera --home-dir /var/lib/tessera --no-create-home \
       --shell /usr/sbin/nologin tessera \
    && install -d -o tessera -g tessera -m 0750 /var/lib/tessera
COPY --from=build /out/usr/local/bin/tessera /usr/local/bin/tessera
# The shipped models (model.onnx + model.json each); the recipe under models/search stays out.
COPY models/tessera-crc-compact/model.onnx models/tessera-crc-compact/model.json /opt/tessera/models/tessera-crc-compact/
COPY models/densenet121-pathmnist/model.onnx models/densenet121-pathmnist/model.json /opt/tessera/models/densenet121-pathmnist/
ENV TESSERA_DATA=/var/lib/tessera \
    TESSERA_MODELS=/opt/tessera/models \
    XDG_CACHE_HOME=/var/lib/tessera/cache \
    MALLOC_ARENA_MAX=2
# Job database (jobs.sqlite), stored slides, uploads and outputs.
VOLUME ["/var/lib/tessera"]
WORKDIR /var/lib/tessera
# Numeric, so that Kubernetes' runAsNonRoot can check it.
USER 10001:10001
EXPOSE 8080
# /healthz answers 200, or 503 while shutting down. Plain bash (no curl in the image).
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/8080 && printf 'GET /healthz HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n' >&3 && head -n 1 <&3 | grep -q ' 200 '"]
# SIGTERM: stop accepting work, return running jobs to the queue at their last checkpoint.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/tessera"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8080"]
