# tpt container image: build on Debian bookworm with the Debian -dev packages, run on
# bookworm-slim with only the shared libraries tpt links against.
#
#   docker build -t tpt:dev .                                  # with a Docker engine
#   scripts/build-image.sh                                     # with buildah, no engine
#
# Run time: non-root (65532), no shell needed, works with a read-only root filesystem,
# config at /etc/tpt/tpt.yaml (mount a ConfigMap over the /etc/tpt directory).

ARG DEBIAN_SUITE=bookworm

FROM debian:${DEBIAN_SUITE} AS build
ARG JOBS=2
ENV DEBIAN_FRONTEND=noninteractive
# The dependency list is the repository's own (scripts/deps.sh), copied alone first so
# that this layer stays cached while the sources change.
COPY scripts/deps.sh /src/scripts/deps.sh
RUN /src/scripts/deps.sh build && rm -rf /var/lib/apt/lists/*
COPY . /src
# RelWithDebInfo (-O2) as the `release` preset that the tests run against; stripped below.
RUN cmake -S /src -B /build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTPT_TESTS=OFF \
    && cmake --build /build --target tpt -j"${JOBS}" \
    && install -D -m 0755 -s /build/tpt /out/usr/local/bin/tpt \
    && install -D -m 0644 /src/deploy/image/tpt.yaml /out/etc/tpt/tpt.yaml

FROM debian:${DEBIAN_SUITE}-slim AS runtime
ENV DEBIAN_FRONTEND=noninteractive
# Runtime shared libraries of the -dev packages used in the build stage (Asio, Beast and
# Boost.System are header-only; libstdc++/libgcc are already in the base image).
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        libyaml-cpp0.7 libspdlog1.10 libfmt9 libprometheus-cpp-core1.0 \
        libboost-json1.81.0 libboost-program-options1.81.0 libssl3 \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/apt /var/log/dpkg.log
COPY --from=build /out/ /

LABEL org.opencontainers.image.title="tpt" \
      org.opencontainers.image.description="TLS SNI routing / HTTP CONNECT tunnelling TCP proxy sidecar"

# Numeric UID/GID so that Kubernetes can verify runAsNonRoot without a passwd entry.
USER 65532:65532
# admin: /metrics /ready /healthz (named port `admin` in the chart); 8443: example proxy listener.
EXPOSE 9901/tcp 8443/tcp
# Exec form: no shell at run time. SIGTERM goes straight to tpt (graceful drain, SPEC §8).
ENTRYPOINT ["/usr/local/bin/tpt"]
CMD ["--config", "/etc/tpt/tpt.yaml"]
