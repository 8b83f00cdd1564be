package engine

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"google.golang.org/protobuf/encoding/protowire"
)

// CRIU's pagemap entry flags (criu/include/pagemap.h).
const (
	peParent  = 1 << 0 // the pages are in a parent image
	peLazy    = 1 << 1 // they may be restored lazily
	pePresent = 1 << 2 // they are in pages-<id>.img
)

// pageSize is CRIU's PAGE_SIZE: the system's, which the dump was made on.
var pageSize = int64(os.Getpagesize())

// LazyImages is the size of what WriteLazyImages shipped and left out.
type LazyImages struct {
	ShippedPages, LazyPages int64
}

// WriteLazyImages writes into dst a copy of the CRIU dump in src without
// the pages a lazy restore can take later: what a target restores from
// when its pages come from a page server that serves the whole dump
// (criu page-server --lazy-pages, which the source keeps running from
// src). A pagemap entry CRIU flagged lazy loses its present flag and its
// pages; every other entry (stacks, file-backed private memory, pages of
// a parent image) keeps what it had, so that the restore reads each from
// where it expects it. Every other image file is linked, not copied: src
// and dst are on the same file system.
func WriteLazyImages(src, dst string) (LazyImages, error) {
	var total LazyImages
	if err := os.MkdirAll(dst, 0o700); err != nil {
		return total, err
	}
	entries, err := os.ReadDir(src)
	if err != nil {
		return total, err
	}
	pagesOf := map[string]bool{} // pages-<id>.img a pagemap rewrote
	for _, e := range entries {
		name := e.Name()
		if !strings.HasPrefix(name, "pagemap-") || !strings.HasSuffix(name, ".img") {
			continue
		}
		sizes, pages, err := rewritePagemap(src, dst, name)
		if err != nil {
			return total, fmt.Errorf("%s: %w", name, err)
		}
		total.ShippedPages += sizes.ShippedPages
		total.LazyPages += sizes.LazyPages
		pagesOf[pages] = true
	}
	for _, e := range entries {
		name := e.Name()
		if !e.Type().IsRegular() || strings.HasPrefix(name, "pagemap-") || pagesOf[name] {
			continue
		}
		if err := os.Link(filepath.Join(src, name), filepath.Join(dst, name)); err != nil {
			return total, err
		}
	}
	return total, nil
}

// rewritePagemap writes dst/name and the pages file it names, keeping
// only the pages of entries that are not lazy.
func rewritePagemap(src, dst, name string) (LazyImages, string, error) {
	var sizes LazyImages
	raw, err := os.ReadFile(filepath.Join(src, name))
	if err != nil {
		return sizes, "", err
	}
	magic, records, err := splitImage(raw)
	if err != nil {
		return sizes, "", err
	}
	if len(records) == 0 {
		return sizes, "", errors.New("no pagemap head")
	}
	pagesID, err := pagemapHead(records[0])
	if err != nil {
		return sizes, "", err
	}
	pagesName := fmt.Sprintf("pages-%d.img", pagesID)
	pagesIn, err := os.Open(filepath.Join(src, pagesName))
	if err != nil {
		return sizes, "", err
	}
	defer pagesIn.Close()
	pagesOut, err := os.OpenFile(filepath.Join(dst, pagesName), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return sizes, "", err
	}
	defer pagesOut.Close()

	out := append([]byte{}, magic...)
	out = appendRecord(out, records[0])
	var offset int64 // in pagesIn
	for _, rec := range records[1:] {
		e, err := parsePagemapEntry(rec)
		if err != nil {
			return sizes, "", err
		}
		n := int64(e.nrPages) * pageSize
		flags := e.flags
		switch {
		case flags&pePresent == 0:
		case flags&peLazy != 0:
			flags &^= pePresent
			sizes.LazyPages += int64(e.nrPages)
			offset += n
		default:
			if _, err := io.Copy(pagesOut, io.NewSectionReader(pagesIn, offset, n)); err != nil {
				return sizes, "", err
			}
			sizes.ShippedPages += int64(e.nrPages)
			offset += n
		}
		out = appendRecord(out, e.withFlags(flags))
	}
	fi, err := pagesIn.Stat()
	if err != nil {
		return sizes, "", err
	}
	if fi.Size() != offset {
		return sizes, "", fmt.Errorf("%s holds %d bytes, but its pagemap names %d", pagesName, fi.Size(), offset)
	}
	if err := os.WriteFile(filepath.Join(dst, name), out, 0o600); err != nil {
		return sizes, "", err
	}
	return sizes, pagesName, pagesOut.Close()
}

// A CRIU image is two 32-bit magics (the image class's and the image's)
// and then its records, each a 32-bit little-endian length and a
// protobuf message (criu/protobuf.c).
func splitImage(b []byte) (magic []byte, records [][]byte, err error) {
	if len(b) < 8 {
		return nil, nil, errors.New("shorter than its magic")
	}
	magic, b = b[:8], b[8:]
	for len(b) > 0 {
		if len(b) < 4 {
			return nil, nil, errors.New("a record's length is cut short")
		}
		n := int(binary.LittleEndian.Uint32(b))
		if len(b) < 4+n {
			return nil, nil, errors.New("a record is cut short")
		}
		records, b = append(records, b[4:4+n]), b[4+n:]
	}
	return magic, records, nil
}

func appendRecord(out, rec []byte) []byte {
	out = binary.LittleEndian.AppendUint32(out, uint32(len(rec)))
	return append(out, rec...)
}

// pagemapEntry is a pagemap_entry (images/pagemap.proto): vaddr = 1,
// compat_nr_pages = 2, in_parent = 3, flags = 4, nr_pages = 5 (CRIU 4.x
// writes its page count there; older images only in field 2). Every field
// is kept as it came but the flags, which the rewrite sets.
type pagemapEntry struct {
	nrPages uint64
	flags   uint32
	kept    []byte // every field but in_parent and flags, as encoded
}

func parsePagemapEntry(rec []byte) (pagemapEntry, error) {
	var e pagemapEntry
	var compat uint64
	var hasFlags, hasNr, inParent bool
	err := eachField(rec, func(num protowire.Number, typ protowire.Type, value, whole []byte) error {
		if typ == protowire.VarintType {
			v := varint(value)
			switch num {
			case 2:
				compat = v
			case 3:
				inParent = v != 0
			case 4:
				e.flags, hasFlags = uint32(v), true
			case 5:
				e.nrPages, hasNr = v, true
			}
		}
		if num != 3 && num != 4 {
			e.kept = append(e.kept, whole...)
		}
		return nil
	})
	if err != nil {
		return e, err
	}
	if !hasNr {
		e.nrPages = compat
	}
	if !hasFlags {
		// Images older than the flags: in a parent, or present.
		e.flags = pePresent
		if inParent {
			e.flags = peParent
		}
	}
	return e, nil
}

func (e pagemapEntry) withFlags(flags uint32) []byte {
	out := append([]byte{}, e.kept...)
	out = protowire.AppendTag(out, 4, protowire.VarintType)
	return protowire.AppendVarint(out, uint64(flags))
}

// pagemapHead reads a pagemap_head's pages_id (field 1).
func pagemapHead(rec []byte) (uint64, error) {
	var id uint64
	found := false
	err := eachField(rec, func(num protowire.Number, typ protowire.Type, value, _ []byte) error {
		if num == 1 && typ == protowire.VarintType {
			id, found = varint(value), true
			return errStopFields
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	if !found {
		return 0, errors.New("a pagemap head without pages_id")
	}
	return id, nil
}
