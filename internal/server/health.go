package server

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/lockd/lockd/paxos"
)

// Health of a node, for load balancers and Kubernetes probes (README,
// "Health endpoints"):
//
//   - /healthz answers 200 while the process runs and its data dir takes a
//     synced write; 503 when it does not (a full or read-only disk). A
//     failing /healthz means: restart or repair this node.
//   - /readyz answers 200 when the node is in the mesh (it reaches a
//     majority of the nodes, itself included) and every group has a master
//     that this node can reach (itself, or a peer that answers probes); 503
//     otherwise, with the reasons. A failing /readyz means: do not send
//     clients here now; it is expected for a lease or so after a master dies.
//
// Both answer a small JSON object; neither needs authentication, like the
// rest of the admin port.

// healthCache keeps the last store probe for a moment, so that probes
// hammering /healthz do not hammer the disk.
type healthCache struct {
	mu  sync.Mutex
	at  time.Time
	err error
}

const storeProbeEvery = time.Second

// storeWritable writes, syncs and removes a small file in the data dir.
func (s *Server) storeWritable() error {
	c := &s.obs.health
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.at.IsZero() && time.Since(c.at) < storeProbeEvery {
		return c.err
	}
	c.err = probeDir(s.cfg.DataDir)
	c.at = time.Now()
	return c.err
}

func probeDir(dir string) error {
	f, err := os.CreateTemp(dir, ".healthz-*")
	if err != nil {
		return fmt.Errorf("data dir %s is not writable: %w", dir, err)
	}
	name := f.Name()
	defer os.Remove(name)
	if _, err := f.Write([]byte("lockd healthz\n")); err != nil {
		f.Close()
		return fmt.Errorf("write to data dir %s: %w", dir, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("sync in data dir %s: %w", dir, err)
	}
	return f.Close()
}

// Health is the answer of /healthz and /readyz.
type Health struct {
	OK      bool     `json:"ok"`
	Node    uint32   `json:"node"`
	Reasons []string `json:"reasons,omitempty"`
	// PeersUp counts the nodes this one reaches, itself included; Quorum is
	// the majority of the cluster.
	PeersUp int `json:"peers_up,omitempty"`
	Quorum  int `json:"quorum,omitempty"`
	// Groups counts the groups; Masterless lists those without a master
	// this node reaches.
	Groups     int      `json:"groups,omitempty"`
	Masterless []uint32 `json:"masterless,omitempty"`
}

// Healthz reports whether the process is alive and its store writable.
func (s *Server) Healthz() Health {
	h := Health{OK: true, Node: uint32(s.cfg.ID)}
	if err := s.storeWritable(); err != nil {
		h.OK = false
		h.Reasons = append(h.Reasons, err.Error())
	}
	return h
}

// Readyz reports whether the node is in the mesh and every group has a
// master it can reach.
func (s *Server) Readyz() Health {
	h := Health{OK: true, Node: uint32(s.cfg.ID), Groups: s.cfg.Groups}
	ids := s.nodeIDs()
	h.Quorum = len(ids)/2 + 1
	for _, id := range ids {
		if s.obs.peerAlive(id) {
			h.PeersUp++
		}
	}
	if h.PeersUp < h.Quorum {
		h.OK = false
		h.Reasons = append(h.Reasons, fmt.Sprintf("not in the mesh: reaches %d of %d nodes (itself included), a majority is %d", h.PeersUp, len(ids), h.Quorum))
	}
	var unreachable []paxos.NodeID
	for _, gm := range s.elector.Snapshot(s.now()) {
		switch {
		case gm.Master == 0:
			h.Masterless = append(h.Masterless, uint32(gm.Group))
		case !s.obs.peerAlive(gm.Master):
			h.Masterless = append(h.Masterless, uint32(gm.Group))
			unreachable = append(unreachable, gm.Master)
		}
	}
	if len(h.Masterless) > 0 {
		h.OK = false
		r := fmt.Sprintf("%d of %d groups have no master this node reaches", len(h.Masterless), s.cfg.Groups)
		if len(unreachable) > 0 {
			r += fmt.Sprintf(" (masters not answering: %v)", unreachable)
		}
		h.Reasons = append(h.Reasons, r)
	}
	return h
}

func serveHealth(w http.ResponseWriter, h Health) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	if !h.OK {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	_ = json.NewEncoder(w).Encode(h)
}

func (s *Server) healthzHandler(w http.ResponseWriter, _ *http.Request) { serveHealth(w, s.Healthz()) }
func (s *Server) readyzHandler(w http.ResponseWriter, _ *http.Request)  { serveHealth(w, s.Readyz()) }
