package resolvers

import (
	"github.com/vektah/gqlparser/v2/ast"
	"github.com/vektah/gqlparser/v2/validator/core"
	"github.com/vektah/gqlparser/v2/validator/rules"
)

// validationRulesWithoutIntrospection are gqlparser's rules plus one that
// refuses __schema and __type. With introspection off, gqlgen would otherwise
// accept such a query and fail the field while running it, with an error that
// reads as an internal one; as a validation failure it is the client's
// (GRAPHQL_VALIDATION_FAILED) and is refused before anything runs.
func validationRulesWithoutIntrospection() *rules.Rules {
	r := rules.NewDefaultRules()
	r.AddRule("NoIntrospection", func(observers *core.Events, addError core.AddErrFunc) {
		observers.OnField(func(_ *core.Walker, field *ast.Field) {
			if field.Name == "__schema" || field.Name == "__type" {
				addError(core.Message("introspection is disabled on this server"), core.At(field.Position))
			}
		})
	})
	return r
}
