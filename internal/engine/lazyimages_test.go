package engine

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
)

type testEntry struct {
	vaddr uint64
	pages uint32
	flags uint32
	// old: written as CRIU before 4.0 did, the count in compat_nr_pages
	// (field 2) and no nr_pages (field 5)
	old bool
}

// writePagemap writes a pagemap image as CRIU does.
func writePagemap(t *testing.T, path string, pagesID uint32, entries []testEntry) {
	t.Helper()
	out := []byte{0x19, 0x43, 0x56, 0x54, 0x25, 0x40, 0x08, 0x56} // IMG_COMMON, PAGEMAP
	out = appendRecord(out, protowire.AppendVarint(protowire.AppendTag(nil, 1, protowire.VarintType), uint64(pagesID)))
	for _, e := range entries {
		var rec []byte
		field := func(num protowire.Number, v uint64) {
			rec = protowire.AppendVarint(protowire.AppendTag(rec, num, protowire.VarintType), v)
		}
		field(1, e.vaddr)
		if e.old {
			field(2, uint64(e.pages))
		} else {
			field(2, 0)
		}
		field(4, uint64(e.flags))
		if !e.old {
			field(5, uint64(e.pages))
		}
		out = appendRecord(out, rec)
	}
	if err := os.WriteFile(path, out, 0o600); err != nil {
		t.Fatal(err)
	}
}

func readPagemap(t *testing.T, path string) []testEntry {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	_, records, err := splitImage(raw)
	if err != nil {
		t.Fatal(err)
	}
	var out []testEntry
	for _, rec := range records[1:] {
		e, err := parsePagemapEntry(rec)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, testEntry{vaddr: vaddrOf(t, rec), pages: uint32(e.nrPages), flags: e.flags})
	}
	return out
}

func vaddrOf(t *testing.T, rec []byte) uint64 {
	num, _, n := protowire.ConsumeTag(rec)
	v, m := protowire.ConsumeVarint(rec[n:])
	if num != 1 || m < 0 {
		t.Fatalf("no vaddr first in %x", rec)
	}
	return v
}

// page is one page filled with b, so that a page out of place shows.
func page(b byte) []byte { return bytes.Repeat([]byte{b}, int(pageSize)) }

// The target gets the pages no lazy restore would take, each where its
// restore reads it (in pagemap order, so at the offset the entries before
// it imply), and the lazy entries without their pages; the source's dump,
// which its page server reads, is left as it was.
func TestLazyImagesShipOnlyWhatTheRestoreReadsAtOnce(t *testing.T) {
	src, dst := t.TempDir(), filepath.Join(t.TempDir(), "images")
	entries := []testEntry{
		{0x10000, 2, pePresent | peLazy, false}, // heap: pages 'a', 'b'
		{0x20000, 1, pePresent, false},          // stack: 'c'
		{0x30000, 3, pePresent | peLazy, false}, // 'd', 'e', 'f'
		{0x40000, 1, peParent, false},           // in a parent image: no pages here
		{0x50000, 1, pePresent, true},           // file-backed private: 'g', as an older CRIU wrote it
	}
	writePagemap(t, filepath.Join(src, "pagemap-1.img"), 7, entries)
	var pages []byte
	for _, b := range []byte("abcdefg") {
		pages = append(pages, page(b)...)
	}
	if err := os.WriteFile(filepath.Join(src, "pages-7.img"), pages, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "core-1.img"), []byte("core"), 0o600); err != nil {
		t.Fatal(err)
	}

	sizes, err := WriteLazyImages(src, dst)
	if err != nil {
		t.Fatal(err)
	}
	if sizes.ShippedPages != 2 || sizes.LazyPages != 5 {
		t.Errorf("shipped %d pages and left %d lazy, want 2 and 5", sizes.ShippedPages, sizes.LazyPages)
	}
	got, err := os.ReadFile(filepath.Join(dst, "pages-7.img"))
	if err != nil {
		t.Fatal(err)
	}
	if want := append(page('c'), page('g')...); !bytes.Equal(got, want) {
		t.Errorf("shipped pages are %d bytes starting %q, want the stack page then the file page", len(got), got[:1])
	}
	want := []testEntry{
		{0x10000, 2, peLazy, false}, {0x20000, 1, pePresent, false}, {0x30000, 3, peLazy, false}, {0x40000, 1, peParent, false}, {0x50000, 1, pePresent, false},
	}
	if gotEntries := readPagemap(t, filepath.Join(dst, "pagemap-1.img")); !slices.Equal(gotEntries, want) {
		t.Errorf("pagemap %+v, want %+v", gotEntries, want)
	}
	entries[4].old = false // read back, it is an entry like the others
	if srcEntries := readPagemap(t, filepath.Join(src, "pagemap-1.img")); !slices.Equal(srcEntries, entries) {
		t.Errorf("the source's pagemap changed: %+v", srcEntries)
	}
	if fi, _ := os.Stat(filepath.Join(src, "pages-7.img")); fi.Size() != int64(len(pages)) {
		t.Errorf("the source's pages changed: %d bytes", fi.Size())
	}
	a, _ := os.Stat(filepath.Join(src, "core-1.img"))
	b, err := os.Stat(filepath.Join(dst, "core-1.img"))
	if err != nil || !os.SameFile(a, b) {
		t.Errorf("core-1.img is not linked into the shipped images (%v)", err)
	}
}

func TestLazyImagesRefuseAPagemapWithoutItsPages(t *testing.T) {
	src := t.TempDir()
	writePagemap(t, filepath.Join(src, "pagemap-1.img"), 3, []testEntry{{0x1000, 1, pePresent, false}})
	if _, err := WriteLazyImages(src, filepath.Join(t.TempDir(), "images")); err == nil {
		t.Fatal("a pagemap whose pages-3.img is missing was shipped")
	}
}
