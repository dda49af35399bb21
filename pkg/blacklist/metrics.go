package blacklist

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// Metrics of a List.
type Metrics struct {
	numbers  prometheus.Gauge
	bytes    prometheus.Gauge
	runtime  *prometheus.GaugeVec
	loads    *prometheus.CounterVec
	loadSecs *prometheus.GaugeVec
}

// NewMetrics registers a List's metrics on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	f := promauto.With(reg)
	m := &Metrics{
		numbers: f.NewGauge(prometheus.GaugeOpts{Namespace: "smsflow", Subsystem: "blacklist", Name: "numbers",
			Help: "Numbers blacklisted now: the lists' union plus runtime adds, less runtime removes."}),
		bytes: f.NewGauge(prometheus.GaugeOpts{Namespace: "smsflow", Subsystem: "blacklist", Name: "set_bytes",
			Help: "Memory held by the lookup set of the lists' union."}),
		runtime: f.NewGaugeVec(prometheus.GaugeOpts{Namespace: "smsflow", Subsystem: "blacklist", Name: "runtime_entries",
			Help: "Runtime decisions in the KV bucket, by decision (add, remove)."}, []string{"decision"}),
		loads: f.NewCounterVec(prometheus.CounterOpts{Namespace: "smsflow", Subsystem: "blacklist", Name: "loads_total",
			Help: "Loads of a list file, list object or runtime entry, by source (file, object, runtime) and result (ok, error); an error keeps the previous content."},
			[]string{"source", "result"}),
		loadSecs: f.NewGaugeVec(prometheus.GaugeOpts{Namespace: "smsflow", Subsystem: "blacklist", Name: "last_load_seconds",
			Help: "How long the last successful load of a list took, by source (file, object)."}, []string{"source"}),
	}
	for _, src := range []string{"file", "object", "runtime"} {
		for _, res := range []string{"ok", "error"} {
			m.loads.WithLabelValues(src, res)
		}
	}
	m.runtime.WithLabelValues("add")
	m.runtime.WithLabelValues("remove")
	return m
}

func (m *Metrics) observe(s *snapshot) {
	m.numbers.Set(float64(s.count()))
	m.bytes.Set(float64(s.base.bytes()))
	adds := 0
	for _, e := range s.overlay {
		if e.Blacklisted {
			adds++
		}
	}
	m.runtime.WithLabelValues("add").Set(float64(adds))
	m.runtime.WithLabelValues("remove").Set(float64(len(s.overlay) - adds))
}
