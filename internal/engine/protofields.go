package engine

import (
	"errors"

	"google.golang.org/protobuf/encoding/protowire"
)

// CRIU's images are protobuf messages; the few fields ms2m reads are read
// with protowire, field by field (go-criu's generated messages lag CRIU's
// images: see pagemapEntry).

// errStopFields ends eachField early, without an error.
var errStopFields = errors.New("stop")

// eachField calls f with every field of msg in order: its number, its wire
// type, its value as encoded (a varint's bytes, a length-prefixed
// payload, ...) and the whole field, tag included. f returning
// errStopFields ends the walk without an error; any other error ends it
// with that error.
func eachField(msg []byte, f func(num protowire.Number, typ protowire.Type, value, whole []byte) error) error {
	for len(msg) > 0 {
		num, typ, n := protowire.ConsumeTag(msg)
		if n < 0 {
			return protowire.ParseError(n)
		}
		m := protowire.ConsumeFieldValue(num, typ, msg[n:])
		if m < 0 {
			return protowire.ParseError(m)
		}
		if err := f(num, typ, msg[n:n+m], msg[:n+m]); err != nil {
			if errors.Is(err, errStopFields) {
				return nil
			}
			return err
		}
		msg = msg[n+m:]
	}
	return nil
}

// varint decodes a varint field's value (eachField checked its encoding).
func varint(value []byte) uint64 {
	v, _ := protowire.ConsumeVarint(value)
	return v
}
