// Package paxos implements Multi-Paxos for many groups.
package paxos
