package resolvers

import (
	"github.com/gharart/coderun"
	"github.com/gharart/coderun/graph"
)

// The page sizes the service allows for a connection's `first` (1–100, 50 when
// omitted). The cost of a connection is its items' cost times the page size
// asked for, so a query cannot multiply its way past the complexity limit.
const (
	defaultPageSize = 50
	maxPageSize     = 100
)

// connectionComplexity is the cost of a connection field: its selection's cost
// for each of up to `first` items. Sizes the service will reject are priced at
// the bounds; the service's own error then says what was wrong with `first`.
func connectionComplexity(childComplexity int, first *int) int {
	n := defaultPageSize
	if first != nil {
		n = min(max(*first, 1), maxPageSize)
	}
	return 1 + childComplexity*n
}

func runtimeConnection(page coderun.Page[coderun.Runtime]) *graph.CodeRuntimeConnection {
	conn := &graph.CodeRuntimeConnection{
		Edges:    make([]graph.CodeRuntimeEdge, len(page.Items)),
		PageInfo: &graph.PageInfo{HasNextPage: page.NextCursor != ""},
	}
	for i := range page.Items {
		conn.Edges[i].Node = &page.Items[i]
	}
	if page.NextCursor != "" {
		cursor := page.NextCursor
		conn.PageInfo.EndCursor = &cursor
		if len(conn.Edges) > 0 {
			conn.Edges[len(conn.Edges)-1].Cursor = &cursor
		}
	}
	return conn
}
