# tpt container image: built on Debian bookworm with the Debian -dev packages; the runtime
# image is `scratch` filled with the tpt binary, the shared libraries it links (the DT_NEEDED
# closure), the loader, their Debian copyright files, /etc/passwd|group|nsswitch.conf and the
# default config: no shell, no package manager, no coreutils (scripts/image-rootfs.sh).
#
#   docker buildx build --platform linux/amd64,linux/arm64 -t tpt:dev .   # with an engine
#   scripts/build-image.sh [--arch arm64]                                 # with buildah
#
# Multi-arch without emulation: the build stage runs on the build machine's platform
# ($BUILDPLATFORM) and cross-compiles for $TARGETARCH with Debian's cross g++ and the
# target's multiarch -dev packages (scripts/deps.sh cross); the final stage only copies
# files, so no instruction ever runs on the target architecture.
#
# Run time: non-root (65532), works with a read-only root filesystem, config at
# /etc/tpt/tpt.yaml (mount a ConfigMap over the /etc/tpt directory).

# Pinned by digest (the multi-arch index of debian:bookworm); .github/dependabot.yml proposes
# updates. scripts/build-image.sh overrides it with a locally made bookworm image.
ARG BUILD_IMAGE=docker.io/library/debian:bookworm@sha256:8a8cd02c5912770b4980228a54d4aff9e4f986f1eb2525d2d371dec5232cefcc
# Set by BuildKit; buildah 1.28 needs it as --build-arg (scripts/build-image.sh passes it).
ARG BUILDPLATFORM

FROM --platform=$BUILDPLATFORM ${BUILD_IMAGE} AS build
ARG TARGETARCH
ARG JOBS=2
ENV DEBIAN_FRONTEND=noninteractive
# The dependency list is the repository's own (scripts/deps.sh), copied alone first so
# that this layer stays cached while the sources change. It includes libnftables-dev (of
# $TARGETARCH, Multi-Arch: same): `tpt capture` links libnftables, so the image's init
# container needs no nft or iptables binary, and image-rootfs.sh copies its libraries.
COPY scripts/deps.sh /src/scripts/deps.sh
RUN /src/scripts/deps.sh cross "${TARGETARCH:-$(dpkg --print-architecture)}" \
    && rm -rf /var/lib/apt/lists/*
COPY . /src
# RelWithDebInfo (-O2) as the `release` preset that the tests run against; stripped below.
RUN set -eu; \
    arch=${TARGETARCH:-$(dpkg --print-architecture)}; \
    set --; prefix=; \
    if [ "$arch" != "$(dpkg --print-architecture)" ]; then \
        case "$arch" in \
            arm64) triplet=aarch64-linux-gnu ;; \
            amd64) triplet=x86_64-linux-gnu ;; \
        esac; \
        prefix=$triplet-; \
        export PKG_CONFIG_LIBDIR=/usr/lib/$triplet/pkgconfig:/usr/share/pkgconfig; \
        set -- -DCMAKE_SYSTEM_NAME=Linux -DCMAKE_SYSTEM_PROCESSOR="${triplet%%-*}" \
            -DCMAKE_CXX_COMPILER="$triplet-g++" -DCMAKE_LIBRARY_ARCHITECTURE="$triplet"; \
    fi; \
    cmake -S /src -B /build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTPT_TESTS=OFF "$@"; \
    cmake --build /build --target tpt -j"${JOBS}"; \
    "${prefix}strip" -o /build/tpt.stripped /build/tpt; \
    /src/scripts/image-rootfs.sh /build/tpt.stripped /rootfs /src/deploy/image/tpt.yaml

FROM scratch AS runtime
COPY --from=build /rootfs/ /

LABEL org.opencontainers.image.title="tpt" \
      org.opencontainers.image.description="TLS SNI routing / HTTP CONNECT tunnelling TCP proxy sidecar" \
      org.opencontainers.image.source="https://github.com/tpt-proxy/tpt" \
      org.opencontainers.image.base.name="scratch"

# Numeric UID/GID so that Kubernetes can verify runAsNonRoot without reading /etc/passwd.
USER 65532:65532
# admin: /metrics /ready /healthz (named port `admin` in the chart); 8443: example proxy listener.
EXPOSE 9901/tcp 8443/tcp
# Exec form: there is no shell. SIGTERM goes straight to tpt (graceful drain, SPEC §8).
ENTRYPOINT ["/usr/local/bin/tpt"]
CMD ["--config", "/etc/tpt/tpt.yaml"]
