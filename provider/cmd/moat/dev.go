//go:build !moat_slim

package main

// The full build registers the development and CI commands. verify alone
// links Gatekeeper's constraint framework, OPA and the Kubernetes CEL
// libraries; bench, dev-registry and dev-vulndb are a load generator and
// fixtures. None of them runs in a cluster.
func init() {
	for name, run := range map[string]runFunc{
		"dev-vulndb":   runDevVulnDB,
		"dev-registry": runDevRegistry,
		"bench":        runBench,
		"verify":       runVerify,
	} {
		c := devCommands[name]
		c.run = run
		commands[name] = c
	}
	// The minimal server `moat bench` compares the provider with.
	commands["bench-baseline-server"] = command{run: runBaselineServer, hidden: true}
}
