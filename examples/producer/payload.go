package main

import (
	"strconv"
	"strings"
)

// payload is message seq's body: {"seq":N} padded to size with a filler
// that depends on seq, so that a reference can be recomputed from the first
// sequence number, the count and the size alone.
func payload(seq int64, size int) []byte {
	head := `{"seq":` + strconv.FormatInt(seq, 10)
	if size <= len(head)+len(`,"pad":""}`) {
		return []byte(head + "}")
	}
	pad := size - len(head) - len(`,"pad":""}`)
	alphabet := "abcdefghijklmnopqrstuvwxyz"
	var b strings.Builder
	b.Grow(size)
	b.WriteString(head)
	b.WriteString(`,"pad":"`)
	for i := range pad {
		b.WriteByte(alphabet[(int64(i)+seq)%int64(len(alphabet))])
	}
	b.WriteString(`"}`)
	return []byte(b.String())
}
