package server_test

import (
	"bufio"
	"encoding/json"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/lockd/lockd/internal/testcluster"
	"github.com/prometheus/client_golang/prometheus"
)

// registeredNames collects the metric names a live node registers, from its
// registry's descriptions (a vector with no series yet counts too), with the
// series names of histograms (_bucket, _sum, _count).
func registeredNames(t *testing.T) map[string]bool {
	t.Helper()
	c := testcluster.Start(t, testcluster.Options{Nodes: 1, Groups: 2})
	ch := make(chan *prometheus.Desc, 64)
	go func() {
		c.Server(0).Registry().Describe(ch)
		close(ch)
	}()
	re := regexp.MustCompile(`fqName: "([^"]+)"`)
	names := map[string]bool{}
	for d := range ch {
		m := re.FindStringSubmatch(d.String())
		if m == nil {
			t.Fatalf("no name in %s", d)
		}
		names[m[1]] = true
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			names[m[1]+suffix] = true
		}
	}
	if !names["lockd_group_has_master"] || !names["lockd_lock_grants_total"] {
		t.Fatalf("the registry lacks the operator metrics: %v", slices.Sorted(maps.Keys(names)))
	}
	return names
}

var metricName = regexp.MustCompile(`\blockd_[a-z0-9_]+`)

// checkExprs fails for every lockd_ metric an expression names that the
// server does not register.
func checkExprs(t *testing.T, file string, exprs []string, names map[string]bool) {
	t.Helper()
	if len(exprs) == 0 {
		t.Fatalf("%s: no expressions found", file)
	}
	used := 0
	for _, e := range exprs {
		for _, n := range metricName.FindAllString(e, -1) {
			used++
			if !names[n] {
				t.Errorf("%s: %q names metric %s, which the server does not register", file, e, n)
			}
		}
	}
	if used == 0 {
		t.Errorf("%s: no lockd metric used", file)
	}
}

// dashboardExprs walks the Grafana JSON for every "expr" and "query".
func dashboardExprs(v any, out *[]string) {
	switch x := v.(type) {
	case map[string]any:
		for k, val := range x {
			if s, ok := val.(string); ok && (k == "expr" || k == "query" || k == "definition") {
				*out = append(*out, s)
				continue
			}
			dashboardExprs(val, out)
		}
	case []any:
		for _, e := range x {
			dashboardExprs(e, out)
		}
	}
}

// alertRule is one rule of the alerts file, read minimally: the
// indentation-based YAML subset Prometheus rule files use.
type alertRule struct {
	name, expr  string
	hasSeverity bool
	hasSummary  bool
}

func parseAlerts(t *testing.T, path string) []alertRule {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var rules []alertRule
	sc := bufio.NewScanner(f)
	inGroups := false
	var blockIndent = -1 // indentation of a "expr: |" block being read
	for sc.Scan() {
		line := sc.Text()
		trimmed := strings.TrimSpace(line)
		indent := len(line) - len(strings.TrimLeft(line, " "))
		if strings.Contains(line, "\t") {
			t.Fatalf("%s: tab in YAML: %q", path, line)
		}
		if blockIndent >= 0 {
			if trimmed == "" || indent > blockIndent {
				rules[len(rules)-1].expr += " " + trimmed
				continue
			}
			blockIndent = -1
		}
		if trimmed == "" || strings.HasPrefix(trimmed, "#") {
			continue
		}
		if line == "groups:" {
			inGroups = true
			continue
		}
		if !inGroups {
			t.Fatalf("%s: content before groups: %q", path, line)
		}
		key, val, ok := strings.Cut(strings.TrimPrefix(trimmed, "- "), ":")
		if !ok {
			t.Fatalf("%s: not a key: value line: %q", path, line)
		}
		val = strings.TrimSpace(val)
		switch key {
		case "alert":
			rules = append(rules, alertRule{name: val})
		case "expr":
			if len(rules) == 0 {
				t.Fatalf("%s: expr outside a rule: %q", path, line)
			}
			if val == "|" || val == ">" {
				blockIndent = indent
				continue
			}
			rules[len(rules)-1].expr = val
		case "severity":
			rules[len(rules)-1].hasSeverity = true
		case "summary":
			rules[len(rules)-1].hasSummary = true
		}
	}
	return rules
}

// TestDeployFilesUseRegisteredMetrics checks the Grafana dashboard and the
// Prometheus alerts of deploy/ against the metric names a live node
// registers, so that a renamed metric cannot leave a dead panel or an
// alert that never fires. It also checks that the other deploy files are
// there.
func TestDeployFilesUseRegisteredMetrics(t *testing.T) {
	root := filepath.Join("..", "..")
	names := registeredNames(t)

	dashPath := filepath.Join(root, "deploy", "grafana", "lockd-dashboard.json")
	b, err := os.ReadFile(dashPath)
	if err != nil {
		t.Fatal(err)
	}
	var dash map[string]any
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("%s: %v", dashPath, err)
	}
	if panels, _ := dash["panels"].([]any); len(panels) < 10 {
		t.Errorf("%s: %d panels, want a real dashboard", dashPath, len(panels))
	}
	var exprs []string
	dashboardExprs(dash, &exprs)
	checkExprs(t, dashPath, exprs, names)
	t.Logf("%s: %d expressions checked", dashPath, len(exprs))

	alertsPath := filepath.Join(root, "deploy", "prometheus", "lockd-alerts.yml")
	rules := parseAlerts(t, alertsPath)
	if len(rules) < 5 {
		t.Fatalf("%s: %d rules, want more", alertsPath, len(rules))
	}
	exprs = nil
	for _, r := range rules {
		if r.expr == "" || !r.hasSeverity || !r.hasSummary {
			t.Errorf("%s: rule %s lacks an expr, a severity label or a summary", alertsPath, r.name)
		}
		exprs = append(exprs, r.expr)
	}
	checkExprs(t, alertsPath, exprs, names)
	t.Logf("%s: %d rules checked", alertsPath, len(rules))

	for _, f := range []string{"deploy/Dockerfile", "deploy/lockd.service", "deploy/lockd.env", "deploy/README.md", "LICENSE"} {
		if _, err := os.Stat(filepath.Join(root, f)); err != nil {
			t.Errorf("missing %s: %v", f, err)
		}
	}
	unit, _ := os.ReadFile(filepath.Join(root, "deploy", "lockd.service"))
	for _, want := range []string{"NoNewPrivileges=yes", "ProtectSystem=strict", "User=lockd", "ExecStart=/usr/local/bin/lockd run", "RestartPreventExitStatus=3 5 6 8 64"} {
		if !strings.Contains(string(unit), want) {
			t.Errorf("deploy/lockd.service lacks %s", want)
		}
	}
	docker, _ := os.ReadFile(filepath.Join(root, "deploy", "Dockerfile"))
	for _, want := range []string{"CGO_ENABLED=0", "USER 65532"} {
		if !strings.Contains(string(docker), want) {
			t.Errorf("deploy/Dockerfile lacks %s", want)
		}
	}
}
