package testenv

import "github.com/moat-dev/moat/provider/internal/certs"

// CA and Leaf are the throw-away certificate authority of `moat dev-certs`,
// for tests outside provider/ (the end-to-end harness issues the API
// server's, its admin's and Gatekeeper's certificates with it).
type (
	CA   = certs.CA
	Leaf = certs.Leaf
)

// NewCA is certs.NewCA.
var NewCA = certs.NewCA
