package paxos

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"math/rand"
	"reflect"
	"runtime"
	"strings"
	"testing"
)

// codecMessages are hand-picked messages of every kind, with edge values.
func codecMessages() []struct {
	name string
	m    Message
} {
	max32 := NodeID(math.MaxUint32)
	bigBallot := Ballot{Round: math.MaxUint64, Node: max32}
	return []struct {
		name string
		m    Message
	}{
		{"zero prepare", Message{Type: MsgPrepare}},
		{"prepare", Message{Type: MsgPrepare, Group: 7, From: 1, To: 2, Ballot: Ballot{Round: 3, Node: 1}, Slot: 100, Commit: 99}},
		{"promise with entries", Message{Type: MsgPromise, Group: 1, From: 2, To: 1, Ballot: Ballot{Round: 3, Node: 1}, Slot: 5, Commit: 6,
			Entries: []Entry{
				{Slot: 5, Ballot: Ballot{Round: 2, Node: 2}, Chosen: true, Value: Value{ID: ValueID{Ballot: Ballot{Round: 2, Node: 2}, N: 1},
					Cmds: []Command{{ID: CommandID{Client: 9, Seq: 1}, Ack: 1, Data: []byte("lock a")}}}},
				{Slot: 7, Ballot: Ballot{Round: 1, Node: 3}, Value: Value{ID: ValueID{Ballot: Ballot{Round: 1, Node: 3}, N: 4}}},
			}}},
		{"accept", Message{Type: MsgAccept, Group: 4095, From: 1, To: 3, Ballot: Ballot{Round: 8, Node: 1}, Commit: 41,
			Entries: []Entry{{Slot: 41, Ballot: Ballot{Round: 8, Node: 1}, Value: Value{ID: ValueID{Ballot: Ballot{Round: 8, Node: 1}, N: 2},
				Cmds: []Command{
					{ID: CommandID{Client: 1, Seq: 1}, Data: []byte{0}},
					{ID: CommandID{Client: 1, Seq: 2}, Ack: 2},
					{ID: CommandID{Client: math.MaxUint64, Seq: math.MaxUint64}, Ack: math.MaxUint64, Data: bytes.Repeat([]byte{0xff}, 300)},
				}}}}}},
		{"urgent accept", Message{Type: MsgAccept, Group: 1, From: 1, To: 2, Ballot: Ballot{Round: 8, Node: 1}, Commit: 41, Urgent: true,
			Entries: []Entry{{Slot: 42, Ballot: Ballot{Round: 8, Node: 1}, Value: Value{ID: ValueID{Ballot: Ballot{Round: 8, Node: 1}, N: 3},
				Cmds: []Command{{ID: CommandID{Client: 2, Seq: 1}, Ack: 1, Data: []byte("light")}}}}}}},
		{"contended accept", Message{Type: MsgAccept, Group: 3, From: 1, To: 3, Ballot: Ballot{Round: 8, Node: 1}, Commit: 41, Urgent: true, Contended: true,
			Entries: []Entry{{Slot: 43, Ballot: Ballot{Round: 8, Node: 1}, Value: Value{ID: ValueID{Ballot: Ballot{Round: 8, Node: 1}, N: 4},
				Cmds: []Command{{ID: CommandID{Client: 2, Seq: 2}, Ack: 2, Data: []byte("busy")}}}}}}},
		{"accepted", Message{Type: MsgAccepted, Group: 2, From: 3, To: 1, Ballot: Ballot{Round: 8, Node: 1}, Slot: 41, Commit: 40}},
		{"nack behind", Message{Type: MsgNack, From: 2, To: 1, Ballot: Ballot{Round: 9, Node: 2}, Commit: 1000, Behind: true}},
		{"commit with max fields", Message{Type: MsgCommit, Group: GroupID(math.MaxUint32), From: max32, To: max32, Ballot: bigBallot,
			Slot: math.MaxUint64, Commit: math.MaxUint64}},
		{"fetch", Message{Type: MsgFetch, From: 1, To: 2, Slot: 12, Commit: 12}},
		{"fetch reply", Message{Type: MsgFetchReply, From: 2, To: 1, Slot: 12, Commit: 14, Entries: []Entry{
			{Slot: 12, Ballot: bigBallot, Chosen: true, Value: Value{ID: ValueID{Ballot: bigBallot, N: math.MaxUint64}}},
			{Slot: 13, Ballot: Ballot{Round: 1, Node: 1}, Chosen: true, Value: Value{Cmds: []Command{{Data: []byte("x")}}}},
		}}},
	}
}

// randomMessage builds a message from rng with field sizes that cover one-
// byte varints, multi-byte ones and the extremes. Empty lists and empty data
// are nil, as the decoder returns them.
func randomMessage(rng *rand.Rand) Message {
	num := func() uint64 {
		switch rng.Intn(4) {
		case 0:
			return uint64(rng.Intn(128))
		case 1:
			return uint64(rng.Intn(1 << 20))
		case 2:
			return rng.Uint64()
		}
		return math.MaxUint64 - uint64(rng.Intn(2))
	}
	n32 := func() uint32 { return uint32(num()) }
	ballot := func() Ballot { return Ballot{Round: num(), Node: NodeID(n32())} }
	m := Message{
		Type:   MsgType(1 + rng.Intn(len(msgTypeNames)-1)),
		Group:  GroupID(n32()),
		From:   NodeID(n32()),
		To:     NodeID(n32()),
		Ballot: ballot(),
		Slot:   num(),
		Commit: num(),
		Behind: rng.Intn(2) == 0,
		Urgent: rng.Intn(2) == 0,
	}
	m.Contended = m.Urgent && rng.Intn(2) == 0
	for range rng.Intn(5) {
		e := Entry{Slot: num(), Ballot: ballot(), Chosen: rng.Intn(2) == 0, Value: Value{ID: ValueID{Ballot: ballot(), N: num()}}}
		for range rng.Intn(6) {
			c := Command{ID: CommandID{Client: num(), Seq: num()}, Ack: num()}
			if n := rng.Intn(3) * rng.Intn(200); n > 0 {
				c.Data = make([]byte, n)
				rng.Read(c.Data)
			}
			e.Value.Cmds = append(e.Value.Cmds, c)
		}
		m.Entries = append(m.Entries, e)
	}
	return m
}

// checkMessageRoundTrip encodes m (after some prefix, to check that
// AppendMessage appends), decodes it, and checks the result equals m and does
// not alias the encoding.
func checkMessageRoundTrip(t *testing.T, m Message) {
	t.Helper()
	prefix := []byte("prefix")
	buf := AppendMessage(append([]byte(nil), prefix...), &m)
	if !bytes.HasPrefix(buf, prefix) {
		t.Fatalf("AppendMessage overwrote dst's contents")
	}
	enc := buf[len(prefix):]
	got, err := DecodeMessage(enc, Limits{})
	if err != nil {
		t.Fatalf("decode %s: %v", m.String(), err)
	}
	if !reflect.DeepEqual(got, m) {
		t.Fatalf("round trip changed the message:\n got %#v\nwant %#v", got, m)
	}
	if again := AppendMessage(nil, &got); !bytes.Equal(again, enc) {
		t.Fatalf("re-encoding differs:\n got %x\nwant %x", again, enc)
	}
	// Callers reuse their buffers: scribbling over the input must not
	// change what was decoded.
	for i := range enc {
		enc[i] = 0xAA
	}
	if !reflect.DeepEqual(got, m) {
		t.Fatalf("decoded message aliases the input buffer")
	}
}

func TestMessageRoundTrip(t *testing.T) {
	for _, tc := range codecMessages() {
		t.Run(tc.name, func(t *testing.T) { checkMessageRoundTrip(t, tc.m) })
	}
}

func TestRandomMessagesRoundTrip(t *testing.T) {
	const seed = 20240601
	rng := rand.New(rand.NewSource(seed))
	for i := range 2000 {
		m := randomMessage(rng)
		t.Run("", func(t *testing.T) {
			defer func() {
				if t.Failed() {
					t.Logf("message %d of seed %d", i, seed)
				}
			}()
			checkMessageRoundTrip(t, m)
		})
		if t.Failed() {
			return
		}
	}
}

func TestEntryRecordRoundTripDropsChosen(t *testing.T) {
	for _, tc := range codecMessages() {
		for _, e := range tc.m.Entries {
			rec := AppendEntryRecord(nil, &e)
			got, err := DecodeEntryRecord(e.Slot, rec, Limits{})
			if err != nil {
				t.Fatalf("%s: decode slot %d: %v", tc.name, e.Slot, err)
			}
			want := e
			want.Chosen = false // not stored: the commit index says it
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("%s: round trip:\n got %#v\nwant %#v", tc.name, got, want)
			}
			if again := AppendEntryRecord(nil, &got); !bytes.Equal(again, rec) {
				t.Fatalf("%s: re-encoding differs", tc.name)
			}
		}
	}
}

func TestHardStateRoundTrip(t *testing.T) {
	for _, hs := range []HardState{{}, {Promised: Ballot{Round: 3, Node: 2}, Commit: 17},
		{Promised: Ballot{Round: math.MaxUint64, Node: math.MaxUint32}, Commit: math.MaxUint64}} {
		enc := AppendHardState(nil, &hs)
		got, err := DecodeHardState(enc)
		if err != nil || got != hs {
			t.Fatalf("hard state %+v: got %+v, %v", hs, got, err)
		}
	}
}

// TestTruncatedInputIsCorrupt: every strict prefix of an encoding fails to
// decode, with ErrCorrupt, and so does any trailing byte.
func TestTruncatedInputIsCorrupt(t *testing.T) {
	for _, tc := range codecMessages() {
		enc := AppendMessage(nil, &tc.m)
		for n := range len(enc) {
			if _, err := DecodeMessage(enc[:n], Limits{}); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("%s: prefix of %d/%d bytes: err = %v, want ErrCorrupt", tc.name, n, len(enc), err)
			}
		}
		_, err := DecodeMessage(append(enc, 0), Limits{})
		if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "trailing") {
			t.Fatalf("%s: trailing byte: err = %v", tc.name, err)
		}
	}
	hs := AppendHardState(nil, &HardState{Promised: Ballot{Round: 1 << 40, Node: 3}, Commit: 1 << 20})
	for n := range len(hs) {
		if _, err := DecodeHardState(hs[:n]); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("hard state prefix of %d bytes: err = %v", n, err)
		}
	}
}

func TestUnknownVersionIsRefused(t *testing.T) {
	m := Message{Type: MsgCommit, From: 1, To: 2}
	enc := AppendMessage(nil, &m)
	for _, old := range []byte{1, 2} { // before the Urgent flag; before Contended
		enc[0] = old
		_, err := DecodeMessage(enc, Limits{})
		if want := fmt.Sprintf("version %d", old); !errors.Is(err, ErrUnknownVersion) || !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), want) {
			t.Fatalf("message: err = %v, want ErrUnknownVersion naming %s", err, want)
		}
	}
	rec := AppendEntryRecord(nil, &Entry{})
	rec[0] = 0
	if _, err := DecodeEntryRecord(1, rec, Limits{}); !errors.Is(err, ErrUnknownVersion) {
		t.Fatalf("entry record: err = %v, want ErrUnknownVersion", err)
	}
	hs := AppendHardState(nil, &HardState{})
	hs[0] = 200
	if _, err := DecodeHardState(hs); !errors.Is(err, ErrUnknownVersion) {
		t.Fatalf("hard state: err = %v, want ErrUnknownVersion", err)
	}
}

// manyCommands returns a message whose entry `at` holds n empty commands.
func manyCommands(at, n int) Message {
	m := Message{Type: MsgFetchReply, From: 1, To: 2, Entries: make([]Entry, at+1)}
	for i := range m.Entries {
		m.Entries[i].Slot = uint64(i)
	}
	m.Entries[at].Value.Cmds = make([]Command, n)
	return m
}

func TestLimitsAreEnforcedWithClearErrors(t *testing.T) {
	withData := func(n int) Message {
		return Message{Type: MsgAccept, Entries: []Entry{{Value: Value{Cmds: []Command{{Data: make([]byte, n)}}}}}}
	}
	tests := []struct {
		name string
		m    Message
		lim  Limits
		want string
	}{
		{"commands per value", manyCommands(3, 70000), Limits{},
			"70000 commands in entry 3, the limit is 65536 (Limits.MaxCommands)"},
		{"entries", Message{Type: MsgFetchReply, Entries: make([]Entry, 10)}, Limits{MaxEntries: 9},
			"10 entries, the limit is 9 (Limits.MaxEntries)"},
		{"command bytes", withData(2 << 20), Limits{MaxMessageBytes: 4 << 20},
			"command data of 2097152 bytes in entry 0 command 0, the limit is 1048576 (Limits.MaxCommandBytes)"},
		{"message bytes", withData(9 << 20), Limits{MaxCommandBytes: 16 << 20},
			"the limit is 8388608 (Limits.MaxMessageBytes)"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := DecodeMessage(AppendMessage(nil, &tc.m), tc.lim)
			if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v\nwant ErrCorrupt containing %q", err, tc.want)
			}
		})
	}
	rec := AppendEntryRecord(nil, &manyCommands(0, 10).Entries[0])
	_, err := DecodeEntryRecord(77, rec, Limits{MaxCommands: 5})
	if want := "10 commands in the record of slot 77, the limit is 5"; err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("entry record: err = %v, want it to contain %q", err, want)
	}
}

func TestMalformedInputIsCorrupt(t *testing.T) {
	valid := AppendMessage(nil, &Message{Type: MsgCommit, Group: 1, From: 1, To: 2})
	patch := func(at int, bs ...byte) []byte {
		out := append([]byte(nil), valid[:at]...)
		out = append(out, bs...)
		return append(out, valid[at+1:]...)
	}
	tests := []struct {
		name string
		in   []byte
		want string
	}{
		{"empty", nil, "empty input"},
		{"type zero", patch(1, 0), "unknown message type 0"},
		{"type unknown", patch(1, 99), "unknown message type 99"},
		{"group beyond 32 bits", patch(2, 0x80, 0x80, 0x80, 0x80, 0x10), "group is 4294967296, which does not fit in 32 bits"},
		{"long varint", patch(2, 0x81, 0x00), "group is not in its shortest encoding"},
		{"varint overflow", patch(2, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f), "group overflows 64 bits"},
		{"flags", patch(len(valid)-2, 0x08), "unknown message flags 0x8"},
		{"entries beyond input", patch(len(valid)-1, 100), "100 entries, but only 0 bytes are left"},
	}
	for _, tc := range tests {
		_, err := DecodeMessage(tc.in, Limits{})
		if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v\nwant ErrCorrupt containing %q", tc.name, err, tc.want)
		}
	}
	chosen := AppendMessage(nil, &Message{Type: MsgPromise, Entries: []Entry{{Chosen: true}}})
	// The entry flags byte follows the 11 bytes of the header and the
	// entry's slot and ballot (3 bytes).
	chosen[14] = 3
	if _, err := DecodeMessage(chosen, Limits{}); err == nil || !strings.Contains(err.Error(), "unknown entry flags 0x3") {
		t.Errorf("entry flags: err = %v", err)
	}
}

// TestDecodeAllocatesInProportionToInput: a short input that claims huge
// counts and lengths is refused before anything is allocated for them.
func TestDecodeAllocatesInProportionToInput(t *testing.T) {
	m := Message{Type: MsgAccept, Entries: []Entry{{Value: Value{Cmds: []Command{{Data: []byte("x")}}}}}}
	enc := AppendMessage(nil, &m)
	// Claim 1 MiB of data for the only command (length is the byte before
	// the data).
	claim := append(append([]byte(nil), enc[:len(enc)-2]...), 0x80, 0x80, 0x40, 'x')
	// Claim 65536 commands with a few bytes of input.
	cmds := AppendMessage(nil, &Message{Type: MsgAccept, Entries: []Entry{{}}})
	cmds = append(cmds[:len(cmds)-1], 0x80, 0x80, 0x04, 1, 2, 3, 4)
	for _, in := range [][]byte{claim, cmds} {
		// MemStats counts every goroutine's allocations; the least of a few
		// tries is the decoder's own.
		least := ^uint64(0)
		var err error
		for try := 0; try < 5; try++ {
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			_, err = DecodeMessage(in, Limits{})
			runtime.ReadMemStats(&after)
			least = min(least, after.TotalAlloc-before.TotalAlloc)
		}
		if !errors.Is(err, ErrCorrupt) {
			t.Fatalf("err = %v, want ErrCorrupt", err)
		}
		if least > 4096 {
			t.Fatalf("decoding %d bytes allocated %d bytes before failing (%v)", len(in), least, err)
		}
	}
}

func TestDecodedDataIsOneAllocation(t *testing.T) {
	m := benchAccept()
	enc := AppendMessage(nil, &m)
	allocs := testing.AllocsPerRun(100, func() {
		if _, err := DecodeMessage(enc, Limits{}); err != nil {
			t.Fatal(err)
		}
	})
	// The entries, the commands of the one entry, and all their data.
	if allocs != 3 {
		t.Fatalf("decoding an Accept of 64 commands took %v allocations, want 3", allocs)
	}
	var buf []byte
	allocs = testing.AllocsPerRun(100, func() { buf = AppendMessage(buf[:0], &m) })
	if allocs != 0 {
		t.Fatalf("encoding into a reused buffer took %v allocations, want 0", allocs)
	}
}

// benchAccept is an Accept carrying 64 commands of 100 bytes.
func benchAccept() Message {
	b := Ballot{Round: 12, Node: 1}
	v := Value{ID: ValueID{Ballot: b, N: 345}}
	for i := range 64 {
		data := bytes.Repeat([]byte{byte(i)}, 100)
		v.Cmds = append(v.Cmds, Command{ID: CommandID{Client: 1<<40 + uint64(i), Seq: 1000 + uint64(i)}, Ack: 1000, Data: data})
	}
	return Message{Type: MsgAccept, Group: 9, From: 1, To: 2, Ballot: b, Commit: 100000,
		Entries: []Entry{{Slot: 100003, Ballot: b, Value: v}}}
}

func BenchmarkAppendMessage(b *testing.B) {
	m := benchAccept()
	buf := AppendMessage(nil, &m)
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendMessage(buf[:0], &m)
	}
}

func BenchmarkDecodeMessage(b *testing.B) {
	m := benchAccept()
	enc := AppendMessage(nil, &m)
	b.SetBytes(int64(len(enc)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := DecodeMessage(enc, Limits{}); err != nil {
			b.Fatal(err)
		}
	}
}
