# The tusk binary alone, as a non-root user. Build: docker build -t tusk .
# (Not built on the project's machines, which have no container engine: see README "Serving".)
FROM rust:1.94-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p tusk-cli \
 && strip target/release/tusk \
 && cp target/release/tusk /tusk

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /home/tusk --create-home tusk
COPY --from=build /tusk /usr/local/bin/tusk
USER 10001
WORKDIR /home/tusk
EXPOSE 8501
ENTRYPOINT ["/usr/local/bin/tusk"]
CMD ["--help"]
