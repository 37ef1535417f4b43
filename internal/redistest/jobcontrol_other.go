//go:build !unix

package redistest

import (
	"errors"
	"os"
)

// No SIGSTOP and SIGCONT here: Pause and Resume fail.
func stopProcess(*os.Process) error     { return errors.ErrUnsupported }
func continueProcess(*os.Process) error { return errors.ErrUnsupported }
