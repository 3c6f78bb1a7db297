package server

import (
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/lockd/lockd/lease"
	"github.com/lockd/lockd/paxos"
)

// The status page of the admin port: "/" is a small HTML page (no external
// assets) whose script polls a JSON API once a second:
//
//	/api/status                          members, groups, masters
//	/api/locks?q=TEXT&offset=N&limit=N   locks whose name contains TEXT
//	/api/sessions?q=TEXT&offset=N&limit=N sessions whose id or owner contains TEXT
//
// Lists are sorted (locks by name, sessions by group and id) and paged;
// limit is at most maxPage.

const (
	defaultPage = 50
	maxPage     = 500
)

// PageStatus is /api/status.
type PageStatus struct {
	Node    uint32       `json:"node"`
	Addr    string       `json:"addr"`
	Uptime  string       `json:"uptime"`
	Time    time.Time    `json:"time"`
	Ready   bool         `json:"ready"`
	Members []PageMember `json:"members"`
	Groups  []PageGroup  `json:"groups"`
}

// PageMember is one node as this node sees it.
type PageMember struct {
	ID    uint32  `json:"id"`
	Addr  string  `json:"addr"`
	State string  `json:"state"` // self, up, down, unknown
	RTTms float64 `json:"rtt_ms"`
	Since string  `json:"since,omitempty"`
}

// PageGroup is one group as this node sees it.
type PageGroup struct {
	Group       uint32 `json:"group"`
	Master      uint32 `json:"master"`
	Epoch       uint64 `json:"epoch"`
	MasterSince string `json:"master_since,omitempty"`
	Serving     bool   `json:"serving"`
	Role        string `json:"role"`
	Commit      uint64 `json:"commit"`
	Applied     uint64 `json:"applied"`
	InFlight    int    `json:"in_flight"`
	Sessions    int    `json:"sessions"`
	Locks       int    `json:"locks"`
	Waiters     int    `json:"waiters"`
	// Voters and Learners: the group's newest configuration as this node
	// knows it; ChangePending while it is not in force yet.
	Voters        []uint32 `json:"voters"`
	Learners      []uint32 `json:"learners"`
	ChangePending bool     `json:"change_pending"`
}

// PageLock is one lock of /api/locks.
type PageLock struct {
	Name       string       `json:"name"`
	Group      uint32       `json:"group"`
	Mode       string       `json:"mode"` // exclusive, shared, or free (in lock-delay, or only awaited)
	Holders    []PageHolder `json:"holders"`
	Waiters    []PageWaiter `json:"waiters"`
	HeldSince  string       `json:"held_since,omitempty"`
	DelayUntil string       `json:"delay_until,omitempty"`
}

// PageHolder is one grant of a lock.
type PageHolder struct {
	Session uint64 `json:"session"`
	Owner   string `json:"owner"`
	Token   uint64 `json:"token"`
	Since   string `json:"since"`
}

// PageWaiter is one queued request.
type PageWaiter struct {
	Session uint64 `json:"session"`
	Owner   string `json:"owner"`
	Mode    string `json:"mode"`
	Since   string `json:"since"`
}

// PageSession is one session of /api/sessions.
type PageSession struct {
	ID      uint64   `json:"id"`
	Group   uint32   `json:"group"`
	Owner   string   `json:"owner"`
	Client  uint64   `json:"client"`
	TTL     string   `json:"ttl"`
	Opened  string   `json:"opened"`
	LastKA  string   `json:"last_keepalive,omitempty"`
	Held    []string `json:"held"`
	Waiting []string `json:"waiting"`
}

// PageList is a page of a list.
type PageList[T any] struct {
	Total  int `json:"total"`
	Offset int `json:"offset"`
	Limit  int `json:"limit"`
	Items  []T `json:"items"`
}

func fmtNanos(ns int64) string {
	if ns == 0 {
		return ""
	}
	return time.Unix(0, ns).UTC().Format(time.RFC3339Nano)
}

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339Nano)
}

// PageStatus collects /api/status.
func (s *Server) PageStatus(ctx context.Context) (PageStatus, error) {
	st, err := s.Status(ctx)
	if err != nil {
		return PageStatus{}, err
	}
	out := PageStatus{Node: uint32(st.Node), Addr: st.Addr, Uptime: st.Uptime.String(), Time: time.Now().UTC(), Ready: s.Readyz().OK}
	for _, m := range st.Members {
		pm := PageMember{ID: uint32(m.ID), Addr: m.Addr, State: "self"}
		if m.ID != s.cfg.ID {
			ps := s.obs.peerState(m.ID)
			pm.State, pm.RTTms, pm.Since = ps.State, float64(ps.RTT.Microseconds())/1000, fmtTime(ps.Since)
		}
		out.Members = append(out.Members, pm)
	}
	for _, g := range st.Groups {
		_, _, since := s.obs.groupMaster(g.Group)
		pg := PageGroup{Group: uint32(g.Group), Master: uint32(g.Master), Epoch: g.Epoch, MasterSince: fmtTime(since),
			Serving: g.Serving, Role: g.Role, Commit: g.Commit, Applied: g.Applied, InFlight: g.InFlight,
			Sessions: g.Sessions, Locks: g.Locks, Waiters: g.Waiters, ChangePending: g.ChangePending,
			Voters: []uint32{}, Learners: []uint32{}}
		for _, id := range g.Voters {
			pg.Voters = append(pg.Voters, uint32(id))
		}
		for _, id := range g.Learners {
			pg.Learners = append(pg.Learners, uint32(id))
		}
		out.Groups = append(out.Groups, pg)
	}
	return out, nil
}

// PageLocks lists the locks whose name contains q, sorted by name.
func (s *Server) PageLocks(q string, offset, limit int) PageList[PageLock] {
	var all []PageLock
	match := func(name string) bool { return strings.Contains(name, q) }
	for i, gs := range s.groups {
		gs.mu.Lock()
		entries := gs.table.ListLocks(match)
		gs.mu.Unlock()
		for _, e := range entries {
			pl := PageLock{Name: e.Name, Group: uint32(i), Mode: "free", DelayUntil: fmtNanos(e.DelayUntil),
				Holders: []PageHolder{}, Waiters: []PageWaiter{}}
			if len(e.Holders) > 0 {
				pl.Mode = "exclusive"
				if e.Shared {
					pl.Mode = "shared"
				}
				pl.HeldSince = fmtNanos(e.Holders[0].Since)
			}
			for j, h := range e.Holders {
				pl.Holders = append(pl.Holders, PageHolder{Session: h.Session, Owner: e.Owners[j], Token: h.Token, Since: fmtNanos(h.Since)})
			}
			for _, w := range e.Queue {
				pl.Waiters = append(pl.Waiters, PageWaiter{Session: w.Session, Owner: w.Owner, Mode: modeOf(w.Shared), Since: fmtNanos(w.Since)})
			}
			all = append(all, pl)
		}
	}
	slices.SortFunc(all, func(a, b PageLock) int { return strings.Compare(a.Name, b.Name) })
	return page(all, offset, limit)
}

func modeOf(shared bool) string {
	if shared {
		return "shared"
	}
	return "exclusive"
}

// PageSessions lists the sessions whose id or owner contains q, by group
// and id.
func (s *Server) PageSessions(q string, offset, limit int) PageList[PageSession] {
	type ref struct {
		g    paxos.GroupID
		info lease.SessionInfo
	}
	var all []ref
	for i, gs := range s.groups {
		gs.mu.Lock()
		list := gs.table.Sessions()
		gs.mu.Unlock()
		for _, si := range list {
			if q == "" || strings.Contains(si.Owner, q) || strings.Contains(strconv.FormatUint(si.ID, 10), q) {
				all = append(all, ref{paxos.GroupID(i), si})
			}
		}
	}
	p := page(all, offset, limit)
	out := PageList[PageSession]{Total: p.Total, Offset: p.Offset, Limit: p.Limit, Items: []PageSession{}}
	for _, r := range p.Items {
		gs := s.groups[r.g]
		gs.mu.Lock()
		held, waiting := gs.table.SessionLocks(r.info.ID)
		gs.mu.Unlock()
		ps := PageSession{ID: r.info.ID, Group: uint32(r.g), Owner: r.info.Owner, Client: r.info.Client, TTL: r.info.TTL.String(),
			Opened: fmtNanos(r.info.Opened), LastKA: fmtTime(s.lastSeen(r.g, r.info.ID)), Held: held, Waiting: waiting}
		if ps.Held == nil {
			ps.Held = []string{}
		}
		if ps.Waiting == nil {
			ps.Waiting = []string{}
		}
		out.Items = append(out.Items, ps)
	}
	return out
}

// lastSeen is the last sign of life of a session this node saw (a
// keep-alive it answered as master, or the open), zero if unknown.
func (s *Server) lastSeen(g paxos.GroupID, id uint64) time.Time {
	c := s.sessions
	c.mu.Lock()
	defer c.mu.Unlock()
	gc := c.groups[g]
	if gc == nil {
		return time.Time{}
	}
	if e := gc.entries[id]; e != nil {
		return e.seen
	}
	return time.Time{}
}

func page[T any](all []T, offset, limit int) PageList[T] {
	if limit <= 0 {
		limit = defaultPage
	}
	limit = min(limit, maxPage)
	offset = max(0, min(offset, len(all)))
	end := min(offset+limit, len(all))
	items := all[offset:end]
	if items == nil {
		items = []T{}
	}
	return PageList[T]{Total: len(all), Offset: offset, Limit: limit, Items: items}
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(v)
}

func pageArgs(r *http.Request) (q string, offset, limit int) {
	q = r.URL.Query().Get("q")
	offset, _ = strconv.Atoi(r.URL.Query().Get("offset"))
	limit, _ = strconv.Atoi(r.URL.Query().Get("limit"))
	return q, offset, limit
}

func (s *Server) apiStatus(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	st, err := s.PageStatus(ctx)
	if err != nil {
		http.Error(w, "status of node "+strconv.FormatUint(uint64(s.cfg.ID), 10)+": "+err.Error(), http.StatusServiceUnavailable)
		return
	}
	writeJSON(w, st)
}

func (s *Server) apiLocks(w http.ResponseWriter, r *http.Request) {
	q, off, lim := pageArgs(r)
	writeJSON(w, s.PageLocks(q, off, lim))
}

func (s *Server) apiSessions(w http.ResponseWriter, r *http.Request) {
	q, off, lim := pageArgs(r)
	writeJSON(w, s.PageSessions(q, off, lim))
}

func (s *Server) statusPage(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/" {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write([]byte(statusHTML))
}

// handleStatusPage adds the status page, its API and the health endpoints
// to the admin mux.
func (s *Server) handleStatusPage(mux *http.ServeMux) {
	mux.HandleFunc("/healthz", s.healthzHandler)
	mux.HandleFunc("/readyz", s.readyzHandler)
	mux.HandleFunc("/api/status", s.apiStatus)
	mux.HandleFunc("/api/locks", s.apiLocks)
	mux.HandleFunc("/api/sessions", s.apiSessions)
	mux.HandleFunc("/", s.statusPage)
}

const statusHTML = `<!doctype html>
<html><head><meta charset="utf-8"><title>lockd</title>
<style>
body{font-family:sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;margin-bottom:.5em}
td,th{padding:3px 9px;border-bottom:1px solid #ddd;text-align:left;vertical-align:top;font-size:14px}
th{background:#f4f4f4}
.up,.self{color:#080}.down{color:#b00}.unknown{color:#a60}
.none{color:#b00;font-weight:bold}
small{color:#666}
input{padding:3px;width:18em}
#err{color:#b00}
</style></head><body>
<h1>lockd node <span id="node">?</span></h1>
<p><span id="addr"></span> &middot; up <span id="uptime"></span> &middot; ready: <span id="ready"></span>
&middot; <a href="/metrics">metrics</a> &middot; <a href="/healthz">healthz</a> &middot; <a href="/readyz">readyz</a>
&middot; <small>updated <span id="updated">never</span></small> <span id="err"></span></p>
<h2>Members</h2>
<table><thead><tr><th>node</th><th>address</th><th>state</th><th>rtt</th><th>since</th></tr></thead><tbody id="members"></tbody></table>
<h2>Groups</h2>
<table><thead><tr><th>group</th><th>master</th><th>epoch</th><th>master since</th><th>serving here</th><th>paxos role</th><th>commit</th><th>applied</th><th>in flight</th><th>sessions</th><th>locks</th><th>waiters</th><th>voters</th><th>learners</th></tr></thead><tbody id="groups"></tbody></table>
<h2>Locks</h2>
<p><input id="lock-q" type="search" placeholder="search lock names"> <button id="lock-prev">&lt;</button> <span id="lock-page"></span> <button id="lock-next">&gt;</button></p>
<table><thead><tr><th>name</th><th>group</th><th>mode</th><th>holders (session, owner, token)</th><th>waiters</th><th>held since</th></tr></thead><tbody id="locks"></tbody></table>
<h2>Sessions</h2>
<p><input id="session-q" type="search" placeholder="search session id or owner"> <button id="session-prev">&lt;</button> <span id="session-page"></span> <button id="session-next">&gt;</button></p>
<table><thead><tr><th>session</th><th>group</th><th>owner</th><th>ttl</th><th>last keep-alive</th><th>locks held</th><th>waiting for</th></tr></thead><tbody id="sessions"></tbody></table>
<script>
"use strict";
const PAGE = 50;
const lists = {lock: {offset: 0, total: 0, seq: 0}, session: {offset: 0, total: 0, seq: 0}};
function el(tag, text, cls) { const e = document.createElement(tag); if (text !== undefined) e.textContent = String(text); if (cls) e.className = cls; return e; }
function row(tbody, cells, id) {
  const tr = document.createElement("tr"); if (id) tr.id = id;
  for (const c of cells) { const td = (c instanceof Node) ? (() => { const t = el("td"); t.appendChild(c); return t; })() : el("td", c); tr.appendChild(td); }
  tbody.appendChild(tr);
}
function fill(id, build) { const tb = document.getElementById(id); const n = document.createElement("tbody"); n.id = id; build(n); tb.replaceWith(n); }
function since(t) { return t ? t.replace("T", " ").replace(/\.\d+Z$/, "Z") : ""; }
async function getJSON(url) { const r = await fetch(url, {cache: "no-store"}); if (!r.ok) throw new Error(url + ": " + r.status); return r.json(); }
async function refreshStatus() {
  const st = await getJSON("/api/status");
  document.getElementById("node").textContent = st.node;
  document.getElementById("addr").textContent = st.addr;
  document.getElementById("uptime").textContent = st.uptime;
  document.getElementById("ready").textContent = st.ready ? "yes" : "no";
  fill("members", tb => { for (const m of st.members) row(tb, [m.id, m.addr, el("span", m.state, m.state), m.state === "self" ? "" : m.rtt_ms.toFixed(2) + " ms", since(m.since)], "member-" + m.id); });
  fill("groups", tb => { for (const g of st.groups) row(tb, [g.group, g.master ? el("span", g.master) : el("span", "none", "none"), g.epoch, since(g.master_since), g.serving ? "yes" : "", g.role, g.commit, g.applied, g.in_flight, g.sessions, g.locks, g.waiters,
    g.voters.join(" ") + (g.change_pending ? " (change pending)" : ""), g.learners.join(" ")], "group-" + g.group); });
}
async function refreshList(kind) {
  const L = lists[kind];
  const q = document.getElementById(kind + "-q").value;
  const seq = ++L.seq;
  const res = await getJSON("/api/" + kind + "s?q=" + encodeURIComponent(q) + "&offset=" + L.offset + "&limit=" + PAGE);
  if (seq !== L.seq) return; // a newer request (another search or page) answers for the list
  L.total = res.total;
  const last = Math.min(res.offset + res.items.length, res.total);
  document.getElementById(kind + "-page").textContent = (res.total ? (res.offset + 1) + "-" + last : "0") + " of " + res.total;
  if (kind === "lock") {
    fill("locks", tb => { for (const l of res.items) row(tb, [l.name, l.group, l.mode,
      l.holders.map(h => "session " + h.session + " (" + (h.owner || "-") + ") token " + h.token).join("; "),
      l.waiters.length ? l.waiters.length + ": " + l.waiters.map(w => w.session + " (" + (w.owner || "-") + ")").join(", ") : "",
      since(l.held_since)]); });
  } else {
    fill("sessions", tb => { for (const s of res.items) row(tb, [s.id, s.group, s.owner || "-", s.ttl, since(s.last_keepalive), s.held.join(", "), s.waiting.join(", ")]); });
  }
}
async function refresh() {
  try {
    await Promise.all([refreshStatus(), refreshList("lock"), refreshList("session")]);
    document.getElementById("updated").textContent = new Date().toLocaleTimeString();
    document.getElementById("err").textContent = "";
  } catch (e) { document.getElementById("err").textContent = "refresh failed: " + e.message; }
}
for (const kind of ["lock", "session"]) {
  document.getElementById(kind + "-q").addEventListener("input", () => { lists[kind].offset = 0; refreshList(kind).catch(() => {}); });
  document.getElementById(kind + "-prev").addEventListener("click", () => { lists[kind].offset = Math.max(0, lists[kind].offset - PAGE); refreshList(kind).catch(() => {}); });
  document.getElementById(kind + "-next").addEventListener("click", () => { if (lists[kind].offset + PAGE < lists[kind].total) lists[kind].offset += PAGE; refreshList(kind).catch(() => {}); });
}
refresh();
setInterval(refresh, 1000);
</script>
</body></html>
`
