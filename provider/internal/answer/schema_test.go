package answer

import (
	"bytes"
	"encoding/json"
	"flag"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite docs/protocol/*.schema.json from the Go types")

// The published JSON Schemas are generated from Value, Node and the
// comments of answer.go, so they cannot drift: make test fails when they
// differ.
func TestSchemaIsGeneratedFromTheType(t *testing.T) {
	for file, got := range map[string][]byte{
		"../../../docs/protocol/moat.v2.schema.json":      generateSchema(t, reflect.TypeFor[Value](), Schema, "Value"),
		"../../../docs/protocol/moat.node.v1.schema.json": generateSchema(t, reflect.TypeFor[Node](), NodeSchema, "Node"),
	} {
		if *update {
			if err := os.WriteFile(file, got, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		cur, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(cur, got) {
			t.Fatalf("%s is out of date: go test ./provider/internal/answer -run Schema -update", file)
		}
	}
}

func generateSchema(t *testing.T, typ reflect.Type, name, doc string) []byte {
	g := schemaGen{docs: fieldDocs(t), defs: map[string]any{}}
	root := g.object(typ)
	root["$schema"] = "https://json-schema.org/draft/2020-12/schema"
	root["$id"] = "https://moat.dev/schemas/" + name + ".schema.json"
	root["title"] = name
	root["description"] = g.docs[doc] + " " + g.docs["Value.Scan"] + " See docs/protocol.md."
	root["$defs"] = g.defs
	b, err := json.MarshalIndent(root, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	return append(b, '\n')
}

// fieldDocs maps "Type" and "Type.Field" to their doc comments in answer.go.
func fieldDocs(t *testing.T) map[string]string {
	f, err := parser.ParseFile(token.NewFileSet(), "answer.go", nil, parser.ParseComments)
	if err != nil {
		t.Fatal(err)
	}
	docs := map[string]string{}
	oneLine := func(g *ast.CommentGroup) string { return strings.Join(strings.Fields(g.Text()), " ") }
	for _, d := range f.Decls {
		gd, ok := d.(*ast.GenDecl)
		if !ok || gd.Tok != token.TYPE {
			continue
		}
		for _, s := range gd.Specs {
			ts := s.(*ast.TypeSpec)
			if gd.Doc != nil {
				docs[ts.Name.Name] = oneLine(gd.Doc)
			}
			st, ok := ts.Type.(*ast.StructType)
			if !ok {
				continue
			}
			for _, fld := range st.Fields.List {
				if fld.Doc == nil {
					continue
				}
				name := ""
				switch {
				case len(fld.Names) > 0:
					name = fld.Names[0].Name
				default: // embedded: *Scan or Resolution
					name = strings.TrimPrefix(types(fld.Type), "*")
				}
				docs[ts.Name.Name+"."+name] = oneLine(fld.Doc)
			}
		}
	}
	return docs
}

func types(e ast.Expr) string {
	switch x := e.(type) {
	case *ast.StarExpr:
		return "*" + types(x.X)
	case *ast.Ident:
		return x.Name
	}
	return ""
}

type schemaGen struct {
	docs map[string]string
	defs map[string]any
}

// object is the schema of a struct: embedded structs' members are its own;
// an embedded pointer's members are optional but come together.
func (g schemaGen) object(t reflect.Type) map[string]any {
	props := map[string]any{}
	var required []string
	dependent := map[string]any{}
	for i := range t.NumField() {
		f := t.Field(i)
		if f.Anonymous {
			et := f.Type
			inner := g.object(deref(et))
			for k, v := range inner["properties"].(map[string]any) {
				props[k] = v
			}
			req, _ := inner["required"].([]string)
			if et.Kind() == reflect.Pointer && len(req) > 0 {
				dependent[req[0]] = req[1:]
			} else {
				required = append(required, req...)
			}
			continue
		}
		name, opts, _ := strings.Cut(f.Tag.Get("json"), ",")
		p := g.property(f.Type, f)
		if d := g.docs[t.Name()+"."+f.Name]; d != "" {
			p["description"] = d
		}
		props[name] = p
		if !strings.Contains(opts, "omitempty") {
			required = append(required, name)
		}
	}
	o := map[string]any{"type": "object", "properties": props, "additionalProperties": false}
	if len(required) > 0 {
		o["required"] = required
	}
	if len(dependent) > 0 {
		o["dependentRequired"] = dependent
	}
	return o
}

func deref(t reflect.Type) reflect.Type {
	if t.Kind() == reflect.Pointer {
		return t.Elem()
	}
	return t
}

func (g schemaGen) property(t reflect.Type, f reflect.StructField) map[string]any {
	t = deref(t)
	p := map[string]any{}
	switch {
	case t == reflect.TypeFor[time.Time]():
		p["type"], p["format"] = "string", "date-time"
	case t.Kind() == reflect.String:
		p["type"] = "string"
		if e := f.Tag.Get("enum"); e != "" {
			p["enum"] = strings.Split(e, ",")
		}
		if s := f.Tag.Get("pattern"); s != "" {
			p["pattern"] = s
		}
		if s := f.Tag.Get("format"); s != "" {
			p["format"] = s
		}
	case t.Kind() == reflect.Int:
		p["type"] = "integer"
		if f.Tag.Get("minimum") == "0" {
			p["minimum"] = 0
		}
	case t.Kind() == reflect.Bool:
		p["type"] = "boolean"
	case t.Kind() == reflect.Slice:
		p["type"] = "array"
		p["items"] = g.property(t.Elem(), reflect.StructField{})
	case t.Kind() == reflect.Struct:
		if _, ok := g.defs[t.Name()]; !ok {
			g.defs[t.Name()] = nil // recursion guard
			d := g.object(t)
			if doc := g.docs[t.Name()]; doc != "" {
				d["description"] = doc
			}
			g.defs[t.Name()] = d
		}
		p["$ref"] = "#/$defs/" + t.Name()
	default:
		panic("answer schema: no rule for " + t.String())
	}
	return p
}
