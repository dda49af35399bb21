package config

import (
	"net/url"
	"time"
)

// Webhooks configures the webhooks stage: where status changes are POSTed
// when a message has no callback_url, how they are signed, and how long and
// how hard a receiver is tried.
type Webhooks struct {
	DefaultURL         string        `koanf:"default_url"`
	Secret             Secret        `koanf:"secret"`
	MaxAge             time.Duration `koanf:"max_age"`
	PerHostConcurrency int           `koanf:"per_host_concurrency"`
	Timeout            time.Duration `koanf:"timeout"`
	BackoffMin         time.Duration `koanf:"backoff_min"`
	BackoffMax         time.Duration `koanf:"backoff_max"`
}

func (c Config) validateWebhooks(v *validator) {
	w := c.Webhooks
	if w.DefaultURL != "" {
		u, err := url.Parse(w.DefaultURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			v.addf("webhooks.default_url: must be \"\" or an absolute http or https URL, got %q", shorten(w.DefaultURL))
		}
		if w.Secret == "" {
			v.addf("webhooks.secret: must be set when webhooks.default_url is set (receivers check the signature)")
		}
	}
	v.positive("webhooks.max_age", w.MaxAge)
	// An event older than SMS_STATUS's max_age is gone: it cannot be sent.
	if w.MaxAge > 7*24*time.Hour {
		v.addf("webhooks.max_age: must be at most 168h (SMS_STATUS keeps 7 days), got %s", w.MaxAge)
	}
	v.atLeast("webhooks.per_host_concurrency", int64(w.PerHostConcurrency), 1)
	v.positive("webhooks.timeout", w.Timeout)
	v.positive("webhooks.backoff_min", w.BackoffMin)
	if w.BackoffMax < w.BackoffMin {
		v.addf("webhooks.backoff_max: must be >= webhooks.backoff_min (%s), got %s", w.BackoffMin, w.BackoffMax)
	}
}
