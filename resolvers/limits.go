package resolvers

import (
	"context"
	"math"
	"strings"

	"github.com/99designs/gqlgen/graphql"
	"github.com/99designs/gqlgen/graphql/errcode"
	"github.com/vektah/gqlparser/v2/ast"
	"github.com/vektah/gqlparser/v2/gqlerror"
)

// Error codes of the cost limits. gqlgen's complexity extension sets the
// first; shapeLimit below uses both the same way.
const (
	codeComplexityLimit = "COMPLEXITY_LIMIT_EXCEEDED"
	codeDepthLimit      = "DEPTH_LIMIT_EXCEEDED"
)

func init() {
	// A query over a cost limit is a bad request, like one that fails
	// validation: HTTP 422 and a websocket "error" message rather than a 200
	// with errors. gqlgen keeps this table globally, so it is filled once here.
	errcode.RegisterErrorType(codeComplexityLimit, errcode.KindProtocol)
	errcode.RegisterErrorType(codeDepthLimit, errcode.KindProtocol)
}

// shapeLimit rejects, before any resolver runs, an operation whose fields nest
// deeper than maxDepth or that holds more than maxFields fields once its
// fragments are expanded.
//
// Depth: the graph links both ways (a runtime's handle has runtimes, …), so
// without a bound a small query could fan out without end.
//
// Fields: every field costs at least 1 in gqlgen's complexity, so more fields
// than the complexity limit is over it. Checking this first matters because
// gqlgen computes complexity by walking every fragment spread again: a few
// hundred bytes of fragments that each spread the next twice take it
// exponential time, while this walk measures each fragment once.
//
// Introspection fields are not counted: the standard introspection query is
// deep by nature, gqlparser bounds it itself, and it may be switched off.
type shapeLimit struct {
	maxDepth  int
	maxFields int
}

var _ interface {
	graphql.HandlerExtension
	graphql.OperationContextMutator
} = shapeLimit{}

func (shapeLimit) ExtensionName() string { return "ShapeLimit" }

func (shapeLimit) Validate(graphql.ExecutableSchema) error { return nil }

func (l shapeLimit) MutateOperationContext(_ context.Context, opCtx *graphql.OperationContext) *gqlerror.Error {
	w := shapeWalker{fragments: map[string]shape{}}
	s := w.selectionSet(opCtx.Operation.SelectionSet)
	var err *gqlerror.Error
	switch {
	case s.depth > l.maxDepth:
		err = gqlerror.Errorf("operation has depth %d, which exceeds the limit of %d", s.depth, l.maxDepth)
		errcode.Set(err, codeDepthLimit)
	case s.fields > l.maxFields:
		err = gqlerror.Errorf("operation selects more than %d fields once its fragments are expanded, so its complexity exceeds the limit of %d", l.maxFields, l.maxFields)
		errcode.Set(err, codeComplexityLimit)
	}
	return err
}

// shape is how deep a selection nests and how many fields it holds.
type shape struct {
	depth  int
	fields int // saturates at math.MaxInt
}

// shapeWalker measures selections. A named fragment's shape does not depend on
// where it is spread, so each is measured once. Validation has already
// rejected fragment cycles.
type shapeWalker struct {
	fragments map[string]shape
}

func (w shapeWalker) selectionSet(set ast.SelectionSet) shape {
	var total shape
	for _, sel := range set {
		var s shape
		switch sel := sel.(type) {
		case *ast.Field:
			if strings.HasPrefix(sel.Name, "__") {
				continue
			}
			s = w.selectionSet(sel.SelectionSet)
			s.depth++
			s.fields = saturatingAdd(s.fields, 1)
		case *ast.InlineFragment:
			s = w.selectionSet(sel.SelectionSet)
		case *ast.FragmentSpread:
			s = w.fragment(sel)
		}
		total.depth = max(total.depth, s.depth)
		total.fields = saturatingAdd(total.fields, s.fields)
	}
	return total
}

func (w shapeWalker) fragment(spread *ast.FragmentSpread) shape {
	if s, ok := w.fragments[spread.Name]; ok {
		return s
	}
	var s shape
	if spread.Definition != nil {
		s = w.selectionSet(spread.Definition.SelectionSet)
	}
	w.fragments[spread.Name] = s
	return s
}

func saturatingAdd(a, b int) int {
	if a > math.MaxInt-b {
		return math.MaxInt
	}
	return a + b
}
