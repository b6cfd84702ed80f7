package lookup

// Schema names the version of the /validate value. Fields are only ever
// added within a version; a rename or removal makes a new version.
const Schema = "moat.v1"

// Value is the JSON object /validate answers for a key that resolved.
//
// The scan and signature fields (status, findings, signature) are added by
// the scanner and signature checks; until those are configured they are
// absent, never guessed.
type Value struct {
	Schema string `json:"schema"`
	// Reference is the canonical reference: "docker.io/library/nginx:1.27".
	Reference string `json:"reference"`
	// Digest is what the tag points at now, or the digest the key pinned.
	Digest string `json:"digest"`
	// Pinned is Reference with the digest: "docker.io/library/nginx:1.27@sha256:…".
	Pinned string `json:"pinned"`
	// MediaType of the manifest: an index (multi-arch) or an image manifest.
	// Absent for keys that pinned a digest (no registry call was made).
	MediaType string `json:"mediaType,omitempty"`
	// ResolvedAt is when the registry answered (RFC 3339, UTC); absent for
	// keys that pinned a digest.
	ResolvedAt string `json:"resolvedAt,omitempty"`
}
