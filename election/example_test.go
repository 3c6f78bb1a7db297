package election_test

import (
	"fmt"
	"time"

	"github.com/lockd/lockd/election"
	"github.com/lockd/lockd/paxos"
)

// Node 1 of three takes group 0, which prefers it: Tick asks it to propose a
// lease once Paxos reports it master, the lease comes back through the log,
// and the node serves until its own conservative count ends.
func Example() {
	e, err := election.New(election.Config{Self: 1, Nodes: []paxos.NodeID{1, 2, 3}, Groups: 3, Rand: func(int) int { return 0 }})
	if err != nil {
		panic(err)
	}
	start := time.Unix(0, 0)
	master := func(g paxos.GroupID) (paxos.GroupStatus, error) {
		return paxos.GroupStatus{Group: g, Role: "master", Ballot: paxos.Ballot{Round: 1, Node: 1}}, nil
	}
	var lease election.LeaseCmd
	for _, a := range e.Tick(start, master) {
		fmt.Println(a.Kind, "in group", a.Group, "-", a.Cmd.Holder, a.Cmd.Duration)
		lease = a.Cmd
	}
	// The server proposes lease.Encode() behind its tag byte; when the log
	// chooses it, the apply path hands it back.
	if err := e.Applied(0, 0, lease, start.Add(5*time.Millisecond)); err != nil {
		panic(err)
	}
	fmt.Println("serving after 5ms:", e.Serving(0, start.Add(5*time.Millisecond)))
	fmt.Println("serving after 1.9s without renewal:", e.Serving(0, start.Add(1900*time.Millisecond)))
	m, epoch := e.Master(0, start.Add(5*time.Millisecond))
	fmt.Println("master", m, "epoch", epoch)
	// Output:
	// propose in group 0 - 1 2s
	// serving after 5ms: true
	// serving after 1.9s without renewal: false
	// master 1 epoch 4
}
