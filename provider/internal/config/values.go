package config

import (
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/sigstore/cosign/v2/pkg/cosign"
)

// List is a comma-separated, repeatable list flag.
type List []string

func (l *List) String() string { return strings.Join(*l, ",") }

func (l *List) Set(s string) error {
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			*l = append(*l, p)
		}
	}
	return nil
}

// severityFlag is "critical=0,high=5", or "none" for no limit. Empty is
// refused: it would accept every image without saying so.
type severityFlag map[string]int

func (f *severityFlag) String() string {
	if len(*f) == 0 {
		return "none"
	}
	var parts []string
	for k, v := range *f {
		parts = append(parts, k+"="+strconv.Itoa(v))
	}
	sort.Strings(parts)
	return strings.Join(parts, ",")
}

func (f *severityFlag) Set(s string) error {
	m := severityFlag{}
	switch strings.TrimSpace(s) {
	case "none": // said, never assumed: no severity is limited
		*f = m
		return nil
	case "":
		return fmt.Errorf("empty: name the limits, e.g. critical=0, or say none")
	}
	const want = "want severity=count, e.g. critical=0"
	err := eachSeverity(s, want, func(sev, v string) error {
		n, err := strconv.Atoi(v)
		if err != nil {
			return errors.New(want)
		}
		m[sev] = n
		return nil
	})
	if err != nil {
		return err
	}
	*f = m
	return nil
}

// eachSeverity calls set with each "severity=value" of a comma-separated
// list, the severity lower-cased and both trimmed; an error names the item,
// and an item without "=" gets want.
func eachSeverity(s, want string, set func(sev, value string) error) error {
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p == "" {
			continue
		}
		k, v, ok := strings.Cut(p, "=")
		err := errors.New(want)
		if ok {
			err = set(strings.ToLower(strings.TrimSpace(k)), strings.TrimSpace(v))
		}
		if err != nil {
			return fmt.Errorf("%q: %w", p, err)
		}
	}
	return nil
}

// graceFlag is "critical=72h,high=168h": per severity, a positive
// duration. Empty means no grace anywhere; a 0 or negative duration is
// refused (it would mean nothing or forever, never what was meant).
type graceFlag map[string]time.Duration

func (f *graceFlag) String() string {
	var parts []string
	for k, v := range *f {
		parts = append(parts, k+"="+v.String())
	}
	sort.Strings(parts)
	return strings.Join(parts, ",")
}

func (f *graceFlag) Set(s string) error {
	m := graceFlag{}
	const want = "want severity=duration, e.g. critical=72h"
	err := eachSeverity(s, want, func(sev, v string) error {
		d, err := time.ParseDuration(v)
		if err != nil {
			return errors.New(want)
		}
		if d <= 0 {
			return errors.New("the grace period must be positive (leave the severity out for none)")
		}
		m[sev] = d
		return nil
	})
	if err != nil {
		return err
	}
	*f = m
	return nil
}

// identityFlag is a repeatable keyless identity.
type identityFlag []cosign.Identity

func (f *identityFlag) String() string { return fmt.Sprint([]cosign.Identity(*f)) }

func (f *identityFlag) Set(s string) error {
	var id cosign.Identity
	// Split at ",field=" only, so a regular expression may hold commas.
	fields := []string{"issuer=", "subject=", "issuer-regexp=", "subject-regexp="}
	rest := s
	for rest != "" {
		var k string
		for _, f := range fields {
			if strings.HasPrefix(rest, f) {
				k = f
			}
		}
		if k == "" {
			return fmt.Errorf("%q: want issuer=URL,subject=ID (or issuer-regexp=, subject-regexp=)", s)
		}
		rest = rest[len(k):]
		end := len(rest)
		for _, f := range fields {
			if i := strings.Index(rest, ","+f); i >= 0 && i < end {
				end = i
			}
		}
		v := rest[:end]
		rest = strings.TrimPrefix(rest[end:], ",")
		switch k {
		case "issuer=":
			id.Issuer = v
		case "subject=":
			id.Subject = v
		case "issuer-regexp=":
			id.IssuerRegExp = v
		case "subject-regexp=":
			id.SubjectRegExp = v
		}
	}
	if (id.Issuer == "" && id.IssuerRegExp == "") || (id.Subject == "" && id.SubjectRegExp == "") {
		return fmt.Errorf("%q: an identity needs an issuer and a subject (exact or -regexp)", s)
	}
	*f = append(*f, id)
	return nil
}
