# syntax=docker/dockerfile:1
# Build: docker build -t fanout .
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
RUN cargo build --release --locked --bin fanout && strip target/release/fanout

# Small runtime image: glibc only, runs as an unprivileged user (uid 65532).
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/fanout /usr/local/bin/fanout
USER nonroot:nonroot
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/fanout"]
CMD ["serve"]
