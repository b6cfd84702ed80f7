// Command pause is the node harness's sandbox program (the "pause"
// container every pod starts first, to hold its namespaces): it waits for
// SIGTERM or SIGINT and reaps orphans, as Kubernetes' own pause does. The
// node tests also run it as the workload image that must start.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
	for s := range sigs {
		if s != syscall.SIGCHLD {
			return
		}
		for { // as PID 1 of a shared PID namespace, reap every exited child
			pid, err := syscall.Wait4(-1, nil, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
