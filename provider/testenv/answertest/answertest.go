// Package answertest checks moat.v2 values in tests against the published
// JSON Schema (docs/protocol/moat.v2.schema.json), then decodes them
// strictly, so every test that reads an answer also proves it matches what
// the docs promise.
package answertest

import (
	"bytes"
	"encoding/json"
	"path/filepath"
	"runtime"
	"sync"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/moat-dev/moat/provider/internal/answer"
)

var schema = sync.OnceValues(func() (*jsonschema.Schema, error) {
	_, self, _, _ := runtime.Caller(0)
	path := filepath.Join(filepath.Dir(self), "..", "..", "..", "docs", "protocol", "moat.v2.schema.json")
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	return c.Compile(path)
})

// Check validates raw, a /validate value, against the schema and decodes
// it; any difference fails the test.
func Check(tb testing.TB, raw []byte) *answer.Value {
	tb.Helper()
	if err := Validate(raw); err != nil {
		tb.Fatalf("%s\n%v", raw, err)
	}
	v, err := answer.Decode(raw)
	if err != nil {
		tb.Fatalf("%s\n%v", raw, err)
	}
	return v
}

// Validate reports how raw breaks the schema.
func Validate(raw []byte) error {
	s, err := schema()
	if err != nil {
		return err
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
	if err != nil {
		return err
	}
	return s.Validate(doc)
}

// Encode is json.Marshal for tests.
func Encode(tb testing.TB, v any) []byte {
	tb.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}
