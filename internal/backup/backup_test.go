package backup

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func sampleFile(t *testing.T) (string, [][]byte) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "b.lockd")
	groups := [][]byte{[]byte("group zero"), bytes.Repeat([]byte{7}, 3000), []byte("two")}
	w, err := Create(path, "prod", len(groups), time.Unix(100, 5))
	if err != nil {
		t.Fatal(err)
	}
	for i, g := range groups {
		if err := w.Add(uint64(10*i+1), uint32(i+1), g); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path + ".part"); !os.IsNotExist(err) {
		t.Fatalf("the side file is still there: %v", err)
	}
	return path, groups
}

func TestWriteThenReadKeepsEveryGroup(t *testing.T) {
	path, groups := sampleFile(t)
	f, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if f.Header.ClusterID != "prod" || len(f.Header.Groups) != 3 || f.Header.Created.UnixNano() != 100e9+5 {
		t.Fatalf("header %+v", f.Header)
	}
	for i := 0; ; i++ {
		g, b, err := f.Next()
		if err == io.EOF {
			if i != 3 {
				t.Fatalf("%d groups read, want 3", i)
			}
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if g != i || !bytes.Equal(b, groups[i]) || f.Header.Groups[i].Slot != uint64(10*i+1) || f.Header.Groups[i].Node != uint32(i+1) {
			t.Fatalf("group %d: got %d %q", i, g, b)
		}
	}
}

// A damaged backup is refused, whatever part is damaged, with an error that
// says so (lockd restore exits 7 on it).
func TestDamagedBackupIsRefused(t *testing.T) {
	path, _ := sampleFile(t)
	good, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := Decode(good); err != nil {
		t.Fatalf("the good file: %v", err)
	}
	hs := HeaderSize(3, 4)
	flip := func(at int64) []byte {
		b := bytes.Clone(good)
		b[at] ^= 0x10
		return b
	}
	cases := map[string][]byte{
		"empty":            nil,
		"other magic":      flip(0),
		"header byte":      flip(20),
		"group 1 byte":     flip(hs + 10 + 100),
		"last byte":        flip(int64(len(good) - 1)),
		"cut":              good[:len(good)-1],
		"cut in header":    good[:hs-3],
		"padded":           append(bytes.Clone(good), 0),
		"not a backup":     []byte("hello, this is not a backup file at all, just text"),
		"huge group count": func() []byte { b := bytes.Clone(good); b[10] = 0xff; b[11] = 0xff; return b }(),
	}
	for name, b := range cases {
		if _, _, err := Decode(b); !errors.Is(err, ErrBadBackup) {
			t.Errorf("%s: got %v, want ErrBadBackup", name, err)
		}
		p := filepath.Join(t.TempDir(), "x")
		os.WriteFile(p, b, 0o600)
		f, err := Open(p)
		if err == nil {
			for err == nil {
				_, _, err = f.Next()
			}
			f.Close()
			if err == io.EOF {
				t.Errorf("%s: Open and Next read it whole", name)
			}
		}
	}
}

func FuzzDecode(f *testing.F) {
	h := Header{ClusterID: "c", Groups: []Group{{Slot: 1, Size: 2, Sum: Sum([]byte("ab"))}}}
	head, _ := h.Encode()
	f.Add(append(head, "ab"...))
	f.Add([]byte(Magic))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, groups, err := Decode(b)
		if err != nil {
			if !errors.Is(err, ErrBadBackup) {
				t.Fatalf("error does not wrap ErrBadBackup: %v", err)
			}
			return
		}
		// What decodes re-encodes to the same bytes.
		head, err := h.Encode()
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(append(head, bytes.Join(groups, nil)...), b) {
			t.Fatal("re-encoding differs")
		}
	})
}
