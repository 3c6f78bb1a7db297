package protomodel

import "slices"

// Symmetry reduction. Nodes that own no ballot play the same part, so two
// states that differ only by a permutation of them are the same state up to
// renaming, and the checker visits one of them. The canonical form orders
// those nodes by everything the state holds about each (its acceptor and
// learner state, its votes and acks, its Promises): nodes that compare equal
// are identical, so the order among them does not change the encoding.

// symmetry holds what canonical needs about the configuration.
type symmetry struct {
	free   []int // the nodes that own no ballot, in increasing order
	sorted []int // scratch: free, sorted by cmpNode
	newID  [MaxNodes]uint8
	ps     []promise // scratch for the renamed promises
}

func newSymmetry(c *Config) *symmetry {
	y := &symmetry{}
	owns := [MaxNodes]bool{}
	for _, o := range c.Owners {
		owns[o] = true
	}
	for i := 0; i < c.Nodes; i++ {
		if !owns[i] {
			y.free = append(y.free, i)
		}
	}
	y.sorted = make([]int, len(y.free))
	return y
}

// canonical renames the free nodes of t into u so that they appear in
// canonical order, and returns u; or returns t itself when t is already in
// canonical order.
func (y *symmetry) canonical(c *Config, t, u *State) *State {
	if len(y.free) < 2 {
		return t
	}
	copy(y.sorted, y.free)
	// Insertion sort: at most seven nodes.
	for k := 1; k < len(y.sorted); k++ {
		for j := k; j > 0 && cmpNode(c, t, y.sorted[j-1], y.sorted[j]) > 0; j-- {
			y.sorted[j-1], y.sorted[j] = y.sorted[j], y.sorted[j-1]
		}
	}
	if slices.Equal(y.sorted, y.free) {
		return t
	}
	for i := 0; i < c.Nodes; i++ {
		y.newID[i] = uint8(i)
	}
	for k, old := range y.sorted {
		y.newID[old] = uint8(y.free[k])
	}
	*u = *t
	for i := 0; i < c.Nodes; i++ {
		u.nodes[y.newID[i]] = t.nodes[i]
	}
	u.votes, u.acks = 0, 0
	for a := 0; a < c.Nodes; a++ {
		na := int(y.newID[a])
		for b := 1; b <= len(c.Owners); b++ {
			for s := 0; s < c.Slots; s++ {
				bit := c.voteBit(a, b, s)
				if t.votes&bit != 0 {
					u.votes |= c.voteBit(na, b, s)
				}
				if t.acks&bit != 0 {
					u.acks |= c.voteBit(na, b, s)
				}
			}
		}
	}
	y.ps = append(y.ps[:0], t.promises...)
	for k := range y.ps {
		y.ps[k].A = y.newID[y.ps[k].A]
	}
	slices.SortFunc(y.ps, func(p, q promise) int { return comparePromise(&p, &q) })
	u.promises = y.ps
	return u
}

// cmpNode orders nodes x and y of t by everything t holds about them.
func cmpNode(c *Config, t *State, x, y int) int {
	nx, ny := &t.nodes[x], &t.nodes[y]
	if nx.Promised != ny.Promised {
		return int(nx.Promised) - int(ny.Promised)
	}
	if nx.Commit != ny.Commit {
		return int(nx.Commit) - int(ny.Commit)
	}
	for s := 0; s < c.Slots; s++ {
		if d := cmpEntry(nx.Log[s], ny.Log[s]); d != 0 {
			return d
		}
	}
	for b := 1; b <= len(c.Owners); b++ {
		for s := 0; s < c.Slots; s++ {
			bx, by := c.voteBit(x, b, s), c.voteBit(y, b, s)
			if d := cmpBit(t.votes&bx != 0, t.votes&by != 0); d != 0 {
				return d
			}
			if d := cmpBit(t.acks&bx != 0, t.acks&by != 0); d != 0 {
				return d
			}
		}
	}
	// Promises of each node, in the order of the sorted list.
	i, j := 0, 0
	for {
		for i < len(t.promises) && int(t.promises[i].A) != x {
			i++
		}
		for j < len(t.promises) && int(t.promises[j].A) != y {
			j++
		}
		switch {
		case i == len(t.promises) && j == len(t.promises):
			return 0
		case i == len(t.promises):
			return -1
		case j == len(t.promises):
			return 1
		}
		p, q := t.promises[i], t.promises[j]
		p.A, q.A = 0, 0
		if d := comparePromise(&p, &q); d != 0 {
			return d
		}
		i++
		j++
	}
}

func cmpEntry(x, y Entry) int {
	if x.B != y.B {
		return int(x.B) - int(y.B)
	}
	if x.V != y.V {
		return int(x.V) - int(y.V)
	}
	return cmpBit(x.Chosen, y.Chosen)
}

func cmpBit(x, y bool) int {
	switch {
	case x == y:
		return 0
	case y:
		return -1
	}
	return 1
}
