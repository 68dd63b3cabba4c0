# syntax=docker/dockerfile:1
#
# One image with every Shale binary: placement, storage-node, operator and
# the shale command. Pods pick one with their command.
#
# Build (BuildKit, from the repository root):
#   docker build -t shale:0.1.0 .
# The first build compiles RocksDB and takes a while; the cache mounts keep
# the cargo registry and build output for the next one.

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential clang libclang-dev pkg-config \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
        -p shale-placement -p shale-storage-node -p shale-operator -p shale-cli \
 && mkdir -p /out \
 && cp target/release/placement target/release/storage-node \
       target/release/operator target/release/shale /out/

FROM debian:${DEBIAN_RELEASE}-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libstdc++6 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 65532 shale \
 && useradd --system --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin shale \
 && mkdir -p /var/lib/shale \
 && chown 65532:65532 /var/lib/shale
COPY --from=build /out/ /usr/local/bin/
USER 65532:65532
WORKDIR /var/lib/shale
# Ports: placement 2379; storage node 20160 (gRPC) and 20180 (status);
# operator 8080 (/metrics, /healthz, /readyz).
EXPOSE 2379 20160 20180 8080
CMD ["shale", "--help"]
