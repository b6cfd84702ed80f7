package config

import (
	"flag"
	"fmt"
	"os"
	"sort"
	"strings"

	"sigs.k8s.io/yaml"
)

// applyConfigFile sets every flag named in the YAML file at path that was
// not given on the command line: the keys are the flag names, so
// `--max-keys 500` and `max-keys: 500` mean the same. Unknown keys are an
// error, so a typo never silently keeps a default.
func applyFile(fs *flag.FlagSet, path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("config file: %w", err)
	}
	var values map[string]any
	if err := yaml.Unmarshal(data, &values); err != nil {
		return fmt.Errorf("config file %s: %w", path, err)
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	keys := make([]string, 0, len(values))
	for k := range values {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if k == "config" || fs.Lookup(k) == nil {
			return fmt.Errorf("config file %s: unknown setting %q (settings are the flag names of '%s --help')", path, k, fs.Name())
		}
		if given[k] {
			continue // the command line wins
		}
		// A list sets the flag once per element: repeatable flags
		// (--signature-identity) take one value each time.
		vals := []any{values[k]}
		if l, ok := values[k].([]any); ok {
			vals = l
		}
		for _, v := range vals {
			if err := fs.Set(k, configString(v)); err != nil {
				return fmt.Errorf("config file %s: %s: %w", path, k, err)
			}
		}
	}
	return nil
}

func configString(v any) string {
	switch t := v.(type) {
	case map[string]any: // severity=count lists: scan-max: {critical: 0}
		parts := make([]string, 0, len(t))
		for k, e := range t {
			parts = append(parts, k+"="+configString(e))
		}
		sort.Strings(parts)
		return strings.Join(parts, ",")
	case float64: // YAML numbers arrive as float64 through JSON
		if t == float64(int64(t)) {
			return fmt.Sprint(int64(t))
		}
	}
	return fmt.Sprint(v)
}
