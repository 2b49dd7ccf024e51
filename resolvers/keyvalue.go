package resolvers

import (
	"fmt"
	"maps"
	"slices"

	"github.com/gharart/coderun"
	"github.com/gharart/coderun/graph"
)

// The domain keeps labels and environment variables as maps; the graph has
// no map type, so it carries them as lists of {key value} pairs.

// keyValues lists m's pairs in key order, so the answer is stable.
func keyValues(m map[string]string) []graph.KeyValue {
	out := make([]graph.KeyValue, 0, len(m))
	for _, k := range slices.Sorted(maps.Keys(m)) {
		out = append(out, graph.KeyValue{Key: k, Value: m[k]})
	}
	return out
}

// keyValueMap makes a map of the pairs of the input field named field; a key
// given twice is a validation failure, not a silent overwrite.
func keyValueMap(field string, pairs []graph.KeyValueInput) (map[string]string, error) {
	if pairs == nil {
		return nil, nil
	}
	var errs coderun.ValidationErrors
	m := make(map[string]string, len(pairs))
	for i, p := range pairs {
		if _, dup := m[p.Key]; dup {
			errs.Add(fmt.Sprintf("%s[%d].key", field, i), "duplicate", "%s %q is given twice", field, p.Key)
			continue
		}
		m[p.Key] = p.Value
	}
	return m, errs.Err()
}
