# Huddle: one static-ish binary on a slim Debian base.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin huddle

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /data huddle \
 && mkdir -p /data/recordings && chown -R huddle /data
COPY --from=build /src/target/release/huddle /usr/local/bin/huddle
USER huddle
WORKDIR /data
ENV HOST=0.0.0.0 \
    PORT=3003 \
    DATABASE_URL=sqlite:///data/huddle.db
# HTTP + Socket.IO, the SFU's one UDP media port, the embedded TURN server (UDP
# and TCP, and TLS on 5349 with SSL_CERT_PATH) and its relay ports (set
# TURN_MIN_PORT/TURN_MAX_PORT to what you publish).
EXPOSE 3003 7882/udp 3478/udp 3478/tcp 5349/tcp 49152-65535/udp
VOLUME ["/data"]
ENTRYPOINT ["huddle"]
