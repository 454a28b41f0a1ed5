# Builds the tributary binary in the official Rust image and ships it on a slim Debian base.
#
# Base images are pinned to a version (not `latest`/`1`), so a rebuild next month compiles with
# the same toolchain and runs on the same libc. Both stages are Debian 13 (trixie): the binary
# links glibc dynamically, and the runtime's glibc must be at least the build's.
#
# Dependency caching without extra tools: the first build step compiles the dependencies of
# Cargo.lock against stub sources (only the manifests are copied), so that layer is reused until
# Cargo.toml/Cargo.lock change; editing src/ recompiles only tributary itself.

FROM rust:1.95.0-trixie AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY sim/Cargo.toml sim/Cargo.toml
# An empty library and main are enough for cargo to build every dependency of the binary
# (mongo-sim is a dev-dependency: not built here). Checked outside Docker: this layout builds
# with `--locked` and leaves nothing but tributary itself to compile afterwards.
RUN mkdir src \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && cargo build --release --locked --bin tributary \
    && rm -rf src target/release/.fingerprint/tributary-* target/release/deps/tributary-* \
              target/release/deps/libtributary-*
COPY . .
# COPY keeps the files' own modification times, which can be older than the stub build's
# outputs; touching the crate roots makes sure cargo rebuilds tributary from the real sources.
RUN touch src/main.rs src/lib.rs \
    && cargo build --release --locked --bin tributary

FROM debian:13.2-slim
# ca-certificates: TLS to MongoDB and Postgres (`sslrootcert=system` reads this store). bash is
# part of the base image and serves the health check (docker-compose.yml), so no HTTP client
# is installed.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin tributary
COPY --from=build /src/target/release/tributary /usr/local/bin/tributary
# Tributary needs no privileges: it only opens outbound connections and listens on 9187.
USER 10001:10001
EXPOSE 9187
# SIGTERM (Docker's default stop signal) makes tributary flush and commit the current batch and
# exit 0; give it the time (`stop_grace_period` in docker-compose.yml).
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/tributary"]
