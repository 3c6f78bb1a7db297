package wire

import (
	"reflect"
	"testing"
)

func FuzzDecode(f *testing.F) {
	m := sample()
	f.Add(Append(nil, &m))
	f.Add(Append(nil, &Msg{Type: TypeResponse, ReqID: 1, Code: CodeOK}))
	f.Add([]byte{Version})
	// Membership requests and answers (issue 11).
	f.Add(Append(nil, &Msg{Type: TypeChangeMembers, ReqID: 2, Group: 1, ChangeOp: ChangeAddLearner, Members: []MemberItem{{ID: 4, Addr: "127.0.0.1:7004"}}}))
	f.Add(Append(nil, &Msg{Type: TypeResponse, ReqID: 3, Code: CodeOK, Slot: 900, Epoch: 1100, Flags: FlagPending,
		Members: []MemberItem{{ID: 1, Voter: true, Progress: 900}, {ID: 4, Addr: "127.0.0.1:7004", Progress: 12}}}))
	f.Add(Append(nil, &Msg{Type: TypeResponse, ReqID: 4, Code: CodeChangePending, Err: "another membership change is in progress in group 1"}))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := Decode(b)
		if err != nil {
			return
		}
		again, err := Decode(Append(nil, &m))
		if err != nil {
			t.Fatalf("re-encoding of a decoded message does not decode: %v", err)
		}
		if !reflect.DeepEqual(again, m) {
			t.Fatalf("re-encoding changed the message:\n%+v\n%+v", m, again)
		}
	})
}
