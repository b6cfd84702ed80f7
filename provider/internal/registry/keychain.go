package registry

import (
	"fmt"
	"os"

	"github.com/docker/cli/cli/config/configfile"
	"github.com/google/go-containerregistry/pkg/authn"

	"github.com/moat-dev/moat/provider/internal/credentials"
)

// fileKeychain reads credentials from one docker config file: a
// ~/.docker/config.json or the .dockerconfigjson key of a Kubernetes
// image-pull secret mounted as a file (both are {"auths": {...}}). The file
// is read on every Resolve, which happens once per registry session (resolution) or fetch (scans, signatures), so a
// rotated secret is picked up without a restart.
type fileKeychain struct{ path string }

func (k fileKeychain) Resolve(target authn.Resource) (authn.Authenticator, error) {
	f, err := os.Open(k.path)
	if err != nil {
		return nil, fmt.Errorf("registry credentials: %w", err)
	}
	defer f.Close()
	cf := configfile.New(k.path)
	if err := cf.LoadFromReader(f); err != nil {
		return nil, fmt.Errorf("registry credentials %s: %w", k.path, err)
	}
	auth, ok, err := credentials.FromDockerConfig(cf, target.RegistryStr())
	if err != nil {
		return nil, fmt.Errorf("registry credentials %s: %w", k.path, err)
	}
	if !ok {
		return authn.Anonymous, nil
	}
	return auth, nil
}
