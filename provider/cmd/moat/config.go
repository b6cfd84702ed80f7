package main

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
func applyConfigFile(fs *flag.FlagSet, path string) error {
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
			return fmt.Errorf("config file %s: unknown setting %q (settings are the flag names of 'moat serve --help')", path, k)
		}
		if given[k] {
			continue // the command line wins
		}
		if err := fs.Set(k, configString(values[k])); err != nil {
			return fmt.Errorf("config file %s: %s: %w", path, k, err)
		}
	}
	return nil
}

func configString(v any) string {
	switch t := v.(type) {
	case []any:
		parts := make([]string, len(t))
		for i, e := range t {
			parts[i] = fmt.Sprint(e)
		}
		return strings.Join(parts, ",")
	case float64: // YAML numbers arrive as float64 through JSON
		if t == float64(int64(t)) {
			return fmt.Sprint(int64(t))
		}
	}
	return fmt.Sprint(v)
}

// listFlag is a comma-separated, repeatable list flag.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }

func (l *listFlag) Set(s string) error {
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			*l = append(*l, p)
		}
	}
	return nil
}

// parseServerFlags parses the flags of a TLS server command (serve,
// scanner): the command line, then the --config file under it, no
// positional arguments, and the three certificate files required.
func parseServerFlags(fs *flag.FlagSet, args []string, configFile, tlsCert, tlsKey, clientCA *string) error {
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *configFile != "" {
		if err := applyConfigFile(fs, *configFile); err != nil {
			return err
		}
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Sprintf("unexpected arguments: %s", strings.Join(fs.Args(), " "))}
	}
	if *tlsCert == "" || *tlsKey == "" || *clientCA == "" {
		return usageError{"--tls-cert, --tls-key and --client-ca are required (run 'moat dev-certs --out DIR' for development certificates)"}
	}
	return nil
}
