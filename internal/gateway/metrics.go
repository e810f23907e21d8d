package gateway

import (
	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	framesIn, framesOut prometheus.Counter
	writes              prometheus.Counter
	errors              *prometheus.CounterVec
	refused             *prometheus.CounterVec
	slowClosed          prometheus.Counter
	rateLimited         prometheus.Counter
	// limitRefused counts what a cap refused, by the cap's name.
	limitRefused *prometheus.CounterVec
	acceptErrors prometheus.Counter
	logDropped   prometheus.Counter
	// namesRefused counts names refused for what they look like, by why
	// (reserved, lookalike).
	namesRefused *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer, s *Server) *metrics {
	m := &metrics{
		framesIn:    prometheus.NewCounter(prometheus.CounterOpts{Name: "chatr_ws_frames_in_total", Help: "WebSocket frames read from clients."}),
		framesOut:   prometheus.NewCounter(prometheus.CounterOpts{Name: "chatr_ws_frames_out_total", Help: "WebSocket frames written to clients."}),
		writes:      prometheus.NewCounter(prometheus.CounterOpts{Name: "chatr_ws_writes_total", Help: "Vectored writes to clients (frames out / writes = frames per system call)."}),
		errors:      prometheus.NewCounterVec(prometheus.CounterOpts{Name: "chatr_client_errors_total", Help: "Errors answered to clients, by code."}, []string{"code"}),
		refused:     prometheus.NewCounterVec(prometheus.CounterOpts{Name: "chatr_ws_refused_total", Help: "WebSocket sessions refused, by reason (origin)."}, []string{"reason"}),
		slowClosed:  prometheus.NewCounter(prometheus.CounterOpts{Name: "chatr_ws_slow_closed_total", Help: "Sessions closed with 4000 because their queue was full."}),
		rateLimited: prometheus.NewCounter(prometheus.CounterOpts{Name: "chatr_rate_limited_total", Help: "Sends refused by a rate limit."}),
		limitRefused: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "chatr_limit_refused_total",
			Help: "Connections, frames, joins and requests refused by a cap, by the cap (max_conns, max_conns_per_ip, ...)."}, []string{"limit"}),
		acceptErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "chatr_http_accept_errors_total", Help: "Failed accepts of the HTTP listener (out of files, most often)."}),
		logDropped:   prometheus.NewCounter(prometheus.CounterOpts{Name: "chatr_log_lines_dropped_total", Help: "Log lines clients caused past the log's rate limit, not written."}),
		namesRefused: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "chatr_names_refused_total",
			Help: "Names refused at hello, join or HTTP post for looking like a reserved name or like another person's in the room, by reason (reserved, lookalike)."}, []string{"reason"}),
	}
	if reg != nil {
		reg.MustRegister(m.framesIn, m.framesOut, m.writes, m.errors, m.refused, m.slowClosed, m.rateLimited,
			m.limitRefused, m.acceptErrors, m.logDropped, m.namesRefused,
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "chatr_http_conns", Help: "Open connections of the HTTP listener, WebSockets included (--max-conns)."},
				func() float64 { return float64(s.conns.count()) }),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "chatr_ws_sessions", Help: "Open WebSocket sessions."},
				func() float64 { return float64(s.Sessions()) }),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "chatr_ws_queued_frames", Help: "Frames waiting in session queues, all sessions."},
				func() float64 { return float64(s.queuedFrames.Load()) }))
	}
	return m
}
