//go:build unix

package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// logLine is one JSON log line of a lockd process.
type logLine map[string]any

func (l logLine) str(k string) string {
	switch v := l[k].(type) {
	case string:
		return v
	case float64:
		return strconv.FormatFloat(v, 'f', -1, 64)
	case bool:
		return strconv.FormatBool(v)
	}
	return fmt.Sprint(l[k])
}

func (l logLine) time() time.Time {
	t, _ := time.Parse(time.RFC3339Nano, l.str("time"))
	return t
}

// jsonLines parses the JSON lines of a process's stderr.
func jsonLines(s string) []logLine {
	var out []logLine
	sc := bufio.NewScanner(strings.NewReader(s))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var l logLine
		if json.Unmarshal(sc.Bytes(), &l) == nil {
			out = append(out, l)
		}
	}
	return out
}

func httpGet(url string) (string, error) {
	cl := http.Client{Timeout: time.Second}
	resp, err := cl.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// metricValue finds the value of one series in a Prometheus text page.
func metricValue(page, series string) (float64, bool) {
	for _, line := range strings.Split(page, "\n") {
		if rest, ok := strings.CutPrefix(line, series+" "); ok {
			v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
			return v, err == nil
		}
	}
	return 0, false
}

// TestFailoverSeenByOperator SIGKILLs the master of a group of a 3-process
// cluster and checks that a survivor shows the failover as an operator
// sees it: the JSON log line "group master changed" with the old and new
// master and why, the metric lockd_group_master, and the status page's API,
// and that the dead node left the mesh in its log, its metric and its page.
// The delays from the new master serving to each of them are measured and
// logged (the issue asks for a second); the test's own waits are hang
// guards only.
func TestFailoverSeenByOperator(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test with real processes; skipped with -short")
	}
	const groups = 4
	lease := 2 * time.Second
	c := startCluster(t, groups, lease)
	masters := c.waitServing(20 * time.Second)
	t.Logf("masters per group: %v", masters)

	victim := masters[0]
	g := 0 // a group of the victim
	watcher := 1 + victim%3
	wi := watcher - 1
	admin := "http://" + c.admins[wi]
	seen := len(c.nodes[wi].err.String())
	if h, err := httpGet(admin + "/healthz"); err != nil || !strings.Contains(h, `"ok":true`) {
		t.Fatalf("/healthz of node %d before the kill: %q %v", watcher, h, err)
	}
	waitReady := time.Now().Add(patient(5 * time.Second))
	for {
		r, err := httpGet(admin + "/readyz")
		if err == nil && strings.Contains(r, `"ok":true`) {
			break
		}
		if time.Now().After(waitReady) {
			t.Fatalf("/readyz of node %d never ready: %q %v", watcher, r, err)
		}
		time.Sleep(50 * time.Millisecond)
	}

	killed := time.Now()
	c.nodes[victim-1].signal(syscall.SIGKILL)
	c.nodes[victim-1].mustExit(5 * time.Second)
	t.Logf("SIGKILL node %d, master of group %d; watching node %d (admin %s)", victim, g, watcher, c.admins[wi])

	var (
		servedAt, metricAt, pageAt, logAt, peerLogAt time.Time
		newMaster                                    int
		logLineText, peerLine                        string
		metricsPage                                  string
		pageJSON                                     string
	)
	deadline := time.Now().Add(patient(lease + 3*time.Second))
	for servedAt.IsZero() || metricAt.IsZero() || pageAt.IsZero() || logAt.IsZero() || peerLogAt.IsZero() {
		if time.Now().After(deadline) {
			c.dumpLogs()
			t.Fatalf("failover not seen in time: served %v, metric %v, page %v, log %v, peer log %v (new master %d)",
				!servedAt.IsZero(), !metricAt.IsZero(), !pageAt.IsZero(), !logAt.IsZero(), !peerLogAt.IsZero(), newMaster)
		}
		if servedAt.IsZero() {
			if m := c.masters()[g]; m != 0 && m != victim && c.serving(uint32(g), m) {
				servedAt, newMaster = time.Now(), m
			}
		}
		if metricAt.IsZero() {
			if page, err := httpGet(admin + "/metrics"); err == nil {
				if v, ok := metricValue(page, fmt.Sprintf(`lockd_group_master{group="%d"}`, g)); ok && v != 0 && int(v) != victim {
					metricAt, metricsPage = time.Now(), page
				}
			}
		}
		if pageAt.IsZero() {
			if body, err := httpGet(admin + "/api/status"); err == nil {
				var st struct {
					Groups []struct {
						Group  int `json:"group"`
						Master int `json:"master"`
						Epoch  uint64
					} `json:"groups"`
					Members []struct {
						ID    int    `json:"id"`
						State string `json:"state"`
					} `json:"members"`
				}
				if json.Unmarshal([]byte(body), &st) == nil && len(st.Groups) > g {
					down := false
					for _, m := range st.Members {
						down = down || (m.ID == victim && m.State == "down")
					}
					if m := st.Groups[g].Master; m != 0 && m != victim && down {
						pageAt, pageJSON = time.Now(), body
					}
				}
			}
		}
		for _, l := range jsonLines(c.nodes[wi].err.String()[seen:]) {
			switch l.str("msg") {
			case "group master changed":
				if logAt.IsZero() && l.str("group") == strconv.Itoa(g) && l.str("new") != "0" && l.str("old") == strconv.Itoa(victim) {
					logAt, logLineText = l.time(), fmt.Sprint(l)
				}
			case "peer left the mesh":
				if peerLogAt.IsZero() && l.str("peer") == strconv.Itoa(victim) {
					peerLogAt, peerLine = l.time(), fmt.Sprint(l)
				}
			}
		}
		time.Sleep(20 * time.Millisecond)
	}

	// What the operator saw on node watcher.
	var lines []string
	for _, l := range jsonLines(c.nodes[wi].err.String()[seen:]) {
		switch l.str("msg") {
		case "group master changed", "peer left the mesh", "session expired":
			b, _ := json.Marshal(l)
			lines = append(lines, string(b))
		}
	}
	t.Logf("node %d log after the kill:\n%s", watcher, strings.Join(lines, "\n"))
	// No group is handed over to the dead node: the election asks the mesh
	// probes, not only the QUIC connection, which looks alive until its
	// idle timeout.
	for _, l := range jsonLines(c.nodes[wi].err.String()[seen:]) {
		if l.str("msg") == "group master changed" && l.str("why") == "handover" && l.str("to") == strconv.Itoa(victim) {
			t.Errorf("node %d handed group %s over to the killed node %d: %v", watcher, l.str("group"), victim, l)
		}
	}
	var series []string
	for _, line := range strings.Split(metricsPage, "\n") {
		for _, name := range []string{"lockd_group_master{", "lockd_group_has_master{", "lockd_group_is_master{", "lockd_group_master_changes_total{",
			"lockd_group_masterless_seconds_total{", "lockd_peer_up{", "lockd_peer_rtt_seconds{"} {
			if strings.HasPrefix(line, name) {
				series = append(series, line)
			}
		}
	}
	t.Logf("node %d metrics:\n%s", watcher, strings.Join(series, "\n"))
	t.Logf("node %d /api/status: %s", watcher, pageJSON)

	if !strings.Contains(logLineText, "why:lease expired") {
		t.Errorf("the master-change line does not say the lease expired: %s", logLineText)
	}
	if v, ok := metricValue(metricsPage, fmt.Sprintf(`lockd_peer_up{peer="%d"}`, victim)); !ok || v != 0 {
		t.Errorf("lockd_peer_up of the dead node = %v (found %v), want 0", v, ok)
	}
	if v, ok := metricValue(metricsPage, fmt.Sprintf(`lockd_group_master_changes_total{group="%d"}`, g)); !ok || v < 1 {
		t.Errorf("lockd_group_master_changes_total = %v (found %v), want at least 1", v, ok)
	}
	t.Logf("node %d's peer line: %s", watcher, peerLine)
	d := func(at time.Time) string { return at.Sub(servedAt).Round(time.Millisecond).String() }
	t.Logf("SIGKILL to group %d served by node %d: %v; dead node left the mesh in the log after %v; "+
		"from the new master serving to: the log line %s, the metric %s, the page %s (negative: seen before the first successful probe)",
		g, newMaster, servedAt.Sub(killed).Round(time.Millisecond), peerLogAt.Sub(killed).Round(time.Millisecond), d(logAt), d(metricAt), d(pageAt))
	worst := max(logAt.Sub(servedAt), metricAt.Sub(servedAt), pageAt.Sub(servedAt))
	if worst > time.Second {
		// Not a failure on a loaded machine: the figure is what counts.
		t.Logf("NOTE: the slowest of the three came %v after the new master served, over the second the issue asks for", worst.Round(time.Millisecond))
	}
}
