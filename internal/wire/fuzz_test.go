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
