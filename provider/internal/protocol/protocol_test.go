package protocol

import (
	"encoding/json"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/open-policy-agent/frameworks/constraint/pkg/externaldata"
)

var lim = Limits{MaxBodyBytes: 1 << 20, MaxKeys: 3}

func TestDecodeAcceptsGatekeepersRequest(t *testing.T) {
	// Exactly what Gatekeeper's client marshals.
	body, err := json.Marshal(externaldata.NewProviderRequest([]string{"nginx", "ghcr.io/a/b:1"}))
	if err != nil {
		t.Fatal(err)
	}
	req, err := Decode(body, lim)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(req.Request.Keys, []string{"nginx", "ghcr.io/a/b:1"}) {
		t.Errorf("keys %v", req.Request.Keys)
	}
}

func TestDecodeRefuses(t *testing.T) {
	cases := []struct {
		body string
		code int
		says string
	}{
		{``, 400, "not valid JSON"},
		{`null`, 400, "apiVersion"},
		{`{"apiVersion":"externaldata.gatekeeper.sh/v1beta1","kind":"ProviderRequest","request":{"keys":["a","b","c","d"]}}`, 413, "too many keys: 4"},
		{`{"apiVersion":"externaldata.gatekeeper.sh/v1beta1","kind":"ProviderRequest","request":{"keys":"a"}}`, 400, "array of strings"},
		{`{"apiVersion":"externaldata.gatekeeper.sh/v1beta1","kind":"ProviderRequest","request":{"keys":[null, {}]}}`, 400, "array of strings"},
		{`{"apiVersion":7}`, 400, `"apiVersion" must be a string`},
	}
	for _, c := range cases {
		_, err := Decode([]byte(c.body), lim)
		re, ok := err.(*RequestError)
		if !ok || re.Status != c.code || !strings.Contains(re.Msg, c.says) {
			t.Errorf("Decode(%s) = %v, want %d saying %q", c.body, err, c.code, c.says)
		}
	}
}

// The encoder's output must decode with Gatekeeper's own types into what
// was put in, whatever the key.
func TestEncoderOutputIsAGatekeeperProviderResponse(t *testing.T) {
	keys := []string{"nginx", `we"ird\key`, "ünï\x01\u2028", "", "\xff"}
	var e Encoder
	e.Reset(nil)
	v, _ := ValueBody(map[string]string{"digest": "sha256:x"})
	for i, k := range keys {
		if i%2 == 0 {
			e.Item(k, v)
		} else {
			e.Item(k, ErrorBody("bad <"+k+">"))
		}
	}
	var pr externaldata.ProviderResponse
	if err := json.Unmarshal(e.Finish(), &pr); err != nil {
		t.Fatalf("%s: %v", e.Finish(), err)
	}
	if pr.APIVersion != APIVersion || pr.Kind != KindResponse || !pr.Response.Idempotent || len(pr.Response.Items) != len(keys) {
		t.Fatalf("response %+v", pr)
	}
	for i, it := range pr.Response.Items {
		want := keys[i]
		if want == "\xff" {
			want = "\ufffd" // as encoding/json decodes the request, too
		}
		if it.Key != want {
			t.Errorf("item %d key %q, want %q", i, it.Key, want)
		}
		if i%2 == 1 && it.Error != "bad <"+want+">" {
			t.Errorf("item %d error %q", i, it.Error)
		}
		if i%2 == 0 && !reflect.DeepEqual(it.Value, map[string]any{"digest": "sha256:x"}) {
			t.Errorf("item %d value %v", i, it.Value)
		}
	}
	var sys externaldata.ProviderResponse
	if err := json.Unmarshal(SystemError(`too "big"`), &sys); err != nil || sys.Response.SystemError != `too "big"` {
		t.Errorf("system error: %+v %v", sys, err)
	}
}

// FuzzDecode: no body panics; an accepted body yields keys within the limit
// whose encoded answer decodes with Gatekeeper's types and echoes each key.
func FuzzDecode(f *testing.F) {
	f.Add([]byte(`{"apiVersion":"externaldata.gatekeeper.sh/v1beta1","kind":"ProviderRequest","request":{"keys":["nginx","a\u0000b"]}}`))
	f.Add([]byte(`{"apiVersion":"externaldata.gatekeeper.sh/v1beta1","kind":"ProviderRequest","request":{"keys":[]}}`))
	f.Add([]byte(`{"kind":1}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := Decode(body, lim)
		if err != nil {
			re, ok := err.(*RequestError)
			if !ok || re.Status < 400 || re.Status >= 500 || re.Msg == "" {
				t.Fatalf("error %v is not a 4xx RequestError", err)
			}
			return
		}
		if n := len(req.Request.Keys); n == 0 || n > lim.MaxKeys {
			t.Fatalf("accepted %d keys", n)
		}
		var e Encoder
		e.Reset(nil)
		for _, k := range req.Request.Keys {
			e.Item(k, ErrorBody(k))
		}
		var pr externaldata.ProviderResponse
		if err := json.Unmarshal(e.Finish(), &pr); err != nil {
			t.Fatalf("encoded answer does not decode: %v", err)
		}
		for i, it := range pr.Response.Items {
			if it.Key != req.Request.Keys[i] || it.Error != req.Request.Keys[i] {
				t.Fatalf("item %d: key %q error %q, want %q", i, it.Key, it.Error, req.Request.Keys[i])
			}
		}
		_ = http.StatusOK
	})
}

// FuzzDecodeFast: whatever the fast path accepts, encoding/json decodes to
// the same request.
func FuzzDecodeFast(f *testing.F) {
	f.Add([]byte(`{"apiVersion":"externaldata.gatekeeper.sh/v1beta1","kind":"ProviderRequest","request":{"keys":["nginx","a:b@sha256:0"]}}`))
	f.Add([]byte(`{"request":{"keys":[]},"kind":"ProviderRequest"}`))
	f.Add([]byte(`{"kind":"a","kind":"b","request":{"keys":["x"]}}`))
	f.Add([]byte(`{"request":{"keys":["a\u0041"]}}`))
	f.Add([]byte(`{"request":{"keys":null}}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		fast, ok := decodeFast(body)
		if !ok {
			return
		}
		slow, err := decodeJSON(body)
		if err != nil {
			t.Fatalf("the fast path accepted %q, encoding/json refuses it: %v", body, err)
		}
		if fast.APIVersion != slow.APIVersion || fast.Kind != slow.Kind || !slices.Equal(fast.Request.Keys, slow.Request.Keys) {
			t.Fatalf("%q: fast %+v, encoding/json %+v", body, fast, slow)
		}
	})
}

func TestTheFastPathTakesGatekeepersRequests(t *testing.T) {
	body, _ := json.Marshal(externaldata.ProviderRequest{APIVersion: APIVersion, Kind: KindRequest,
		Request: externaldata.Request{Keys: []string{"nginx:1.27", "registry.example.com:5000/team/app@sha256:" + strings.Repeat("a", 64)}}})
	req, ok := decodeFast(body)
	if !ok || len(req.Request.Keys) != 2 || req.Request.Keys[1] != "registry.example.com:5000/team/app@sha256:"+strings.Repeat("a", 64) {
		t.Fatalf("%s: fast path %v, %+v", body, ok, req)
	}
	for _, other := range []string{
		` {"request":{"keys":["a"]}}`,                      // whitespace
		`{"request":{"keys":["a\u0041"]}}`,                 // an escape
		`{"request":{"keys":["a"]},"x":1}`,                 // another member
		`{"kind":"a","kind":"b","request":{"keys":["a"]}}`, // a duplicate
		`{"request":{"keys":["é"]}}`,                       // not ASCII
		`{"kind":"ProviderRequest"}`,                       // no request
	} {
		if _, ok := decodeFast([]byte(other)); ok {
			t.Errorf("%s: the fast path took it; encoding/json must", other)
		}
	}
}
