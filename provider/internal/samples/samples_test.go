package samples_test

import (
	"testing"

	"github.com/moat-dev/moat/provider/internal/samples"
)

// A sample is one digest however often it is built: tests push the same
// sample to several tags and expect one scan report for all of them.
func TestASampleIsOneDigest(t *testing.T) {
	for name, pkgs := range samples.Images {
		first, err := samples.Image(pkgs)
		if err != nil {
			t.Fatal(err)
		}
		want, _ := first.Digest()
		for range 20 {
			img, err := samples.Image(pkgs)
			if err != nil {
				t.Fatal(err)
			}
			if got, _ := img.Digest(); got != want {
				t.Fatalf("sample %s: digest %s, then %s", name, want, got)
			}
		}
	}
}
