package rest

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/gharart/coderun"
)

// decodeJSON reads r's body into v strictly: one JSON value, no unknown fields.
func decodeJSON(r *http.Request, v any) error {
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return decodeError(err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		if err != nil {
			return decodeError(err)
		}
		return coderun.Errorf(coderun.EInvalidRequest, "the body must hold exactly one JSON value")
	}
	return nil
}

func decodeError(err error) error {
	var (
		tooLarge  *http.MaxBytesError
		syntax    *json.SyntaxError
		typeError *json.UnmarshalTypeError
	)
	switch {
	case errors.As(err, &tooLarge):
		return coderun.Errorf(coderun.EPayloadTooLarge, "the body is larger than %d bytes", tooLarge.Limit)
	case errors.Is(err, io.EOF):
		return coderun.Errorf(coderun.EInvalidRequest, "the body is empty; a JSON object is expected")
	case errors.As(err, &syntax), errors.Is(err, io.ErrUnexpectedEOF):
		return coderun.Errorf(coderun.EInvalidRequest, "the body is not valid JSON: %v", err)
	case errors.As(err, &typeError):
		e := coderun.Errorf(coderun.EInvalidRequest, "%s must be %s, not %s", typeError.Field, typeError.Type, typeError.Value)
		e.Fields = []coderun.FieldError{{Field: typeError.Field, Code: "wrong_type", Message: e.Message}}
		return e
	default:
		// The decoder reports unknown fields only as text.
		return coderun.Errorf(coderun.EInvalidRequest, "%s", fmt.Sprint(err))
	}
}
