package moatingresshttpsonly

import data.lib.moat.review

ingress {
	review.object.kind == "Ingress"
}

has_tls {
	count(review.object.spec.tls) > 0
}

violation[{"msg": "Ingress must terminate TLS: spec.tls is empty"}] {
	ingress
	not has_tls
}

violation[{"msg": "Ingress must set the annotation kubernetes.io/ingress.allow-http: \"false\""}] {
	ingress
	not review.object.metadata.annotations["kubernetes.io/ingress.allow-http"] == "false"
}
