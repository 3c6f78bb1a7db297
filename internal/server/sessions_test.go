package server

import "testing"

// TestOwnCommandsNeverAcknowledgeOneInFlight: the Ack of a new command stays
// at or below every sequence number still in flight, so a command that lands
// after a later one is still applied.
func TestOwnCommandsNeverAcknowledgeOneInFlight(t *testing.T) {
	ids := newCommandIDs(1)
	s1, _ := ids.next()
	s2, ack2 := ids.next()
	if ack2 > s1 {
		t.Fatalf("seq %d acknowledged %d while %d is in flight", s2, ack2, s1)
	}
	ids.done(s1)
	s3, ack3 := ids.next()
	if ack3 > s2 {
		t.Fatalf("seq %d acknowledged %d while %d is in flight", s3, ack3, s2)
	}
	ids.done(s2)
	ids.done(s3)
	s4, ack4 := ids.next()
	if ack4 != s4 {
		t.Fatalf("nothing in flight: ack %d, want %d", ack4, s4)
	}
}
