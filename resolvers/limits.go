package resolvers

import (
	"context"
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/99designs/gqlgen/graphql"
	"github.com/99designs/gqlgen/graphql/errcode"
	"github.com/99designs/gqlgen/graphql/handler/extension"
	"github.com/vektah/gqlparser/v2/ast"
	"github.com/vektah/gqlparser/v2/gqlerror"

	"github.com/gharart/coderun"
)

// Error codes of the cost limits, as CONTRACT.md names them: an operation
// too deep is DEPTH_LIMIT_EXCEEDED; one too big in any other way (fields,
// aliases, root fields, directives, or the complexity gqlgen's extension
// computes) is COMPLEXITY_LIMIT_EXCEEDED, and shapeLimit says which in
// extensions.limit.
const (
	codeComplexityLimit = "COMPLEXITY_LIMIT_EXCEEDED"
	codeDepthLimit      = "DEPTH_LIMIT_EXCEEDED"
)

// The limits a refusal names in extensions.limit.
const (
	limitComplexity = "complexity"
	limitDepth      = "depth"
	limitFields     = "fields"
	limitAliases    = "aliases"
	limitRootFields = "rootFields"
	limitDirectives = "directives"
)

func init() {
	// A query over a cost limit is a bad request, like one that fails
	// validation: HTTP 422 and a websocket "error" message rather than a 200
	// with errors; one over its caller's quota is HTTP 429 (the edge turns
	// this kind of refusal into it). gqlgen keeps this table globally, so it
	// is filled once here.
	for _, code := range []string{codeComplexityLimit, codeDepthLimit, codeRateLimited} {
		errcode.RegisterErrorType(code, errcode.KindProtocol)
	}
}

// shapeLimit rejects, before any resolver runs, an operation whose fields nest
// deeper than maxDepth, that holds more than maxFields fields, maxAliases
// aliases or maxDirectives directives once its fragments are expanded, or that
// asks for more than maxRootFields fields at its top.
//
// Aliases and root fields: each alias resolves its field once more, and each
// root field is a lookup of its own, so a flood of them multiplies the work of
// one cheap field (the same handle looked up many times, say) past what
// complexity prices well. Directives: each is evaluated for every field it
// sits on.
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
// Introspection fields are not counted in depth and fields: the standard
// introspection query is deep by nature, gqlparser bounds it itself, and it
// may be switched off. They do count as aliases, root fields and directives,
// which that query barely uses.
type shapeLimit struct {
	maxDepth      int
	maxFields     int
	maxAliases    int
	maxRootFields int
	maxDirectives int
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
	s.directives = saturatingAdd(s.directives, len(opCtx.Operation.Directives))
	refuse := func(code, limit, format string, args ...any) *gqlerror.Error {
		err := gqlerror.Errorf(format, args...)
		errcode.Set(err, code)
		err.Extensions["limit"] = limit
		return err
	}
	var err *gqlerror.Error
	switch {
	case s.depth > l.maxDepth:
		err = refuse(codeDepthLimit, limitDepth, "operation has depth %d, which exceeds the limit of %d", s.depth, l.maxDepth)
	case s.roots > l.maxRootFields:
		err = refuse(codeComplexityLimit, limitRootFields, "operation selects %d root fields, which exceeds the limit of %d", s.roots, l.maxRootFields)
	case s.aliases > l.maxAliases:
		err = refuse(codeComplexityLimit, limitAliases, "operation uses %s aliases once its fragments are expanded, which exceeds the limit of %d", count(s.aliases), l.maxAliases)
	case s.directives > l.maxDirectives:
		err = refuse(codeComplexityLimit, limitDirectives, "operation uses %s directives once its fragments are expanded, which exceeds the limit of %d", count(s.directives), l.maxDirectives)
	case s.fields > l.maxFields:
		err = refuse(codeComplexityLimit, limitFields, "operation selects more than %d fields once its fragments are expanded, so its complexity exceeds the limit of %d", l.maxFields, l.maxFields)
	}
	return err
}

// complexityLimit is gqlgen's complexity limit, whose refusal names its limit
// in extensions.limit as shapeLimit's do. It keeps the extension's name, under
// which costCharge finds the complexity it computed.
type complexityLimit struct{ *extension.ComplexityLimit }

func (c complexityLimit) MutateOperationContext(ctx context.Context, opCtx *graphql.OperationContext) *gqlerror.Error {
	err := c.ComplexityLimit.MutateOperationContext(ctx, opCtx)
	if err != nil {
		if err.Extensions == nil {
			err.Extensions = map[string]any{}
		}
		err.Extensions["limit"] = limitComplexity
	}
	return err
}

// shape is how deep a selection nests and what it holds. The counts saturate
// at math.MaxInt.
type shape struct {
	depth      int
	fields     int
	roots      int // fields of the selection itself, through fragments
	aliases    int
	directives int
}

func (s shape) plus(t shape) shape {
	return shape{
		depth:      max(s.depth, t.depth),
		fields:     saturatingAdd(s.fields, t.fields),
		roots:      saturatingAdd(s.roots, t.roots),
		aliases:    saturatingAdd(s.aliases, t.aliases),
		directives: saturatingAdd(s.directives, t.directives),
	}
}

// count writes n, which may have saturated.
func count(n int) string {
	if n == math.MaxInt {
		return "too many"
	}
	return strconv.Itoa(n)
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
			// Only the field itself counts of an introspection field: its
			// selection is bounded by the token limit and gqlparser.
			if !strings.HasPrefix(sel.Name, "__") {
				s = w.selectionSet(sel.SelectionSet)
				s.depth++
				s.fields = saturatingAdd(s.fields, 1)
			}
			s.roots = 1
			if sel.Alias != "" && sel.Alias != sel.Name {
				s.aliases = saturatingAdd(s.aliases, 1)
			}
			s.directives = saturatingAdd(s.directives, len(sel.Directives))
		case *ast.InlineFragment:
			s = w.selectionSet(sel.SelectionSet)
			s.directives = saturatingAdd(s.directives, len(sel.Directives))
		case *ast.FragmentSpread:
			s = w.fragment(sel)
			s.directives = saturatingAdd(s.directives, len(sel.Directives))
		}
		total = total.plus(s)
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
		s.directives = saturatingAdd(s.directives, len(spread.Definition.Directives))
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

// codeRateLimited refuses an operation that costs more than its caller's
// bucket holds: the same code as any other request over a throttle.
const codeRateLimited = coderun.ERateLimited

// costCharge charges the caller, before any resolver runs, by the operation's
// complexity as gqlgen's complexity extension computed it (it must run after
// that extension): a query that asks for much costs as much as many that ask
// for little. A mutation is charged its writes too, one per mutation field,
// as the REST routes charge one per write.
type costCharge struct {
	charge func(ctx context.Context, cost, writes int) error
}

var _ interface {
	graphql.HandlerExtension
	graphql.OperationContextMutator
} = costCharge{}

func (costCharge) ExtensionName() string { return "CostCharge" }

func (costCharge) Validate(graphql.ExecutableSchema) error { return nil }

func (c costCharge) MutateOperationContext(ctx context.Context, opCtx *graphql.OperationContext) *gqlerror.Error {
	cost, writes := 0, 0
	if stats, _ := opCtx.Stats.GetExtension(extension.ComplexityLimit{}.ExtensionName()).(*extension.ComplexityStats); stats != nil {
		cost = stats.Complexity
	}
	if opCtx.Operation.Operation == ast.Mutation {
		for _, f := range graphql.CollectFields(opCtx, opCtx.Operation.SelectionSet, []string{"Mutation"}) {
			if !strings.HasPrefix(f.Name, "__") {
				writes++
			}
		}
	}
	if err := c.charge(ctx, cost, writes); err != nil {
		what := fmt.Sprintf("operation costs %d", cost)
		if writes > 0 {
			what += fmt.Sprintf(" and makes %d writes", writes)
		}
		return rateLimited(what, err)
	}
	return nil
}

// rateLimited refuses an operation over its caller's quota: what describes
// the operation (its cost and writes), err why it was refused and when to
// come back.
func rateLimited(what string, err error) *gqlerror.Error {
	gqlErr := gqlerror.Errorf("%s: %v", what, err)
	errcode.Set(gqlErr, codeRateLimited)
	if e := coderun.AsError(err); e != nil {
		gqlErr.Message = what + ": " + e.Message
		if e.RetryAfter > 0 {
			gqlErr.Extensions["retryAfter"] = int(math.Ceil(e.RetryAfter.Seconds()))
		}
	}
	return gqlErr
}
