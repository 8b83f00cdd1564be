package deps

import (
	"slices"
	"strings"
	"testing"
)

func TestCompareDebian(t *testing.T) {
	for _, c := range []struct {
		a, b string
		want int
	}{
		{"2.1.9+ds1-5", "2.1.9+ds1-5", 0},
		{"2.1.10+ds1-1", "2.1.9+ds1-5", 1},
		{"1.1.5+ds1-1+deb12u1", "1.1.5+ds1-1", 1},
		{"1.0~rc1-1", "1.0-1", -1},
		{"1:0.1-1", "9.9-1", 1},
		{"4.2.1-1", "4.2-1", 1},
		{"3.17.1-2+deb12u2", "4.2.1-1", -1},
		{"1.0a-1", "1.0-1", 1},
	} {
		if got := CompareDebian(c.a, c.b); got != c.want {
			t.Errorf("CompareDebian(%q, %q) = %d, want %d", c.a, c.b, got, c.want)
		}
		if got := CompareDebian(c.b, c.a); got != -c.want {
			t.Errorf("CompareDebian(%q, %q) = %d, want %d", c.b, c.a, got, -c.want)
		}
	}
}

func TestWantAndPick(t *testing.T) {
	if got := Upstream("1:2.1.9+ds1-5"); !slices.Equal(got, []int{2, 1, 9}) {
		t.Fatalf("Upstream = %v", got)
	}
	cands := []Candidate{{"2.1.9+ds1-5", "forky"}, {"2.2.0-1", "sid"}, {"1.6.20~ds1-1+deb12u3", "bookworm"}}
	c, err := Pick("containerd", Want{Series: "2.1"}, cands)
	if err != nil || c.Version != "2.1.9+ds1-5" {
		t.Fatalf("Pick 2.1.x = %v, %v", c, err)
	}
	c, err = Pick("containerd", Want{AtLeast: "2.0"}, cands)
	if err != nil || c.Suite != "sid" {
		t.Fatalf("Pick >= 2.0 = %v, %v", c, err)
	}
	_, err = Pick("criu", Want{AtLeast: "4.2"}, []Candidate{{"3.17.1-2+deb12u2", "bookworm"}, {"4.1.1-1", "trixie"}})
	if err == nil || !strings.Contains(err.Error(), "criu >= 4.2 is not available: Debian offers 3.17.1-2+deb12u2 (bookworm), 4.1.1-1 (trixie)") {
		t.Fatalf("want a clear error, got %v", err)
	}
	if (Want{Series: "4.2"}).Accepts("4.20.1-1") {
		t.Fatal("series 4.2 accepted 4.20")
	}
}
