package config

import (
	"fmt"
	"maps"
	"math"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/go-viper/mapstructure/v2"
)

var (
	configType   = reflect.TypeFor[Config]()
	durationType = reflect.TypeFor[time.Duration]()
	secretType   = reflect.TypeFor[Secret]()
)

// decoderConfig is how raw values become typed fields. Input is weakly typed
// because every environment value is a string ("200" must become an int); the
// hook parses durations and comma-separated lists and refuses lossy numbers.
func decoderConfig() *mapstructure.DecoderConfig {
	return &mapstructure.DecoderConfig{
		DecodeHook:       mapstructure.DecodeHookFuncType(strictHook),
		WeaklyTypedInput: true,
		ErrorUnused:      true,
		TagName:          "koanf",
	}
}

// strictHook parses durations from strings ("200ms"; a bare number would
// silently mean nanoseconds, so only 0 is accepted), splits a string into a
// list on commas (for the environment), and refuses a float that is not a
// whole number that fits the target int.
func strictHook(_, to reflect.Type, data any) (any, error) {
	switch {
	case to == durationType:
		if s, ok := data.(string); ok {
			return time.ParseDuration(strings.TrimSpace(s))
		}
		if v := reflect.ValueOf(data); v.IsValid() && isNumber(v.Kind()) && v.IsZero() {
			return time.Duration(0), nil
		}
		return nil, fmt.Errorf("not a duration string")
	case to.Kind() == reflect.Slice && to.Elem().Kind() == reflect.String:
		if s, ok := data.(string); ok {
			return splitList(s), nil
		}
	case isInt(to.Kind()):
		var f float64
		switch n := data.(type) {
		case float64:
			f = n
		case float32:
			f = float64(n)
		default:
			return data, nil
		}
		limit := math.Ldexp(1, to.Bits()-1)
		if f != math.Trunc(f) || f < -limit || f >= limit {
			return nil, fmt.Errorf("not a whole number in range")
		}
	}
	return data, nil
}

func splitList(s string) []string {
	out := []string{}
	for part := range strings.SplitSeq(s, ",") {
		if part = strings.TrimSpace(part); part != "" {
			out = append(out, part)
		}
	}
	return out
}

func isInt(k reflect.Kind) bool {
	return k >= reflect.Int && k <= reflect.Int64
}

func isNumber(k reflect.Kind) bool {
	return k >= reflect.Int && k <= reflect.Float64
}

// checkKeys walks one source's raw map against Config and reports every
// unknown key and every value that does not decode into its field, by full
// key. source(key) says where the key came from, e.g. " (in smsflow.toml)".
// Checking each source alone lets the message name the file or variable.
func checkKeys(raw map[string]any, source func(key string) string) []error {
	var errs []error
	checkValue("", raw, configType, source, &errs)
	return errs
}

func checkValue(key string, v any, t reflect.Type, source func(string) string, errs *[]error) {
	switch t.Kind() {
	case reflect.Struct, reflect.Map:
		m, ok := v.(map[string]any)
		if !ok {
			*errs = append(*errs, fmt.Errorf("%s: must be a table, got %s%s", key, show(v, false), source(key)))
			return
		}
		var fields map[string]reflect.Type
		if t.Kind() == reflect.Struct {
			fields = structFields(t)
		}
		for _, name := range slices.Sorted(maps.Keys(m)) {
			full := joinKey(key, name)
			if t.Kind() == reflect.Map {
				checkValue(full, m[name], t.Elem(), source, errs)
				continue
			}
			ft, ok := fields[name]
			if !ok {
				*errs = append(*errs, fmt.Errorf("%s: unknown key%s%s", full, source(full), suggest(name, fields)))
				continue
			}
			checkValue(full, m[name], ft, source, errs)
		}
	default:
		if err := decodeLeaf(v, t); err != nil {
			*errs = append(*errs, fmt.Errorf("%s: must be %s, got %s%s", key, want(t), show(v, t == secretType), source(key)))
		}
	}
}

func decodeLeaf(v any, t reflect.Type) error {
	dc := decoderConfig()
	dc.Result = reflect.New(t).Interface()
	d, err := mapstructure.NewDecoder(dc)
	if err != nil {
		return err
	}
	return d.Decode(v)
}

func structFields(t reflect.Type) map[string]reflect.Type {
	fields := make(map[string]reflect.Type, t.NumField())
	for i := range t.NumField() {
		f := t.Field(i)
		fields[f.Tag.Get("koanf")] = f.Type
	}
	return fields
}

func joinKey(parent, name string) string {
	if parent == "" {
		return name
	}
	return parent + "." + name
}

// want describes what a field of type t accepts.
func want(t reflect.Type) string {
	switch {
	case t == durationType:
		return `a duration like "5s"`
	case t.Kind() == reflect.String:
		return "a string"
	case t.Kind() == reflect.Bool:
		return "true or false"
	case isInt(t.Kind()):
		return "a whole number"
	case t.Kind() == reflect.Float64:
		return "a number"
	case t.Kind() == reflect.Slice:
		return "a list of strings"
	}
	return t.String()
}

// show quotes a bad value for an error message, shortened; a secret's value
// is never shown.
func show(v any, secret bool) string {
	switch v := v.(type) {
	case map[string]any:
		return "a table"
	case []any:
		if secret {
			return "a list"
		}
	case string:
		if secret {
			return "a string"
		}
		return fmt.Sprintf("%q", shorten(v))
	}
	if secret {
		return fmt.Sprintf("a %T", v)
	}
	return shorten(fmt.Sprintf("%v", v))
}

func shorten(s string) string {
	const limit = 40
	if r := []rune(s); len(r) > limit {
		return string(r[:limit]) + "…"
	}
	return s
}

// suggest returns `; did you mean "x"?` for the known key closest to name,
// when it is close enough to be a typo.
func suggest(name string, fields map[string]reflect.Type) string {
	best, bestDist := "", 3
	for _, f := range slices.Sorted(maps.Keys(fields)) {
		if d := distance(name, f); d < bestDist {
			best, bestDist = f, d
		}
	}
	if best == "" {
		return ""
	}
	return fmt.Sprintf("; did you mean %q?", best)
}

// distance is the Levenshtein distance between a and b.
func distance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return math.MaxInt
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// Redacted returns the config as nested maps keyed like the TOML, safe to log:
// every Secret is "[redacted]" ("" when unset), durations are strings.
func (c Config) Redacted() map[string]any {
	m, _ := redact(reflect.ValueOf(c)).(map[string]any)
	return m
}

func redact(v reflect.Value) any {
	switch {
	case v.Type() == secretType:
		if v.String() == "" {
			return ""
		}
		return redacted
	case v.Type() == durationType:
		return time.Duration(v.Int()).String()
	}
	switch v.Kind() {
	case reflect.Struct:
		m := make(map[string]any, v.NumField())
		for i := range v.NumField() {
			m[v.Type().Field(i).Tag.Get("koanf")] = redact(v.Field(i))
		}
		return m
	case reflect.Map:
		m := make(map[string]any, v.Len())
		for it := v.MapRange(); it.Next(); {
			m[it.Key().String()] = redact(it.Value())
		}
		return m
	case reflect.Slice:
		s := make([]any, v.Len())
		for i := range s {
			s[i] = redact(v.Index(i))
		}
		return s
	}
	return v.Interface()
}
