package protocol

import "strings"

// decodeFast reads the one form a ProviderRequest takes from Gatekeeper's
// client (json.Marshal of externaldata.ProviderRequest): a compact object of
// apiVersion, kind and request.keys, whose strings are printable ASCII
// without escapes. It copies the body into one string and slices every key
// from it: one allocation for the request, where encoding/json makes one per
// key and scans the body twice. Anything else (whitespace, escapes, other
// members, duplicates, non-ASCII) returns ok false and is decoded by
// encoding/json, which also words the errors; FuzzDecodeFast holds the two
// to the same result.
func decodeFast(body []byte) (req ProviderRequest, ok bool) {
	s := string(body)
	p := fastParser{s: s}
	if !p.byte('{') {
		return req, false
	}
	var seenVersion, seenKind, seenRequest bool
	for first := true; ; first = false {
		if p.byte('}') {
			return req, p.i == len(s) && seenRequest
		}
		if !first && !p.byte(',') {
			return req, false
		}
		name, ok := p.str()
		if !ok || !p.byte(':') {
			return req, false
		}
		switch {
		case name == "apiVersion" && !seenVersion:
			seenVersion = true
			if req.APIVersion, ok = p.str(); !ok {
				return req, false
			}
		case name == "kind" && !seenKind:
			seenKind = true
			if req.Kind, ok = p.str(); !ok {
				return req, false
			}
		case name == "request" && !seenRequest:
			seenRequest = true
			if req.Request.Keys, ok = p.keys(); !ok {
				return req, false
			}
		default:
			return req, false
		}
	}
}

type fastParser struct {
	s string
	i int
}

func (p *fastParser) byte(c byte) bool {
	if p.i < len(p.s) && p.s[p.i] == c {
		p.i++
		return true
	}
	return false
}

// str reads a string of printable ASCII other than `"` and `\`.
func (p *fastParser) str() (string, bool) {
	if !p.byte('"') {
		return "", false
	}
	start := p.i
	for ; p.i < len(p.s); p.i++ {
		switch c := p.s[p.i]; {
		case c == '"':
			p.i++
			return p.s[start : p.i-1], true
		case c < 0x20 || c > 0x7e || c == '\\':
			return "", false
		}
	}
	return "", false
}

// keys reads {"keys":[...]}: a non-null array of strings, possibly empty.
func (p *fastParser) keys() ([]string, bool) {
	if !p.byte('{') {
		return nil, false
	}
	if name, ok := p.str(); !ok || name != "keys" || !p.byte(':') || !p.byte('[') {
		return nil, false
	}
	keys := make([]string, 0, 1+strings.Count(p.s[p.i:], `","`))
	for first := true; ; first = false {
		if p.byte(']') {
			return keys, p.byte('}')
		}
		if !first && !p.byte(',') {
			return nil, false
		}
		k, ok := p.str()
		if !ok {
			return nil, false
		}
		keys = append(keys, k)
	}
}
