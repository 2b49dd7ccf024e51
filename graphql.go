package coderun

// IsNode marks Handle as an implementation of the GraphQL Node interface (an
// object with a global id); the transport derives the id.
func (Handle) IsNode() {}

// IsNode marks Runtime as an implementation of the GraphQL Node interface.
func (Runtime) IsNode() {}

// IsNode marks Run as an implementation of the GraphQL Node interface.
func (Run) IsNode() {}
