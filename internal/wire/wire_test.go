package wire

import (
	"errors"
	"math/rand"
	"reflect"
	"testing"
	"time"
)

func sample() Msg {
	return Msg{Type: TypeAcquire, ReqID: 7, Group: 3, Session: 99, Client: 1 << 40, Seq: 12, Ack: 11, Name: "db/primary",
		Token: 5, TTL: 10 * time.Second, LockDelay: time.Second, Flags: FlagShared | FlagWait, Metadata: []byte("pid 42"),
		Code: CodeNotMaster, Err: "not master", Hint: 2, HintAddr: "127.0.0.1:7001", Epoch: 9, Slot: 1234, Node: 1, Groups: 16,
		Kind: EventGranted, Waiters: 3, Offset: 1 << 20, Size: 3 << 20, Chunk: []byte("LKGS"), HolderCount: 70,
		KeepAlives: []KeepAliveItem{{Group: 1, Session: 2, Code: CodeSessionUnknown}},
		Masters:    []MasterItem{{Group: 0, Epoch: 4, Master: 3, Addr: "127.0.0.1:7003", Seq: 7, Cause: 2}, {Group: 1}},
		Holders:    []HolderItem{{Session: 5, Token: 6, Shared: true, Metadata: []byte("m")}},
		Members:    []MemberItem{{ID: 1, Addr: "127.0.0.1:7001", Up: true, Voter: true, Progress: 77}},
		ChangeOp:   ChangePromote,
	}
}

func TestRoundTripKeepsEveryField(t *testing.T) {
	m := sample()
	got, err := Decode(Append(nil, &m))
	if err != nil {
		t.Fatal(err)
	}
	// An item with every field zero decodes to the zero item.
	if !reflect.DeepEqual(got, m) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", got, m)
	}
}

func TestDecodeRejectsBadInputWithClearErrors(t *testing.T) {
	m := sample()
	good := Append(nil, &m)
	cases := map[string][]byte{
		"empty":         {},
		"other version": append([]byte{9}, good[1:]...),
		"truncated":     good[:len(good)-3],
		"no type":       {Version},
		"huge length":   {Version, tagName<<1 | 1, 0xff, 0xff, 0xff, 0x7f},
	}
	for name, b := range cases {
		if _, err := Decode(b); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: got %v, want ErrMalformed", name, err)
		}
	}
}

func TestDecodeSkipsUnknownFields(t *testing.T) {
	m := Msg{Type: TypeHello, ReqID: 1}
	b := Append(nil, &m)
	b = append(b, 0x90, 0x01, 5)           // unknown uvarint field, tag 72
	b = append(b, 0xa3, 0x03, 2, 'h', 'i') // unknown byte-string field, tag 209
	got, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if got.Type != TypeHello || got.ReqID != 1 {
		t.Fatalf("got %+v", got)
	}
}

func TestGroupOfIsStable(t *testing.T) {
	// These values are part of the protocol: changing them moves locks to
	// other groups and breaks fencing-token monotonicity.
	for name, want := range map[string]uint32{"a": 12, "db/primary": 2} {
		if got := GroupOf(name, 16); got != want {
			t.Errorf("GroupOf(%q, 16) = %d, want %d", name, got, want)
		}
	}
	rng := rand.New(rand.NewSource(1))
	for i := 0; i < 1000; i++ {
		if g := GroupOf(string(rune(rng.Intn(1<<20))), 7); g >= 7 {
			t.Fatalf("group %d out of range", g)
		}
	}
}
