// Package quicnet is lockd's network layer: QUIC (quic-go) between nodes and
// between clients and nodes, hidden behind small types of its own so that no
// other package imports quic-go.
//
// # One socket, two protocols
//
// A Node owns one UDP socket (one quic.Transport) that both listens and
// dials. TLS ALPN tells the two protocols on it apart: ALPNPeer for the peer
// mesh and ALPNClient for clients. Both are mutually authenticated with the
// cluster CA (see internal/pki): a node proves its ID with the identity name
// in its certificate, a client with any certificate the CA issued.
//
// # Peer mesh
//
// Node.Send queues a message for a peer and never blocks: each peer has a few
// lanes (long-lived QUIC streams, one writer goroutine each) with a bounded
// queue; a full queue drops the message and counts it, because Paxos retries
// anyway and a blocked proposer would be worse. A writer drains everything
// queued on its lane into one buffered write, so bursts coalesce into few
// packets. Messages on one lane arrive in the order they were sent; lanes do
// not wait for each other. Incoming messages go to Config.Handler.
//
// Exactly one connection serves each pair of nodes: the node with the lower
// ID dials, the higher one accepts, and a newer accepted connection from a
// peer replaces the older one (the peer restarted). The dialer reconnects
// with exponential backoff and jitter.
//
// # Clients
//
// Node.Accept returns client connections as soon as their handshake is done:
// the accept loop hands each one over through a channel, with no timer or
// poll in between (field report F5). Dial connects a client. Conn and Stream
// carry length-prefixed frames (see ReadFrame and AppendFrame).
//
// # Faults
//
// FaultConn wraps the UDP socket and delays, drops, duplicates or partitions
// packets, for tests and benchmarks of the layers above.
//
// # UDP buffer sizes
//
// quic-go asks for 7 MiB socket buffers and logs "failed to sufficiently
// increase receive buffer size" when the kernel caps them lower. The warning
// is harmless on loopback; in production raise the caps once per host:
//
//	sysctl -w net.core.rmem_max=7500000
//	sysctl -w net.core.wmem_max=7500000
//
// (persist them in /etc/sysctl.d/). Without them, bursts of packets overflow
// the receive buffer and are retransmitted, which costs latency.
package quicnet
