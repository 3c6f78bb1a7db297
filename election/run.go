package election

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/lockd/lockd/paxos"
	"github.com/lockd/lockd/paxos/replica"
)

// Driver is the part of a Paxos runtime the election needs.
// *replica.Replica satisfies it. The core must run with
// paxos.Config.AutoCampaign off: the election decides when to campaign.
type Driver interface {
	Campaign(ctx context.Context, g paxos.GroupID) error
	Status(ctx context.Context, g paxos.GroupID) (paxos.GroupStatus, error)
	Propose(ctx context.Context, g paxos.GroupID, cmd paxos.Command) (replica.Result, error)
}

// DriverConfig sets up Run.
type DriverConfig struct {
	// Replica runs the node's Paxos groups. Required.
	Replica Driver
	// Command wraps a lease command into a Paxos command: the server owns
	// the tag byte in front of LeaseCmd.Encode and the command ids. It must
	// return a fresh command id on every call. Required.
	Command func(g paxos.GroupID, c LeaseCmd) paxos.Command
	// PeerUp, if set, is asked about every other node at each tick and its
	// answer given to Elector.PeerUp.
	PeerUp func(n paxos.NodeID) bool
	// Tick is how often Run calls Elector.Tick (default the Elector's
	// Config.Tick).
	Tick time.Duration
	// MaxProposals bounds the proposals in flight (default 64); beyond it an
	// action waits for the next tick.
	MaxProposals int
	// Now reads the clock (default time.Now). It must be the clock the
	// server passes to Applied and Serving.
	Now func() time.Time
	// Logger receives the driver's logs (default slog.Default()).
	Logger *slog.Logger
}

// Run drives e against a Paxos runtime until ctx ends: every tick it calls
// Tick, campaigns where told, and proposes lease commands; between ticks it
// announces "no master" the moment a lease runs out (Expire), each in its own
// goroutine (at most MaxProposals at once) so that a slow proposal never
// holds up the loop. The caller must route applied lease commands to
// e.Applied. Run returns nil when ctx ends.
func Run(ctx context.Context, e *Elector, cfg DriverConfig) error {
	if cfg.Replica == nil || cfg.Command == nil {
		return errors.New("election: DriverConfig needs Replica and Command")
	}
	ecfg := e.Config()
	if cfg.Tick <= 0 {
		cfg.Tick = ecfg.Tick
	}
	if cfg.MaxProposals <= 0 {
		cfg.MaxProposals = 64
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	slots := make(chan struct{}, cfg.MaxProposals)
	ticker := time.NewTicker(cfg.Tick)
	defer ticker.Stop()
	// "No master" is announced when the lease runs out, not at the next
	// tick, which a busy machine may run late: events agree with leases.
	expiry := time.NewTimer(time.Hour)
	defer expiry.Stop()
	for {
		if t, ok := e.NextExpiry(); ok {
			expiry.Reset(max(t.Sub(cfg.Now()), time.Millisecond))
		} else {
			expiry.Reset(time.Hour)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-e.Wake():
			continue
		case <-expiry.C:
			e.Expire(cfg.Now())
			continue
		case <-ticker.C:
		}
		if cfg.PeerUp != nil {
			for _, n := range e.Nodes() {
				if n != ecfg.Self {
					e.PeerUp(n, cfg.PeerUp(n))
				}
			}
		}
		status := func(g paxos.GroupID) (paxos.GroupStatus, error) {
			sctx, cancel := context.WithTimeout(ctx, cfg.Tick)
			defer cancel()
			return cfg.Replica.Status(sctx, g)
		}
		for _, a := range e.Tick(cfg.Now(), status) {
			switch a.Kind {
			case ActCampaign:
				cctx, cancel := context.WithTimeout(ctx, cfg.Tick)
				if err := cfg.Replica.Campaign(cctx, a.Group); err != nil && ctx.Err() == nil {
					cfg.Logger.Warn("election: campaign failed", "group", a.Group, "err", err)
				}
				cancel()
			case ActPropose:
				select {
				case slots <- struct{}{}:
				default:
					e.Failed(a.Group, a.Cmd.Nonce, paxos.ErrOverloaded)
					continue
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					defer func() { <-slots }()
					// A lease proposal that takes a whole Lease is worthless.
					pctx, cancel := context.WithTimeout(ctx, ecfg.Lease)
					defer cancel()
					if _, err := cfg.Replica.Propose(pctx, a.Group, cfg.Command(a.Group, a.Cmd)); err != nil {
						e.Failed(a.Group, a.Cmd.Nonce, err)
						if _, notMaster := paxos.IsNotMaster(err); !notMaster && ctx.Err() == nil {
							cfg.Logger.Debug("election: proposal failed", "group", a.Group, "cmd", a.Cmd.String(), "err", err)
						}
					}
				}()
			}
		}
	}
}
