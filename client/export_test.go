package client

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/lockd/lockd/internal/pki"
)

// exampleTB runs a cluster for the examples, outside any test.
type exampleTB struct {
	mu       sync.Mutex
	dirs     []string
	cleanups []func()
}

func (e *exampleTB) Helper()                           {}
func (e *exampleTB) Fatal(args ...any)                 { panic(fmt.Sprint(args...)) }
func (e *exampleTB) Fatalf(format string, args ...any) { panic(fmt.Sprintf(format, args...)) }
func (e *exampleTB) Cleanup(f func()) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.cleanups = append(e.cleanups, f)
}

func (e *exampleTB) TempDir() string {
	dir, err := os.MkdirTemp("", "lockd-example-")
	if err != nil {
		panic(err)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.dirs = append(e.dirs, dir)
	return dir
}

func (e *exampleTB) stop() {
	e.mu.Lock()
	defer e.mu.Unlock()
	for i := len(e.cleanups) - 1; i >= 0; i-- {
		e.cleanups[i]()
	}
	for _, d := range e.dirs {
		os.RemoveAll(d)
	}
}

var (
	exampleOnce sync.Once
	exampleEnv  *exampleTB
	examplePath string
)

// DevConfigForExamples starts, once per test binary, a throw-away 3-node
// cluster and writes a client config file for it, as `lockd dev` does, and
// returns the file's path. TestMain stops the cluster.
func DevConfigForExamples() string {
	exampleOnce.Do(func() {
		exampleEnv = &exampleTB{}
		tc := startCluster(exampleEnv, 3, 4)
		dir := exampleEnv.TempDir()
		certPEM, keyPEM, err := tc.ca.IssueClient("example")
		if err != nil {
			panic(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "ca.crt"), tc.ca.CertPEM(), 0o644); err != nil {
			panic(err)
		}
		if err := pki.WriteKeyPair(dir, "client", certPEM, keyPEM); err != nil {
			panic(err)
		}
		examplePath = filepath.Join(dir, "client.json")
		if err := WriteConfigFile(examplePath, Config{Endpoints: tc.addrs, CAFile: "ca.crt", CertFile: "client.crt", KeyFile: "client.key"}); err != nil {
			panic(err)
		}
	})
	return examplePath
}

func stopExampleCluster() {
	if exampleEnv != nil {
		exampleEnv.stop()
	}
}
