package store

import (
	"fmt"
	"regexp"
)

// NamePattern is what a store name must match. It keeps names safe as
// directory names, Redis key parts and URL path segments.
const NamePattern = `^[a-z0-9][a-z0-9_-]{0,62}$`

var nameRE = regexp.MustCompile(NamePattern)

// ValidateName reports whether name is a valid store name. It touches no
// filesystem, so it is safe to call on hostile input before any path is built.
func ValidateName(name string) error {
	if !nameRE.MatchString(name) {
		return fmt.Errorf("%w %q: must match %s", ErrInvalidName, name, NamePattern)
	}
	return nil
}
