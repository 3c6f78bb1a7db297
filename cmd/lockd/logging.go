package main

import (
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"reflect"
	"strconv"
	"strings"
	"time"
)

// newLogger builds the slog logger of --log-level and --log-format, and makes
// it the default, so that what libraries print with the standard log package
// comes out in the same format.
func newLogger(level, format string, w io.Writer) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, usageErrorf("--log-level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lv, ReplaceAttr: sameInBothFormats}
	var h slog.Handler
	switch strings.ToLower(format) {
	case "text", "":
		h = slog.NewTextHandler(w, opts)
	case "json":
		h = slog.NewJSONHandler(w, opts)
	default:
		return nil, usageErrorf("--log-format %q: want text or json", format)
	}
	logger := slog.New(h)
	slog.SetDefault(logger)
	log.SetFlags(0)
	return logger, nil
}

// sameInBothFormats makes the JSON and text formats print the same values:
// durations as text ("2s", where JSON would print nanoseconds) and network
// addresses as host:port (where JSON would print {"IP":...,"Port":...}).
func sameInBothFormats(_ []string, a slog.Attr) slog.Attr {
	switch a.Value.Kind() {
	case slog.KindDuration:
		return slog.String(a.Key, a.Value.Duration().String())
	case slog.KindAny:
		switch v := a.Value.Any().(type) {
		case net.Addr:
			if v == nil || reflect.ValueOf(v).IsNil() {
				return slog.String(a.Key, "")
			}
			return slog.String(a.Key, v.String())
		case netip.AddrPort:
			return slog.String(a.Key, v.String())
		case netip.Addr:
			return slog.String(a.Key, v.String())
		case []time.Duration:
			out := make([]string, len(v))
			for i, d := range v {
				out[i] = d.String()
			}
			return slog.Any(a.Key, out)
		}
	}
	return a
}

// quicBufferBytes is the socket buffer size quic-go asks for (7 MiB); below
// it, it prints "failed to sufficiently increase receive buffer size".
const quicBufferBytes = 7 << 20

// quietUDPBufferWarning replaces quic-go's one-line warning about UDP buffer
// sizes with one that says what to do, and only where it matters.
//
// quic-go asks the kernel for 7 MiB socket buffers and, when the kernel caps
// them lower (net.core.rmem_max, net.core.wmem_max), prints a warning on the
// standard logger. On loopback it is harmless: nothing is lost between two
// sockets of one host at lockd's rates. On a real network, bursts overflow the
// buffer and cost retransmissions, so there we log how to raise the caps.
// The environment variable must be set before the first socket is opened.
func quietUDPBufferWarning(logger *slog.Logger, listen string) {
	os.Setenv("QUIC_GO_DISABLE_RECEIVE_BUFFER_WARNING", "true")
	if logger == nil || isLoopback(listen) || os.Geteuid() == 0 {
		// As root, quic-go forces the size past the cap (SO_RCVBUFFORCE).
		return
	}
	var low []string
	for _, name := range []string{"rmem_max", "wmem_max"} {
		b, err := os.ReadFile("/proc/sys/net/core/" + name)
		if err != nil {
			return // not Linux, or no /proc: nothing to say
		}
		n, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err == nil && n < quicBufferBytes {
			low = append(low, fmt.Sprintf("net.core.%s=%d", name, n))
		}
	}
	if len(low) > 0 {
		logger.Warn("UDP socket buffers are capped below the 7 MiB QUIC wants; bursts will be dropped and retransmitted. "+
			"Raise the caps once per host: sysctl -w net.core.rmem_max=7500000 net.core.wmem_max=7500000 (persist in /etc/sysctl.d/)",
			"current", strings.Join(low, " "))
	}
}

// isLoopback reports whether addr ("host:port") names a loopback host.
func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
