package lib.moat.images

# Image reference normalisation, inlined by src/gen. Its CEL twin is
# the variables of src/templates/moattrustedregistries/policy.cel.yaml.
#
# repository("nginx:1.27")             = "docker.io/library/nginx"
# repository("index.docker.io/x/y@sha256:…") = "docker.io/x/y"
# repository("myregistry.io:5000/a/b:c") = "myregistry.io:5000/a/b"
#
# The first path component is a registry host when it has a "." or ":" or
# is "localhost" (the rule of Docker and the kubelet); otherwise the image
# is on Docker Hub, and a one-component path gets "library/".
repository(img) := repo {
	s := split(img, "@")[0]
	hp := host_path(s)
	full := concat("/", [hp[0], library(hp[0], hp[1])])
	repo := strip_tag(full)
}

host_path(s) := [h, p] {
	parts := split(s, "/")
	count(parts) > 1
	is_host(parts[0])
	h := docker_io(parts[0])
	p := substring(s, count(parts[0]) + 1, -1)
} else := ["docker.io", s]

is_host(x) {
	contains(x, ".")
}

is_host(x) {
	contains(x, ":")
}

is_host("localhost")

docker_io("index.docker.io") := "docker.io"

docker_io(h) := h {
	h != "index.docker.io"
}

library(h, p) := concat("/", ["library", p]) {
	h == "docker.io"
	not contains(p, "/")
} else := p

strip_tag(r) := substring(r, 0, i) {
	i := max(indexof_n(r, ":"))
	i > last_slash(r)
} else := r

last_slash(r) := max(indexof_n(r, "/"))

# under(repo, prefix): repo is prefix or lies below it, on whole path
# segments, so "myregistry.io" never admits "myregistry.io.evil.com/x".
under(repo, prefix) {
	p := trim_suffix(prefix, "/")
	repo == p
}

under(repo, prefix) {
	p := trim_suffix(prefix, "/")
	startswith(repo, concat("", [p, "/"]))
}
