package cluster

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"sort"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Image is a container image built without Docker: one layer of files on
// an empty base, and the configuration a Dockerfile's final stage would
// give it.
type Image struct {
	Files      []File
	User       string   // numeric "uid:gid": runAsNonRoot needs a number
	Entrypoint []string // ENTRYPOINT, exec form
	Cmd        []string // CMD, exec form
	Ports      []string // EXPOSE, "8443/tcp"
	Labels     map[string]string
	Env        []string
}

// File is one entry of an image's layer: a copy of a file of this
// machine (From), bytes (Data), a directory (Dir) or a symbolic link
// (Link).
type File struct {
	Path string // absolute, inside the image
	From string
	Data []byte
	Dir  bool
	Link string
	Mode int64 // 0: 0755 for directories and copies of executables, 0644 otherwise
}

// epoch is every entry's time, so the same files make the same digest.
var epoch = time.Unix(0, 0).UTC()

// Build assembles the image for linux/amd64.
func (im Image) Build() (v1.Image, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	dirs := map[string]bool{"/": true}
	var mkdirs func(dir string) error
	mkdirs = func(dir string) error {
		if dirs[dir] {
			return nil
		}
		if err := mkdirs(path.Dir(dir)); err != nil {
			return err
		}
		dirs[dir] = true
		return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: strings.TrimPrefix(dir, "/") + "/", Mode: 0o755, ModTime: epoch})
	}
	files := append([]File(nil), im.Files...)
	sort.Slice(files, func(i, j int) bool { return files[i].Path < files[j].Path })
	for _, f := range files {
		if !path.IsAbs(f.Path) || path.Clean(f.Path) != f.Path {
			return nil, fmt.Errorf("image file %q: want a clean absolute path", f.Path)
		}
		name := strings.TrimPrefix(f.Path, "/")
		if f.Dir {
			if err := mkdirs(f.Path); err != nil {
				return nil, err
			}
			if f.Mode != 0 { // a directory with a mode of its own, such as /tmp
				if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: name + "/", Mode: f.Mode, ModTime: epoch}); err != nil {
					return nil, err
				}
			}
			continue
		}
		if err := mkdirs(path.Dir(f.Path)); err != nil {
			return nil, err
		}
		if f.Link != "" {
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: name, Linkname: f.Link, Mode: 0o777, ModTime: epoch}); err != nil {
				return nil, err
			}
			continue
		}
		data, mode := f.Data, f.Mode
		if f.From != "" {
			b, err := os.ReadFile(f.From)
			if err != nil {
				return nil, err
			}
			st, err := os.Stat(f.From)
			if err != nil {
				return nil, err
			}
			data = b
			if mode == 0 && st.Mode()&0o111 != 0 {
				mode = 0o755
			}
		}
		if mode == 0 {
			mode = 0o644
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Size: int64(len(data)), Mode: mode, ModTime: epoch}); err != nil {
			return nil, err
		}
		if _, err := tw.Write(data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	layerTar := buf.Bytes()
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	}, tarball.WithCompressionLevel(gzip.BestSpeed), tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, err
	}
	img, err := mutate.AppendLayers(mutate.MediaType(empty.Image, types.OCIManifestSchema1), layer)
	if err != nil {
		return nil, err
	}
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	cfg, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cfg = cfg.DeepCopy()
	cfg.OS, cfg.Architecture = "linux", "amd64"
	cfg.Created = v1.Time{Time: epoch}
	cfg.Config.User = im.User
	cfg.Config.Entrypoint = im.Entrypoint
	cfg.Config.Cmd = im.Cmd
	cfg.Config.Labels = im.Labels
	cfg.Config.Env = append([]string{"PATH=/usr/local/bin:/usr/bin:/bin"}, im.Env...)
	if len(im.Ports) > 0 {
		cfg.Config.ExposedPorts = map[string]struct{}{}
		for _, p := range im.Ports {
			cfg.Config.ExposedPorts[p] = struct{}{}
		}
	}
	return mutate.ConfigFile(img, cfg)
}

// caBundle is this machine's CA certificates (Debian's ca-certificates),
// what a distroless base carries for TLS to registries.
const caBundle = "/etc/ssl/certs/ca-certificates.crt"

// nonroot is the account distroless's nonroot images name, 65532.
var nonroot = []File{
	{Path: "/etc/passwd", Data: []byte("root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n")},
	{Path: "/etc/group", Data: []byte("root:x:0:\nnonroot:x:65532:\n")},
	{Path: "/etc/ssl/certs/ca-certificates.crt", From: caBundle},
	{Path: "/tmp", Dir: true, Mode: 0o1777},
}

// MoatImage is Moat's image built from binary (`go build -tags moat_slim`,
// static), the same image the Dockerfile describes: the binary at /moat on
// a base with CA certificates and the nonroot account, user 65532, the
// provider's ports. TestTheImageBuildMatchesTheDockerfile keeps the two
// equal.
func MoatImage(binary string) Image {
	return Image{
		Files:      append([]File{{Path: "/moat", From: binary, Mode: 0o755}}, nonroot...),
		User:       "65532:65532",
		Entrypoint: []string{"/moat"},
		Cmd:        []string{"serve", "--help"},
		Ports:      []string{"8443/tcp", "8444/tcp", "8080/tcp"},
		Labels: map[string]string{
			"org.opencontainers.image.title":    "moat",
			"org.opencontainers.image.source":   "https://github.com/moat-dev/moat",
			"org.opencontainers.image.licenses": "Apache-2.0",
		},
	}
}

// GatekeeperImage is the Gatekeeper manager's image as its Dockerfile
// makes it: /manager on distroless static, user 65532.
func GatekeeperImage(manager string) Image {
	return Image{
		Files:      append([]File{{Path: "/manager", From: manager, Mode: 0o755}}, nonroot...),
		User:       "65532:65532",
		Entrypoint: []string{"/manager"},
	}
}

// StaticImage is one static program at /name, run as user 65532.
func StaticImage(name, binary string, ports ...string) Image {
	return Image{
		Files:      append([]File{{Path: "/" + name, From: binary, Mode: 0o755}}, nonroot...),
		User:       "65532:65532",
		Entrypoint: []string{"/" + name},
		Ports:      ports,
	}
}

// LinkedImage is a dynamically linked program of this machine (from its
// Debian package) at the same path, with the shared libraries ldd names and
// links named aliases to it, run as user.
func LinkedImage(binary string, aliases []string, user string) (Image, error) {
	out, err := exec.Command("ldd", binary).Output()
	if err != nil {
		return Image{}, fmt.Errorf("ldd %s: %w", binary, err)
	}
	im := Image{Files: append([]File{{Path: binary, From: binary, Mode: 0o755}}, nonroot...), User: user}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		lib := ""
		switch {
		case len(f) >= 3 && f[1] == "=>" && strings.HasPrefix(f[2], "/"):
			lib = f[2]
		case len(f) >= 1 && strings.HasPrefix(f[0], "/"): // the loader
			lib = f[0]
		}
		if lib != "" {
			im.Files = append(im.Files, File{Path: lib, From: lib, Mode: 0o755})
		}
	}
	for _, a := range aliases {
		im.Files = append(im.Files, File{Path: a, Link: binary})
	}
	return im, nil
}

// ImageFile finds the regular file at path (no leading slash) in img's
// file system and returns its header; an error when it is missing or not
// executable.
func ImageFile(img v1.Image, path string) (*tar.Header, error) {
	rc := mutate.Extract(img)
	defer rc.Close()
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nil, fmt.Errorf("%s: not in the image", path)
		}
		if err != nil {
			return nil, err
		}
		if h.Name == path {
			if h.Typeflag != tar.TypeReg || h.Mode&0o111 == 0 {
				return nil, fmt.Errorf("%s: not an executable file (mode %o, type %c)", path, h.Mode, h.Typeflag)
			}
			return h, nil
		}
	}
}
