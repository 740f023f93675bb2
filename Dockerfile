# syntax=docker/dockerfile:1
# The fanout gateway image.
#
#   docker build -t fanout .
#   docker run --rm -p 8080:8080 --ulimit nofile=1048576:1048576 \
#     -e FANOUT_JWT_SECRET="$(openssl rand -hex 32)" fanout
#
# File descriptors: every WebSocket or SSE connection holds one. The gateway raises its soft
# limit to the hard limit at start and warns when that is below max_connections + 1024, so
# give the container a hard limit above the connections it should hold (`--ulimit nofile=...`,
# `ulimits:` in compose). Kubernetes has no per-pod setting: containers get the runtime's
# hard limit (524288 or 1048576 with current containerd and Docker), enough for a node.
#
# The build context holds only what the build needs (see .dockerignore, an allowlist), and
# scripts/test-deploy rebuilds that context and runs the cargo command below on it, since
# Cargo refuses a manifest whose declared targets (the `gateway` bench) or workspace members
# (the load generator in tools/fanout-bench, which the image does not build) are missing.

FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
COPY tools/fanout-bench ./tools/fanout-bench
COPY vendor ./vendor
# Embedded in the binary at build time (rust-embed): the demo page and the JS client it imports.
COPY demo ./demo
COPY clients/js/src ./clients/js/src
RUN cargo build --release --locked --bin fanout \
 && strip target/release/fanout

# Runtime: Debian slim (glibc, as the binary was built against) with curl for the health
# check and the system CA bundle (rediss:// uses the public roots built into the gateway, or
# redis_tls_ca_file, which may point at /etc/ssl/certs/ca-certificates.crt). Runs as an unprivileged numeric user,
# so Kubernetes can verify `runAsNonRoot` and a read-only root filesystem works: the gateway
# writes nothing to disk.
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 fanout \
 && useradd --system --uid 10001 --gid fanout --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin fanout
COPY --from=build /src/target/release/fanout /usr/local/bin/fanout
USER 10001:10001
EXPOSE 8080
# Liveness only (/healthz): a Redis outage turns /readyz to 503, which should take the node
# out of a load balancer, not get the container restarted. Assumes the default port 8080.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD ["curl", "--fail", "--silent", "--show-error", "--max-time", "2", "--output", "/dev/null", "http://127.0.0.1:8080/healthz"]
# SIGTERM starts the drain (readyz 503, clients closed with 1012 over drain_s); give the
# container longer than drain_s to stop (`stop_grace_period`, `docker stop -t`).
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/fanout"]
CMD ["serve"]
