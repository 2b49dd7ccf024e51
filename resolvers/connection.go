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
	edges, info := connection(page, func(node *coderun.Runtime, cursor string) graph.CodeRuntimeEdge {
		return graph.CodeRuntimeEdge{Node: node, Cursor: cursor}
	})
	return &graph.CodeRuntimeConnection{Edges: edges, PageInfo: info}
}

func runConnection(page coderun.Page[coderun.Run]) *graph.CodeRunConnection {
	edges, info := connection(page, func(node *coderun.Run, cursor string) graph.CodeRunEdge {
		return graph.CodeRunEdge{Node: node, Cursor: cursor}
	})
	return &graph.CodeRunConnection{Edges: edges, PageInfo: info}
}

// connection lays a page out as Relay edges, made by edge, and page info:
// every edge carries the cursor that continues after it.
func connection[T, E any](page coderun.Page[T], edge func(node *T, cursor string) E) ([]E, *graph.PageInfo) {
	info := &graph.PageInfo{HasNextPage: page.NextCursor != ""}
	edges := make([]E, len(page.Items))
	for i := range page.Items {
		edges[i] = edge(&page.Items[i], page.Cursors[i])
	}
	if n := len(page.Cursors); n > 0 {
		info.EndCursor = &page.Cursors[n-1]
	}
	return edges, info
}
