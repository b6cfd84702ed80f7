package credentials

import (
	"github.com/docker/cli/cli/config/configfile"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
)

// FromDockerConfig is the credential a docker config (a config.json, a
// .dockerconfigjson or a legacy .dockercfg) holds for host, and whether it
// holds one. Docker Hub's entry is looked up under its index URL, as docker
// writes it.
func FromDockerConfig(cf *configfile.ConfigFile, host string) (authn.Authenticator, bool, error) {
	key := host
	if key == name.DefaultRegistry {
		key = authn.DefaultAuthKey
	}
	cfg, err := cf.GetAuthConfig(key)
	if err != nil {
		return nil, false, err
	}
	if cfg.Username == "" && cfg.Password == "" && cfg.Auth == "" && cfg.IdentityToken == "" && cfg.RegistryToken == "" {
		return nil, false, nil
	}
	return authn.FromConfig(authn.AuthConfig{
		Username:      cfg.Username,
		Password:      cfg.Password,
		Auth:          cfg.Auth,
		IdentityToken: cfg.IdentityToken,
		RegistryToken: cfg.RegistryToken,
	}), true, nil
}
