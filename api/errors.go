package api

import (
	"errors"
	"net/http"

	"github.com/gin-gonic/gin"

	"storekeeper/jobs"
)

// apiError is an error with its HTTP status and stable code.
type apiError struct {
	status int
	code   string
	msg    string
}

func (e *apiError) Error() string { return e.msg }

func newError(status int, code, msg string) *apiError {
	return &apiError{status: status, code: code, msg: msg}
}

var (
	errUnauthorized = newError(http.StatusUnauthorized, "unauthorized", "a valid token is required (Authorization: Bearer <token>)")
	errForbidden    = newError(http.StatusForbidden, "forbidden", "this token's role may not do that")
	errNotFound     = newError(http.StatusNotFound, "not_found", "no such route")
	errMethod       = newError(http.StatusMethodNotAllowed, "method_not_allowed", "method not allowed on this route")
	errTooLarge     = newError(http.StatusRequestEntityTooLarge, "body_too_large", "request body is over 64 KiB")
	errInternal     = newError(http.StatusInternalServerError, "internal", "internal error; see the server log with this request id")
)

func invalid(msg string) *apiError { return newError(http.StatusBadRequest, "invalid_request", msg) }

// classify is the one table from errors to status codes and codes.
func classify(err error) *apiError {
	var ae *apiError
	if errors.As(err, &ae) {
		return ae
	}
	for _, c := range []struct {
		target error
		status int
		code   string
	}{
		{jobs.ErrUnavailable, http.StatusServiceUnavailable, "redis_unavailable"},
		{jobs.ErrUnknownStore, http.StatusNotFound, "unknown_store"},
		{jobs.ErrInvalidStore, http.StatusNotFound, "unknown_store"}, // a name no store can have
		{jobs.ErrUnknownJob, http.StatusNotFound, "unknown_job"},
		{jobs.ErrRestoreInProgress, http.StatusConflict, "restore_in_progress"},
		{jobs.ErrStoreHeld, http.StatusConflict, "store_held"},
		{jobs.ErrFinished, http.StatusConflict, "job_finished"},
		{jobs.ErrNotCancelable, http.StatusConflict, "not_cancelable"},
		{jobs.ErrBadCursor, http.StatusBadRequest, "bad_cursor"}, // before ErrBadQuery, which it also is
		{jobs.ErrBadQuery, http.StatusBadRequest, "invalid_request"},
		{jobs.ErrBadPayload, http.StatusBadRequest, "invalid_request"},
		{jobs.ErrBadSubscription, http.StatusBadRequest, "invalid_request"},
		{jobs.ErrUnknownSubscription, http.StatusNotFound, "not_found"},
		{jobs.ErrTooManySubscriptions, http.StatusConflict, "too_many_subscriptions"},
	} {
		if errors.Is(err, c.target) {
			return newError(c.status, c.code, err.Error())
		}
	}
	return nil
}

// fail answers err as JSON; anything unclassified is logged and answered
// as a 500 without details.
func (s *Server) fail(c *gin.Context, err error) {
	ae := classify(err)
	if ae == nil {
		s.log.Error("request failed", "request_id", requestID(c), "path", c.FullPath(), "err", err)
		ae = errInternal
	}
	c.AbortWithStatusJSON(ae.status, gin.H{"error": ae.code, "message": ae.msg})
}

// ConfigError is a Config field New refused; Field is the field's name,
// so that a command can name the flag that set it.
type ConfigError struct {
	Field string
	Err   error
}

func (e *ConfigError) Error() string { return "api: " + e.Err.Error() }

func (e *ConfigError) Unwrap() error { return e.Err }
