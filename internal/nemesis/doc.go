// Package nemesis is a fault-injection suite for lockd on real processes:
// 3 or 5 `lockd run` nodes, each behind a UDP proxy the test controls
// (drop, delay, duplicate, partition per direction and pair, one client
// alone), worker client processes running random lock traffic against a
// fenced resource, faults drawn from a seed (SIGKILL and restart, SIGSTOP
// of a node or a client, partitions, loss, delay, duplication, a node's
// clock fast or slow, a snapshot transfer to a node back from a long
// absence), and six
// checkers: mutual exclusion, increasing tokens, linearizability (porcupine),
// nothing acknowledged lost, availability after healing, and no grant after
// a loss. See nemesis_test.go for the flags and README.md for the long run.
package nemesis
