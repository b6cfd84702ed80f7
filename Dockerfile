# Moat image (`moat serve`, `moat scanner`, `moat node-scan`): a static binary on
# distroless, non-root, no shell. The provider writes nothing, so the pod
# runs with readOnlyRootFilesystem; scanning writes only to the volumes the
# chart mounts (/tmp, /var/lib/moat/vulndb).
# Base images are pinned by digest (the tag says what it is, the digest which
# one); update them in a reviewed commit. The node tests build the same image
# without Docker (test/e2e/cluster.MoatImage); test/chart/image_test.go keeps
# the two equal.
FROM golang:1.26@sha256:595c7847cff97c9a9e76f015083c481d26078f961c9c8dca3923132f51fe12f1 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY provider ./provider
ARG VERSION=dev
# moat_slim leaves out the development and CI commands (verify, bench, dev-registry, dev-vulndb): only what runs in a cluster.
RUN CGO_ENABLED=0 go build -trimpath -tags moat_slim -ldflags "-s -w -X main.version=${VERSION}" -o /out/moat ./provider/cmd/moat

FROM gcr.io/distroless/static-debian12:nonroot@sha256:d093aa3e30dbadd3efe1310db061a14da60299baff8450a17fe0ccc514a16639
COPY --from=build /out/moat /moat
LABEL org.opencontainers.image.title="moat" \
      org.opencontainers.image.source="https://github.com/moat-dev/moat" \
      org.opencontainers.image.licenses="Apache-2.0"
USER 65532:65532
# 8443 Gatekeeper's calls, 8444 node scanners' reports, 8080 metrics and probes.
EXPOSE 8443 8444 8080
ENTRYPOINT ["/moat"]
CMD ["serve", "--help"]
