package lib.moat.review

# Shared by every Moat template and inlined into it by src/gen.

# is_delete: a DELETE has nothing to judge (deleting a bad object must work).
is_delete {
	input.review.operation == "DELETE"
}

# object under review; empty on DELETE.
object := {} {
	is_delete
} else := o {
	o := input.review.object
	is_object(o)
} else := {}

params := p {
	p := input.parameters
	is_object(p)
} else := {}

# namespace of the object: its own, else the request's; empty on DELETE.
namespace := "" {
	is_delete
} else := ns {
	ns := object.metadata.namespace
	ns != ""
} else := ns {
	ns := input.review.namespace
} else := ""
