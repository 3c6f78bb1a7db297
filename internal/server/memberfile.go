package server

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"

	"github.com/lockd/lockd/paxos"
)

// The member file (memberFileName in the data dir) keeps what a node must
// know of the membership across restarts and that its Paxos state does not
// say on its own:
//
//   - Initial: the configuration the node's groups started from
//     (paxos.Config.Nodes), the cluster's founding configuration. Every
//     node must replay its log from the same one, so it is fixed once:
//     --peers for a node of a new cluster; for a node that enters a
//     running cluster on an empty data dir (lockd run --join,
//     --recover-from-peers), the one a member tells it in its hello
//     (incarnation.go), never its own --peers, which only says where
//     members are. Later --peers lists do not change it (after a
//     replacement they list other nodes).
//   - Pending: such a node has not been told the founding configuration
//     yet (Initial is empty). It waits for it again if it restarts.
//   - Addrs: the addresses the logs gave (peers added by a membership
//     change), so that a restart reaches them without --peers.
//   - Member: the node has been in some group's configuration (from the
//     start for a node of a new cluster; once added for a --join node).
//     A node that was a member and that no group lists any more was
//     removed, even when its log no longer shows it (a snapshot installed
//     after its removal).
//   - Removed: set, before the node stops, once it was removed from the
//     cluster. A node that finds it refuses to start (ErrRemoved): a
//     snapshot taken after its removal no longer lists it, and it would
//     otherwise look like a node waiting to join.
//
// The file is written whole, synced and renamed into place.
const memberFileName = "lockd-members.json"

// ErrJoinNotEmpty: Config.Join was set for a data dir that holds state.
var ErrJoinNotEmpty = errors.New("--join starts a brand-new node and needs an empty data dir")

// maxMemberFile bounds the file read at start.
const maxMemberFile = 1 << 20

type memberFile struct {
	Version int               `json:"version"`
	Initial []uint32          `json:"initial"`
	Pending bool              `json:"pending,omitempty"`
	Joined  bool              `json:"joined,omitempty"`
	Member  bool              `json:"member,omitempty"`
	Addrs   map[string]string `json:"addrs,omitempty"`
	Removed bool              `json:"removed,omitempty"`
}

// loadMemberFile reads dir's member file; ok is false when there is none.
func loadMemberFile(dir string) (mf memberFile, ok bool, err error) {
	path := filepath.Join(dir, memberFileName)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return memberFile{}, false, nil
	}
	if err != nil {
		return memberFile{}, false, fmt.Errorf("read the member file: %w", err)
	}
	if len(b) > maxMemberFile {
		return memberFile{}, false, fmt.Errorf("member file %s is %d bytes, more than %d: it is not one lockd wrote; restore it from the data dir's backup", path, len(b), maxMemberFile)
	}
	if err := json.Unmarshal(b, &mf); err != nil {
		return memberFile{}, false, fmt.Errorf("member file %s is damaged (%w): restore it from the data dir's backup, or replace this node (README, Operations)", path, err)
	}
	if mf.Version != 1 || (len(mf.Initial) == 0) != mf.Pending {
		return memberFile{}, false, fmt.Errorf("member file %s: version %d with %d initial nodes, want version 1 and at least one node: was it written by a newer lockd?", path, mf.Version, len(mf.Initial))
	}
	return mf, true, nil
}

// writeMemberFile writes mf to dir, durably (temp file, sync, rename, sync
// of the directory).
func writeMemberFile(dir string, mf memberFile) error {
	mf.Version = 1
	b, err := json.MarshalIndent(mf, "", "  ")
	if err != nil {
		return err
	}
	path := filepath.Join(dir, memberFileName)
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("write the member file: %w", err)
	}
	_, werr := f.Write(append(b, '\n'))
	serr := f.Sync()
	cerr := f.Close()
	if err := errors.Join(werr, serr, cerr); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write the member file %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write the member file: %w", err)
	}
	if d, err := os.Open(dir); err == nil {
		err = d.Sync()
		d.Close()
		if err != nil {
			return fmt.Errorf("sync the data dir after writing the member file: %w", err)
		}
	}
	return nil
}

// AwaitsFounding reports whether a node on dataDir would wait in New for a
// member to tell it the cluster's founding configuration: a data dir
// without a member file (a new node: a --join node waits), or one whose
// member file says it was not told yet.
func AwaitsFounding(dataDir string) (bool, error) {
	mf, ok, err := loadMemberFile(dataDir)
	if err != nil {
		return false, err
	}
	return !ok || mf.Pending, nil
}

// setInitial records the founding configuration a pending node was told.
func (s *Server) setInitial(ids []paxos.NodeID) error {
	s.mfMu.Lock()
	defer s.mfMu.Unlock()
	mf := s.mf
	mf.Initial = mf.Initial[:0:0]
	for _, id := range ids {
		mf.Initial = append(mf.Initial, uint32(id))
	}
	mf.Pending = false
	if err := writeMemberFile(s.cfg.DataDir, mf); err != nil {
		return err
	}
	s.mf = mf
	return nil
}

// initialNodes returns the ids of mf.Initial.
func (mf memberFile) initialNodes() []paxos.NodeID {
	out := make([]paxos.NodeID, 0, len(mf.Initial))
	for _, id := range mf.Initial {
		out = append(out, paxos.NodeID(id))
	}
	return out
}

// addrs returns mf.Addrs by node id; entries that are not node ids are
// skipped.
func (mf memberFile) addrs() map[paxos.NodeID]string {
	out := map[paxos.NodeID]string{}
	for k, v := range mf.Addrs {
		id, err := strconv.ParseUint(k, 10, 32)
		if err == nil && id != 0 && v != "" {
			out[paxos.NodeID(id)] = v
		}
	}
	return out
}

// openMemberFile decides the node's initial configuration and known
// addresses at start, creating the member file for a new data dir, and
// refuses a node that was removed.
func openMemberFile(cfg *Config, fresh bool) (memberFile, error) {
	mf, ok, err := loadMemberFile(cfg.DataDir)
	if err != nil {
		return mf, err
	}
	if ok {
		if mf.Removed {
			return mf, ErrRemoved
		}
		return mf, nil
	}
	if cfg.Join && !fresh {
		return mf, fmt.Errorf("%w, but %s holds state: restart an existing node without --join, or give the new node an empty data dir", ErrJoinNotEmpty, cfg.DataDir)
	}
	if cfg.Join && len(cfg.Peers) < 2 {
		return mf, fmt.Errorf("--join needs --peers to list at least one member of the cluster besides this node (%d)", cfg.ID)
	}
	// A node of a new cluster is in its initial configuration; a joining
	// one becomes a member once added (members.go records it then). A node
	// that enters a running cluster learns the founding configuration from
	// a member (Server.awaitFounding).
	mf = memberFile{Version: 1, Joined: cfg.Join, Member: !cfg.Join, Pending: cfg.Join || cfg.RecoverFromPeers}
	if !mf.Pending {
		for id := range cfg.Peers {
			mf.Initial = append(mf.Initial, uint32(id))
		}
		slices.Sort(mf.Initial)
	}
	if err := writeMemberFile(cfg.DataDir, mf); err != nil {
		return mf, err
	}
	return mf, nil
}

// saveMemberFile records the known addresses, and that this node is a
// member or was removed when member or removed is set (neither is ever
// cleared), keeping the initial configuration.
func (s *Server) saveMemberFile(addrs map[paxos.NodeID]string, member, removed bool) error {
	s.mfMu.Lock()
	defer s.mfMu.Unlock()
	mf := s.mf
	mf.Addrs = map[string]string{}
	for id, a := range addrs {
		if _, boot := s.cfg.Peers[id]; !boot || s.cfg.Peers[id] != a {
			mf.Addrs[strconv.FormatUint(uint64(id), 10)] = a
		}
	}
	mf.Member = mf.Member || member
	mf.Removed = mf.Removed || removed
	if err := writeMemberFile(s.cfg.DataDir, mf); err != nil {
		return err
	}
	s.mf = mf
	return nil
}
