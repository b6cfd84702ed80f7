// Package protocol holds Gatekeeper's external-data wire format: decoding a
// ProviderRequest under limits, and encoding a ProviderResponse from
// pre-encoded item bodies.
//
// The types mirror github.com/open-policy-agent/frameworks/constraint/pkg/externaldata
// (tests decode our output with those types). They are not imported here
// because that package pulls the whole OPA compiler into the binary.
package protocol

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
)

// APIVersion and the kinds of the external-data protocol.
const (
	APIVersion       = "externaldata.gatekeeper.sh/v1beta1"
	apiVersionAlpha  = "externaldata.gatekeeper.sh/v1alpha1"
	KindRequest      = "ProviderRequest"
	KindResponse     = "ProviderResponse"
	maxKeyDisplayLen = 80
)

// Limits bounds what one request may carry. Gatekeeper imposes none.
type Limits struct {
	MaxBodyBytes int64
	MaxKeys      int
}

// ProviderRequest is the body Gatekeeper POSTs.
type ProviderRequest struct {
	APIVersion string  `json:"apiVersion"`
	Kind       string  `json:"kind"`
	Request    Request `json:"request"`
}

// Request carries the keys to look up.
type Request struct {
	Keys []string `json:"keys"`
}

// RequestError is a request that is not a valid ProviderRequest. Status is
// the HTTP status to answer with; the message goes into systemError.
type RequestError struct {
	Status int
	Msg    string
}

func (e *RequestError) Error() string { return e.Msg }

func badRequest(format string, args ...any) *RequestError {
	return &RequestError{Status: http.StatusBadRequest, Msg: fmt.Sprintf(format, args...)}
}

// Decode parses body as a ProviderRequest and checks it against lim.
// body must already be bounded by lim.MaxBodyBytes (see ReadBody).
func Decode(body []byte, lim Limits) (*ProviderRequest, error) {
	req, ok := decodeFast(body)
	if !ok {
		var err error
		if req, err = decodeJSON(body); err != nil {
			return nil, err
		}
	}
	return check(&req, lim)
}

// decodeJSON decodes any JSON body with encoding/json.
func decodeJSON(body []byte) (ProviderRequest, error) {
	var req ProviderRequest
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&req); err != nil {
		var typeErr *json.UnmarshalTypeError
		if errors.As(err, &typeErr) && strings.HasPrefix(typeErr.Field, "request.keys") {
			return req, badRequest("invalid ProviderRequest: request.keys must be an array of strings (image references), got %s", typeErr.Value)
		}
		if errors.As(err, &typeErr) {
			return req, badRequest("invalid ProviderRequest: field %q must be %s, got %s", typeErr.Field, describeGoType(typeErr.Type.String()), typeErr.Value)
		}
		return req, badRequest("invalid ProviderRequest: body is not valid JSON: %v", err)
	}
	if dec.More() {
		return req, badRequest("invalid ProviderRequest: unexpected data after the JSON object")
	}
	return req, nil
}

// check holds a decoded request to the protocol and to lim.
func check(req *ProviderRequest, lim Limits) (*ProviderRequest, error) {
	if req.APIVersion != APIVersion && req.APIVersion != apiVersionAlpha {
		return nil, badRequest("invalid ProviderRequest: apiVersion is %q, want %q", clip(req.APIVersion), APIVersion)
	}
	if req.Kind != KindRequest {
		return nil, badRequest("invalid ProviderRequest: kind is %q, want %q", clip(req.Kind), KindRequest)
	}
	if len(req.Request.Keys) == 0 {
		return nil, badRequest("invalid ProviderRequest: request.keys is empty; send at least one image reference")
	}
	if lim.MaxKeys > 0 && len(req.Request.Keys) > lim.MaxKeys {
		return nil, &RequestError{
			Status: http.StatusRequestEntityTooLarge,
			Msg:    fmt.Sprintf("too many keys: %d in one request, the limit is %d (--max-keys)", len(req.Request.Keys), lim.MaxKeys),
		}
	}
	return req, nil
}

func describeGoType(t string) string {
	switch t {
	case "string":
		return "a string"
	case "[]string":
		return "an array of strings"
	}
	return t
}

func clip(s string) string {
	if len(s) > maxKeyDisplayLen {
		return s[:maxKeyDisplayLen] + "…"
	}
	return s
}

// Encoder writes a ProviderResponse. Item bodies arrive pre-encoded (see
// ValueBody and ErrorBody) so that a cached answer costs a copy, not a
// json.Marshal.
type Encoder struct {
	buf   []byte
	items int
}

const responseHead = `{"apiVersion":"` + APIVersion + `","kind":"` + KindResponse + `","response":{"idempotent":true,"items":[`

// Reset starts a new response in buf's storage.
func (e *Encoder) Reset(buf []byte) {
	e.buf = append(buf[:0], responseHead...)
	e.items = 0
}

// Item appends {"key":key,<body>} where body is a fragment from ValueBody
// or ErrorBody.
func (e *Encoder) Item(key string, body []byte) {
	if e.items > 0 {
		e.buf = append(e.buf, ',')
	}
	e.items++
	e.buf = append(e.buf, `{"key":`...)
	e.buf = AppendString(e.buf, key)
	e.buf = append(e.buf, ',')
	e.buf = append(e.buf, body...)
	e.buf = append(e.buf, '}')
}

// Finish closes the response and returns the encoded bytes.
func (e *Encoder) Finish() []byte {
	e.buf = append(e.buf, "]}}"...)
	return e.buf
}

// ValueBody is the item fragment `"value":<json of v>`.
func ValueBody(v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return append([]byte(`"value":`), b...), nil
}

// ErrorBody is the item fragment `"error":"msg"`.
func ErrorBody(msg string) []byte {
	return AppendString([]byte(`"error":`), msg)
}

// SystemError is a whole response carrying only systemError.
func SystemError(msg string) []byte {
	b := []byte(`{"apiVersion":"` + APIVersion + `","kind":"` + KindResponse + `","response":{"idempotent":true,"systemError":`)
	b = AppendString(b, msg)
	return append(b, "}}"...)
}

// AppendString appends s as a JSON string. Plain printable ASCII, which is
// what image references are, takes a copy; anything else goes through
// encoding/json so escapes and invalid UTF-8 are handled as Go does.
func AppendString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c > 0x7e || c == '"' || c == '\\' {
			q, _ := json.Marshal(s) // never fails for a string
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}
