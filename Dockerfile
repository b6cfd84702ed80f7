# Moat provider image: a static binary on distroless, non-root, no shell.
# The binary writes nothing, so the pod can run with readOnlyRootFilesystem.
# Base images are referenced by tag here; the release pipeline pins them by
# digest (see CHANGELOG "Known gaps").
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY provider ./provider
ARG VERSION=dev
# moat_slim leaves out `moat verify` (Gatekeeper's framework, OPA): a CI tool, not part of admission.
RUN CGO_ENABLED=0 go build -trimpath -tags moat_slim -ldflags "-s -w -X main.version=${VERSION}" -o /out/moat ./provider/cmd/moat

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/moat /moat
USER 65532:65532
EXPOSE 8443 8080
ENTRYPOINT ["/moat"]
CMD ["serve", "--help"]
