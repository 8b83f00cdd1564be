package deps

import (
	"slices"
	"testing"
)

func TestParseMadison(t *testing.T) {
	out := []byte(`      criu |    4.2.1-1 | http://deb.debian.org/debian forky/main amd64 Packages
      criu | 3.17.1-2+deb12u2 | http://deb.debian.org/debian bookworm/main amd64 Packages
      criu | 3.17.1-2 | http://deb.debian.org/debian bookworm/main Sources
`)
	got := parseMadison(out)["criu"]
	want := []Candidate{{"4.2.1-1", "forky"}, {"3.17.1-2+deb12u2", "bookworm"}}
	if !slices.Equal(got, want) {
		t.Fatalf("got %v", got)
	}
}

func TestParseDepends(t *testing.T) {
	show := []byte(`Package: criu
Version: 4.2.1-1
Pre-Depends: libc6 (>= 2.38)
Depends: libbsd0 (>= 0.6.0), libnl-3-200 (>= 3.11.0), libpython3-stdlib:any | python3-minimal, libcompel1 (= 4.2.1-1)
Recommends: iproute2

Package: criu
Version: 3.17.1-2
Depends: other
`)
	got := parseDepends(show, map[string]string{"criu": "4.2.1-1"})["criu"]
	want := []string{"libc6", "libbsd0", "libnl-3-200", "libpython3-stdlib", "libcompel1"}
	if !slices.Equal(got, want) {
		t.Fatalf("got %v", got)
	}
}
