package main

import (
	"fmt"
	"net"
	"sort"
	"strconv"
	"strings"

	"github.com/lockd/lockd/paxos"
)

// parsePeers parses --peers: "1=127.0.0.1:7001,2=127.0.0.1:7002,...", every
// node of the cluster (this one included) with its UDP address.
func parsePeers(s string) (map[paxos.NodeID]string, error) {
	peers := map[paxos.NodeID]string{}
	addrs := map[string]paxos.NodeID{}
	for _, item := range strings.Split(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		idStr, addr, ok := strings.Cut(item, "=")
		if !ok {
			return nil, fmt.Errorf("--peers entry %q: want ID=HOST:PORT, e.g. 1=127.0.0.1:7001", item)
		}
		n, err := strconv.ParseUint(strings.TrimSpace(idStr), 10, 32)
		if err != nil || n == 0 {
			return nil, fmt.Errorf("--peers entry %q: node id %q must be a number from 1 on", item, idStr)
		}
		id := paxos.NodeID(n)
		addr = strings.TrimSpace(addr)
		host, port, err := net.SplitHostPort(addr)
		if err != nil || host == "" {
			return nil, fmt.Errorf("--peers entry %q: address %q must be HOST:PORT", item, addr)
		}
		if p, err := strconv.ParseUint(port, 10, 16); err != nil || p == 0 {
			return nil, fmt.Errorf("--peers entry %q: port %q must be 1 to 65535", item, port)
		}
		if _, dup := peers[id]; dup {
			return nil, fmt.Errorf("--peers names node %d twice", id)
		}
		if other, dup := addrs[addr]; dup {
			return nil, fmt.Errorf("--peers gives nodes %d and %d the same address %s", other, id, addr)
		}
		peers[id], addrs[addr] = addr, id
	}
	if len(peers) == 0 {
		return nil, fmt.Errorf("--peers is empty: list every node as ID=HOST:PORT, e.g. 1=127.0.0.1:7001,2=127.0.0.1:7002,3=127.0.0.1:7003")
	}
	return peers, nil
}

// formatPeers is the inverse of parsePeers, in node order.
func formatPeers(peers map[paxos.NodeID]string) string {
	ids := make([]paxos.NodeID, 0, len(peers))
	for id := range peers {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	parts := make([]string, len(ids))
	for i, id := range ids {
		parts[i] = fmt.Sprintf("%d=%s", id, peers[id])
	}
	return strings.Join(parts, ",")
}
