package main

import (
	"reflect"
	"testing"
)

func TestPruneVariablesKeepsWhatValidationsRead(t *testing.T) {
	cel := celSource{
		Variables: []celVariable{
			{Name: "a", Expression: "1"},
			{Name: "unused", Expression: "variables.a"},
			{Name: "b", Expression: "variables.a + 1"},
			{Name: "forMessage", Expression: `"x"`},
			{Name: "c", Expression: "variables.b > 0"},
		},
		Validations: []celValidation{
			{Expression: "variables.c", MessageExpression: "variables.forMessage"},
		},
	}
	pruneVariables(&cel)
	var got []string
	for _, v := range cel.Variables {
		got = append(got, v.Name)
	}
	// Read through c and b, or by a message; the order is kept.
	if want := []string{"a", "b", "forMessage", "c"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("kept %v, want %v", got, want)
	}
}
