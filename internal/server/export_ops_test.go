package server

import "github.com/prometheus/client_golang/prometheus"

// Registry is the node's Prometheus registry, for tests outside the package.
func (s *Server) Registry() *prometheus.Registry { return s.metrics.reg }
