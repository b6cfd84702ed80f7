package credentials

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"os"
	"regexp"
	"strings"
	"sync"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/ecr"
	"github.com/google/go-containerregistry/pkg/authn"
)

// awsDetected: EKS injects these for IRSA and for Pod Identity.
func awsDetected() bool {
	return (os.Getenv("AWS_WEB_IDENTITY_TOKEN_FILE") != "" && os.Getenv("AWS_ROLE_ARN") != "") ||
		os.Getenv("AWS_CONTAINER_CREDENTIALS_FULL_URI") != ""
}

// ecrHost is an ECR registry host: account, region.
var ecrHost = regexp.MustCompile(`^([0-9]{12})\.dkr\.ecr(?:-fips)?\.([a-z0-9-]+)\.amazonaws\.com(?:\.cn)?$`)

// ecrSource asks ECR for an authorization token with the credentials of
// the AWS SDK's default chain (IRSA's web identity, Pod Identity, the
// node's instance profile).
type ecrSource struct {
	http *http.Client
	mu   sync.Mutex
	cfgs map[string]*aws.Config // by region
}

func newAWS(opts Options) (source, error) {
	return &ecrSource{http: opts.Identity, cfgs: map[string]*aws.Config{}}, nil
}

func (e *ecrSource) name() string { return "AWS (ECR)" }

func (e *ecrSource) hint() string {
	return "give the role of IRSA or EKS Pod Identity ecr:GetAuthorizationToken and pull rights on the repository (docs/registries.md#eks)"
}

// region is the host's region; "" for a host that does not name one (the
// SDK's configured region is used).
func region(host string) string {
	if m := ecrHost.FindStringSubmatch(host); m != nil {
		return m[2]
	}
	return ""
}

// scope: one token serves every registry of a region the role may read.
func (e *ecrSource) scope(host string) string { return "region:" + region(host) }

func (e *ecrSource) config(ctx context.Context, region string) (*aws.Config, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if c := e.cfgs[region]; c != nil {
		return c, nil
	}
	var opts []func(*config.LoadOptions) error
	if e.http != nil {
		opts = append(opts, config.WithHTTPClient(e.http))
	}
	if region != "" {
		opts = append(opts, config.WithRegion(region))
	}
	c, err := config.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, err
	}
	if c.Region == "" {
		return nil, errors.New("no region: the registry host names none and AWS_REGION is not set")
	}
	e.cfgs[region] = &c
	return &c, nil
}

func (e *ecrSource) fetch(ctx context.Context, host string) (Token, error) {
	cfg, err := e.config(ctx, region(host))
	if err != nil {
		return Token{}, fmt.Errorf("AWS configuration: %w", err)
	}
	out, err := ecr.NewFromConfig(*cfg).GetAuthorizationToken(ctx, &ecr.GetAuthorizationTokenInput{})
	if err != nil {
		return Token{}, fmt.Errorf("ECR GetAuthorizationToken: %w", errorLine(err))
	}
	if len(out.AuthorizationData) == 0 || out.AuthorizationData[0].AuthorizationToken == nil || out.AuthorizationData[0].ExpiresAt == nil {
		return Token{}, errors.New("ECR GetAuthorizationToken: the answer holds no token")
	}
	d := out.AuthorizationData[0]
	raw, err := base64.StdEncoding.DecodeString(*d.AuthorizationToken)
	if err != nil {
		return Token{}, errors.New("ECR GetAuthorizationToken: the token is not base64")
	}
	user, pass, ok := strings.Cut(string(raw), ":")
	if !ok {
		return Token{}, errors.New("ECR GetAuthorizationToken: the token is not user:password")
	}
	return Token{Auth: authn.AuthConfig{Username: user, Password: pass}, Expires: *d.ExpiresAt}, nil
}
