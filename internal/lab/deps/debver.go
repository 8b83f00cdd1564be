package deps

import (
	"fmt"
	"strconv"
	"strings"
)

// CompareDebian orders two Debian versions as dpkg does
// ([epoch:]upstream[-revision]).
func CompareDebian(a, b string) int {
	ea, ua, ra := splitDebian(a)
	eb, ub, rb := splitDebian(b)
	if ea != eb {
		if ea < eb {
			return -1
		}
		return 1
	}
	if c := verrevcmp(ua, ub); c != 0 {
		return c
	}
	return verrevcmp(ra, rb)
}

func splitDebian(v string) (epoch int, upstream, revision string) {
	if i := strings.IndexByte(v, ':'); i >= 0 {
		epoch, _ = strconv.Atoi(v[:i])
		v = v[i+1:]
	}
	if i := strings.LastIndexByte(v, '-'); i >= 0 {
		return epoch, v[:i], v[i+1:]
	}
	return epoch, v, ""
}

// order ranks a character for dpkg's lexical part: '~' sorts before
// everything, even the end of the string; letters before other characters.
func order(c byte) int {
	switch {
	case c >= '0' && c <= '9':
		return 0
	case c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z':
		return int(c)
	case c == '~':
		return -1
	case c != 0:
		return int(c) + 256
	}
	return 0
}

func verrevcmp(a, b string) int {
	at := func(s string, i int) byte {
		if i < len(s) {
			return s[i]
		}
		return 0
	}
	isDigit := func(c byte) bool { return c >= '0' && c <= '9' }
	i, j := 0, 0
	for i < len(a) || j < len(b) {
		first := 0
		for i < len(a) && !isDigit(a[i]) || j < len(b) && !isDigit(b[j]) {
			ac, bc := order(at(a, i)), order(at(b, j))
			if ac != bc {
				return sign(ac - bc)
			}
			i++
			j++
		}
		for at(a, i) == '0' {
			i++
		}
		for at(b, j) == '0' {
			j++
		}
		for isDigit(at(a, i)) && isDigit(at(b, j)) {
			if first == 0 {
				first = int(a[i]) - int(b[j])
			}
			i++
			j++
		}
		if isDigit(at(a, i)) {
			return 1
		}
		if isDigit(at(b, j)) {
			return -1
		}
		if first != 0 {
			return sign(first)
		}
	}
	return 0
}

func sign(n int) int {
	switch {
	case n < 0:
		return -1
	case n > 0:
		return 1
	}
	return 0
}

// Upstream returns the numeric release of a Debian version: "1:2.1.9+ds1-5"
// gives [2 1 9].
func Upstream(v string) []int {
	_, u, _ := splitDebian(v)
	var out []int
	for _, part := range strings.Split(u, ".") {
		n := 0
		k := 0
		for k < len(part) && part[k] >= '0' && part[k] <= '9' {
			n = n*10 + int(part[k]-'0')
			k++
		}
		if k == 0 {
			break
		}
		out = append(out, n)
		if k < len(part) {
			break
		}
	}
	return out
}

// Want is a version requirement on a package's upstream release.
type Want struct {
	// Series, e.g. "2.1", accepts 2.1.x only.
	Series string `json:"series,omitempty"`
	// AtLeast, e.g. "4.2", accepts 4.2 and later.
	AtLeast string `json:"atLeast,omitempty"`
}

func (w Want) String() string {
	switch {
	case w.Series != "":
		return w.Series + ".x"
	case w.AtLeast != "":
		return ">= " + w.AtLeast
	}
	return "any version"
}

// Accepts reports whether Debian version v meets w.
func (w Want) Accepts(v string) bool {
	up := Upstream(v)
	switch {
	case w.Series != "":
		s := Upstream(w.Series)
		if len(up) < len(s) {
			return false
		}
		for i := range s {
			if up[i] != s[i] {
				return false
			}
		}
		return true
	case w.AtLeast != "":
		return compareInts(up, Upstream(w.AtLeast)) >= 0
	}
	return true
}

func compareInts(a, b []int) int {
	for i := 0; i < len(a) || i < len(b); i++ {
		var x, y int
		if i < len(a) {
			x = a[i]
		}
		if i < len(b) {
			y = b[i]
		}
		if x != y {
			return sign(x - y)
		}
	}
	return 0
}

// Pick returns the highest candidate version w accepts.
func Pick(name string, w Want, cands []Candidate) (Candidate, error) {
	var best Candidate
	for _, c := range cands {
		if w.Accepts(c.Version) && (best.Version == "" || CompareDebian(c.Version, best.Version) > 0) {
			best = c
		}
	}
	if best.Version == "" {
		var seen []string
		for _, c := range cands {
			seen = append(seen, c.Version+" ("+c.Suite+")")
		}
		if len(seen) == 0 {
			return best, fmt.Errorf("package %s (%s) is not in the configured Debian suites", name, w)
		}
		return best, fmt.Errorf("package %s %s is not available: Debian offers %s", name, w, strings.Join(seen, ", "))
	}
	return best, nil
}
