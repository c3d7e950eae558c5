# syntax=docker/dockerfile:1
# edp container: a locked release build, then a slim runtime with CA certificates, a non-root
# user, `edp` as the entrypoint, the dataset contracts under /app/config/contracts and the stage 2
# SQL models under /app/config/models.

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
# Manifests first, so dependency layers are reused when only the sources change.
COPY Cargo.toml Cargo.lock ./
COPY benches ./benches
COPY src ./src
RUN cargo build --release --locked --bin edp && strip target/release/edp

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin edp \
    && mkdir -p /app/config /app/spill \
    && chown edp /app/spill
COPY --from=build /src/target/release/edp /usr/local/bin/edp
COPY fixtures/contracts /app/config/contracts
COPY models /app/config/models
ENV CONTRACTS_DIR=/app/config/contracts \
    MODELS_DIR=/app/config/models \
    SPILL_DIR=/app/spill \
    LOG_LEVEL=info
USER edp
WORKDIR /app
ENTRYPOINT ["edp"]
CMD ["--help"]
