package backup

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"
)

// File is a backup opened for reading. Read the groups in order with Next.
type File struct {
	Header *Header
	f      *os.File
	r      *bufio.Reader
	left   int64 // bytes of the file not read yet
	next   int
}

// Open opens a backup and checks its header and its length; Next checks
// each group's checksum as it reads it.
func Open(path string) (*File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("backup: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("backup: %w", err)
	}
	r := bufio.NewReaderSize(f, 1<<20)
	h, err := ReadHeader(r)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if h.Size() != fi.Size() {
		f.Close()
		return nil, fmt.Errorf("%s: %w", path, sizeError(h, fi.Size()))
	}
	return &File{Header: h, f: f, r: r, left: fi.Size() - HeaderSize(len(h.Groups), len(h.ClusterID))}, nil
}

// Next returns the next group's index and bytes, checked; io.EOF after the
// last group.
func (f *File) Next() (int, []byte, error) {
	if f.next == len(f.Header.Groups) {
		return 0, nil, io.EOF
	}
	g := f.next
	b, err := f.Header.ReadGroup(f.r, g, f.left)
	if err != nil {
		return g, nil, fmt.Errorf("%s: %w", f.f.Name(), err)
	}
	f.left -= int64(len(b))
	f.next++
	return g, b, nil
}

// Close closes the file.
func (f *File) Close() error { return f.f.Close() }

// Writer writes a backup: the groups in order (Add), then Close fills in
// the header, syncs, and renames the side file PATH.part to PATH.
type Writer struct {
	path string
	f    *os.File
	w    *bufio.Writer
	h    Header
	n    int // groups expected
}

// Create starts a backup of a cluster with groups groups at path. Nothing
// is at path until Close succeeds.
func Create(path, clusterID string, groups int, created time.Time) (*Writer, error) {
	h := Header{ClusterID: clusterID, Created: created}
	if groups < 1 || groups > MaxGroups || len(clusterID) > MaxClusterID {
		return nil, fmt.Errorf("backup: %d groups and a cluster id of %d bytes: want 1 to %d groups and at most %d bytes", groups, len(clusterID), MaxGroups, MaxClusterID)
	}
	f, err := os.OpenFile(path+".part", os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return nil, fmt.Errorf("backup: %w", err)
	}
	w := &Writer{path: path, f: f, w: bufio.NewWriterSize(f, 1<<20), h: h, n: groups}
	// Room for the header, written last.
	if _, err := w.w.Write(make([]byte, HeaderSize(groups, len(clusterID)))); err != nil {
		w.Abort()
		return nil, fmt.Errorf("backup: write %s: %w", f.Name(), err)
	}
	return w, nil
}

// Add appends the next group's snapshot (group len(added) of the cluster).
func (w *Writer) Add(slot uint64, node uint32, data []byte) error {
	if len(w.h.Groups) == w.n {
		return fmt.Errorf("backup: all %d groups were added already", w.n)
	}
	if len(data) == 0 || len(data) > MaxGroupBytes {
		return fmt.Errorf("backup: group %d is %d bytes, want 1 to %d", len(w.h.Groups), len(data), MaxGroupBytes)
	}
	if _, err := w.w.Write(data); err != nil {
		return fmt.Errorf("backup: write %s: %w", w.f.Name(), err)
	}
	w.h.Groups = append(w.h.Groups, Group{Slot: slot, Size: uint64(len(data)), Sum: Sum(data), Node: node})
	return nil
}

// Close writes the header, syncs the file and renames it into place (and
// syncs the directory), so that PATH is a whole backup or is not there.
func (w *Writer) Close() (*Header, error) {
	if len(w.h.Groups) != w.n {
		w.Abort()
		return nil, fmt.Errorf("backup: %d of %d groups were added", len(w.h.Groups), w.n)
	}
	head, err := w.h.Encode()
	if err == nil {
		err = w.w.Flush()
	}
	if err == nil {
		_, err = w.f.WriteAt(head, 0)
	}
	if err == nil {
		err = w.f.Sync()
	}
	if cerr := w.f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(w.f.Name(), w.path)
	}
	if err != nil {
		os.Remove(w.f.Name())
		return nil, fmt.Errorf("backup: %w", err)
	}
	if d, err := os.Open(filepath.Dir(w.path)); err == nil {
		d.Sync()
		d.Close()
	}
	return &w.h, nil
}

// Abort drops the side file.
func (w *Writer) Abort() {
	w.f.Close()
	os.Remove(w.f.Name())
}
