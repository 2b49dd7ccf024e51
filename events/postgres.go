package events

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/lib/pq"
)

// Channel is the PostgreSQL notification channel on which processes tell each
// other which run changed. The payload is a run id, far below PostgreSQL's
// 8000-byte limit.
const Channel = "coderun_runs"

// RunPublisher hears that a run committed a change.
type RunPublisher interface {
	RunChanged(runID string)
}

// NotifyStore sends PostgreSQL notifications.
type NotifyStore interface {
	NotifyRunChanged(ctx context.Context, channel, runID string) error
}

// Notifier publishes run changes to this process (local, when set) at once
// and to every process listening on PostgreSQL through NOTIFY, from its own
// goroutine (Run), so that a publisher never waits for the database.
type Notifier struct {
	db    NotifyStore
	local RunPublisher
	log   *slog.Logger

	mu      sync.Mutex
	pending map[string]struct{}
	wake    chan struct{}
}

// NewNotifier returns a Notifier that sends through db; local, if not nil,
// hears of every change too.
func NewNotifier(db NotifyStore, local RunPublisher, log *slog.Logger) *Notifier {
	if log == nil {
		log = slog.Default()
	}
	return &Notifier{db: db, local: local, log: log, pending: map[string]struct{}{}, wake: make(chan struct{}, 1)}
}

// RunChanged publishes that runID changed. It never blocks: changes of one
// run made before its NOTIFY goes out share that NOTIFY (receivers read by
// seq, so one says all).
func (n *Notifier) RunChanged(runID string) {
	if n.local != nil {
		n.local.RunChanged(runID)
	}
	n.mu.Lock()
	n.pending[runID] = struct{}{}
	n.mu.Unlock()
	select {
	case n.wake <- struct{}{}:
	default:
	}
}

// notifyTimeout bounds one NOTIFY, and the last ones sent at shutdown.
const notifyTimeout = 5 * time.Second

// Run sends the pending notifications until ctx is done, and then those
// still pending. A notification that fails is logged and dropped: the
// receivers' polling picks the change up.
func (n *Notifier) Run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			n.send(context.WithoutCancel(ctx))
			return
		case <-n.wake:
			n.send(ctx)
		}
	}
}

func (n *Notifier) send(ctx context.Context) {
	n.mu.Lock()
	pending := n.pending
	n.pending = map[string]struct{}{}
	n.mu.Unlock()
	for runID := range pending {
		sendCtx, cancel := context.WithTimeout(ctx, notifyTimeout)
		err := n.db.NotifyRunChanged(sendCtx, Channel, runID)
		cancel()
		if err != nil {
			n.log.Warn("notifying other processes of a run change failed; they poll", "run", runID, "err", err)
		}
	}
}

// keepAlive is how often an idle listener checks its connection, so that a
// dead one is noticed and replaced.
const keepAlive = time.Minute

// Listen feeds hub with the run changes other processes NOTIFY on Channel,
// over a connection of its own to the PostgreSQL database at dsn, until ctx
// is done. Whenever the connection is (re)established every watched run is
// read again, for the notifications sent while none was listening.
func Listen(ctx context.Context, dsn string, hub *Hub, log *slog.Logger) {
	if log == nil {
		log = slog.Default()
	}
	l := pq.NewListener(dsn, 100*time.Millisecond, 10*time.Second, func(ev pq.ListenerEventType, err error) {
		if err != nil {
			log.Warn("the run-event listener's connection to PostgreSQL", "event", ev.String(), "err", err)
		}
	})
	defer l.Close()
	listening := make(chan error, 1)
	go func() { listening <- l.Listen(Channel) }()
	tick := time.NewTicker(keepAlive)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case err := <-listening:
			if err != nil {
				log.Error("listening for run changes failed; followers rely on polling", "err", err)
				continue
			}
			hub.Resync()
		case n, ok := <-l.Notify:
			switch {
			case !ok:
				return
			case n == nil: // reconnected: notifications may have been missed
				hub.Resync()
			default:
				hub.RunChanged(n.Extra)
			}
		case <-tick.C:
			go func() { _ = l.Ping() }() // a failed ping makes the listener reconnect
		}
	}
}
