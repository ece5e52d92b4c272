# Multi-stage build: Swift toolchain to build, slim Debian 12 with the runtime libraries to run.
FROM swift:6.1-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends \
      pkg-config libvips-dev libopenblas-dev libsqlite3-dev libmicrohttpd-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Package.swift ./
COPY Sources Sources
COPY Tests Tests
RUN swift build -c release --product tessera --static-swift-stdlib

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends \
      libvips42 libopenblas0 libsqlite3-0 libmicrohttpd12 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --create-home --home-dir /var/lib/tessera tessera
COPY --from=build /src/.build/release/tessera /usr/local/bin/tessera
COPY models /opt/tessera/models
USER tessera
WORKDIR /var/lib/tessera
VOLUME /var/lib/tessera
ENTRYPOINT ["/usr/local/bin/tessera"]
CMD ["--help"]
