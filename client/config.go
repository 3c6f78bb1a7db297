package client

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/lockd/lockd/internal/pki"
)

// Defaults for zero Config and SessionOptions fields.
const (
	DefaultDialTimeout    = 5 * time.Second
	DefaultRequestTimeout = 10 * time.Second
	DefaultTTL            = 10 * time.Second
)

// Config says how to reach a cluster. New validates it once (see Validate);
// zero optional fields take the defaults documented beside them.
type Config struct {
	// Endpoints lists nodes of the cluster as "host:port" (their client
	// UDP port). One reachable node is enough: the client learns the
	// others from it.
	Endpoints []string
	// TLS is the client's TLS configuration: it must trust the cluster CA
	// and present a client certificate the CA issued. When nil, the client
	// loads CAFile, CertFile and KeyFile instead.
	TLS *tls.Config
	// CAFile, CertFile and KeyFile are PEM files (as `lockd certs` writes
	// them), used when TLS is nil. CAFile is then required.
	CAFile, CertFile, KeyFile string
	// DialTimeout bounds connecting to one node; default 5s. A request
	// waits at most a second of it before it tries another node.
	DialTimeout time.Duration
	// RequestTimeout bounds one attempt of one request (a waiting Acquire
	// waits longer, for as long as its context allows); default 10s. It
	// should exceed the nodes' propose timeout (5s by default), so that a
	// node answers "outcome unknown" before the client gives up on it.
	RequestTimeout time.Duration
	// Logger receives the client's logs (retries, reconnects, lost
	// sessions); default slog.Default().
	Logger *slog.Logger
}

// Validate reports the first field that is wrong, by name. It does not read
// any file.
func (c Config) Validate() error {
	if len(c.Endpoints) == 0 {
		return errors.New("client config: Endpoints is empty: list at least one node as host:port")
	}
	for i, ep := range c.Endpoints {
		if _, port, err := net.SplitHostPort(ep); err != nil || port == "" {
			return fmt.Errorf("client config: Endpoints[%d] %q is not host:port", i, ep)
		}
	}
	if c.TLS == nil {
		if c.CAFile == "" {
			return errors.New("client config: TLS is nil and CAFile is empty: give the cluster CA (and a client certificate)")
		}
		if (c.CertFile == "") != (c.KeyFile == "") {
			return fmt.Errorf("client config: CertFile %q and KeyFile %q must be given together", c.CertFile, c.KeyFile)
		}
	} else if c.CAFile != "" || c.CertFile != "" || c.KeyFile != "" {
		return errors.New("client config: set either TLS or CAFile/CertFile/KeyFile, not both")
	}
	if c.DialTimeout < 0 {
		return fmt.Errorf("client config: DialTimeout %v is negative", c.DialTimeout)
	}
	if c.RequestTimeout < 0 {
		return fmt.Errorf("client config: RequestTimeout %v is negative", c.RequestTimeout)
	}
	return nil
}

// build validates c, applies defaults and loads the TLS material.
func (c Config) build() (Config, error) {
	if err := c.Validate(); err != nil {
		return c, err
	}
	c.Endpoints = append([]string(nil), c.Endpoints...)
	if c.TLS == nil {
		tc, err := pki.LoadClientTLSConfig(c.CAFile, c.CertFile, c.KeyFile)
		if err != nil {
			return c, fmt.Errorf("client config: %w", err)
		}
		c.TLS = tc
	} else {
		c.TLS = c.TLS.Clone()
	}
	if c.DialTimeout == 0 {
		c.DialTimeout = DefaultDialTimeout
	}
	if c.RequestTimeout == 0 {
		c.RequestTimeout = DefaultRequestTimeout
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c, nil
}

// configFile is the JSON form of a client config file.
type configFile struct {
	Endpoints []string `json:"endpoints"`
	CA        string   `json:"ca"`
	Cert      string   `json:"cert,omitempty"`
	Key       string   `json:"key,omitempty"`
}

// LoadConfigFile reads a client config file, the small JSON file that
// `lockd dev` writes and `lockctl --config` reads:
//
//	{"endpoints": ["127.0.0.1:7401", "127.0.0.1:7402"],
//	 "ca": "ca.crt", "cert": "client.crt", "key": "client.key"}
//
// Relative paths are taken from the file's directory. Unknown fields are an
// error, so that a misspelt key is not silently ignored. The Config it
// returns has Endpoints, CAFile, CertFile and KeyFile set, and is valid.
func LoadConfigFile(path string) (Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("client config file: %w", err)
	}
	var f configFile
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return Config{}, fmt.Errorf("client config file %s: %w (want {\"endpoints\": [...], \"ca\": path, \"cert\": path, \"key\": path})", path, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return Config{}, fmt.Errorf("client config file %s: more than one JSON object", path)
	}
	dir := filepath.Dir(path)
	abs := func(p string) string {
		if p == "" || filepath.IsAbs(p) {
			return p
		}
		return filepath.Join(dir, p)
	}
	c := Config{Endpoints: f.Endpoints, CAFile: abs(f.CA), CertFile: abs(f.Cert), KeyFile: abs(f.Key)}
	if err := c.Validate(); err != nil {
		msg := strings.Replace(err.Error(), "client config: ", "", 1)
		return Config{}, fmt.Errorf("client config file %s: %s", path, msg)
	}
	return c, nil
}

// WriteConfigFile writes c's Endpoints, CAFile, CertFile and KeyFile as a
// client config file that LoadConfigFile reads (mode 0644: it holds paths,
// not keys). Paths are written as given.
func WriteConfigFile(path string, c Config) error {
	b, err := json.MarshalIndent(configFile{Endpoints: c.Endpoints, CA: c.CAFile, Cert: c.CertFile, Key: c.KeyFile}, "", "  ")
	if err != nil {
		return fmt.Errorf("client config file %s: %w", path, err)
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("client config file: %w", err)
	}
	return nil
}
